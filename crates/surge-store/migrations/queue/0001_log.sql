-- The embedded durable queue: an append-only log with consumer offsets.
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    payload        TEXT    NOT NULL,
    appended_at_ms BIGINT  NOT NULL
);

CREATE TABLE consumer_offsets (
    consumer TEXT   PRIMARY KEY,
    acked    BIGINT NOT NULL
);
