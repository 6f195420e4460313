-- After-sale: a buyer's returns of delivered orders. One live return per
-- order (a rejected or failed one may be followed by another). The refund
-- saga lives on the row: a `refunding` return is due for a refund at
-- `next_refund_at_ms` (a node asking for it pushes that forward as its
-- lease; NULL once asked, while the provider decides). `attempt_refund_id`
-- is the refund id the current attempt asks under, kept until that refund
-- is known failed, so an attempt asked twice (a lease that ran out) asks
-- for one refund; `refund_id` is the refund asked last. `refund_attempts`
-- counts attempts that did not go through, and a return with any shows in
-- reconciliation until refunded.
CREATE TABLE returns (
    id                BIGINT PRIMARY KEY,
    order_id          BIGINT NOT NULL,
    user_id           BIGINT NOT NULL,
    merchant_id       BIGINT NOT NULL,
    status            TEXT   NOT NULL,
    reason            TEXT   NOT NULL,
    waybill           TEXT,
    refund_cents      BIGINT,
    refund_id         BIGINT,
    attempt_refund_id BIGINT,
    refund_attempts   BIGINT NOT NULL DEFAULT 0,
    next_refund_at_ms BIGINT,
    idempotency_key   TEXT,
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL
);
CREATE UNIQUE INDEX returns_live_idx ON returns (order_id) WHERE status NOT IN ('rejected', 'inspection_failed');
CREATE UNIQUE INDEX returns_key_idx ON returns (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX returns_waybill_idx ON returns (waybill) WHERE waybill IS NOT NULL;
CREATE UNIQUE INDEX returns_attempt_idx ON returns (attempt_refund_id) WHERE attempt_refund_id IS NOT NULL;
CREATE INDEX returns_due_idx ON returns (next_refund_at_ms) WHERE status = 'refunding';
