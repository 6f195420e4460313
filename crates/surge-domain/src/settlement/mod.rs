//! Settlement: the double-entry ledger every money movement is posted to,
//! read as a trial balance and as merchants' balances.
//!
//! Accounts and transfers follow TigerBeetle's model: an account keeps
//! pending and posted debits and credits; a transfer moves one amount from
//! a debit account to a credit account, first pending, then posted or
//! voided. The payment context posts in its own transactions:
//!
//! | when | debit | credit |
//! |---|---|---|
//! | a payment is opened (pending) | `provider_clearing` | `merchant_payable:<merchant>` |
//! | it succeeds (that transfer posted, and) | `merchant_payable:<merchant>` | `platform_commission` |
//! | it fails (the first voided) | | |
//!
//! So a merchant's payable account holds, as posted credit minus debit, what
//! the platform owes it, and as pending credit what is on its way.

use async_trait::async_trait;
use serde::Serialize;
use thiserror::Error;

use std::sync::Arc;

use crate::actor::Actor;
use crate::ids::MerchantId;
use crate::store::StoreError;

/// The account where captured money waits at the provider.
pub const PROVIDER_CLEARING: &str = "provider_clearing";
/// The platform's earnings.
pub const PLATFORM_COMMISSION: &str = "platform_commission";

/// What the platform owes a merchant.
pub fn merchant_payable(merchant: MerchantId) -> String {
    format!("merchant_payable:{merchant}")
}

/// An account's posted totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountTotals {
    pub name: String,
    pub debit_cents: i64,
    pub credit_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrialBalance {
    pub accounts: Vec<AccountTotals>,
    pub debits_cents: i64,
    pub credits_cents: i64,
    pub balanced: bool,
}

impl TrialBalance {
    pub fn of(accounts: Vec<AccountTotals>) -> Self {
        let debits_cents = accounts.iter().map(|account| account.debit_cents).sum();
        let credits_cents = accounts.iter().map(|account| account.credit_cents).sum();
        Self { accounts, debits_cents, credits_cents, balanced: debits_cents == credits_cents }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MerchantBalance {
    /// Payments opened, not yet captured.
    pub pending_cents: i64,
    /// Captured, less commission and refunds (asked or done), not yet paid
    /// out.
    pub available_cents: i64,
    pub paid_out_cents: i64,
}

#[async_trait]
pub trait LedgerStore: Send + Sync + 'static {
    /// Every account's posted totals, by name, in one snapshot.
    async fn accounts(&self) -> Result<Vec<AccountTotals>, StoreError>;
    async fn merchant_balance(&self, merchant: MerchantId) -> Result<MerchantBalance, StoreError>;
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SettlementError {
    #[error("{0}")]
    Forbidden(&'static str),
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

pub struct Settlement {
    ledger: Arc<dyn LedgerStore>,
    reconciliation: Arc<dyn ReconciliationStore>,
}

impl Settlement {
    pub fn new(ledger: Arc<dyn LedgerStore>, reconciliation: Arc<dyn ReconciliationStore>) -> Self {
        Self { ledger, reconciliation }
    }

    /// Orders ↔ payments ↔ refunds ↔ ledger: every mismatch (admin). The
    /// provider's own report is not compared yet.
    pub async fn reconcile(&self, actor: &Actor) -> Result<Reconciliation, SettlementError> {
        if !actor.is_admin() {
            return Err(SettlementError::Forbidden("only an admin runs a reconciliation"));
        }
        let pass = self.reconciliation.reconcile(MISMATCHES_MAX).await?;
        for mismatch in &pass.mismatches {
            tracing::warn!(kind = mismatch.kind.as_str(), order_id = %mismatch.order_id, detail = mismatch.detail, "reconciliation mismatch");
        }
        Ok(pass)
    }

    pub async fn trial_balance(&self, actor: &Actor) -> Result<TrialBalance, SettlementError> {
        if !actor.is_admin() {
            return Err(SettlementError::Forbidden("only an admin reads the ledger"));
        }
        Ok(TrialBalance::of(self.ledger.accounts().await?))
    }

    pub async fn merchant_balance(
        &self,
        actor: &Actor,
        merchant: MerchantId,
    ) -> Result<MerchantBalance, SettlementError> {
        let allowed = match actor {
            Actor::Admin(_) => true,
            Actor::Merchant(own) => *own == merchant,
            Actor::Customer(_) => false,
        };
        if !allowed {
            return Err(SettlementError::Forbidden("a merchant reads only its own balance"));
        }
        Ok(self.ledger.merchant_balance(merchant).await?)
    }
}

/// What a reconciliation pass found wrong between orders, payments and the
/// ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// The order is paid (or past it) but no payment of it was captured.
    PaidWithoutCapture,
    /// A payment was captured but its order is not paid (cancelled
    /// meanwhile): the buyer is owed a refund.
    CaptureWithoutPaidOrder,
    /// The captured amount is not the order's.
    AmountDiffers,
    /// More than one payment of the order was captured.
    CapturedTwice,
    /// A captured payment has no posted transfer in the ledger.
    CaptureWithoutLedgerEntry,
    /// A succeeded refund has no posted transfer in the ledger.
    RefundWithoutLedgerEntry,
}

impl MismatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MismatchKind::PaidWithoutCapture => "paid_without_capture",
            MismatchKind::CaptureWithoutPaidOrder => "capture_without_paid_order",
            MismatchKind::AmountDiffers => "amount_differs",
            MismatchKind::CapturedTwice => "captured_twice",
            MismatchKind::CaptureWithoutLedgerEntry => "capture_without_ledger_entry",
            MismatchKind::RefundWithoutLedgerEntry => "refund_without_ledger_entry",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub kind: MismatchKind,
    pub order_id: crate::ids::OrderId,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// Orders and payments looked at.
    pub checked: u64,
    pub mismatches: Vec<Mismatch>,
}

#[async_trait]
pub trait ReconciliationStore: Send + Sync + 'static {
    /// Compares orders, payments, refunds and ledger transfers in one
    /// snapshot; at most `limit` mismatches of each kind.
    async fn reconcile(&self, limit: u32) -> Result<Reconciliation, StoreError>;
}

/// The most mismatches of one kind a pass lists.
pub const MISMATCHES_MAX: u32 = 1_000;
