-- The inventory context: a product's `stock` is what can still be sold,
-- `reserved` what unpaid orders and flash sales hold. A unit moves from one
-- to the other by one conditional update (`stock >= q`), never by a read
-- then a write, so no interleaving of writers oversells.
ALTER TABLE products ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0
    CONSTRAINT products_reserved_not_negative CHECK (reserved >= 0);

-- A sale made since inventory owns stock took its units from the product
-- (`allocated`); older ones took nothing and give nothing back. A sale is
-- closed once, after it ended: what it did not sell goes back to the
-- product, and no late order can be written against it any more.
ALTER TABLE flash_sales ADD COLUMN allocated BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE flash_sales ADD COLUMN closed_at_ms BIGINT;
CREATE INDEX flash_sales_to_close ON flash_sales (ends_at_ms) WHERE allocated AND closed_at_ms IS NULL;

-- An order is a flash-sale order (one item, the columns above) or a
-- checkout order: its items and delivery address are kept with it as JSON
-- documents (read and written whole, never queried inside).
ALTER TABLE orders ADD COLUMN kind TEXT NOT NULL DEFAULT 'flash_sale';
ALTER TABLE orders ADD COLUMN items TEXT;
ALTER TABLE orders ADD COLUMN address TEXT;
ALTER TABLE orders ADD COLUMN checkout_id BIGINT;
CREATE INDEX orders_checkout_id_idx ON orders (checkout_id) WHERE checkout_id IS NOT NULL;

-- A checkout made under an Idempotency-Key: the same key from the same
-- buyer finds its orders again instead of reserving twice.
CREATE TABLE checkouts (
    user_id         BIGINT NOT NULL,
    idempotency_key TEXT   NOT NULL,
    id              BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
);
