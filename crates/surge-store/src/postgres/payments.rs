//! `PaymentStore` on PostgreSQL (the statements are in `crate::sql_payments`).

use async_trait::async_trait;
use surge_domain::order::{Order, OrderStatus};
use surge_domain::payment::{Applied, EventKind, Payment, PaymentStatus, PaymentStore, ProviderEvent};
use surge_domain::{OrderId, PaymentId, ProductId, StoreError};
use time::OffsetDateTime;

use super::inventory::order_left_created;
use super::ledger::{open_transfer, post_payment, void_payment};
use super::{PgStore, store_error};
use crate::rows::{ORDER_COLUMNS, OrderRow, PAYMENT_COLUMNS, PaymentRow, unix_ms};

type Db = sqlx::Postgres;

crate::sql_payments::payment_store!(PgStore);
