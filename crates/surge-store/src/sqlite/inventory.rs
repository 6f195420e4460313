//! `InventoryStore` and `CheckoutStore` on Sqlite, and the moves of a
//! product's units that the order store's transactions make (the
//! statements are in `crate::sql_inventory`).

use async_trait::async_trait;
use surge_domain::inventory::{ClosedSale, InventoryStore};
use surge_domain::order::{CheckoutLine, NewCheckout, NewCheckoutOrder, Order, OrderKind, OrderStatus, Placed};
use surge_domain::outbox::{DomainEvent, EventRecord};
use surge_domain::{ProductId, SaleId, StoreError, UserId};
use time::OffsetDateTime;

use super::outbox::record_events;
use super::{SqliteStore, store_error};
use crate::rows::{AddressDoc, ORDER_COLUMNS, OrderRow, unix_ms};

crate::sql_inventory::inventory_store!(SqliteStore);
crate::sql_inventory::inventory_moves!(sqlx::SqliteConnection);
crate::sql_checkout::checkout_batch!(sqlx::SqliteConnection, sqlx::Sqlite, "");
