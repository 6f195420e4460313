-- The relay prunes the inbox by age: without this index each prune reads
-- every row the consumers recorded in the last day.
CREATE INDEX inbox_received_idx ON inbox (received_at_ms);
