//! The outbox's part of the store contract: every change another context
//! must hear of writes its event in its own transaction, once however often
//! it is repeated, and nothing when it does not happen; relays claim
//! disjoint rows by lease; the inbox remembers what a consumer applied.
//! Each case runs on SQLite and on PostgreSQL, as the rest of the contract.

use std::collections::BTreeSet;
use std::time::Duration;

use surge_domain::order::{CheckoutStore, NewCheckout, OrderStatus, OrderStore, Placed};
use surge_domain::outbox::{Inbox, OutboxEntry, OutboxStore};
use surge_domain::payment::{EventKind, PaymentStore, ProviderEvent, RefundOutcome};
use surge_domain::{OrderId, ProductId};

use super::inventory::{address, line, order, product};
use super::ledger::{payment, refund};
use super::{Backend, PgBackend, SqliteBackend, Store, now_ms, request, with_sale};

contract!(
    every_change_writes_its_event_once_and_a_change_that_did_not_happen_writes_none,
    a_claim_keeps_other_relays_away_until_its_lease_ends_and_published_events_are_pruned,
    relays_on_two_nodes_claim_disjoint_events,
    the_inbox_remembers_what_each_consumer_applied,
);

const LEASE: Duration = Duration::from_secs(10);

/// Claims everything unpublished (far past any lease) and marks it
/// published; the ids of the events, in outbox order.
async fn drain<S: Store>(store: &S, now: i64) -> Vec<String> {
    let claimed = store.claim(1_000, LEASE, now).await.expect("claim");
    let seqs: Vec<i64> = claimed.iter().map(|entry| entry.seq).collect();
    store.mark_published(&seqs, now).await.expect("published");
    claimed.into_iter().map(|entry| entry.event_id).collect()
}

fn decoded(entry: &OutboxEntry) -> String {
    let record = crate::events_wire::decode(entry.payload.as_bytes()).expect("readable");
    assert_eq!(record.event_id, entry.event_id, "the row's id is the payload's");
    record.event_id
}

async fn every_change_writes_its_event_once_and_a_change_that_did_not_happen_writes_none<B: Backend>(backend: &B) {
    let store = backend.open().await;
    // A flash sale's orders, one delivered twice: one event each.
    with_sale(&store, 5, 5).await;
    let batch = [request(1, 7), request(2, 8)];
    let pay_by = now_ms() + time::Duration::HOUR;
    store.create_requested(&batch, pay_by, now_ms()).await.expect("create");
    store.create_requested(&batch[..1], pay_by, now_ms()).await.expect("redelivered");
    assert_eq!(drain(&store, 1).await, vec!["order_placed:1", "order_placed:2"]);

    // A checkout short of stock writes no order and no event; one that
    // goes through, one per order.
    product(&store, 2, 1, 5).await;
    product(&store, 3, 2, 5).await;
    let place = |orders: Vec<_>, checkout: i64| {
        let store = &store;
        async move {
            let new = NewCheckout {
                checkout_id: checkout,
                user: surge_domain::UserId::new(9),
                orders,
                address: address(),
                idempotency_key: None,
                pay_by,
                now: now_ms(),
            };
            store.place(&new).await.expect("place")
        }
    };
    let short = place(vec![order(20, 1, vec![line(2, 9)])], 1).await;
    assert_eq!(short, Placed::InsufficientStock(ProductId::new(2)));
    assert!(drain(&store, 2).await.is_empty(), "no order, no event");
    let Placed::Created(orders) = place(vec![order(21, 1, vec![line(2, 1)]), order(22, 2, vec![line(3, 1)])], 2).await
    else {
        panic!("placed")
    };
    assert_eq!(drain(&store, 3).await, vec!["order_placed:21", "order_placed:22"]);

    // A transition that happens tells; one that does not, nothing.
    let cancel = |id: i64| store.transition(OrderId::new(id), OrderStatus::Created, OrderStatus::Cancelled, now_ms());
    assert!(cancel(2).await.expect("cancel").is_some());
    assert!(cancel(2).await.expect("again").is_none());
    assert_eq!(drain(&store, 4).await, vec!["order_cancelled:2"]);

    // A callback captured twice, and a refund through: the capture tells
    // the payment and the order once, the refund once.
    let opened = PaymentStore::insert(&store, &payment(0, &orders[0])).await.expect("payment");
    let event = |id: &str, kind, provider_ref: &str, amount_cents| ProviderEvent {
        event_id: id.to_owned(),
        kind,
        provider_ref: provider_ref.to_owned(),
        amount_cents,
    };
    let captured = event("e1", EventKind::PaymentSucceeded, &opened.provider_ref, opened.amount_cents);
    store.apply("sandbox", &captured, now_ms()).await.expect("captured");
    store.apply("sandbox", &captured, now_ms()).await.expect("repeated");
    let again = event("e2", EventKind::PaymentSucceeded, &opened.provider_ref, opened.amount_cents);
    store.apply("sandbox", &again, now_ms()).await.expect("another event, same capture");
    let paid = [format!("order_paid:{}", orders[0].id), format!("payment_succeeded:{}", opened.id)];
    assert_eq!(drain(&store, 5).await, paid);
    let asked = refund(0, &opened, 40);
    let RefundOutcome::Created(asked) = store.insert_refund(&asked, None).await.expect("refund") else {
        panic!("refund created")
    };
    assert!(drain(&store, 6).await.is_empty(), "a refund asked for is not a refund through");
    let through = event("r1", EventKind::RefundSucceeded, &asked.provider_ref, 40);
    store.apply("sandbox", &through, now_ms()).await.expect("refunded");
    store.apply("sandbox", &through, now_ms()).await.expect("repeated");
    assert_eq!(drain(&store, 7).await, vec![format!("refund_succeeded:{}", asked.id)]);

    // A payment refused: told once.
    let second = PaymentStore::insert(&store, &payment(1, &orders[1])).await.expect("payment");
    let refused = event("f1", EventKind::PaymentFailed, &second.provider_ref, second.amount_cents);
    store.apply("sandbox", &refused, now_ms()).await.expect("failed");
    assert_eq!(drain(&store, 8).await, vec![format!("payment_failed:{}", second.id)]);
}

async fn a_claim_keeps_other_relays_away_until_its_lease_ends_and_published_events_are_pruned<B: Backend>(backend: &B) {
    let store = backend.open().await;
    with_sale(&store, 5, 5).await;
    let pay_by = now_ms() + time::Duration::HOUR;
    store.create_requested(&[request(1, 7), request(2, 8), request(3, 9)], pay_by, now_ms()).await.expect("create");
    assert_eq!(store.backlog().await.expect("backlog").unpublished, 3);

    let first = store.claim(2, LEASE, 1_000).await.expect("claim");
    assert_eq!(first.iter().map(decoded).collect::<Vec<_>>(), vec!["order_placed:1", "order_placed:2"]);
    assert!(first[0].seq < first[1].seq, "oldest first");
    let second = store.claim(10, LEASE, 1_000).await.expect("claim");
    assert_eq!(second.iter().map(decoded).collect::<Vec<_>>(), vec!["order_placed:3"], "the rest only");
    assert!(store.claim(10, LEASE, 10_999).await.expect("claim").is_empty(), "all claimed, leases running");

    // The first relay published its two; the second died with its claim.
    store.mark_published(&[first[0].seq, first[1].seq], 2_000).await.expect("published");
    let backlog = store.backlog().await.expect("backlog");
    assert_eq!(backlog.unpublished, 1);
    let expired = store.claim(10, LEASE, 11_001).await.expect("claim");
    assert_eq!(expired.iter().map(decoded).collect::<Vec<_>>(), vec!["order_placed:3"], "its lease ended");
    store.mark_published(&[expired[0].seq], 12_000).await.expect("published");
    assert_eq!(store.backlog().await.expect("backlog").unpublished, 0);
    assert!(store.claim(10, LEASE, 99_000).await.expect("claim").is_empty(), "published is never claimed");

    assert_eq!(store.prune(2_001).await.expect("prune"), 2, "published before then");
    assert_eq!(store.prune(12_001).await.expect("prune"), 1);
}

async fn relays_on_two_nodes_claim_disjoint_events<B: Backend>(backend: &B) {
    let (one, two) = (backend.open().await, backend.open().await);
    with_sale(&one, 200, 1).await;
    let requests: Vec<_> = (1..=200).map(|id| request(id, id)).collect();
    one.create_requested(&requests, now_ms() + time::Duration::HOUR, now_ms()).await.expect("create");
    let claim = |store| async move {
        let mut mine = Vec::new();
        loop {
            let claimed = OutboxStore::claim(store, 7, LEASE, 1_000).await.expect("claim");
            if claimed.is_empty() {
                return mine;
            }
            mine.extend(claimed.into_iter().map(|entry| entry.event_id));
        }
    };
    let (a, b) = tokio::join!(claim(&one), claim(&two));
    let union: BTreeSet<&String> = a.iter().chain(&b).collect();
    assert_eq!(a.len() + b.len(), 200, "no event claimed twice");
    assert_eq!(union.len(), 200, "every event claimed");
}

async fn the_inbox_remembers_what_each_consumer_applied<B: Backend>(backend: &B) {
    let store = backend.open().await;
    assert!(!store.seen("notifications", "order_placed:1").await.expect("seen"));
    let placed = |ids: &[i64]| ids.iter().map(|id| format!("order_placed:{id}")).collect::<Vec<_>>();
    store.record("notifications", &placed(&[1, 2]), 1_000).await.expect("record");
    store.record("notifications", &placed(&[1, 3]), 1_001).await.expect("a repeat is no error");
    assert!(store.seen("notifications", "order_placed:3").await.expect("seen"), "the rest of a batch with a repeat");
    assert!(store.seen("notifications", "order_placed:1").await.expect("seen"));
    assert!(!store.seen("fulfilment", "order_placed:1").await.expect("seen"), "per consumer");
    let reopened = backend.open().await;
    assert!(reopened.seen("notifications", "order_placed:1").await.expect("seen"), "durable");
    let mut among: Vec<String> =
        reopened.seen_among("notifications", &placed(&[1, 2, 3, 4])).await.expect("seen").into_iter().collect();
    among.sort();
    assert_eq!(among, placed(&[1, 2, 3]), "one read for a batch: what was applied, of what was asked");
    assert!(reopened.seen_among("fulfilment", &placed(&[1, 2])).await.expect("seen").is_empty(), "per consumer");
    assert!(reopened.seen_among("notifications", &[]).await.expect("empty").is_empty());
}
