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
}

impl Settlement {
    pub fn new(ledger: Arc<dyn LedgerStore>) -> Self {
        Self { ledger }
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
