//! Settlement endpoints (API.md, "Payment and settlement"): the ledger's
//! trial balance and merchants' balances.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use surge_domain::catalog::PageRequest;
use surge_domain::ids::{PayoutId, SettlementId};
use surge_domain::settlement::{
    AccountTotals, MerchantBalance, Mismatch, Reconciliation, SettlementError, Statement, TrialBalance,
};
use surge_domain::{Actor, MerchantId, OrderId};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, PathId};
use crate::routes::OverloadGuards;
use crate::routes::wire::{Id, PageQuery};
use crate::state::AppState;

const TAG: &str = "settlement";

/// Reads for people, not for the checkout: non-core.
pub fn routes(guards: &OverloadGuards) -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(trial_balance).map(|route| guards.non_core(route)))
        .routes(routes!(merchant_balance).map(|route| guards.non_core(route)))
        .routes(routes!(run_reconciliation).map(|route| guards.non_core(route)))
        .routes(routes!(run_settlement).map(|route| guards.non_core(route)))
        .routes(routes!(list_settlements).map(|route| guards.non_core(route)))
}

/// A merchant's statement of one UTC day.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Settlement)]
struct StatementBody {
    #[schema(value_type = Id)]
    id: SettlementId,
    #[schema(value_type = Id)]
    merchant_id: MerchantId,
    #[serde(with = "time::serde::rfc3339")]
    period_start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    period_end: OffsetDateTime,
    gross_cents: i64,
    refunds_cents: i64,
    commission_cents: i64,
    /// `gross - refunds - commission`.
    net_cents: i64,
    /// `closed`, then `paid`.
    status: String,
    /// The payout that paid it; `null` while `closed`.
    #[schema(value_type = Option<Id>, required = true)]
    payout_id: Option<PayoutId>,
}

impl From<Statement> for StatementBody {
    fn from(statement: Statement) -> Self {
        let Statement {
            id,
            merchant_id,
            period_start,
            period_end,
            gross_cents,
            refunds_cents,
            commission_cents,
            net_cents,
            status,
            payout_id,
        } = statement;
        Self {
            id,
            merchant_id,
            period_start,
            period_end,
            gross_cents,
            refunds_cents,
            commission_cents,
            net_cents,
            status,
            payout_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct StatementPage {
    items: Vec<StatementBody>,
    /// `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SettlementRun)]
struct RunBody {
    /// Close the days that ended by then (at most five minutes ago);
    /// absent: as late as that.
    #[serde(default, with = "time::serde::rfc3339::option")]
    until: Option<OffsetDateTime>,
}

/// One mismatch between orders, payments, refunds and the ledger.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Mismatch)]
struct MismatchBody {
    /// `paid_without_capture`, `capture_without_paid_order`, `amount_differs`,
    /// `captured_twice`, `capture_without_ledger_entry`,
    /// `refund_without_ledger_entry`, `return_refund_outstanding`; against
    /// the provider's report: `provider_decision_not_applied`,
    /// `unknown_to_provider`, `unknown_to_platform`, `provider_amount_differs`.
    kind: String,
    /// `null`: the provider's record names nothing of the platform's.
    #[schema(value_type = Option<Id>)]
    order_id: Option<OrderId>,
    detail: String,
}

/// What a reconciliation pass found.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Reconciliation)]
struct ReconciliationBody {
    /// Paid orders and payments looked at.
    checked: u64,
    mismatches: Vec<MismatchBody>,
}

impl From<Reconciliation> for ReconciliationBody {
    fn from(pass: Reconciliation) -> Self {
        let mismatches = pass
            .mismatches
            .into_iter()
            .map(|Mismatch { kind, order_id, detail }| MismatchBody {
                kind: kind.as_str().to_owned(),
                order_id,
                detail,
            })
            .collect();
        Self { checked: pass.checked, mismatches }
    }
}

/// One account's posted totals.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LedgerAccount)]
struct AccountBody {
    name: String,
    debit_cents: i64,
    credit_cents: i64,
}

/// Every account's posted totals; `balanced` is whether debits equal credits.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TrialBalance)]
struct TrialBalanceBody {
    accounts: Vec<AccountBody>,
    debits_cents: i64,
    credits_cents: i64,
    balanced: bool,
}

impl From<TrialBalance> for TrialBalanceBody {
    fn from(balance: TrialBalance) -> Self {
        let TrialBalance { accounts, debits_cents, credits_cents, balanced } = balance;
        let accounts = accounts
            .into_iter()
            .map(|AccountTotals { name, debit_cents, credit_cents }| AccountBody { name, debit_cents, credit_cents })
            .collect();
        Self { accounts, debits_cents, credits_cents, balanced }
    }
}

/// What the platform holds for a merchant.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = MerchantBalance)]
struct BalanceBody {
    /// Payments opened, not yet captured.
    pending_cents: i64,
    /// Captured, less commission and refunds (asked or done), not yet paid out.
    available_cents: i64,
    paid_out_cents: i64,
}

impl From<MerchantBalance> for BalanceBody {
    fn from(balance: MerchantBalance) -> Self {
        let MerchantBalance { pending_cents, available_cents, paid_out_cents } = balance;
        Self { pending_cents, available_cents, paid_out_cents }
    }
}

/// The ledger's trial balance (admin)
#[utoipa::path(get, path = "/v1/admin/ledger/trial-balance", tag = TAG, security(("bearer" = [])),
    responses(
        (status = 200, description = "posted totals per account", body = TrialBalanceBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "admin only", body = ErrorBody),
    ),
)]
async fn trial_balance(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> Result<Json<TrialBalanceBody>, ApiError> {
    Ok(Json(state.settlement.trial_balance(&actor).await?.into()))
}

/// A merchant's balance (that merchant, admin)
#[utoipa::path(get, path = "/v1/merchants/{id}/balance", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path)),
    responses(
        (status = 200, description = "the balance", body = BalanceBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "another merchant's, or a customer", body = ErrorBody),
    ),
)]
async fn merchant_balance(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(merchant): PathId<MerchantId>,
) -> Result<Json<BalanceBody>, ApiError> {
    Ok(Json(state.settlement.merchant_balance(&actor, merchant).await?.into()))
}

/// Reconciliation: orders, payments, refunds, the ledger and the provider's report compared (admin)
///
/// The body is ignored (`{}` or nothing).
#[utoipa::path(post, path = "/v1/admin/reconciliation/run", tag = TAG, security(("bearer" = [])),
    responses(
        (status = 200, description = "what was checked and every mismatch found (at most 1,000 of a kind)",
            body = ReconciliationBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "admin only", body = ErrorBody),
    ),
)]
async fn run_reconciliation(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> Result<Json<ReconciliationBody>, ApiError> {
    // The provider is asked only for an admin's run.
    let provider =
        if actor.is_admin() { state.payments.provider_books().await.map_err(SettlementError::from)? } else { None };
    Ok(Json(state.settlement.reconcile(&actor, provider).await?.into()))
}

/// Closes the statements of every day that ended by `until` (admin; also
/// runs on a schedule)
#[utoipa::path(post, path = "/v1/admin/settlements/run", tag = TAG, security(("bearer" = [])),
    request_body = RunBody,
    responses(
        (status = 200, description = "the statements this run closed", body = StatementPage),
        (status = 400, description = "bad until", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "admin only", body = ErrorBody),
    ),
)]
async fn run_settlement(
    State(state): State<AppState>,
    Caller(actor): Caller,
    ApiJson(body): ApiJson<RunBody>,
) -> Result<Json<StatementPage>, ApiError> {
    let closed = state.settlement.run(&actor, body.until).await?;
    if let Actor::Admin(admin) = &actor {
        tracing::warn!(%admin, statements = closed.len(), "settlement run");
    }
    Ok(Json(StatementPage { items: closed.into_iter().map(Into::into).collect(), next_cursor: None }))
}

/// A merchant's statements, newest first (that merchant, admin)
#[utoipa::path(get, path = "/v1/merchants/{id}/settlements", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path), PageQuery),
    responses(
        (status = 200, description = "statements", body = StatementPage),
        (status = 400, description = "bad limit or cursor", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "another merchant's, or a customer", body = ErrorBody),
    ),
)]
async fn list_settlements(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(merchant): PathId<MerchantId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<StatementPage>, ApiError> {
    let limit = PageRequest::parse(query.limit, None)?.limit;
    let before = match query.cursor.as_deref() {
        Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| ApiError::bad_request("cursor is not one of ours"))?),
        None => None,
    };
    let items = state.settlement.statements(&actor, merchant, before, limit).await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|last| (last.period_start.unix_timestamp() * 1_000).to_string()))
        .flatten();
    Ok(Json(StatementPage { items: items.into_iter().map(Into::into).collect(), next_cursor }))
}
