//! The settlement service: which days a run closes (none within the close
//! grace), who may run, pay out and read what, and a reconciliation that
//! adds the provider's report to the books' own pass. Closing, paying out
//! and the ledger's sums are proven against SQLite and PostgreSQL in the
//! store contract; here the stores record what they are asked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use surge_domain::ids::PayoutId;
use surge_domain::payment::{PaymentStatus, ProviderBooks, ProviderRecord};
use surge_domain::settlement::{
    AccountTotals, LedgerStore, MerchantBalance, Mismatch, MismatchKind, Payout, Reconciliation, ReconciliationStore,
    Settlement, SettlementError, SettlementPorts, Statement, StatementStore,
};
use surge_domain::{Actor, IdGenerator, MerchantId, OrderId, StoreError};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::clock::ManualClock;
use crate::world::{admin, customer, merchant};

/// Records every question; answers with nothing but what a test sets.
#[derive(Default)]
struct Clerk {
    closed_until: Mutex<Vec<OffsetDateTime>>,
    paid_out: Mutex<u32>,
    statements_of: Mutex<Vec<MerchantId>>,
    pass: Mutex<Reconciliation>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait]
impl StatementStore for Clerk {
    async fn close_statements(
        &self,
        until: OffsetDateTime,
        _ids: &IdGenerator,
        _now: OffsetDateTime,
    ) -> Result<Vec<Statement>, StoreError> {
        lock(&self.closed_until).push(until);
        Ok(Vec::new())
    }

    async fn statements(&self, merchant: MerchantId, _: Option<i64>, _: u32) -> Result<Vec<Statement>, StoreError> {
        lock(&self.statements_of).push(merchant);
        Ok(Vec::new())
    }

    async fn pay_out(&self, _ids: &IdGenerator, _now: OffsetDateTime) -> Result<Vec<Payout>, StoreError> {
        *lock(&self.paid_out) += 1;
        Ok(Vec::new())
    }

    async fn payouts(&self, _: MerchantId, _: Option<PayoutId>, _: u32) -> Result<Vec<Payout>, StoreError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl ReconciliationStore for Clerk {
    async fn reconcile(&self, _limit: u32) -> Result<Reconciliation, StoreError> {
        Ok(lock(&self.pass).clone())
    }
}

#[async_trait]
impl LedgerStore for Clerk {
    async fn accounts(&self) -> Result<Vec<AccountTotals>, StoreError> {
        Ok(Vec::new())
    }

    async fn merchant_balance(&self, _merchant: MerchantId) -> Result<MerchantBalance, StoreError> {
        Ok(MerchantBalance { pending_cents: 0, available_cents: 0, paid_out_cents: 0 })
    }
}

fn settlement_at(at: OffsetDateTime) -> (Settlement, Arc<Clerk>, Arc<ManualClock>) {
    let (clerk, clock) = (Arc::new(Clerk::default()), Arc::new(ManualClock::starting_at(at)));
    let ports = SettlementPorts { ledger: clerk.clone(), reconciliation: clerk.clone(), statements: clerk.clone() };
    let ids = Arc::new(IdGenerator::new(4).expect("node id in range"));
    (Settlement::new(ports, ids, clock.clone()), clerk, clock)
}

#[tokio::test]
async fn a_run_closes_the_days_that_ended_before_the_grace_and_never_later_than_asked() {
    let (settlement, clerk, clock) = settlement_at(datetime!(2030-01-02 00:03 UTC));
    let closed_until = || lock(&clerk.closed_until).last().copied();

    settlement.run(&admin(), None).await.expect("run");
    assert_eq!(closed_until(), Some(datetime!(2030-01-01 00:00 UTC)), "yesterday is still in its grace");
    clock.advance(Duration::from_secs(3 * 60));
    settlement.close_due(None).await.expect("scheduled run");
    assert_eq!(closed_until(), Some(datetime!(2030-01-02 00:00 UTC)), "yesterday has ended 6 minutes ago");

    let asked = Some(datetime!(2029-12-20 15:00 UTC));
    settlement.run(&admin(), asked).await.expect("run until");
    assert_eq!(closed_until(), Some(datetime!(2029-12-20 00:00 UTC)), "the start of the day asked for");
    settlement.run(&admin(), Some(datetime!(2031-01-01 00:00 UTC))).await.expect("run until later");
    assert_eq!(closed_until(), Some(datetime!(2030-01-02 00:00 UTC)), "never a day still in its grace");
}

#[tokio::test]
async fn only_an_admin_runs_pays_out_or_reconciles_and_a_merchant_reads_its_own_books() {
    let (settlement, clerk, _) = settlement_at(datetime!(2030-01-02 12:00 UTC));
    for actor in [customer(1), merchant(2), Actor::Courier(surge_domain::CourierId::new(3))] {
        assert!(matches!(settlement.run(&actor, None).await, Err(SettlementError::Forbidden(_))));
        assert!(matches!(settlement.pay_out(&actor).await, Err(SettlementError::Forbidden(_))));
        assert!(matches!(settlement.reconcile(&actor, None).await, Err(SettlementError::Forbidden(_))));
        assert!(matches!(settlement.trial_balance(&actor).await, Err(SettlementError::Forbidden(_))));
    }
    assert!(lock(&clerk.closed_until).is_empty() && *lock(&clerk.paid_out) == 0, "nothing reached the books");

    let (own, other) = (MerchantId::new(2), MerchantId::new(5));
    assert!(settlement.statements(&merchant(2), own, None, 10).await.is_ok());
    assert!(matches!(settlement.statements(&merchant(2), other, None, 10).await, Err(SettlementError::Forbidden(_))));
    assert!(matches!(settlement.merchant_balance(&customer(1), own).await, Err(SettlementError::Forbidden(_))));
    assert!(settlement.statements(&admin(), other, None, 10).await.is_ok());
    assert_eq!(*lock(&clerk.statements_of), vec![own, other]);
    settlement.pay_out(&admin()).await.expect("payouts");
    assert_eq!(*lock(&clerk.paid_out), 1);
}

#[tokio::test]
async fn a_reconciliation_adds_the_providers_report_to_the_books_own_pass() {
    let (settlement, clerk, _) = settlement_at(datetime!(2030-01-02 12:00 UTC));
    let books_found =
        Mismatch { kind: MismatchKind::CapturedTwice, order_id: Some(OrderId::new(7)), detail: "x".into() };
    *lock(&clerk.pass) = Reconciliation { checked: 10, mismatches: vec![books_found.clone()] };
    let record = |provider_ref: &str, amount_cents, order: Option<i64>| ProviderRecord {
        provider_ref: provider_ref.into(),
        amount_cents,
        status: PaymentStatus::Succeeded,
        order_id: order.map(OrderId::new),
    };
    let provider = ProviderBooks {
        ours: vec![record("sb_1", 500, Some(1))],
        theirs: vec![record("sb_1", 500, Some(1)), record("sb_9", 300, None)],
    };

    let without = settlement.reconcile(&admin(), None).await.expect("pass");
    assert_eq!((without.checked, without.mismatches.clone()), (10, vec![books_found.clone()]));
    let with = settlement.reconcile(&admin(), Some(provider)).await.expect("pass");
    assert_eq!(with.checked, 12, "the provider's records are counted too");
    let kinds: Vec<MismatchKind> = with.mismatches.iter().map(|mismatch| mismatch.kind).collect();
    assert_eq!(kinds, vec![MismatchKind::CapturedTwice, MismatchKind::UnknownToPlatform]);
}
