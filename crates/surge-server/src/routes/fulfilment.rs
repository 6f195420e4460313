//! Fulfilment, the forward flow: couriers and their shifts, a paid
//! order's shipment, packing, scans and tracking.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use surge_domain::fulfilment::{
    Courier, FulfilmentError, MAX_CAPACITY, MAX_NOTE, MAX_TEXT, NewCourier, Scan, ScanKind, Shipment, Tracking,
};
use surge_domain::{CourierId, MerchantId, OrderId, UserId};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{ApiJson, PathId};
use crate::routes::OverloadGuards;
use crate::routes::wire::Id;
use crate::state::AppState;

const TAG: &str = "fulfilment";

/// Parcels moving are the business's core work.
pub fn routes(guards: &OverloadGuards) -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(put_courier).map(|route| guards.non_core(route)))
        .routes(routes!(set_shift).map(|route| guards.core(route)))
        .routes(routes!(tasks).map(|route| guards.core(route)))
        .routes(routes!(order_shipment).map(|route| guards.core(route)))
        .routes(routes!(pack).map(|route| guards.core(route)))
        .routes(routes!(scan).map(|route| guards.core(route)))
        .routes(routes!(tracking).map(|route| guards.core(route)))
}

impl From<FulfilmentError> for ApiError {
    fn from(error: FulfilmentError) -> Self {
        match error {
            error @ FulfilmentError::NotFound(_) => ApiError::not_found(error.to_string()),
            FulfilmentError::Forbidden(why) => ApiError::forbidden(why),
            error @ (FulfilmentError::NotNow(_)
            | FulfilmentError::ChangedMeanwhile
            | FulfilmentError::IllegalScan(_)) => ApiError::new(ErrorCode::InvalidState, error.to_string()),
            FulfilmentError::Invalid(refused) => refused.into(),
            FulfilmentError::Overloaded => ApiError::overloaded(1),
            FulfilmentError::Unavailable(cause) => ApiError::unavailable(&cause),
        }
    }
}

/// A courier, working one zone of a region.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Courier)]
struct CourierBody {
    #[schema(value_type = Id)]
    id: CourierId,
    name: String,
    region: String,
    zone: String,
    capacity: u32,
    on_shift: bool,
    /// Parcels assigned and not yet delivered.
    load: u32,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<Courier> for CourierBody {
    fn from(courier: Courier) -> Self {
        let Courier { id, name, region, zone, capacity, on_shift, load, updated_at } = courier;
        Self { id, name, region, zone, capacity, on_shift, load, updated_at }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CourierSpec)]
struct CourierRequest {
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    #[schema(min_length = 1, max_length = 64)]
    region: String,
    #[schema(min_length = 1, max_length = 64)]
    zone: String,
    /// Parcels carried at once.
    #[schema(minimum = 1, maximum = 1000)]
    capacity: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ShiftRequest {
    on_shift: bool,
    #[schema(min_length = 1, max_length = 64)]
    zone: String,
}

/// A parcel on its way.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Shipment)]
struct ShipmentBody {
    waybill: String,
    #[schema(value_type = Id)]
    order_id: OrderId,
    #[schema(value_type = Id)]
    user_id: UserId,
    #[schema(value_type = Id)]
    merchant_id: MerchantId,
    /// `forward` or `reverse`.
    direction: String,
    /// `created`, `awaiting_courier`, `packed`, `picked_up`, `at_hub`,
    /// `out_for_delivery`, `delivered` or `delivery_failed`.
    status: String,
    #[schema(value_type = Option<Id>, required = true)]
    courier_id: Option<CourierId>,
    region: String,
    zone: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<Shipment> for ShipmentBody {
    fn from(shipment: Shipment) -> Self {
        Self {
            direction: shipment.direction.as_str().to_owned(),
            status: shipment.status.as_str().to_owned(),
            waybill: shipment.waybill,
            order_id: shipment.order_id,
            user_id: shipment.user_id,
            merchant_id: shipment.merchant_id,
            courier_id: shipment.courier_id,
            region: shipment.region,
            zone: shipment.zone,
            created_at: shipment.created_at,
            updated_at: shipment.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct ShipmentPage {
    items: Vec<ShipmentBody>,
    /// Always `null`: a courier's tasks fit one page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ScanType {
    PickedUp,
    ArrivedHub,
    OutForDelivery,
    Delivered,
    DeliveryFailed,
}

impl From<ScanType> for ScanKind {
    fn from(kind: ScanType) -> Self {
        match kind {
            ScanType::PickedUp => ScanKind::PickedUp,
            ScanType::ArrivedHub => ScanKind::ArrivedHub,
            ScanType::OutForDelivery => ScanKind::OutForDelivery,
            ScanType::Delivered => ScanKind::Delivered,
            ScanType::DeliveryFailed => ScanKind::DeliveryFailed,
        }
    }
}

impl From<ScanKind> for ScanType {
    fn from(kind: ScanKind) -> Self {
        match kind {
            ScanKind::PickedUp => ScanType::PickedUp,
            ScanKind::ArrivedHub => ScanType::ArrivedHub,
            ScanKind::OutForDelivery => ScanType::OutForDelivery,
            ScanKind::Delivered => ScanType::Delivered,
            ScanKind::DeliveryFailed => ScanType::DeliveryFailed,
        }
    }
}

/// A courier's scan.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ScanEvent)]
struct ScanBody {
    #[serde(rename = "type")]
    kind: ScanType,
    /// When the courier scanned (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    at: OffsetDateTime,
    #[schema(min_length = 1, max_length = 64)]
    location: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    note: String,
}

impl From<Scan> for ScanBody {
    fn from(scan: Scan) -> Self {
        Self { kind: scan.kind.into(), at: scan.at, location: scan.location, note: scan.note }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Tracking)]
struct TrackingBody {
    waybill: String,
    /// The shipment's status.
    status: String,
    #[schema(value_type = Option<Id>, required = true)]
    courier_id: Option<CourierId>,
    /// Every scan, in the order written.
    events: Vec<ScanBody>,
}

impl From<Tracking> for TrackingBody {
    fn from(tracking: Tracking) -> Self {
        let Tracking { shipment, events } = tracking;
        Self {
            status: shipment.status.as_str().to_owned(),
            waybill: shipment.waybill,
            courier_id: shipment.courier_id,
            events: events.into_iter().map(Into::into).collect(),
        }
    }
}

const _: () = assert!(MAX_TEXT == 64 && MAX_NOTE == 500 && MAX_CAPACITY == 1000, "the schemas above say so");

/// Declares or changes a courier (admin)
///
/// Its shift and its load stay as they are.
#[utoipa::path(put, path = "/v1/couriers/{id}", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path)), request_body = CourierRequest,
    responses(
        (status = 200, description = "the courier", body = CourierBody),
        (status = 400, description = "bad id, name, region, zone or capacity", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "admin only", body = ErrorBody),
    ),
)]
async fn put_courier(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<CourierId>,
    ApiJson(body): ApiJson<CourierRequest>,
) -> Result<Json<CourierBody>, ApiError> {
    let CourierRequest { name, region, zone, capacity } = body;
    let courier = NewCourier { id, name, region, zone, capacity };
    Ok(Json(state.fulfilment.put_courier(&actor, courier).await?.into()))
}

/// The calling courier goes on or off shift (courier)
///
/// Going off shift, the parcels it has not picked up go to other couriers.
#[utoipa::path(put, path = "/v1/couriers/me/shift", tag = TAG, security(("bearer" = [])),
    request_body = ShiftRequest,
    responses(
        (status = 200, description = "the courier", body = CourierBody),
        (status = 400, description = "bad zone", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "couriers only", body = ErrorBody),
        (status = 404, description = "no courier declared under the token's subject", body = ErrorBody),
    ),
)]
async fn set_shift(
    State(state): State<AppState>,
    Caller(actor): Caller,
    ApiJson(body): ApiJson<ShiftRequest>,
) -> Result<Json<CourierBody>, ApiError> {
    Ok(Json(state.fulfilment.set_shift(&actor, body.on_shift, &body.zone).await?.into()))
}

/// The calling courier's parcels not yet delivered, oldest first (courier)
#[utoipa::path(get, path = "/v1/couriers/me/tasks", tag = TAG, security(("bearer" = [])),
    responses(
        (status = 200, description = "the parcels", body = ShipmentPage),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "couriers only", body = ErrorBody),
    ),
)]
async fn tasks(State(state): State<AppState>, Caller(actor): Caller) -> Result<Json<ShipmentPage>, ApiError> {
    let items = state.fulfilment.tasks(&actor).await?.into_iter().map(Into::into).collect();
    Ok(Json(ShipmentPage { items, next_cursor: None }))
}

/// The forward shipment of an order, made when it was paid (buyer, merchant, admin)
#[utoipa::path(get, path = "/v1/orders/{id}/shipment", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path)),
    responses(
        (status = 200, description = "the shipment", body = ShipmentBody),
        (status = 400, description = "bad id", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such shipment (the order is not paid yet), or someone else's",
            body = ErrorBody),
    ),
)]
async fn order_shipment(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(order): PathId<OrderId>,
) -> Result<Json<ShipmentBody>, ApiError> {
    Ok(Json(state.fulfilment.shipment_of_order(&actor, order).await?.into()))
}

/// The merchant packs its parcel: the order is `FULFILLING` and the parcel assigned to a courier (merchant)
#[utoipa::path(post, path = "/v1/shipments/{waybill}/pack", tag = TAG, security(("bearer" = [])),
    params(("waybill" = String, Path)),
    responses(
        (status = 200, description = "the shipment, `packed` with its courier or `awaiting_courier`",
            body = ShipmentBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "not the order's merchant", body = ErrorBody),
        (status = 404, description = "no such shipment, or someone else's", body = ErrorBody),
        (status = 422, description = "invalid_state: packed already", body = ErrorBody),
    ),
)]
async fn pack(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(waybill): Path<String>,
) -> Result<Json<ShipmentBody>, ApiError> {
    Ok(Json(state.fulfilment.pack(&actor, &waybill).await?.into()))
}

/// The assigned courier scans its parcel (courier)
#[utoipa::path(post, path = "/v1/shipments/{waybill}/scans", tag = TAG, security(("bearer" = [])),
    params(("waybill" = String, Path)), request_body = ScanBody,
    responses(
        (status = 202, description = "the scan is recorded; the shipment as it is now", body = ShipmentBody),
        (status = 400, description = "bad type, time, location or note", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "not a courier", body = ErrorBody),
        (status = 404, description = "no such shipment, or not this courier's", body = ErrorBody),
        (status = 422, description = "invalid_state: the scan does not follow from where the parcel is",
            body = ErrorBody),
        (status = 503, description = "overloaded: too many scans wait to be written (write-behind)",
            body = ErrorBody),
    ),
)]
async fn scan(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(waybill): Path<String>,
    ApiJson(body): ApiJson<ScanBody>,
) -> Result<(StatusCode, Json<ShipmentBody>), ApiError> {
    let scan = Scan { kind: body.kind.into(), at: body.at, location: body.location, note: body.note };
    let shipment = state.fulfilment.scan(&actor, &waybill, scan).await?;
    Ok((StatusCode::ACCEPTED, Json(shipment.into())))
}

/// A waybill's tracking: where it is and every scan (buyer, merchant, its courier, admin)
#[utoipa::path(get, path = "/v1/waybills/{waybill}/tracking", tag = TAG, security(("bearer" = [])),
    params(("waybill" = String, Path)),
    responses(
        (status = 200, description = "the tracking", body = TrackingBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such waybill, or someone else's", body = ErrorBody),
    ),
)]
async fn tracking(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(waybill): Path<String>,
) -> Result<Json<TrackingBody>, ApiError> {
    Ok(Json(state.fulfilment.tracking(&actor, &waybill).await?.into()))
}
