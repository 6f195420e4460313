-- When a node last rebuilt the sale's counters in the shared ledger from
-- the orders (Unix ms, the rebuilding node's clock). A node that noticed
-- an earlier loss of the counters knows by it that its notice is stale:
-- a later loss must be timed from a later notice.
ALTER TABLE flash_sales ADD COLUMN ledger_rebuilt_ms BIGINT;
