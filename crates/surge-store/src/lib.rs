//! Adapters for `surge-domain`'s ports, one folder per backend.
//!
//! - `sqlite`: the embedded relational store (WAL, migrations run at start).
//! - `postgres`: the same ports on one PostgreSQL shared by every node
//!   (distributed mode); `rows` and `sql` hold what the two relational
//!   stores share (row types, and the statements both dialects read alike).
//! - `cache`: cache-aside decorators that wrap any store adapter.
//! - `memory`: in-process ledger, pending orders and intake keys.
//! - `redis`: the same three shared by every node (distributed mode).
//! - `queue`: queue adapters (`log`: the embedded durable log).
//! - `notify`: notification sinks behind a bounded background queue.
//! - `runtime_config`: what operators change at run time, kept in the store
//!   (manual switches, run-time settings) and its version across nodes.

pub mod behind;
pub mod cache;
mod conflict;
mod events_wire;
pub mod memory;
pub mod notify;
pub mod postgres;
pub mod queue;
pub mod redis;
mod rows;
pub mod sandbox;
mod sql;
mod sql_aftersale;
mod sql_checkout;
mod sql_fulfilment;
mod sql_fulfilment_steps;
mod sql_inventory;
mod sql_ledger;
mod sql_outbox;
mod sql_payments;
mod sql_settlements;
mod sql_tracking;
pub mod sqlite;

/// `scheme://user:password@host/…` as `scheme://***@host/…`: a URL that
/// may carry a password is shown this way in every log line and error.
pub fn without_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

/// A relational store: every port it implements, and what the node does
/// with the store as a whole (the two adapters answer alike, so the node
/// holds either as one `dyn`).
#[async_trait::async_trait]
pub trait RelationalStore:
    surge_domain::catalog::CatalogStore
    + surge_domain::flashsale::SaleStore
    + surge_domain::order::OrderStore
    + surge_domain::order::CheckoutStore
    + surge_domain::inventory::InventoryStore
    + surge_domain::payment::PaymentStore
    + surge_domain::settlement::LedgerStore
    + surge_domain::settlement::ReconciliationStore
    + surge_domain::settlement::StatementStore
    + surge_domain::runtime_config::SwitchStore
    + surge_domain::runtime_config::ConfigStore
    + surge_domain::outbox::OutboxStore
    + surge_domain::outbox::Inbox
    + surge_domain::fulfilment::FulfilmentStore
    + surge_domain::aftersale::AfterSaleStore
{
    /// The largest id in any table that holds minted ids (0 when empty).
    async fn max_id(&self) -> Result<i64, surge_domain::StoreError>;
    async fn close(&self);
}

#[cfg(test)]
mod bus_contract;
#[cfg(test)]
mod flow_contract;
#[cfg(test)]
mod store_contract;
#[cfg(test)]
mod testing;
