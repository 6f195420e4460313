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
//! | a refund is asked (pending), then posted or voided | `merchant_payable:<merchant>` | `provider_clearing` |
//! | closed statements are paid out (posted) | `merchant_payable:<merchant>` | `provider_clearing` |
//!
//! So a merchant's payable account holds, as posted credit minus debit, what
//! the platform owes it, and as pending credit what is on its way.

use async_trait::async_trait;
use serde::Serialize;
use thiserror::Error;

use std::sync::Arc;

use time::OffsetDateTime;

use crate::actor::Actor;
use crate::clock::Clock;
use crate::ids::{IdGenerator, MerchantId, PayoutId, SettlementId};
use crate::payment::ProviderBooks;
use crate::store::StoreError;

mod provider;
pub use provider::provider_mismatches;

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

/// The ports settlement reads and writes.
pub struct SettlementPorts {
    pub ledger: Arc<dyn LedgerStore>,
    pub reconciliation: Arc<dyn ReconciliationStore>,
    pub statements: Arc<dyn StatementStore>,
}

pub struct Settlement {
    ports: SettlementPorts,
    ids: Arc<IdGenerator>,
    clock: Arc<dyn Clock>,
}

impl Settlement {
    pub fn new(ports: SettlementPorts, ids: Arc<IdGenerator>, clock: Arc<dyn Clock>) -> Self {
        Self { ports, ids, clock }
    }

    /// Closes the statements of the days that ended by `until` (at most
    /// [`CLOSE_GRACE`] before now; `None`: as late as that). An admin's
    /// run and the scheduled one do the same.
    pub async fn run(&self, actor: &Actor, until: Option<OffsetDateTime>) -> Result<Vec<Statement>, SettlementError> {
        if !actor.is_admin() {
            return Err(SettlementError::Forbidden("only an admin runs a settlement"));
        }
        Ok(self.close_due(until).await?)
    }

    /// The scheduled run: every day that ended more than [`CLOSE_GRACE`]
    /// ago.
    pub async fn close_due(&self, until: Option<OffsetDateTime>) -> Result<Vec<Statement>, StoreError> {
        let latest = self.clock.now() - CLOSE_GRACE;
        let until = day_start(until.map_or(latest, |until| until.min(latest)));
        let closed = self.ports.statements.close_statements(until, &self.ids, self.clock.now()).await?;
        if !closed.is_empty() {
            tracing::info!(statements = closed.len(), until = %until, "settlement statements closed");
        }
        Ok(closed)
    }

    /// Pays out every merchant's closed statements (admin).
    pub async fn pay_out(&self, actor: &Actor) -> Result<Vec<Payout>, SettlementError> {
        if !actor.is_admin() {
            return Err(SettlementError::Forbidden("only an admin runs the payouts"));
        }
        Ok(self.pay_out_due().await?)
    }

    /// The scheduled payouts: an admin's run without the admin. Runs racing
    /// on several nodes pay each statement once (the store's conditional
    /// update).
    pub async fn pay_out_due(&self) -> Result<Vec<Payout>, StoreError> {
        let paid = self.ports.statements.pay_out(&self.ids, self.clock.now()).await?;
        if !paid.is_empty() {
            let cents: i64 = paid.iter().map(|payout| payout.amount_cents).sum();
            tracing::info!(payouts = paid.len(), cents, "payouts made");
        }
        Ok(paid)
    }

    /// A merchant's payouts, newest first (that merchant, an admin).
    pub async fn payouts(
        &self,
        actor: &Actor,
        merchant: MerchantId,
        before: Option<PayoutId>,
        limit: u32,
    ) -> Result<Vec<Payout>, SettlementError> {
        self.may_read(actor, merchant)?;
        Ok(self.ports.statements.payouts(merchant, before, limit).await?)
    }

    /// A merchant's statements, newest first (that merchant, an admin).
    pub async fn statements(
        &self,
        actor: &Actor,
        merchant: MerchantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Statement>, SettlementError> {
        self.may_read(actor, merchant)?;
        Ok(self.ports.statements.statements(merchant, before, limit).await?)
    }

    fn may_read(&self, actor: &Actor, merchant: MerchantId) -> Result<(), SettlementError> {
        match actor {
            Actor::Admin(_) => Ok(()),
            Actor::Merchant(own) if *own == merchant => Ok(()),
            _ => Err(SettlementError::Forbidden("a merchant reads only its own books")),
        }
    }

    /// Orders ↔ payments ↔ refunds ↔ ledger, and the provider's report
    /// against the books when it keeps one: every mismatch (admin).
    pub async fn reconcile(
        &self,
        actor: &Actor,
        provider: Option<ProviderBooks>,
    ) -> Result<Reconciliation, SettlementError> {
        if !actor.is_admin() {
            return Err(SettlementError::Forbidden("only an admin runs a reconciliation"));
        }
        let mut pass = self.ports.reconciliation.reconcile(MISMATCHES_MAX).await?;
        if let Some(books) = provider {
            pass.checked += books.theirs.len() as u64;
            pass.mismatches.extend(provider_mismatches(&books, MISMATCHES_MAX as usize));
        }
        for mismatch in &pass.mismatches {
            let order_id = mismatch.order_id.map(|id| id.to_string()).unwrap_or_default();
            tracing::warn!(
                kind = mismatch.kind.as_str(),
                order_id,
                detail = mismatch.detail,
                "reconciliation mismatch"
            );
        }
        Ok(pass)
    }

    pub async fn trial_balance(&self, actor: &Actor) -> Result<TrialBalance, SettlementError> {
        if !actor.is_admin() {
            return Err(SettlementError::Forbidden("only an admin reads the ledger"));
        }
        Ok(TrialBalance::of(self.ports.ledger.accounts().await?))
    }

    pub async fn merchant_balance(
        &self,
        actor: &Actor,
        merchant: MerchantId,
    ) -> Result<MerchantBalance, SettlementError> {
        self.may_read(actor, merchant)?;
        Ok(self.ports.ledger.merchant_balance(merchant).await?)
    }
}

/// What a reconciliation pass found wrong between orders, payments and the
/// ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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
    /// The provider decided a payment or refund that is not decided so
    /// here (its callback never arrived).
    ProviderDecisionNotApplied,
    /// Decided here, not at the provider (a callback it never sent).
    UnknownToProvider,
    /// The provider captured money under a reference nothing here has.
    UnknownToPlatform,
    /// The provider's amount is not the platform's.
    ProviderAmountDiffers,
    /// A passed return's refund has not gone through yet after at least
    /// one attempt failed (the saga keeps asking, with backoff).
    ReturnRefundOutstanding,
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
            MismatchKind::ProviderDecisionNotApplied => "provider_decision_not_applied",
            MismatchKind::UnknownToProvider => "unknown_to_provider",
            MismatchKind::UnknownToPlatform => "unknown_to_platform",
            MismatchKind::ProviderAmountDiffers => "provider_amount_differs",
            MismatchKind::ReturnRefundOutstanding => "return_refund_outstanding",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub kind: MismatchKind,
    /// `None`: the provider's record names nothing of the platform's.
    pub order_id: Option<crate::ids::OrderId>,
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

/// A merchant's statement of one UTC day, closed once by a settlement run:
/// what was captured, refunded and taken as commission that day, and the
/// net owed (`gross - refunds - commission`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    pub id: SettlementId,
    pub merchant_id: MerchantId,
    #[serde(with = "time::serde::rfc3339")]
    pub period_start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub period_end: OffsetDateTime,
    pub gross_cents: i64,
    pub refunds_cents: i64,
    pub commission_cents: i64,
    pub net_cents: i64,
    /// `closed`, then `paid` once a payout took it.
    pub status: String,
    pub payout_id: Option<PayoutId>,
}

#[async_trait]
pub trait StatementStore: Send + Sync + 'static {
    /// Closes every (merchant, UTC day) with posted transfers that ended
    /// by `until` and has no statement yet, once however many runs race;
    /// returns the statements this call closed.
    async fn close_statements(
        &self,
        until: OffsetDateTime,
        ids: &IdGenerator,
        now: OffsetDateTime,
    ) -> Result<Vec<Statement>, StoreError>;

    /// The merchant's statements, newest period first, of periods that
    /// started before `before` (Unix ms).
    async fn statements(
        &self,
        merchant: MerchantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Statement>, StoreError>;

    /// Pays every merchant its closed statements, one payout each, when
    /// their net is positive and no more than its available balance (a
    /// refund asked since may hold part of it: those wait for the next
    /// run); each statement once however many runs race. Returns the
    /// payouts this call made.
    async fn pay_out(&self, ids: &IdGenerator, now: OffsetDateTime) -> Result<Vec<Payout>, StoreError>;

    /// The merchant's payouts, newest first, with ids below `before`.
    async fn payouts(
        &self,
        merchant: MerchantId,
        before: Option<PayoutId>,
        limit: u32,
    ) -> Result<Vec<Payout>, StoreError>;
}

/// A merchant's closed statements paid out: posted at once from its
/// payable account to the provider's clearing account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payout {
    pub id: PayoutId,
    pub merchant_id: MerchantId,
    pub amount_cents: i64,
    /// How many statements it paid.
    pub statements: u32,
    /// `paid`.
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// How long after a day ends a run may close it: postings stamped by a node
/// whose clock lags land in it first.
pub const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The start of the UTC day `at` falls in.
pub fn day_start(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_time(time::Time::MIDNIGHT)
}
