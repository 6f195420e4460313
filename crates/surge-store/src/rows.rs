//! What the relational adapters (SQLite and PostgreSQL) share: the same
//! tables hold the same columns in both (ids and money as BIGINT, times as
//! unix milliseconds), so the row shapes, their conversion into domain types
//! and the few pure steps around them live here once.
//!
//! `sqlx::FromRow` derives for any row type whose columns decode as the
//! fields' types, so each struct reads from either database.

use std::collections::BTreeMap;

use surge_domain::catalog::{Product, ProductName, Sku, Stock};
use surge_domain::flashsale::FlashSale;
use surge_domain::fulfilment::{Direction, Shipment, ShipmentStatus};
use surge_domain::order::{Address, Order, OrderItem, OrderKind, OrderStatus};
use surge_domain::payment::{Payment, PaymentStatus, Refund};
use surge_domain::{Cents, CourierId, MerchantId, OrderId, PaymentId, ProductId, RefundId, SaleId, StoreError, UserId};
use time::OffsetDateTime;

pub(crate) fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_unix_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Keeps the first `limit` items of a listing that asked for `limit + 1`
/// (one row more than asked tells whether another page follows) and returns
/// the key of the last one kept when more follow.
pub(crate) fn one_page<T, K>(mut items: Vec<T>, limit: u32, key: impl Fn(&T) -> K) -> (Vec<T>, Option<K>) {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = if more { items.last().map(key) } else { None };
    (items, next)
}

pub(crate) const PRODUCT_COLUMNS: &str = "id, merchant_id, sku, name, price_cents, stock, reserved, updated_at_ms";

/// A product as a row, and as the Redis tier caches it (JSON).
#[derive(sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub(crate) struct ProductRow {
    id: i64,
    merchant_id: i64,
    sku: String,
    name: String,
    price_cents: i64,
    stock: i64,
    /// Absent from entries cached before inventory counted reservations.
    #[serde(default)]
    reserved: i64,
    updated_at_ms: i64,
}

impl From<ProductRow> for Product {
    fn from(row: ProductRow) -> Self {
        Product {
            id: ProductId::new(row.id),
            merchant_id: MerchantId::new(row.merchant_id),
            sku: Sku::from_trusted(row.sku),
            name: ProductName::from_trusted(row.name),
            price_cents: Cents::from_trusted(row.price_cents),
            stock: Stock::from_trusted(row.stock),
            reserved: Stock::from_trusted(row.reserved),
            updated_at: from_unix_ms(row.updated_at_ms),
        }
    }
}

impl From<&Product> for ProductRow {
    fn from(product: &Product) -> Self {
        ProductRow {
            id: product.id.get(),
            merchant_id: product.merchant_id.get(),
            sku: product.sku.as_str().to_owned(),
            name: product.name.as_str().to_owned(),
            price_cents: product.price_cents.get(),
            stock: product.stock.get(),
            reserved: product.reserved.get(),
            updated_at_ms: unix_ms(product.updated_at),
        }
    }
}

pub(crate) const SALE_COLUMNS: &str =
    "id, product_id, merchant_id, stock, price_cents, starts_at_ms, ends_at_ms, per_user_limit";

#[derive(sqlx::FromRow)]
pub(crate) struct SaleRow {
    id: i64,
    product_id: i64,
    merchant_id: i64,
    stock: i64,
    price_cents: i64,
    starts_at_ms: i64,
    ends_at_ms: i64,
    per_user_limit: i64,
}

impl From<SaleRow> for FlashSale {
    fn from(row: SaleRow) -> Self {
        FlashSale {
            id: SaleId::new(row.id),
            product_id: ProductId::new(row.product_id),
            merchant_id: MerchantId::new(row.merchant_id),
            stock: row.stock,
            price_cents: Cents::from_trusted(row.price_cents),
            starts_at: from_unix_ms(row.starts_at_ms),
            ends_at: from_unix_ms(row.ends_at_ms),
            per_user_limit: u32::try_from(row.per_user_limit).unwrap_or(1),
        }
    }
}

/// An order's columns, and its product's SKU (a flash-sale order's one
/// item names it; a checkout order's items carry their own).
pub(crate) const ORDER_COLUMNS: &str = "id, user_id, merchant_id, product_id, flash_sale_id, quantity, \
                                        amount_cents, status, pay_by_ms, created_at_ms, updated_at_ms, kind, items, \
                                        address, (SELECT sku FROM products WHERE products.id = orders.product_id) \
                                        AS product_sku";

#[derive(sqlx::FromRow)]
pub(crate) struct OrderRow {
    id: i64,
    user_id: i64,
    merchant_id: i64,
    product_id: i64,
    flash_sale_id: Option<i64>,
    quantity: i64,
    amount_cents: i64,
    status: String,
    pay_by_ms: Option<i64>,
    created_at_ms: i64,
    updated_at_ms: i64,
    kind: String,
    items: Option<String>,
    address: Option<String>,
    product_sku: Option<String>,
}

/// A checkout order's item as its `items` document holds it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ItemDoc {
    product_id: i64,
    sku: String,
    pub quantity: i64,
    unit_price_cents: i64,
}

impl ItemDoc {
    pub(crate) fn new(product: ProductId, sku: String, quantity: u32, unit_price_cents: i64) -> Self {
        Self { product_id: product.get(), sku, quantity: i64::from(quantity), unit_price_cents }
    }

    pub(crate) fn amount_cents(&self) -> i64 {
        self.quantity.saturating_mul(self.unit_price_cents)
    }
}

impl From<ItemDoc> for OrderItem {
    fn from(doc: ItemDoc) -> Self {
        OrderItem {
            product_id: ProductId::new(doc.product_id),
            sku: Some(doc.sku),
            quantity: u32::try_from(doc.quantity).unwrap_or(u32::MAX),
            unit_price_cents: doc.unit_price_cents,
        }
    }
}

/// A checkout order's delivery address as its `address` document holds it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct AddressDoc {
    region: String,
    city: String,
    line1: String,
    postcode: String,
    phone: String,
}

impl From<&Address> for AddressDoc {
    fn from(address: &Address) -> Self {
        let Address { region, city, line1, postcode, phone } = address.clone();
        Self { region, city, line1, postcode, phone }
    }
}

impl From<AddressDoc> for Address {
    fn from(doc: AddressDoc) -> Self {
        let AddressDoc { region, city, line1, postcode, phone } = doc;
        Address { region, city, line1, postcode, phone }
    }
}

fn document<T: serde::de::DeserializeOwned>(order: i64, what: &str, raw: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw)
        .map_err(|error| StoreError::Unavailable(format!("order {order} has a bad {what}: {error}")))
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;

    fn try_from(row: OrderRow) -> Result<Self, StoreError> {
        let status = OrderStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Unavailable(format!("order {} has unknown status {}", row.id, row.status)))?;
        let kind = OrderKind::parse(&row.kind)
            .ok_or_else(|| StoreError::Unavailable(format!("order {} has unknown kind {}", row.id, row.kind)))?;
        let quantity = u32::try_from(row.quantity).unwrap_or(u32::MAX);
        let items = match &row.items {
            Some(raw) => document::<Vec<ItemDoc>>(row.id, "items", raw)?.into_iter().map(Into::into).collect(),
            None => vec![OrderItem {
                product_id: ProductId::new(row.product_id),
                sku: row.product_sku,
                quantity,
                unit_price_cents: row.amount_cents / row.quantity.max(1),
            }],
        };
        let address = row.address.as_deref().map(|raw| document::<AddressDoc>(row.id, "address", raw)).transpose()?;
        Ok(Order {
            id: OrderId::new(row.id),
            user_id: UserId::new(row.user_id),
            merchant_id: MerchantId::new(row.merchant_id),
            product_id: ProductId::new(row.product_id),
            flash_sale_id: row.flash_sale_id.map(SaleId::new),
            quantity,
            amount_cents: row.amount_cents,
            status,
            kind,
            items,
            address: address.map(Into::into),
            created_at: from_unix_ms(row.created_at_ms),
            updated_at: from_unix_ms(row.updated_at_ms),
            pay_by: row.pay_by_ms.map(from_unix_ms),
        })
    }
}

/// How much the orders just written move the counters: units per (sale,
/// buyer) and per sale, each in ascending key order, which is also the
/// order in which a transaction should lock the rows.
#[derive(Debug, Default)]
pub(crate) struct CounterMoves {
    pub per_buyer: BTreeMap<(i64, i64), i64>,
    pub per_sale: BTreeMap<i64, i64>,
}

impl CounterMoves {
    pub(crate) fn of(created: &[Order]) -> Self {
        let mut moves = Self::default();
        for order in created {
            if let Some(sale) = order.flash_sale_id {
                *moves.per_buyer.entry((sale.get(), order.user_id.get())).or_default() += i64::from(order.quantity);
                *moves.per_sale.entry(sale.get()).or_default() += i64::from(order.quantity);
            }
        }
        moves
    }
}

/// A buyer's holding as stored (`bought` is never negative nor past the
/// per-user limit, which is a `u32`).
pub(crate) fn holding((user, bought): (i64, i64)) -> (UserId, u32) {
    (UserId::new(user), u32::try_from(bought).unwrap_or(u32::MAX))
}

pub(crate) const PAYMENT_COLUMNS: &str = "id, order_id, user_id, merchant_id, amount_cents, commission_cents, \
                                          refunded_cents, status, provider, provider_ref, pay_url, created_at_ms, \
                                          updated_at_ms";

#[derive(sqlx::FromRow)]
pub(crate) struct PaymentRow {
    id: i64,
    order_id: i64,
    user_id: i64,
    merchant_id: i64,
    amount_cents: i64,
    commission_cents: i64,
    refunded_cents: i64,
    status: String,
    provider: String,
    provider_ref: String,
    pay_url: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl TryFrom<PaymentRow> for Payment {
    type Error = StoreError;

    fn try_from(row: PaymentRow) -> Result<Self, StoreError> {
        let status = PaymentStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Unavailable(format!("payment {} has unknown status {}", row.id, row.status)))?;
        Ok(Payment {
            id: PaymentId::new(row.id),
            order_id: OrderId::new(row.order_id),
            user_id: UserId::new(row.user_id),
            merchant_id: MerchantId::new(row.merchant_id),
            amount_cents: row.amount_cents,
            commission_cents: row.commission_cents,
            refunded_cents: row.refunded_cents,
            status,
            provider: row.provider,
            provider_ref: row.provider_ref,
            pay_url: row.pay_url,
            created_at: from_unix_ms(row.created_at_ms),
            updated_at: from_unix_ms(row.updated_at_ms),
        })
    }
}

pub(crate) const REFUND_COLUMNS: &str = "id, payment_id, order_id, merchant_id, amount_cents, reason, status, provider, \
                                         provider_ref, created_at_ms, updated_at_ms";

#[derive(sqlx::FromRow)]
pub(crate) struct RefundRow {
    id: i64,
    payment_id: i64,
    order_id: i64,
    merchant_id: i64,
    amount_cents: i64,
    reason: String,
    status: String,
    provider: String,
    provider_ref: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl TryFrom<RefundRow> for Refund {
    type Error = StoreError;

    fn try_from(row: RefundRow) -> Result<Self, StoreError> {
        let status = PaymentStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Unavailable(format!("refund {} has unknown status {}", row.id, row.status)))?;
        Ok(Refund {
            id: RefundId::new(row.id),
            payment_id: PaymentId::new(row.payment_id),
            order_id: OrderId::new(row.order_id),
            merchant_id: MerchantId::new(row.merchant_id),
            amount_cents: row.amount_cents,
            reason: row.reason,
            status,
            provider: row.provider,
            provider_ref: row.provider_ref,
            created_at: from_unix_ms(row.created_at_ms),
            updated_at: from_unix_ms(row.updated_at_ms),
        })
    }
}

/// A shipment's row: waybill, order, buyer, merchant, direction, status,
/// courier, region, zone, created at, updated at. The relational stores
/// read it; the Redis tracking documents keep a shipment in this shape.
pub(crate) type ShipmentRow = (String, i64, i64, i64, String, String, Option<i64>, String, String, i64, i64);

pub(crate) fn shipment(
    (waybill, order, user, merchant, direction, status, courier, region, zone, created, updated): ShipmentRow,
) -> Result<Shipment, StoreError> {
    let corrupt = |what: &str| StoreError::Unavailable(format!("shipment {waybill}: unknown {what}"));
    Ok(Shipment {
        direction: Direction::parse(&direction).ok_or_else(|| corrupt("direction"))?,
        status: ShipmentStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        order_id: OrderId::new(order),
        user_id: UserId::new(user),
        merchant_id: MerchantId::new(merchant),
        courier_id: courier.map(CourierId::new),
        region,
        zone,
        created_at: from_unix_ms(created),
        updated_at: from_unix_ms(updated),
        waybill,
    })
}

/// The row of a shipment, as [`shipment`] reads it.
pub(crate) fn shipment_row(shipment: &Shipment) -> ShipmentRow {
    (
        shipment.waybill.clone(),
        shipment.order_id.get(),
        shipment.user_id.get(),
        shipment.merchant_id.get(),
        shipment.direction.as_str().to_owned(),
        shipment.status.as_str().to_owned(),
        shipment.courier_id.map(CourierId::get),
        shipment.region.clone(),
        shipment.zone.clone(),
        unix_ms(shipment.created_at),
        unix_ms(shipment.updated_at),
    )
}
