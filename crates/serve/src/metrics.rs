//! `/metrics` (Prometheus text format), `/healthz` and `/readyz`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `idbridge_serve_requests_total` | counter | `frontend`, `status` |
//! | `idbridge_serve_caller_denials_total` | counter | `route` |
//! | `idbridge_serve_cache_hits_total` | counter | `route`, `audience`, `scopes` |
//! | `idbridge_serve_cache_negative_hits_total` | counter | same |
//! | `idbridge_serve_cache_misses_total` | counter | same |
//! | `idbridge_serve_upstream_loads_total` | counter | same |
//! | `idbridge_serve_upstream_load_errors_total` | counter | same |
//! | `idbridge_serve_upstream_load_latency_seconds` | gauge (last load) | same |
//! | `idbridge_serve_credential_expiry_seconds` | gauge (seconds left) | same |
//! | `idbridge_serve_cache_entries`, `idbridge_serve_cache_max_entries` | gauge | — |
//! | `idbridge_serve_cache_evictions_total` | counter | — |
//! | `idbridge_serve_ready` | gauge (0/1) | — |
//! | `idbridge_serve_route_health` | gauge (1 for the route's state) | `route`, `state` |
//! | `idbridge_serve_route_consecutive_failures`, `…_route_backoff_seconds` | gauge | `route` |
//! | `idbridge_serve_route_wait_timeouts_total` | counter | `route` |
//!
//! Cache rows come from [`idbridge_broker::cache::Cache::snapshot`]: one per cached key, so
//! label sets are bounded by `max_cached_credentials`. Label values are escaped; none is a
//! secret. `/healthz` is 200 while the process serves; `/readyz` is 200 once the config is
//! loaded and every listener is up, 503 before and while a route is down ([`crate::health`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::Frontend;
use crate::broker::Broker;

/// Request and denial counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(Frontend, u16), u64>>,
    denials: Mutex<BTreeMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    /// Counts one answered request.
    pub fn count_request(&self, frontend: Frontend, status: u16) {
        *lock(&self.requests).entry((frontend, status)).or_default() += 1;
    }

    /// Counts one caller refused for `route`.
    pub fn count_denial(&self, route: &str) {
        *lock(&self.denials).entry(route.to_owned()).or_default() += 1;
    }

    /// Requests answered by `frontend` with `status`.
    pub fn requests(&self, frontend: Frontend, status: u16) -> u64 {
        lock(&self.requests)
            .get(&(frontend, status))
            .copied()
            .unwrap_or(0)
    }
}

/// Escapes a Prometheus label value.
pub(crate) fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The Prometheus text exposition of `broker`.
pub fn render(broker: &Broker) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "idbridge_serve_requests_total",
        "counter",
        "Requests answered, by frontend and HTTP status.",
    );
    for ((frontend, status), n) in lock(&broker.metrics().requests).iter() {
        let _ = writeln!(
            out,
            "idbridge_serve_requests_total{{frontend=\"{}\",status=\"{status}\"}} {n}",
            frontend.as_str()
        );
    }
    header(
        &mut out,
        "idbridge_serve_caller_denials_total",
        "counter",
        "Requests refused because the caller may not use the route.",
    );
    for (route, n) in lock(&broker.metrics().denials).iter() {
        let _ = writeln!(
            out,
            "idbridge_serve_caller_denials_total{{route=\"{}\"}} {n}",
            label(route)
        );
    }

    let snapshot = broker.cache_snapshot();
    let mut rows: Vec<_> = snapshot
        .entries
        .iter()
        .map(|e| {
            let labels = format!(
                "route=\"{}\",audience=\"{}\",scopes=\"{}\"",
                label(&e.key.route),
                label(e.key.overrides.audience.as_deref().unwrap_or_default()),
                label(
                    &e.key
                        .overrides
                        .scopes
                        .as_deref()
                        .unwrap_or_default()
                        .join(" ")
                ),
            );
            (labels, e)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    type Pick = fn(&idbridge_broker::cache::EntrySnapshot<crate::CredentialKey>) -> Option<f64>;
    let series: [(&str, &str, &str, Pick); 7] = [
        (
            "idbridge_serve_cache_hits_total",
            "counter",
            "Credential requests answered from the cache without waiting.",
            |e| Some(e.hits as f64),
        ),
        (
            "idbridge_serve_cache_negative_hits_total",
            "counter",
            "Credential requests answered with a cached permanent error.",
            |e| Some(e.negative_hits as f64),
        ),
        (
            "idbridge_serve_cache_misses_total",
            "counter",
            "Credential requests that waited for an upstream load.",
            |e| Some(e.misses as f64),
        ),
        (
            "idbridge_serve_upstream_loads_total",
            "counter",
            "Upstream loads (route runs), retries included in one load.",
            |e| Some(e.loads as f64),
        ),
        (
            "idbridge_serve_upstream_load_errors_total",
            "counter",
            "Upstream loads that failed after their retries.",
            |e| Some(e.load_errors as f64),
        ),
        (
            "idbridge_serve_upstream_load_latency_seconds",
            "gauge",
            "Duration of the last upstream load.",
            |e| e.last_load_latency_seconds,
        ),
        (
            "idbridge_serve_credential_expiry_seconds",
            "gauge",
            "Seconds until the cached credential expires.",
            |e| e.seconds_to_expiry,
        ),
    ];
    for (name, kind, help, pick) in series {
        header(&mut out, name, kind, help);
        for (labels, e) in &rows {
            if let Some(v) = pick(e) {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    }
    header(
        &mut out,
        "idbridge_serve_cache_entries",
        "gauge",
        "Keys in the credential cache.",
    );
    let _ = writeln!(
        out,
        "idbridge_serve_cache_entries {}",
        snapshot.entries.len()
    );
    header(
        &mut out,
        "idbridge_serve_cache_max_entries",
        "gauge",
        "Bound on keys in the credential cache.",
    );
    let _ = writeln!(
        out,
        "idbridge_serve_cache_max_entries {}",
        snapshot.max_entries
    );
    header(
        &mut out,
        "idbridge_serve_cache_evictions_total",
        "counter",
        "Keys evicted for size or idleness.",
    );
    let _ = writeln!(
        out,
        "idbridge_serve_cache_evictions_total {}",
        snapshot.evictions
    );
    header(
        &mut out,
        "idbridge_serve_ready",
        "gauge",
        "1 once the config is loaded and every listener is up.",
    );
    let _ = writeln!(out, "idbridge_serve_ready {}", u8::from(broker.is_ready()));
    crate::health::render_metrics(&mut out, broker, header);
    out
}

/// The `/metrics`, `/healthz`, `/readyz` router.
pub fn router(broker: Arc<Broker>) -> Router {
    let r = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "Not Found\n") })
        .with_state(Arc::clone(&broker))
        .layer(axum::middleware::from_fn(crate::http::limit_headers));
    crate::http::observe(r, Frontend::Metrics, broker)
}

async fn metrics(State(broker): State<Arc<Broker>>) -> Response {
    let mut resp = render(&broker).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(broker): State<Arc<Broker>>) -> Response {
    let (ready, body) = crate::health::readiness(&broker);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}
