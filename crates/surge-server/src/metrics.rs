//! Prometheus metrics, one registry per running app.
//!
//! The registry is owned by the app (not installed as the process-global
//! recorder), so two apps in one process, as in the test suite, never mix
//! their counts. Handles are registered once at start-up where possible.
//!
//! Request latency is a real histogram (buckets from 100 µs to 10 s), so
//! TP99/TP999 per route can be read with `histogram_quantile` and summed
//! across nodes.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Instant;

use axum::http::Method;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::state::AppState;

const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Latency buckets in seconds: roughly ×2.5 per step.
const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub const HTTP_REQUESTS: &str = "surge_http_requests_total";
pub const HTTP_DURATION: &str = "surge_http_request_duration_seconds";
pub const CACHE_REQUESTS: &str = "surge_cache_requests_total";
pub const CACHE_LOADS: &str = "surge_cache_loads_total";
pub const NOTIFICATIONS: &str = "surge_notifications_total";
pub const BREAKER_STATE: &str = "surge_breaker_state";
pub const EVENTS: &str = "surge_events_received_total";
pub const ORDERS_FAILED: &str = "surge_orders_failed_total";
pub const SALES_SERVED: &str = "surge_flash_sales_served";
pub const LEDGER_DIFFERENCE: &str = "surge_ledger_difference_units";
pub const LEDGER_REPAIRED: &str = "surge_ledger_repaired_units_total";
pub const OUTBOX_PUBLISHED: &str = "surge_outbox_published_total";
pub const OUTBOX_BACKLOG: &str = "surge_outbox_backlog";
pub const OUTBOX_LAG: &str = "surge_outbox_lag_seconds";
pub const TRACKING_PENDING: &str = "surge_tracking_pending_scans";
pub const TRACKING_FLUSHED: &str = "surge_tracking_flushed_scans_total";

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Request handles by route, then method and status: registering costs
    /// allocations and hashing, looking up here costs neither.
    routes: RwLock<HashMap<String, Vec<RouteHandles>>>,
}

struct RouteHandles {
    method: Method,
    status: u16,
    count: Counter,
    duration: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS_SECONDS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        let metrics = Self { recorder, handle, routes: RwLock::default() };
        metrics.describe();
        metrics
    }

    fn describe(&self) {
        let r = &self.recorder;
        r.describe_counter(HTTP_REQUESTS.into(), None, "HTTP requests by method, route and status".into());
        r.describe_histogram(
            HTTP_DURATION.into(),
            Some(Unit::Seconds),
            "HTTP request latency by method, route and status".into(),
        );
        r.describe_counter(CACHE_REQUESTS.into(), None, "Cache reads by cache and result (hit, miss)".into());
        r.describe_counter(CACHE_LOADS.into(), None, "Cache misses that loaded from the store".into());
        r.describe_counter(
            ORDERS_FAILED.into(),
            None,
            "Accepted (202) requests written FAILED: units sold twice; must stay 0".into(),
        );
        r.describe_counter(NOTIFICATIONS.into(), None, "Order notifications by result (sent, failed, dropped)".into());
        r.describe_counter(
            EVENTS.into(),
            None,
            "Events from other nodes by kind (product_changed, sold_out, restocked, subscribed)".into(),
        );
        r.describe_gauge(BREAKER_STATE.into(), None, "Circuit breaker state: 0 closed, 1 open, 2 half-open".into());
        r.describe_gauge(
            LEDGER_DIFFERENCE.into(),
            None,
            "Units by which the shared ledger's stock differed from the orders at the last reconciliation, \
             summed over open sales either way; should be 0"
                .into(),
        );
        r.describe_counter(
            LEDGER_REPAIRED.into(),
            None,
            "Units the reconciliation moved in the shared ledger's stock to match the orders".into(),
        );
        r.describe_gauge(
            SALES_SERVED.into(),
            None,
            "Flash sales this node holds in memory: every one not ended, and ended ones until they are forgotten"
                .into(),
        );
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> metrics::Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        self.recorder.register_counter(&key(name, labels), &METADATA)
    }

    /// Counts and times one request of `route`.
    fn record_request(&self, method: &Method, route: &str, status: u16, seconds: f64) {
        let record = |handles: &RouteHandles| {
            handles.count.increment(1);
            handles.duration.record(seconds);
        };
        {
            let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
            let known = routes.get(route).and_then(|all| all.iter().find(|h| h.method == method && h.status == status));
            if let Some(handles) = known {
                return record(handles);
            }
        }
        let (count, duration) = self.register_request(method.as_str(), route, status);
        let handles = RouteHandles { method: method.clone(), status, count, duration };
        record(&handles);
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        routes.entry(route.to_owned()).or_default().push(handles);
    }

    fn register_request(&self, method: &str, route: &str, status: u16) -> (Counter, Histogram) {
        let labels = vec![
            Label::new("method", SharedString::from(method.to_owned())),
            Label::new("route", SharedString::from(route.to_owned())),
            Label::new("status", SharedString::from(status.to_string())),
        ];
        let count = self.recorder.register_counter(&Key::from_parts(HTTP_REQUESTS, labels.clone()), &METADATA);
        let duration = self.recorder.register_histogram(&Key::from_parts(HTTP_DURATION, labels), &METADATA);
        (count, duration)
    }

    /// Publishes a breaker's state as a gauge.
    pub fn breaker_state(&self, breaker: &str, state: surge_guard::breaker::BreakerState) {
        use surge_guard::breaker::BreakerState;
        let labels = vec![Label::new("breaker", SharedString::from(breaker.to_owned()))];
        let gauge = self.recorder.register_gauge(&Key::from_parts(BREAKER_STATE, labels), &METADATA);
        gauge.set(match state {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        });
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, *v)).collect();
    Key::from_parts(name, labels)
}

/// Route-level middleware: counts and times every matched request.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics.record_request(&method, route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}
