//! Flash sales (秒杀): sale events, pre-warming, and instant order intake.
//!
//! Intake never touches the relational store on its way to the 202: it
//! deducts stock in the ledger (cache) and appends `OrderRequested` to the
//! durable queue; the order consumer writes the order afterwards.

mod ports;
mod sale;
mod service;

pub use ports::{
    Deduction, Delivery, IntakeFuture, IntakeKeys, KeyedDeduction, LedgerSnapshot, OrderQueue, Reservation, SaleStore,
    StockLedger,
};
pub use sale::{FlashSale, NewSale, OrderRequested, Quantity, SaleStatus};
pub use service::{FlashSalePorts, FlashSales, IntakeError, Reconciliation, SaleError, SaleView};
