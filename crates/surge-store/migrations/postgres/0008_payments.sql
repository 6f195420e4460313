-- Payments of orders with a provider. At most one is pending per order; a
-- provider's reference names one payment of that provider.
CREATE TABLE payments (
    id            BIGINT PRIMARY KEY,
    order_id      BIGINT NOT NULL REFERENCES orders (id),
    user_id       BIGINT NOT NULL,
    merchant_id   BIGINT NOT NULL,
    amount_cents  BIGINT NOT NULL CONSTRAINT payments_amount_not_negative CHECK (amount_cents >= 0),
    -- The platform's share, fixed when the payment is opened.
    commission_cents BIGINT NOT NULL
        CONSTRAINT payments_commission_within_amount CHECK (commission_cents >= 0 AND commission_cents <= amount_cents),
    -- Refunds pending or succeeded: a refund takes its amount here by a
    -- conditional update, so no two refunds together pass what was captured.
    refunded_cents BIGINT NOT NULL DEFAULT 0
        CONSTRAINT payments_refunds_within_amount CHECK (refunded_cents >= 0 AND refunded_cents <= amount_cents),
    status        TEXT   NOT NULL,
    provider      TEXT   NOT NULL,
    provider_ref  TEXT   NOT NULL,
    pay_url       TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    CONSTRAINT payments_provider_ref_key UNIQUE (provider, provider_ref)
);
CREATE UNIQUE INDEX payments_one_pending_per_order ON payments (order_id) WHERE status = 'pending';

-- Refunds of captured payments; one per (order, idempotency key).
CREATE TABLE refunds (
    id              BIGINT PRIMARY KEY,
    payment_id      BIGINT NOT NULL REFERENCES payments (id),
    order_id        BIGINT NOT NULL,
    merchant_id     BIGINT NOT NULL,
    amount_cents    BIGINT NOT NULL CONSTRAINT refunds_amount_positive CHECK (amount_cents > 0),
    reason          TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    provider        TEXT   NOT NULL,
    provider_ref    TEXT   NOT NULL,
    idempotency_key TEXT,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    CONSTRAINT refunds_provider_ref_key UNIQUE (provider, provider_ref)
);
CREATE UNIQUE INDEX refunds_order_idempotency_key ON refunds (order_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX refunds_payment_id_idx ON refunds (payment_id);

-- The provider events applied (the inbox): an event id is applied once,
-- however often the provider delivers it.
CREATE TABLE payment_events (
    provider       TEXT   NOT NULL,
    event_id       TEXT   NOT NULL,
    -- The payment the event is about (a refund's: its payment's).
    payment_id     BIGINT NOT NULL REFERENCES payments (id),
    kind           TEXT   NOT NULL,
    amount_cents   BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);

-- The double-entry ledger, after TigerBeetle: accounts keep pending and
-- posted debits and credits; every transfer moves one amount from a debit
-- account to a credit account, first pending (a payment opened), then
-- posted (captured) or voided (failed). A transfer is named by its payment
-- and its code, so applying an event twice cannot post it twice. The sum of
-- all posted debits equals the sum of all posted credits, always: each
-- transfer adds its amount to both sides in one transaction.
CREATE TABLE ledger_accounts (
    name            TEXT   PRIMARY KEY,
    debits_pending  BIGINT NOT NULL DEFAULT 0,
    credits_pending BIGINT NOT NULL DEFAULT 0,
    debits_posted   BIGINT NOT NULL DEFAULT 0,
    credits_posted  BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT ledger_accounts_not_negative
        CHECK (debits_pending >= 0 AND credits_pending >= 0 AND debits_posted >= 0 AND credits_posted >= 0)
);

CREATE TABLE ledger_transfers (
    payment_id     BIGINT NOT NULL REFERENCES payments (id),
    code           TEXT   NOT NULL,
    debit_account  TEXT   NOT NULL REFERENCES ledger_accounts (name),
    credit_account TEXT   NOT NULL REFERENCES ledger_accounts (name),
    amount_cents   BIGINT NOT NULL CONSTRAINT ledger_transfers_amount_positive CHECK (amount_cents > 0),
    status         TEXT   NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (payment_id, code)
);
