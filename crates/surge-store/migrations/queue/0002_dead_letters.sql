-- Events the consumer could not read (e.g. written by another version):
-- kept here for an operator instead of blocking every event behind them.
CREATE TABLE dead_letters (
    seq         INTEGER PRIMARY KEY,
    payload     TEXT    NOT NULL,
    error       TEXT    NOT NULL,
    moved_at_ms BIGINT  NOT NULL
);
