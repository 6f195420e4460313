-- The transactional outbox: a domain event another context must hear of,
-- written in the transaction of the change it reports, under an id that
-- the change determines (so a change repeated writes it once). A relay
-- claims unpublished rows for a while (`claimed_until_ms`), publishes them
-- to the event bus and marks them published; published rows are pruned.
CREATE TABLE outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT   NOT NULL UNIQUE,
    kind             TEXT   NOT NULL,
    payload          TEXT   NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    claimed_until_ms BIGINT,
    published_at_ms  BIGINT
);
CREATE INDEX outbox_unpublished_idx ON outbox (seq) WHERE published_at_ms IS NULL;
CREATE INDEX outbox_published_idx ON outbox (published_at_ms) WHERE published_at_ms IS NOT NULL;

-- The consumers' inbox: an event id a consumer has applied, so that a
-- redelivery (the bus delivers at least once) is applied once.
CREATE TABLE inbox (
    consumer       TEXT   NOT NULL,
    event_id       TEXT   NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
