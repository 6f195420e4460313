-- The embedded event bus: what the outbox relay published, read by each
-- consumer past its own offset (`consumer_offsets`, named `bus:<consumer>`)
-- and pruned once every consumer has read it.
CREATE TABLE bus (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    appended_at_ms BIGINT  NOT NULL
);
