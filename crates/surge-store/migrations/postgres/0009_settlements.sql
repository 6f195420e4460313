-- Per-merchant daily statements, closed once per (merchant, day) by a
-- settlement run from the ledger's posted transfers of that UTC day.
CREATE TABLE settlements (
    id               BIGINT PRIMARY KEY,
    merchant_id      BIGINT NOT NULL,
    period_start_ms  BIGINT NOT NULL,
    period_end_ms    BIGINT NOT NULL,
    gross_cents      BIGINT NOT NULL,
    refunds_cents    BIGINT NOT NULL,
    commission_cents BIGINT NOT NULL,
    net_cents        BIGINT NOT NULL,
    status           TEXT   NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    CONSTRAINT settlements_merchant_period_key UNIQUE (merchant_id, period_start_ms)
);
CREATE INDEX settlements_period_end_idx ON settlements (period_end_ms);
-- A run reads only the days after the last one closed.
CREATE INDEX ledger_transfers_posted_at_idx ON ledger_transfers (updated_at_ms);
