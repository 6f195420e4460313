//! The ledger's part of the store contract: whatever sequence of payments
//! opened, succeeded, failed and redelivered, and of refunds asked,
//! succeeded and failed, the trial balance balances, no payment is refunded
//! beyond what it captured, every account holds what the outcomes say, and
//! daily settlement runs with payouts between them pay out exactly the net
//! of the statements they paid (a property test, on SQLite; the API tests
//! run the same paths on PostgreSQL).

use std::collections::HashMap;

use proptest::prelude::*;
use surge_domain::IdGenerator;
use surge_domain::payment::{EventKind, Payment, PaymentStatus, PaymentStore, ProviderEvent, Refund, RefundOutcome};
use surge_domain::settlement::{
    LedgerStore, PLATFORM_COMMISSION, PROVIDER_CLEARING, StatementStore, TrialBalance, merchant_payable,
};
use surge_domain::{MerchantId, OrderId, PaymentId, RefundId};

use super::inventory::{line, order, placed_order, product};
use super::{Backend, SqliteBackend, at_ms};

/// One step: open the payment of order `i`, deliver event `event` of kind
/// `succeeded` about it (event ids repeat: redeliveries), ask to refund
/// `cents` of it, deliver an event about the `nth` refund asked, or end the
/// day: close its statements and pay them out.
#[derive(Debug, Clone)]
enum Step {
    Open(usize),
    Event { order: usize, event: u8, succeeded: bool },
    Refund { order: usize, cents: i64 },
    RefundEvent { nth: usize, succeeded: bool },
    EndOfDay,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        (0..4_usize).prop_map(Step::Open),
        (0..4_usize, 0..6_u8, any::<bool>()).prop_map(|(order, event, succeeded)| Step::Event {
            order,
            event,
            succeeded
        }),
        (0..4_usize, 1..300_i64).prop_map(|(order, cents)| Step::Refund { order, cents }),
        (0..6_usize, any::<bool>()).prop_map(|(nth, succeeded)| Step::RefundEvent { nth, succeeded }),
        Just(Step::EndOfDay),
    ];
    prop::collection::vec(step, 0..32)
}

pub(super) fn refund(nth: usize, payment: &Payment, cents: i64) -> Refund {
    let id = RefundId::new(5_000 + nth as i64);
    Refund {
        id,
        payment_id: payment.id,
        order_id: payment.order_id,
        merchant_id: payment.merchant_id,
        amount_cents: cents,
        reason: "damaged".into(),
        status: PaymentStatus::Pending,
        provider: "sandbox".into(),
        provider_ref: format!("sbr_{id}"),
        created_at: at_ms(2_000),
        updated_at: at_ms(2_000),
    }
}

pub(super) fn payment(i: usize, order: &surge_domain::order::Order) -> Payment {
    let id = PaymentId::new(1_000 + i as i64);
    Payment {
        id,
        order_id: order.id,
        user_id: order.user_id,
        merchant_id: order.merchant_id,
        amount_cents: order.amount_cents,
        commission_cents: order.amount_cents * (i as i64 + 1) / 100,
        refunded_cents: 0,
        status: PaymentStatus::Pending,
        provider: "sandbox".into(),
        provider_ref: format!("sb_{id}"),
        pay_url: "http://sandbox.invalid".into(),
        created_at: at_ms(1_000),
        updated_at: at_ms(1_000),
    }
}

async fn run(steps: Vec<Step>) {
    let backend = SqliteBackend::new();
    let store = backend.open().await;
    let mut orders = Vec::new();
    for i in 0..4_i64 {
        product(&store, i + 1, (i % 2) + 1, 10).await;
        orders.push(placed_order(&store, i, 7, order(100 + i, (i % 2) + 1, vec![line(i + 1, (i + 1) as u32)])).await);
    }
    // The model: each opened payment's status, and each refund's, by the
    // rules of the domain.
    let mut model: HashMap<usize, (Payment, PaymentStatus)> = HashMap::new();
    let mut refunds: Vec<(Refund, PaymentStatus)> = Vec::new();
    // Events land on the day `day` (in days since the epoch), a second
    // apart; the end of a day closes it and pays it out.
    const DAY_MS: i64 = 86_400_000;
    let (mut day, mut tick) = (20_000_i64, 0_i64);
    let mut stamp = |day: i64| {
        tick += 1_000;
        at_ms(day * DAY_MS + tick % DAY_MS)
    };
    let ids = IdGenerator::new(1).expect("node id in range");
    let mut paid_out = 0;
    for step in steps {
        match step {
            Step::EndOfDay => {
                day += 1;
                store.close_statements(at_ms(day * DAY_MS), &ids, at_ms(day * DAY_MS)).await.expect("close");
                let payouts = store.pay_out(&ids, at_ms(day * DAY_MS)).await.expect("pay out");
                paid_out += payouts.iter().map(|payout| payout.amount_cents).sum::<i64>();
                let again = store.pay_out(&ids, at_ms(day * DAY_MS)).await.expect("pay out");
                assert!(again.is_empty(), "a statement is paid once: {again:?}");
                for merchant in [1, 2].map(MerchantId::new) {
                    let left = store.statements(merchant, None, 1_000).await.expect("statements");
                    let unpaid: i64 = left.iter().filter(|s| s.status == "closed").map(|s| s.net_cents).sum();
                    let owed = store.merchant_balance(merchant).await.expect("balance");
                    let paid = payouts.iter().any(|payout| payout.merchant_id == merchant);
                    assert!(!paid || owed.available_cents >= 0, "a payout never overdraws: {owed:?}");
                    assert!(unpaid <= 0 || unpaid > owed.available_cents, "{unpaid} payable of {owed:?} left unpaid");
                }
            }
            Step::Refund { order: i, cents } => {
                let Some((paid, PaymentStatus::Succeeded)) = model.get(&i) else { continue };
                let held: i64 = refunds
                    .iter()
                    .filter(|(r, s)| r.payment_id == paid.id && *s != PaymentStatus::Failed)
                    .map(|(r, _)| r.amount_cents)
                    .sum();
                let asked = refund(refunds.len(), paid, cents);
                let outcome = store.insert_refund(&asked, None).await.expect("refund");
                if held + cents <= paid.amount_cents {
                    assert!(matches!(outcome, RefundOutcome::Created(_)), "{outcome:?}");
                    refunds.push((asked, PaymentStatus::Pending));
                } else {
                    let refundable_cents = paid.amount_cents - held;
                    assert_eq!(outcome, RefundOutcome::ExceedsPayment { refundable_cents });
                }
            }
            Step::RefundEvent { nth, succeeded } => {
                let Some((asked, status)) = refunds.get_mut(nth) else { continue };
                let kind = if succeeded { EventKind::RefundSucceeded } else { EventKind::RefundFailed };
                let event = ProviderEvent {
                    event_id: format!("r{nth}-{succeeded}"),
                    kind,
                    provider_ref: asked.provider_ref.clone(),
                    amount_cents: asked.amount_cents,
                };
                store.apply("sandbox", &event, stamp(day)).await.expect("apply refund");
                if *status == PaymentStatus::Pending {
                    *status = if succeeded { PaymentStatus::Succeeded } else { PaymentStatus::Failed };
                }
            }
            Step::Open(i) => {
                if let std::collections::hash_map::Entry::Vacant(slot) = model.entry(i) {
                    let opened = PaymentStore::insert(&store, &payment(i, &orders[i])).await.expect("insert");
                    slot.insert((opened, PaymentStatus::Pending));
                }
            }
            Step::Event { order: i, event, succeeded } => {
                let Some((opened, status)) = model.get_mut(&i) else { continue };
                let kind = if succeeded { EventKind::PaymentSucceeded } else { EventKind::PaymentFailed };
                // An event id names one event: a redelivery repeats its kind.
                let event_id = format!("{i}-{event}-{succeeded}");
                let event = ProviderEvent {
                    event_id,
                    kind,
                    provider_ref: opened.provider_ref.clone(),
                    amount_cents: opened.amount_cents,
                };
                store.apply("sandbox", &event, stamp(day)).await.expect("apply");
                *status = match (*status, succeeded) {
                    (_, true) => PaymentStatus::Succeeded,
                    (PaymentStatus::Pending, false) => PaymentStatus::Failed,
                    (kept, false) => kept,
                };
            }
        }
    }
    let balance = TrialBalance::of(store.accounts().await.expect("accounts"));
    assert!(balance.balanced, "{balance:?}");
    let totals: HashMap<String, (i64, i64)> =
        balance.accounts.iter().map(|a| (a.name.clone(), (a.debit_cents, a.credit_cents))).collect();
    let captured = |merchant: Option<i64>| -> (i64, i64) {
        model
            .values()
            .filter(|(p, s)| *s == PaymentStatus::Succeeded && merchant.is_none_or(|m| p.merchant_id.get() == m))
            .fold((0, 0), |(amount, commission), (p, _)| (amount + p.amount_cents, commission + p.commission_cents))
    };
    let refunded = |merchant: Option<i64>, status: PaymentStatus| -> i64 {
        refunds
            .iter()
            .filter(|(r, s)| *s == status && merchant.is_none_or(|m| r.merchant_id.get() == m))
            .map(|(r, _)| r.amount_cents)
            .sum()
    };
    let (amount, commission) = captured(None);
    let returned = refunded(None, PaymentStatus::Succeeded);
    assert_eq!(totals.get(PROVIDER_CLEARING).copied().unwrap_or_default(), (amount, returned + paid_out));
    assert_eq!(totals.get(PLATFORM_COMMISSION).copied().unwrap_or_default(), (0, commission));
    for merchant in [1, 2] {
        let (amount, commission) = captured(Some(merchant));
        let returned = refunded(Some(merchant), PaymentStatus::Succeeded);
        let payable = merchant_payable(MerchantId::new(merchant));
        let owed = store.merchant_balance(MerchantId::new(merchant)).await.expect("balance");
        let statements = store.statements(MerchantId::new(merchant), None, 1_000).await.expect("statements");
        let paid: i64 = statements.iter().filter(|s| s.status == "paid").map(|s| s.net_cents).sum();
        assert_eq!(owed.paid_out_cents, paid, "payouts pay the net of the statements they paid");
        assert!(statements.iter().all(|s| (s.status == "paid") == s.payout_id.is_some()), "{statements:?}");
        let out = owed.paid_out_cents;
        let debits = commission + returned + out;
        assert_eq!(totals.get(&payable).copied().unwrap_or_default(), (debits, amount), "{payable}");
        let pending: i64 = model
            .values()
            .filter(|(p, s)| *s == PaymentStatus::Pending && p.merchant_id.get() == merchant)
            .map(|(p, _)| p.amount_cents)
            .sum::<i64>();
        let available = amount - commission - returned - refunded(Some(merchant), PaymentStatus::Pending) - out;
        assert_eq!((owed.pending_cents, owed.available_cents), (pending, available), "{payable}");
    }
    for (opened, status) in model.values() {
        let stored = PaymentStore::get(&store, opened.id).await.expect("get").expect("exists");
        assert_eq!(stored.status, *status, "{:?}", opened.id);
        let held: i64 = refunds
            .iter()
            .filter(|(r, s)| r.payment_id == opened.id && *s != PaymentStatus::Failed)
            .map(|(r, _)| r.amount_cents)
            .sum();
        assert_eq!(stored.refunded_cents, held, "never more than captured: {stored:?}");
        assert!(stored.refunded_cents <= stored.amount_cents);
        let order = surge_domain::order::OrderStore::get(&store, opened.order_id).await.expect("get").expect("order");
        let paid = order.status == surge_domain::order::OrderStatus::Paid;
        assert_eq!(paid, *status == PaymentStatus::Succeeded, "order {} follows its payment", OrderId::get(order.id));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_payment_events_keeps_the_ledger_balanced_and_true(steps in steps()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(run(steps));
    }
}
