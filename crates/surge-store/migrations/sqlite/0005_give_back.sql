-- A cancelled (or timed-out) flash-sale order whose units are still to go
-- back to the stock ledger: set in the transaction that cancels it,
-- cleared once the ledger has them. Until then the sweeper retries; the
-- ledger takes an order's units once, however often it is asked.
ALTER TABLE orders ADD COLUMN give_back_pending INTEGER NOT NULL DEFAULT 0;
CREATE INDEX orders_give_back_pending ON orders (updated_at_ms) WHERE give_back_pending = 1;
