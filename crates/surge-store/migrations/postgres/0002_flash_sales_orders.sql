-- Flash sales and orders. `sold <= stock` and the per-buyer bound are the
-- database's last line against overselling, behind the ledger's atomic step.
-- Several nodes write here at once: every bound is a CHECK, so no
-- interleaving of their transactions can break it.
CREATE TABLE flash_sales (
    id             BIGINT PRIMARY KEY,
    product_id     BIGINT NOT NULL REFERENCES products (id),
    merchant_id    BIGINT NOT NULL,
    stock          BIGINT NOT NULL CONSTRAINT flash_sales_stock_positive CHECK (stock > 0),
    sold           BIGINT NOT NULL DEFAULT 0,
    price_cents    BIGINT NOT NULL CONSTRAINT flash_sales_price_not_negative CHECK (price_cents >= 0),
    starts_at_ms   BIGINT NOT NULL,
    ends_at_ms     BIGINT NOT NULL,
    per_user_limit BIGINT NOT NULL CONSTRAINT flash_sales_per_user_limit_positive CHECK (per_user_limit >= 1),
    created_at_ms  BIGINT NOT NULL,
    CONSTRAINT flash_sales_window CHECK (ends_at_ms > starts_at_ms),
    CONSTRAINT flash_sales_no_oversell CHECK (sold >= 0 AND sold <= stock)
);

CREATE INDEX flash_sales_ends_at_idx ON flash_sales (ends_at_ms);

-- Units each buyer holds in each sale. Unlike the SQLite schema, the row
-- carries a copy of its sale's `per_user_limit` (fixed when the sale is
-- made): a CHECK can't look into another table, and this way the buyer
-- bound is a CHECK like the sale's.
CREATE TABLE sale_buyers (
    sale_id        BIGINT NOT NULL REFERENCES flash_sales (id),
    user_id        BIGINT NOT NULL,
    bought         BIGINT NOT NULL,
    per_user_limit BIGINT NOT NULL,
    PRIMARY KEY (sale_id, user_id),
    CONSTRAINT sale_buyers_within_limit CHECK (bought >= 0 AND bought <= per_user_limit)
);

CREATE TABLE orders (
    id              BIGINT PRIMARY KEY,
    user_id         BIGINT NOT NULL,
    merchant_id     BIGINT NOT NULL,
    product_id      BIGINT NOT NULL,
    flash_sale_id   BIGINT REFERENCES flash_sales (id),
    quantity        BIGINT NOT NULL CONSTRAINT orders_quantity_positive CHECK (quantity > 0),
    amount_cents    BIGINT NOT NULL CONSTRAINT orders_amount_not_negative CHECK (amount_cents >= 0),
    status          TEXT   NOT NULL,
    idempotency_key TEXT,
    pay_by_ms       BIGINT,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);

-- One order per (sale, buyer, idempotency key): a key names one request to
-- one sale.
CREATE UNIQUE INDEX orders_sale_user_idempotency_key ON orders (flash_sale_id, user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX orders_user_id_idx ON orders (user_id, id);
CREATE INDEX orders_merchant_id_idx ON orders (merchant_id, id);
CREATE INDEX orders_flash_sale_id_idx ON orders (flash_sale_id);
CREATE INDEX orders_unpaid_idx ON orders (status, pay_by_ms);
