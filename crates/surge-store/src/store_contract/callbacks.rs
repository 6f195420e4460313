//! Callbacks' part of the store contract, under concurrency: provider
//! events applied all at once (on SQLite they share group commits, each in
//! its savepoint; on PostgreSQL each in its transaction), a success
//! delivered twice and a stale failure beside it, an unknown reference and
//! a wrong amount among them: each success applies once, the dropped ones
//! leave nothing, and the ledger holds exactly the captures.

use surge_domain::OrderId;
use surge_domain::payment::{Applied, EventKind, PaymentStatus, PaymentStore, ProviderEvent};
use surge_domain::settlement::{LedgerStore, PROVIDER_CLEARING, TrialBalance};

use super::inventory::{line, order, placed_order, product};
use super::ledger::payment;
use super::{Backend, PgBackend, SqliteBackend, now_ms};

contract!(concurrent_callbacks_apply_each_event_once_and_drop_what_they_must);

const PAYMENTS: usize = 24;

async fn concurrent_callbacks_apply_each_event_once_and_drop_what_they_must<B: Backend>(backend: &B) {
    let store = backend.open().await;
    product(&store, 1, 1, PAYMENTS as i64).await;
    let mut opened = Vec::new();
    for i in 0..PAYMENTS {
        let placed = placed_order(&store, i as i64, 7, order(100 + i as i64, 1, vec![line(1, 1)])).await;
        opened.push(PaymentStore::insert(&store, &payment(i, &placed)).await.expect("insert"));
    }
    let event = |id: String, kind, provider_ref: &str, amount_cents| ProviderEvent {
        event_id: id,
        kind,
        provider_ref: provider_ref.to_owned(),
        amount_cents,
    };
    let mut events = Vec::new();
    for paid in &opened {
        let success =
            event(format!("ok-{}", paid.id), EventKind::PaymentSucceeded, &paid.provider_ref, paid.amount_cents);
        events.push(success.clone());
        events.push(event(format!("no-{}", paid.id), EventKind::PaymentFailed, &paid.provider_ref, paid.amount_cents));
        events.push(success);
        let wrong = event(format!("odd-{}", paid.id), EventKind::PaymentSucceeded, &paid.provider_ref, 1);
        events.push(wrong);
        events.push(event(format!("who-{}", paid.id), EventKind::PaymentSucceeded, "sb_nobody", 1));
    }
    let applied = futures::future::join_all(events.iter().map(|e| store.apply("sandbox", e, now_ms()))).await;
    let applied: Vec<Applied> = applied.into_iter().map(|a| a.expect("apply")).collect();

    for (i, paid) in opened.iter().enumerate() {
        let of = |k: usize| &applied[i * 5 + k];
        let repeats = [of(0), of(2)].iter().filter(|a| matches!(a, Applied::Repeat(_))).count();
        assert_eq!(repeats, 1, "one delivery of the success applies: {:?} {:?}", of(0), of(2));
        assert!(matches!(of(3), Applied::AmountMismatch(_)), "{:?}", of(3));
        assert!(matches!(of(4), Applied::UnknownRef), "{:?}", of(4));
        let stored = PaymentStore::get(&store, paid.id).await.expect("get").expect("exists");
        assert_eq!(stored.status, PaymentStatus::Succeeded, "a success wins whatever came first");
        let order = surge_domain::order::OrderStore::get(&store, paid.order_id).await.expect("get").expect("order");
        assert_eq!(order.status, surge_domain::order::OrderStatus::Paid, "order {}", OrderId::get(order.id));
    }
    // The wrong amount was not recorded as seen: its id applies once fixed.
    let fixed = event(
        format!("odd-{}", opened[0].id),
        EventKind::PaymentSucceeded,
        &opened[0].provider_ref,
        opened[0].amount_cents,
    );
    assert!(matches!(store.apply("sandbox", &fixed, now_ms()).await.expect("apply"), Applied::Stale(_)));
    let balance = TrialBalance::of(store.accounts().await.expect("accounts"));
    assert!(balance.balanced, "{balance:?}");
    let clearing = balance.accounts.iter().find(|a| a.name == PROVIDER_CLEARING).expect("clearing");
    assert_eq!(clearing.debit_cents, opened.iter().map(|p| p.amount_cents).sum::<i64>(), "each captured once");
}
