//! The HTTP surface: one module per context, one declared middleware stack.

mod admin;
mod aftersale;
mod catalog;
mod checkout;
mod flashsale;
mod fulfilment;
mod ops;
mod orders;
mod payments;
mod payouts;
mod settlement;
pub mod wire;

use std::time::Duration;

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::{Extension, Router};
use std::sync::Arc;

use surge_guard::BoxError;
use surge_guard::bulkhead::{AdaptiveLimit, Admission, Bulkhead, FirstThen, Overloaded, ShedLayer};
use surge_guard::deadline::{DeadlineExpired, DeadlineLayer, DeadlineSpent, InvalidDeadlineHeader};
use surge_guard::rate::{Limiter, RateLimitLayer, RateLimited, TokenBucket};
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use crate::{metrics, openapi};

/// Limits the router applies to every request.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub body_limit_bytes: usize,
    pub request_budget: Duration,
}

/// The overload guards of the API: a bulkhead per class of work and the
/// node's adaptive limit. Admin and operations endpoints sit outside them,
/// so an operator can still act on a node that is shedding load.
#[derive(Clone)]
pub struct OverloadGuards {
    pub core: Arc<Bulkhead>,
    pub non_core: Arc<Bulkhead>,
    /// Reads of a flash sale, which anyone may send.
    pub sale_reads: Arc<Bulkhead>,
    pub node: Arc<AdaptiveLimit>,
    /// `overload.enabled`: off only to measure what the guards cost.
    pub enabled: bool,
    /// The hot-parameter limit on reads of one product, when configured.
    pub product_reads: Option<Arc<TokenBucket<String>>>,
}

impl OverloadGuards {
    /// The guards `overload` and `rate` configure.
    pub fn new(settings: &crate::config::Settings) -> Self {
        let overload = &settings.overload;
        let pool = |name, concurrency| Arc::new(Bulkhead::new(name, concurrency, overload.bulkhead_max_wait));
        Self {
            core: pool("core", overload.core_concurrency),
            non_core: pool("non_core", overload.non_core_concurrency),
            sale_reads: pool("sale_reads", overload.sale_read_concurrency),
            node: Arc::new(AdaptiveLimit::new(crate::config_centre::aimd(settings))),
            enabled: overload.enabled,
            product_reads: (settings.rate.product_read_per_sec > 0).then(|| {
                Arc::new(TokenBucket::new(
                    settings.rate.product_read_burst,
                    f64::from(settings.rate.product_read_per_sec),
                ))
            }),
        }
    }

    /// Forgets full product-read buckets every second while the guards
    /// live, so memory follows the hot set.
    pub fn keep_product_buckets_small(&self) {
        let Some(bucket) = &self.product_reads else { return };
        let bucket = Arc::downgrade(bucket);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            while let Some(bucket) = bucket.upgrade() {
                bucket.forget_idle(tokio::time::Instant::now());
                drop(bucket);
                tick.tick().await;
            }
        });
    }

    /// The node limit, then the core pool: one layer.
    pub fn core(&self, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
        if self.enabled { route.layer(shed(&self.core_admission())) } else { route }
    }

    /// The core guards for a handler that spawns work which must keep its
    /// slot (intake, cancel): the request carries a `SlotHold`.
    pub fn core_carrying(&self, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
        if self.enabled { route.layer(shed_carrying(&self.core_admission())) } else { route }
    }

    /// The node limit, then the non-core pool: one layer.
    pub fn non_core(&self, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
        let admission = Arc::new(FirstThen { first: Arc::clone(&self.node), then: Arc::clone(&self.non_core) });
        if self.enabled { route.layer(shed(&admission)) } else { route }
    }

    /// The node limit, then the sale-read pool: one layer.
    pub fn sale_read(&self, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
        let admission = Arc::new(FirstThen { first: Arc::clone(&self.node), then: Arc::clone(&self.sale_reads) });
        if self.enabled { route.layer(shed(&admission)) } else { route }
    }

    fn core_admission(&self) -> Arc<FirstThen<AdaptiveLimit, Bulkhead>> {
        Arc::new(FirstThen { first: Arc::clone(&self.node), then: Arc::clone(&self.core) })
    }

    /// Reads of one product: the core pool, and the per-product bucket.
    pub fn product_read(&self, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
        let route = self.core(route);
        let Some(bucket) = &self.product_reads else {
            return route;
        };
        route.layer(ServiceBuilder::new().layer(HandleErrorLayer::new(edge_error_now as EdgeErrorFn)).layer(
            RateLimitLayer::new(Arc::clone(bucket), product_of as fn(&Request<axum::body::Body>) -> Option<String>),
        ))
    }
}

/// A shed-or-admit stack for one route group: `HandleErrorLayer` turns
/// `Overloaded` into a 503.
pub type ShedStack<A> =
    ServiceBuilder<Stack<ShedLayer<A, Classify>, Stack<HandleErrorLayer<EdgeErrorFn, ()>, Identity>>>;
type Classify = fn(&Result<Response, BoxError>) -> bool;
type EdgeErrorFn = fn(BoxError) -> std::future::Ready<Response>;

pub fn shed<A: Admission>(admission: &Arc<A>) -> ShedStack<A> {
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(edge_error_now as EdgeErrorFn))
        .layer(ShedLayer::new(Arc::clone(admission), server_failed as Classify))
}

/// [`shed`], with the slot carried to work the handler spawns.
fn shed_carrying<A: Admission>(admission: &Arc<A>) -> ShedStack<A> {
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(edge_error_now as EdgeErrorFn))
        .layer(ShedLayer::new(Arc::clone(admission), server_failed as Classify).carrying())
}

/// Signs of overload for the adaptive limit: errors and missed deadlines.
/// A 503 is not one: it is a call shed (by an inner bulkhead) or a switch,
/// and counting it would let non-core shedding shrink core capacity.
fn server_failed(result: &Result<Response, BoxError>) -> bool {
    result.as_ref().map_or(true, |response| {
        matches!(response.status(), StatusCode::INTERNAL_SERVER_ERROR | StatusCode::GATEWAY_TIMEOUT)
    })
}

/// The API router. With `include_ops`, the operations endpoints are served
/// on it too; otherwise they live on their own listener ([`ops_router`]).
pub fn app(state: AppState, limits: EdgeLimits, guards: &OverloadGuards, include_ops: bool) -> Router {
    let surface = surface(guards);
    let router = if include_ops { surface.api.merge(surface.ops) } else { surface.api };
    finish(router, state, limits)
}

/// The operations router for a separate `ops_listen` address.
pub fn ops_router(state: AppState, limits: EdgeLimits) -> Router {
    finish(ops::routes().into(), state, limits)
}

/// Every route, and the OpenAPI document built from the same `routes!`
/// calls: a handler is served exactly where its `#[utoipa::path]` says, and
/// documented because it is served.
struct Surface {
    api: Router<AppState>,
    /// Documented wherever they are served (the API or the ops listener).
    ops: Router<AppState>,
    #[cfg_attr(not(test), expect(dead_code, reason = "served as bytes; the tests check it against the routers"))]
    document: utoipa::openapi::OpenApi,
}

fn surface(guards: &OverloadGuards) -> Surface {
    let (api, mut document) = OpenApiRouter::with_openapi(openapi::header())
        .merge(catalog::routes(guards))
        .merge(flashsale::routes(guards))
        .merge(orders::routes(guards))
        .merge(checkout::routes(guards))
        .merge(payments::routes(guards))
        .merge(settlement::routes(guards))
        .merge(payouts::routes(guards))
        .merge(fulfilment::routes(guards))
        .merge(aftersale::routes(guards))
        .merge(admin::routes())
        .split_for_parts();
    let (ops, ops_document) = ops::routes().split_for_parts();
    document.merge(ops_document);
    let document = openapi::complete(document);
    // Serialized once, in declaration order; `openapi::header` documents
    // this route.
    let served = Bytes::from(serde_json::to_vec(&document).expect("the OpenAPI document serializes"));
    let api = api.route(openapi::PATH, get(openapi::openapi_json).layer(Extension(served)));
    Surface { api, ops, document }
}

/// The middleware stack, outermost first: request id → trace → panic guard →
/// deadline → body limit → route metrics → handler.
fn finish(router: Router<AppState>, state: AppState, limits: EdgeLimits) -> Router {
    router
        .route_layer(from_fn_with_state(state.clone(), metrics::track))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
        })
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(CatchPanicLayer::custom(|_panic| ApiError::internal().into_response()))
                .layer(HandleErrorLayer::new(edge_error))
                .layer(DeadlineLayer::new(limits.request_budget))
                .layer(DefaultBodyLimit::max(limits.body_limit_bytes)),
        )
        .with_state(state)
}

/// The product id of `/v1/products/{id}`: the hot parameter. Only ids are
/// keys, so made-up paths can't fill the limiter's memory.
fn product_of(request: &Request<axum::body::Body>) -> Option<String> {
    let id = request.uri().path().rsplit('/').next()?;
    let is_id = !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit());
    is_id.then(|| id.to_owned())
}

fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("http", method = %request.method(), uri = %request.uri(), request_id)
}

async fn edge_error(error: BoxError) -> Response {
    edge_response(error)
}

fn edge_error_now(error: BoxError) -> std::future::Ready<Response> {
    std::future::ready(edge_response(error))
}

/// Every middleware error as its API error.
fn edge_response(error: BoxError) -> Response {
    if error.is::<InvalidDeadlineHeader>() || error.is::<DeadlineSpent>() {
        return ApiError::bad_request(error.to_string()).into_response();
    }
    if let Some(shed) = error.downcast_ref::<Overloaded>() {
        return ApiError::overloaded(shed.retry_after.as_secs().max(1)).into_response();
    }
    if let Some(limited) = error.downcast_ref::<RateLimited>() {
        return ApiError::rate_limited(limited.retry_after.as_secs() + 1).into_response();
    }
    if error.is::<DeadlineExpired>() {
        return ApiError::deadline_exceeded().into_response();
    }
    tracing::error!(error = %error, "unhandled middleware error");
    ApiError::internal().into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn surface() -> Surface {
        super::surface(&OverloadGuards::new(&crate::config::Settings::default()))
    }

    fn json(document: &utoipa::openapi::OpenApi) -> serde_json::Value {
        serde_json::to_value(document).expect("the document serializes")
    }

    /// `METHOD path` for every operation the document lists.
    fn documented(document: &serde_json::Value) -> BTreeSet<String> {
        let paths = document["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, operations)| {
                let methods = operations.as_object().expect("operations").keys();
                methods.map(move |method| format!("{} {path}", method.to_uppercase()))
            })
            .collect()
    }

    /// `METHOD path` for every route a router serves, HEAD left out (axum
    /// answers it for every GET). axum lists its routes only in its `Debug`
    /// output: each route id with its method router (and `Allow` header),
    /// then each route id with its path.
    fn served_by(router: &Router<AppState>) -> BTreeSet<String> {
        let listing = format!("{router:?}");
        let routes = listing.split(", fallback_router: ").next().unwrap_or_default();
        let mut allowed = std::collections::BTreeMap::new();
        let mut paths = std::collections::BTreeMap::new();
        for entry in routes.split("RouteId(").skip(1) {
            let Some((id, rest)) = entry.split_once("): ") else { continue };
            if let Some(path) = rest.strip_prefix('"') {
                paths.insert(id.to_owned(), path.split('"').next().unwrap_or_default().to_owned());
            } else if let Some((_, allow)) = rest.split_once("allow_header: Bytes(b\"") {
                allowed.insert(id.to_owned(), allow.split('"').next().unwrap_or_default().to_owned());
            }
        }
        assert_eq!(allowed.len(), paths.len(), "a method router per path in {listing}");
        let mut served = BTreeSet::new();
        for (id, path) in paths {
            for method in allowed[&id].split(',').filter(|method| *method != "HEAD") {
                served.insert(format!("{method} {path}"));
            }
        }
        served
    }

    /// The router and the document come from the same `routes!` calls; this
    /// holds it: nothing served undocumented, nothing documented unserved.
    #[test]
    fn the_document_lists_exactly_the_operations_the_routers_serve() {
        let surface = surface();
        let mut served = served_by(&surface.api);
        let ops = served_by(&surface.ops);
        assert!(ops.contains("GET /healthz") && ops.contains("GET /metrics"), "{ops:?}");
        served.extend(ops);
        let documented = documented(&json(&surface.document));
        assert!(documented.len() >= 20, "{documented:?}");
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(undocumented.is_empty(), "served but not documented: {undocumented:?}");
        assert!(unserved.is_empty(), "documented but not served: {unserved:?}");
    }

    /// Every link names an operation of the document, and one that takes an
    /// `{id}` in its path.
    #[test]
    fn every_link_points_at_an_operation_with_an_id() {
        let document = json(&surface().document);
        let operations: Vec<(&String, &serde_json::Value)> = document["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| item.as_object().expect("operations").values().map(move |op| (path, op)))
            .collect();
        let mut seen = 0;
        for (_, operation) in &operations {
            let links = operation["responses"].as_object().expect("responses").values();
            for link in links.filter_map(|response| response["links"].as_object()).flat_map(|l| l.values()) {
                let target = link["operationId"].as_str().expect("operationId");
                let path = operations.iter().find(|(_, op)| op["operationId"] == target).map(|(path, _)| path);
                let path = path.unwrap_or_else(|| panic!("{target} names no operation"));
                assert!(path.contains("{id}"), "{target} takes no id");
                assert!(link["parameters"]["id"].as_str().is_some_and(|id| id.starts_with("$response.body#/")));
                seen += 1;
            }
        }
        assert_eq!(seen, 8, "the links of a created product, a created sale and an accepted order");
    }

    /// utoipa-gen turns `min_properties` into `maxProperties`; the patch
    /// schema gets its bound anyway.
    #[test]
    fn a_product_patch_needs_at_least_one_field() {
        let document = json(&surface().document);
        let patch = &document["components"]["schemas"]["ProductPatch"];
        assert_eq!(patch["minProperties"], 1, "{patch}");
        assert!(patch.get("maxProperties").is_none(), "{patch}");
    }
}
