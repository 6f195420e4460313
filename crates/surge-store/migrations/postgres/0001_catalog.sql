-- Catalog and inventory, as in the SQLite schema: BIGINT ids and money,
-- times as unix milliseconds, constraints named so that the adapter can tell
-- a business conflict (`sku`, `idempotency_key`) from an outage.
CREATE TABLE products (
    id              BIGINT PRIMARY KEY,
    merchant_id     BIGINT NOT NULL,
    sku             TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    price_cents     BIGINT NOT NULL CONSTRAINT products_price_not_negative CHECK (price_cents >= 0),
    stock           BIGINT NOT NULL CONSTRAINT products_stock_not_negative CHECK (stock >= 0),
    idempotency_key TEXT,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    CONSTRAINT products_merchant_sku_key UNIQUE (merchant_id, sku)
);

-- A create repeated with its Idempotency-Key finds the product it made.
CREATE UNIQUE INDEX products_merchant_idempotency_key ON products (merchant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Listing a merchant's products in id (creation) order.
CREATE INDEX products_merchant_id_idx ON products (merchant_id, id);
