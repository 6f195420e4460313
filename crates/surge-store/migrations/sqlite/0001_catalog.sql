-- Catalog and inventory. Written to port to PostgreSQL unchanged in intent:
-- BIGINT ids and money, times as unix milliseconds, named constraints.
CREATE TABLE products (
    id            BIGINT PRIMARY KEY,
    merchant_id   BIGINT NOT NULL,
    sku           TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    price_cents   BIGINT NOT NULL CHECK (price_cents >= 0),
    stock         BIGINT NOT NULL CHECK (stock >= 0),
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    CONSTRAINT products_merchant_sku_key UNIQUE (merchant_id, sku)
);

-- Listing a merchant's products in id (creation) order.
CREATE INDEX products_merchant_id_idx ON products (merchant_id, id);
