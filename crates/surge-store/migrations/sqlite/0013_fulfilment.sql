-- Fulfilment, the forward flow. A courier works one zone; `assigned`
-- counts its parcels assigned and not yet delivered, never above
-- `capacity` while dispatch assigns (the conditional update that takes a
-- slot checks it on the locked row).
CREATE TABLE couriers (
    id            BIGINT  PRIMARY KEY,
    name          TEXT    NOT NULL,
    region        TEXT    NOT NULL,
    zone          TEXT    NOT NULL,
    capacity      BIGINT  NOT NULL CONSTRAINT couriers_capacity_positive CHECK (capacity > 0),
    on_shift      BOOLEAN NOT NULL DEFAULT FALSE,
    assigned      BIGINT  NOT NULL DEFAULT 0 CONSTRAINT couriers_assigned_not_negative CHECK (assigned >= 0),
    updated_at_ms BIGINT  NOT NULL
);
CREATE INDEX couriers_dispatch_idx ON couriers (zone, assigned, id) WHERE on_shift;

-- One forward shipment per paid order, under the order's waybill (so a
-- redelivered OrderPaid opens nothing new); reverse ones come with
-- after-sale. `assigned_at_ms` is when its courier got it, for the
-- pick-up timeout.
CREATE TABLE shipments (
    waybill        TEXT   PRIMARY KEY,
    order_id       BIGINT NOT NULL,
    user_id        BIGINT NOT NULL,
    merchant_id    BIGINT NOT NULL,
    direction      TEXT   NOT NULL,
    status         TEXT   NOT NULL,
    courier_id     BIGINT REFERENCES couriers (id),
    region         TEXT   NOT NULL,
    zone           TEXT   NOT NULL,
    assigned_at_ms BIGINT,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
CREATE INDEX shipments_order_idx ON shipments (order_id);
CREATE INDEX shipments_courier_idx ON shipments (courier_id, created_at_ms) WHERE courier_id IS NOT NULL;
CREATE INDEX shipments_awaiting_idx ON shipments (updated_at_ms) WHERE status = 'awaiting_courier';
CREATE INDEX shipments_packed_idx ON shipments (assigned_at_ms) WHERE status = 'packed';

-- A waybill's timeline: the couriers' scans in the order they were
-- written (`seq`, taken under the shipment's row lock).
CREATE TABLE scans (
    waybill        TEXT   NOT NULL REFERENCES shipments (waybill),
    seq            BIGINT NOT NULL,
    kind           TEXT   NOT NULL,
    at_ms          BIGINT NOT NULL,
    location       TEXT   NOT NULL,
    note           TEXT   NOT NULL,
    courier_id     BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    PRIMARY KEY (waybill, seq)
);
