-- Payouts: a merchant's closed statements paid out at once, as one posted
-- transfer from its payable account to the provider's clearing account
-- (the money leaves the platform's hands for the merchant's bank). A
-- statement is paid by one payout; the conditional update that marks it
-- `paid` is what keeps two racing runs from paying it twice.
CREATE TABLE payouts (
    id             BIGINT PRIMARY KEY,
    merchant_id    BIGINT NOT NULL,
    amount_cents   BIGINT NOT NULL CONSTRAINT payouts_amount_positive CHECK (amount_cents > 0),
    statements     BIGINT NOT NULL,
    debit_account  TEXT   NOT NULL REFERENCES ledger_accounts (name),
    credit_account TEXT   NOT NULL REFERENCES ledger_accounts (name),
    status         TEXT   NOT NULL,
    created_at_ms  BIGINT NOT NULL
);
CREATE INDEX payouts_merchant_idx ON payouts (merchant_id, id);
ALTER TABLE settlements ADD COLUMN payout_id BIGINT;
CREATE INDEX settlements_unpaid_idx ON settlements (merchant_id) WHERE status = 'closed';
