//! Domain events as they rest in the outbox and travel on the bus: a
//! versioned JSON envelope of the store's own, so that the domain type can
//! change shape without breaking what an outbox or a bus already holds (a
//! consumer of an older version reads what a newer one wrote as long as
//! fields are only added, with defaults). `version` is 1; a breaking
//! change bumps it and keeps reading 1.

use serde::{Deserialize, Serialize};
use surge_domain::fulfilment::ScanKind;
use surge_domain::order::OrderKind;
use surge_domain::outbox::{DomainEvent, EventRecord};
use surge_domain::{MerchantId, OrderId, PaymentId, RefundId, ReturnId, UserId};

pub const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    event_id: String,
    version: u32,
    /// Unix milliseconds.
    occurred_at_ms: i64,
    event: WireEvent,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    OrderPlaced { order_id: OrderId, user_id: UserId, merchant_id: MerchantId, amount_cents: i64, kind: String },
    OrderPaid { order_id: OrderId, user_id: UserId, merchant_id: MerchantId, amount_cents: i64 },
    OrderCancelled { order_id: OrderId, user_id: UserId, merchant_id: MerchantId },
    PaymentSucceeded { payment_id: PaymentId, order_id: OrderId, amount_cents: i64 },
    PaymentFailed { payment_id: PaymentId, order_id: OrderId, amount_cents: i64 },
    RefundSucceeded { refund_id: RefundId, payment_id: PaymentId, order_id: OrderId, amount_cents: i64 },
    RefundFailed { refund_id: RefundId, payment_id: PaymentId, order_id: OrderId, amount_cents: i64 },
    ReturnAccepted { return_id: ReturnId, order_id: OrderId, refund_cents: i64 },
    ParcelScanned { order_id: OrderId, user_id: UserId, waybill: String, seq: i64, scan: String },
}

impl From<&DomainEvent> for WireEvent {
    fn from(event: &DomainEvent) -> Self {
        match event.clone() {
            DomainEvent::OrderPlaced { order_id, user_id, merchant_id, amount_cents, kind } => {
                Self::OrderPlaced { order_id, user_id, merchant_id, amount_cents, kind: kind.as_str().to_owned() }
            }
            DomainEvent::OrderPaid { order_id, user_id, merchant_id, amount_cents } => {
                Self::OrderPaid { order_id, user_id, merchant_id, amount_cents }
            }
            DomainEvent::OrderCancelled { order_id, user_id, merchant_id } => {
                Self::OrderCancelled { order_id, user_id, merchant_id }
            }
            DomainEvent::PaymentSucceeded { payment_id, order_id, amount_cents } => {
                Self::PaymentSucceeded { payment_id, order_id, amount_cents }
            }
            DomainEvent::PaymentFailed { payment_id, order_id, amount_cents } => {
                Self::PaymentFailed { payment_id, order_id, amount_cents }
            }
            DomainEvent::RefundSucceeded { refund_id, payment_id, order_id, amount_cents } => {
                Self::RefundSucceeded { refund_id, payment_id, order_id, amount_cents }
            }
            DomainEvent::RefundFailed { refund_id, payment_id, order_id, amount_cents } => {
                Self::RefundFailed { refund_id, payment_id, order_id, amount_cents }
            }
            DomainEvent::ReturnAccepted { return_id, order_id, refund_cents } => {
                Self::ReturnAccepted { return_id, order_id, refund_cents }
            }
            DomainEvent::ParcelScanned { order_id, user_id, waybill, seq, scan } => {
                Self::ParcelScanned { order_id, user_id, waybill, seq, scan: scan.as_str().to_owned() }
            }
        }
    }
}

impl TryFrom<WireEvent> for DomainEvent {
    type Error = String;

    fn try_from(event: WireEvent) -> Result<Self, String> {
        Ok(match event {
            WireEvent::OrderPlaced { order_id, user_id, merchant_id, amount_cents, kind } => {
                let kind = OrderKind::parse(&kind).ok_or_else(|| format!("unknown order kind {kind:?}"))?;
                Self::OrderPlaced { order_id, user_id, merchant_id, amount_cents, kind }
            }
            WireEvent::OrderPaid { order_id, user_id, merchant_id, amount_cents } => {
                Self::OrderPaid { order_id, user_id, merchant_id, amount_cents }
            }
            WireEvent::OrderCancelled { order_id, user_id, merchant_id } => {
                Self::OrderCancelled { order_id, user_id, merchant_id }
            }
            WireEvent::PaymentSucceeded { payment_id, order_id, amount_cents } => {
                Self::PaymentSucceeded { payment_id, order_id, amount_cents }
            }
            WireEvent::PaymentFailed { payment_id, order_id, amount_cents } => {
                Self::PaymentFailed { payment_id, order_id, amount_cents }
            }
            WireEvent::RefundSucceeded { refund_id, payment_id, order_id, amount_cents } => {
                Self::RefundSucceeded { refund_id, payment_id, order_id, amount_cents }
            }
            WireEvent::RefundFailed { refund_id, payment_id, order_id, amount_cents } => {
                Self::RefundFailed { refund_id, payment_id, order_id, amount_cents }
            }
            WireEvent::ReturnAccepted { return_id, order_id, refund_cents } => {
                Self::ReturnAccepted { return_id, order_id, refund_cents }
            }
            WireEvent::ParcelScanned { order_id, user_id, waybill, seq, scan } => {
                let scan = ScanKind::parse(&scan).ok_or_else(|| format!("unknown scan {scan:?}"))?;
                Self::ParcelScanned { order_id, user_id, waybill, seq, scan }
            }
        })
    }
}

/// The envelope's JSON text, as the outbox's `payload` column keeps it.
pub fn encode(record: &EventRecord) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Envelope {
        event_id: record.event_id.clone(),
        version: VERSION,
        occurred_at_ms: record.occurred_at_ms,
        event: WireEvent::from(&record.event),
    })
}

pub fn decode(payload: &[u8]) -> Result<EventRecord, String> {
    let envelope: Envelope = serde_json::from_slice(payload).map_err(|error| error.to_string())?;
    if envelope.version != VERSION {
        return Err(format!("event version {} is not one this node reads", envelope.version));
    }
    Ok(EventRecord {
        event_id: envelope.event_id,
        occurred_at_ms: envelope.occurred_at_ms,
        event: DomainEvent::try_from(envelope.event)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an earlier node wrote reads the same, and round-trips.
    #[test]
    fn an_event_written_by_an_earlier_version_reads_the_same() {
        let earlier = br#"{"event_id":"order_placed:7","version":1,"occurred_at_ms":1700000000000,"event":{"type":"order_placed","order_id":"7","user_id":"42","merchant_id":"9","amount_cents":990,"kind":"checkout"}}"#;
        let record = decode(earlier).expect("readable");
        assert_eq!(record.event_id, "order_placed:7");
        assert!(matches!(record.event, DomainEvent::OrderPlaced { kind: OrderKind::Checkout, amount_cents: 990, .. }));
        assert_eq!(decode(encode(&record).expect("encodes").as_bytes()).expect("round trip"), record);
    }

    #[test]
    fn a_parcel_scan_round_trips_under_its_waybill_and_place() {
        let scanned = DomainEvent::ParcelScanned {
            order_id: OrderId::new(7),
            user_id: UserId::new(42),
            waybill: "SF7".to_owned(),
            seq: 3,
            scan: ScanKind::OutForDelivery,
        };
        let record = EventRecord::new(scanned, 1_700_000_000_000);
        assert_eq!(record.event_id, "parcel_scanned:SF7:3");
        assert_eq!(decode(encode(&record).expect("encodes").as_bytes()).expect("round trip"), record);
        let unknown = br#"{"event_id":"x","version":1,"occurred_at_ms":1,"event":{"type":"parcel_scanned","order_id":"7","user_id":"1","waybill":"SF7","seq":1,"scan":"teleported"}}"#;
        assert!(decode(unknown).is_err(), "an unknown scan is refused");
    }

    #[test]
    fn an_unknown_version_or_type_is_refused_not_misread() {
        let later = br#"{"event_id":"x","version":2,"occurred_at_ms":1,"event":{"type":"order_cancelled","order_id":"7","user_id":"1","merchant_id":"2"}}"#;
        assert!(decode(later).is_err());
        let unknown =
            br#"{"event_id":"x","version":1,"occurred_at_ms":1,"event":{"type":"order_teleported","order_id":"7"}}"#;
        assert!(decode(unknown).is_err());
    }
}
