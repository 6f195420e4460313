-- A cancelled (or timed-out) flash-sale order whose units are still to go
-- back to the shared ledger: set in the transaction that cancels it,
-- cleared once the ledger has them. Until then the sweeper retries; the
-- ledger takes an order's units once, however often it is asked.
ALTER TABLE orders ADD COLUMN give_back_pending BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX orders_give_back_pending ON orders (updated_at_ms) WHERE give_back_pending;
