-- Scans taken behind the cache (write-behind of tracking documents): the
-- flusher writes them to the store in order and deletes what it wrote.
CREATE TABLE scan_journal (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    payload        TEXT    NOT NULL,
    appended_at_ms BIGINT  NOT NULL
);
