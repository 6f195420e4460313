//! `FulfilmentStore` on PostgreSQL (the statements are in `crate::sql_fulfilment` and
//! `crate::sql_fulfilment_steps`).

use async_trait::async_trait;
use surge_domain::fulfilment::{
    Courier, Direction, FulfilmentStore, JournalScan, NewCourier, NewShipment, Scan, ScanKind, ScanOutcome, Shipment,
    ShipmentStatus,
};
use surge_domain::outbox::{DomainEvent, EventRecord};
use surge_domain::{CourierId, StoreError};
use time::OffsetDateTime;

use super::outbox::record_events;
use super::{PgStore, store_error};
use crate::rows::{ShipmentRow, from_unix_ms, shipment, unix_ms};

crate::sql_fulfilment_steps::fulfilment_steps!(PgStore, sqlx::Postgres, " FOR UPDATE");
crate::sql_fulfilment::fulfilment_store!(PgStore, sqlx::Postgres);
crate::sql_tracking::tracking_flush!(PgStore, sqlx::Postgres);
