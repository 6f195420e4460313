//! Payouts' part of the store contract: a run pays each merchant's closed
//! statements once, however many runs race on however many nodes, never
//! beyond what the merchant's balance covers, and pays what it held back
//! once the balance covers it. On SQLite and on PostgreSQL.

use surge_domain::order::Order;
use surge_domain::payment::{EventKind, Payment, PaymentStore, ProviderEvent, RefundOutcome};
use surge_domain::settlement::{LedgerStore, Payout, StatementStore, TrialBalance};
use surge_domain::{IdGenerator, MerchantId};

use super::inventory::{line, order, placed_order, product};
use super::ledger::{payment, refund};
use super::{Backend, PgBackend, SqliteBackend, Store, at_ms};

contract!(racing_runs_pay_each_statement_once_and_only_what_the_balance_covers);

const DAY_MS: i64 = 86_400_000;
const DAY: i64 = 20_000;

async fn placed<S: Store>(store: &S, i: i64, merchant: i64) -> Order {
    product(store, i, merchant, 10).await;
    placed_order(store, i, 7, order(100 + i, merchant, vec![line(i, 1)])).await
}

/// Opens the payment of `order` and captures it on `day`.
async fn captured<S: Store>(store: &S, i: usize, order: &Order, day: i64) -> Payment {
    let opened = PaymentStore::insert(store, &payment(i, order)).await.expect("insert");
    let event = ProviderEvent {
        event_id: format!("cap-{i}"),
        kind: EventKind::PaymentSucceeded,
        provider_ref: opened.provider_ref.clone(),
        amount_cents: opened.amount_cents,
    };
    store.apply("sandbox", &event, at_ms(day * DAY_MS + 1_000)).await.expect("apply");
    opened
}

/// Closes the days before `day` and runs `runs` payouts at once, each on
/// its own handle (a node); every payout made.
async fn close_and_pay<B: Backend>(backend: &B, day: i64, runs: usize) -> Vec<Payout> {
    let ids = IdGenerator::new(1).expect("node id in range");
    let store = backend.open().await;
    store.close_statements(at_ms(day * DAY_MS), &ids, at_ms(day * DAY_MS)).await.expect("close");
    let mut nodes = Vec::new();
    for node in 0..runs {
        nodes.push((backend.open().await, IdGenerator::new(node as u16 + 2).expect("node id in range")));
    }
    let paid = futures::future::join_all(nodes.iter().map(|(node, ids)| node.pay_out(ids, at_ms(day * DAY_MS))));
    paid.await.into_iter().flat_map(|made| made.expect("pay out")).collect()
}

async fn racing_runs_pay_each_statement_once_and_only_what_the_balance_covers<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let (first, second) = (placed(&store, 1, 1).await, placed(&store, 2, 2).await);
    let one = captured(&store, 0, &first, DAY).await;
    let two = captured(&store, 1, &second, DAY).await;
    let net = |p: &Payment| p.amount_cents - p.commission_cents;

    let paid = close_and_pay(backend, DAY + 1, 4).await;
    let mut amounts: Vec<(i64, i64)> = paid.iter().map(|p| (p.merchant_id.get(), p.amount_cents)).collect();
    amounts.sort_unstable();
    assert_eq!(amounts, vec![(1, net(&one)), (2, net(&two))], "one payout per merchant: {paid:?}");
    for (merchant, payment) in [(1, &one), (2, &two)] {
        let owed = store.merchant_balance(MerchantId::new(merchant)).await.expect("balance");
        assert_eq!((owed.available_cents, owed.paid_out_cents), (0, net(payment)), "{owed:?}");
        let statements = store.statements(MerchantId::new(merchant), None, 10).await.expect("statements");
        let payout = paid.iter().find(|p| p.merchant_id.get() == merchant).map(|p| p.id);
        assert!(statements.iter().all(|s| s.status == "paid" && s.payout_id == payout), "{statements:?}");
    }

    // The next day merchant 2 sells again, but a refund of its first sale
    // is asked: what it is owed no longer covers that day's statement,
    // which waits until the refund fails.
    let third = placed(&store, 3, 2).await;
    let three = captured(&store, 2, &third, DAY + 1).await;
    let asked = refund(0, &two, two.amount_cents);
    assert!(matches!(store.insert_refund(&asked, None).await.expect("refund"), RefundOutcome::Created(_)));
    assert!(close_and_pay(backend, DAY + 2, 2).await.is_empty(), "the refund asked holds the payout back");
    let failed = ProviderEvent {
        event_id: "refund-failed".into(),
        kind: EventKind::RefundFailed,
        provider_ref: asked.provider_ref.clone(),
        amount_cents: asked.amount_cents,
    };
    store.apply("sandbox", &failed, at_ms((DAY + 2) * DAY_MS + 1_000)).await.expect("apply");
    let paid = close_and_pay(backend, DAY + 3, 2).await;
    assert_eq!(paid.iter().map(|p| (p.merchant_id.get(), p.amount_cents)).collect::<Vec<_>>(), vec![(2, net(&three))]);
    let owed = store.merchant_balance(MerchantId::new(2)).await.expect("balance");
    assert_eq!((owed.available_cents, owed.paid_out_cents), (0, net(&two) + net(&three)), "{owed:?}");
    let balance = TrialBalance::of(store.accounts().await.expect("accounts"));
    assert!(balance.balanced, "{balance:?}");
}
