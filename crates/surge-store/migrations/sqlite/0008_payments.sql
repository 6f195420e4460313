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
