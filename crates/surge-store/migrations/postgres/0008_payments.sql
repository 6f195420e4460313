-- Payments of orders with a provider. At most one is pending per order; a
-- provider's reference names one payment of that provider.
CREATE TABLE payments (
    id            BIGINT PRIMARY KEY,
    order_id      BIGINT NOT NULL REFERENCES orders (id),
    user_id       BIGINT NOT NULL,
    merchant_id   BIGINT NOT NULL,
    amount_cents  BIGINT NOT NULL CONSTRAINT payments_amount_not_negative CHECK (amount_cents >= 0),
    status        TEXT   NOT NULL,
    provider      TEXT   NOT NULL,
    provider_ref  TEXT   NOT NULL,
    pay_url       TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    CONSTRAINT payments_provider_ref_key UNIQUE (provider, provider_ref)
);
CREATE UNIQUE INDEX payments_one_pending_per_order ON payments (order_id) WHERE status = 'pending';

-- The provider events applied (the inbox): an event id is applied once,
-- however often the provider delivers it.
CREATE TABLE payment_events (
    provider       TEXT   NOT NULL,
    event_id       TEXT   NOT NULL,
    payment_id     BIGINT NOT NULL REFERENCES payments (id),
    kind           TEXT   NOT NULL,
    amount_cents   BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);
