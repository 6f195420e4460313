//! Payouts: a merchant's closed statements paid out (the admin's run) and
//! the merchant's list of them.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use surge_domain::catalog::PageRequest;
use surge_domain::ids::PayoutId;
use surge_domain::settlement::Payout;
use surge_domain::{Actor, MerchantId};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, PathId};
use crate::routes::OverloadGuards;
use crate::routes::wire::{Id, PageQuery};
use crate::state::AppState;

const TAG: &str = "settlement";

/// Back-office work, not the checkout: non-core.
pub fn routes(guards: &OverloadGuards) -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(run_payouts).map(|route| guards.non_core(route)))
        .routes(routes!(list_payouts).map(|route| guards.non_core(route)))
}

/// A merchant's closed statements, paid out.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Payout)]
struct PayoutBody {
    #[schema(value_type = Id)]
    id: PayoutId,
    #[schema(value_type = Id)]
    merchant_id: MerchantId,
    /// The statements' net.
    amount_cents: i64,
    /// How many statements it paid.
    statements: u32,
    /// `paid`.
    status: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<Payout> for PayoutBody {
    fn from(payout: Payout) -> Self {
        let Payout { id, merchant_id, amount_cents, statements, status, created_at } = payout;
        Self { id, merchant_id, amount_cents, statements, status, created_at }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct PayoutPage {
    items: Vec<PayoutBody>,
    /// `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// Pays every merchant its closed statements (admin)
///
/// One payout per merchant whose closed statements net above zero and
/// within its available balance; the body is ignored. A statement is paid
/// once, however many runs race.
#[utoipa::path(post, path = "/v1/admin/payouts/run", tag = TAG, security(("bearer" = [])),
    responses(
        (status = 200, description = "the payouts this run made", body = PayoutPage),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "admin only", body = ErrorBody),
    ),
)]
async fn run_payouts(State(state): State<AppState>, Caller(actor): Caller) -> Result<Json<PayoutPage>, ApiError> {
    let paid = state.settlement.pay_out(&actor).await?;
    if let Actor::Admin(admin) = &actor {
        tracing::warn!(%admin, payouts = paid.len(), "payout run");
    }
    Ok(Json(PayoutPage { items: paid.into_iter().map(Into::into).collect(), next_cursor: None }))
}

/// A merchant's payouts, newest first (that merchant, admin)
#[utoipa::path(get, path = "/v1/merchants/{id}/payouts", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path), PageQuery),
    responses(
        (status = 200, description = "payouts", body = PayoutPage),
        (status = 400, description = "bad limit or cursor", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "another merchant's, or a customer", body = ErrorBody),
    ),
)]
async fn list_payouts(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(merchant): PathId<MerchantId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<PayoutPage>, ApiError> {
    let limit = PageRequest::parse(query.limit, None)?.limit;
    let before = match query.cursor.as_deref() {
        Some(cursor) => {
            Some(cursor.parse::<PayoutId>().map_err(|_| ApiError::bad_request("cursor is not one of ours"))?)
        }
        None => None,
    };
    let items = state.settlement.payouts(&actor, merchant, before, limit).await?;
    let next_cursor = (items.len() == limit as usize).then(|| items.last().map(|last| last.id.to_string())).flatten();
    Ok(Json(PayoutPage { items: items.into_iter().map(Into::into).collect(), next_cursor }))
}
