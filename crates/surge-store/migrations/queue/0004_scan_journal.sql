-- Scans taken behind the cache (write-behind of tracking documents): the
-- flusher writes them to the store in order and deletes what it wrote.
CREATE TABLE scan_journal (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    payload        TEXT    NOT NULL,
    appended_at_ms BIGINT  NOT NULL
);

-- Journaled scans the flusher could not read (e.g. written by another
-- version): kept for an operator instead of stopping every scan behind.
CREATE TABLE scan_dead_letters (
    seq         INTEGER PRIMARY KEY,
    payload     TEXT    NOT NULL,
    error       TEXT    NOT NULL,
    moved_at_ms BIGINT  NOT NULL
);
