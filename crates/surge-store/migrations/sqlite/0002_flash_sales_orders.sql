-- Flash sales and orders. `sold <= stock` and the per-buyer bound are the
-- database's last line against overselling, behind the ledger's atomic step.
CREATE TABLE flash_sales (
    id             BIGINT PRIMARY KEY,
    product_id     BIGINT NOT NULL REFERENCES products (id),
    merchant_id    BIGINT NOT NULL,
    stock          BIGINT NOT NULL CHECK (stock > 0),
    sold           BIGINT NOT NULL DEFAULT 0,
    price_cents    BIGINT NOT NULL CHECK (price_cents >= 0),
    starts_at_ms   BIGINT NOT NULL,
    ends_at_ms     BIGINT NOT NULL,
    per_user_limit BIGINT NOT NULL CHECK (per_user_limit >= 1),
    created_at_ms  BIGINT NOT NULL,
    CONSTRAINT flash_sales_window CHECK (ends_at_ms > starts_at_ms),
    CONSTRAINT flash_sales_no_oversell CHECK (sold >= 0 AND sold <= stock)
);

CREATE INDEX flash_sales_ends_at_idx ON flash_sales (ends_at_ms);

-- Units each buyer holds in each sale.
CREATE TABLE sale_buyers (
    sale_id BIGINT NOT NULL REFERENCES flash_sales (id),
    user_id BIGINT NOT NULL,
    bought  BIGINT NOT NULL CHECK (bought >= 0),
    PRIMARY KEY (sale_id, user_id)
);

CREATE TABLE orders (
    id              BIGINT PRIMARY KEY,
    user_id         BIGINT NOT NULL,
    merchant_id     BIGINT NOT NULL,
    product_id      BIGINT NOT NULL,
    flash_sale_id   BIGINT REFERENCES flash_sales (id),
    quantity        BIGINT NOT NULL CHECK (quantity > 0),
    amount_cents    BIGINT NOT NULL CHECK (amount_cents >= 0),
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
