//! `LedgerStore` on SQLite, and the postings the payment store makes (the
//! statements are in `crate::sql_ledger`).

use async_trait::async_trait;
use surge_domain::payment::{Payment, Refund};
use surge_domain::settlement::{
    AccountTotals, LedgerStore, MerchantBalance, Mismatch, MismatchKind, PLATFORM_COMMISSION, PROVIDER_CLEARING,
    Reconciliation, ReconciliationStore, merchant_payable,
};
use surge_domain::{MerchantId, OrderId, PaymentId, StoreError};

use super::{SqliteStore, store_error};

crate::sql_ledger::ledger_store!(SqliteStore, sqlx::SqliteConnection);
