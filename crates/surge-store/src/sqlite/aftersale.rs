//! `AfterSaleStore` on the adapter (the statements are in `crate::sql_aftersale`).

use async_trait::async_trait;
use surge_domain::aftersale::{AfterSaleStore, NewReturn, Return, ReturnUnits};
use surge_domain::fulfilment::NewShipment;
use surge_domain::outbox::{DomainEvent, EventRecord};
use surge_domain::{OrderId, RefundId, ReturnId, StoreError, UserId};
use time::OffsetDateTime;

use super::fulfilment::insert_shipment;
use super::outbox::record_events;
use super::{SqliteStore, store_error};
use crate::rows::unix_ms;

crate::sql_aftersale::aftersale_store!(SqliteStore, sqlx::Sqlite);
