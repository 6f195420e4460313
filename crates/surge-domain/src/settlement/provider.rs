//! The provider's report against the platform's books: what a provider
//! decided that the platform never applied (a callback lost for good),
//! what the platform holds decided that the provider does not (a callback
//! nobody sent), money the provider captured for a payment the platform has
//! no record of, and amounts that differ.

use std::collections::HashMap;

use super::{Mismatch, MismatchKind};
use crate::payment::{PaymentStatus, ProviderBooks, ProviderRecord};

/// Every mismatch between the two sides, at most `limit` of each kind.
pub fn provider_mismatches(books: &ProviderBooks, limit: usize) -> Vec<Mismatch> {
    let by_ref = |records: &[ProviderRecord]| -> HashMap<String, ProviderRecord> {
        records.iter().map(|record| (record.provider_ref.clone(), record.clone())).collect()
    };
    let (ours, theirs) = (by_ref(&books.ours), by_ref(&books.theirs));
    let mut found = Vec::new();
    for their in books.theirs.iter() {
        match ours.get(&their.provider_ref) {
            None if their.status == PaymentStatus::Succeeded => found.push(mismatch(
                MismatchKind::UnknownToPlatform,
                None,
                format!(
                    "the provider captured {} cents under {} and the platform has no record of it",
                    their.amount_cents, their.provider_ref
                ),
            )),
            None => {}
            Some(our) if our.amount_cents != their.amount_cents => found.push(mismatch(
                MismatchKind::ProviderAmountDiffers,
                our.order_id,
                format!(
                    "{}: {} cents here, {} at the provider",
                    our.provider_ref, our.amount_cents, their.amount_cents
                ),
            )),
            Some(our) if their.status != PaymentStatus::Pending && our.status != their.status => found.push(mismatch(
                MismatchKind::ProviderDecisionNotApplied,
                our.order_id,
                format!(
                    "{}: {} at the provider, {} here",
                    our.provider_ref,
                    their.status.as_str(),
                    our.status.as_str()
                ),
            )),
            Some(_) => {}
        }
    }
    for our in books.ours.iter().filter(|our| our.status != PaymentStatus::Pending) {
        if theirs.get(&our.provider_ref).is_none_or(|their| their.status == PaymentStatus::Pending) {
            found.push(mismatch(
                MismatchKind::UnknownToProvider,
                our.order_id,
                format!("{}: {} here, not decided at the provider", our.provider_ref, our.status.as_str()),
            ));
        }
    }
    let mut per_kind: HashMap<MismatchKind, usize> = HashMap::new();
    found.retain(|mismatch| {
        let seen = per_kind.entry(mismatch.kind).or_default();
        *seen += 1;
        *seen <= limit
    });
    found
}

fn mismatch(kind: MismatchKind, order_id: Option<crate::ids::OrderId>, detail: String) -> Mismatch {
    Mismatch { kind, order_id, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OrderId;

    fn record(provider_ref: &str, amount_cents: i64, status: PaymentStatus, order: Option<i64>) -> ProviderRecord {
        ProviderRecord { provider_ref: provider_ref.into(), amount_cents, status, order_id: order.map(OrderId::new) }
    }

    #[test]
    fn each_disagreement_is_named_and_agreement_is_silent() {
        use PaymentStatus::{Failed, Pending, Succeeded};
        let books = ProviderBooks {
            ours: vec![
                record("agreed", 100, Succeeded, Some(1)),
                record("lost-callback", 100, Pending, Some(2)),
                record("forged", 100, Succeeded, Some(3)),
                record("other-amount", 100, Succeeded, Some(4)),
                record("abandoned", 100, Pending, Some(5)),
                record("failed-both", 100, Failed, Some(6)),
            ],
            theirs: vec![
                record("agreed", 100, Succeeded, None),
                record("lost-callback", 100, Succeeded, None),
                record("other-amount", 90, Succeeded, None),
                record("abandoned", 100, Pending, None),
                record("failed-both", 100, Failed, None),
                record("never-stored", 70, Succeeded, None),
                record("never-stored-pending", 70, Pending, None),
            ],
        };
        let found: Vec<(MismatchKind, Option<OrderId>)> =
            provider_mismatches(&books, 10).into_iter().map(|m| (m.kind, m.order_id)).collect();
        assert_eq!(
            found,
            vec![
                (MismatchKind::ProviderDecisionNotApplied, Some(OrderId::new(2))),
                (MismatchKind::ProviderAmountDiffers, Some(OrderId::new(4))),
                (MismatchKind::UnknownToPlatform, None),
                (MismatchKind::UnknownToProvider, Some(OrderId::new(3))),
            ]
        );
        assert_eq!(provider_mismatches(&ProviderBooks::default(), 10), vec![]);
    }
}
