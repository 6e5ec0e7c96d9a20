//! `/metrics` (Prometheus text format), `/healthz` and `/readyz`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `idbridge_serve_requests_total` | counter | `frontend`, `status` |
//! | `idbridge_serve_caller_denials_total` | counter | `route` |
//! | `idbridge_serve_cache_hits_total` | counter | `route`, `keys` (`route` or `client`) |
//! | `idbridge_serve_cache_negative_hits_total` | counter | same |
//! | `idbridge_serve_cache_misses_total` | counter | same |
//! | `idbridge_serve_upstream_loads_total` | counter | same |
//! | `idbridge_serve_upstream_load_errors_total` | counter | same |
//! | `idbridge_serve_upstream_load_latency_seconds` | gauge (last load) | same |
//! | `idbridge_serve_credential_expiry_seconds` | gauge (seconds left) | same |
//! | `idbridge_serve_cache_entries`, `idbridge_serve_cache_max_entries` | gauge | — |
//! | `idbridge_serve_cache_evictions_total` | counter | — |
//! | `idbridge_serve_client_keys` | gauge | `route` |
//! | `idbridge_serve_client_key_evictions_total` | counter | `route` |
//! | `idbridge_serve_client_keys_max` | gauge | — |
//! | `idbridge_serve_connections_open` | gauge | `frontend` |
//! | `idbridge_serve_connections_accepted_total` | counter | `frontend` |
//! | `idbridge_serve_connections_shed_total` | counter | `frontend`, `reason` (`listener_cap`, `caller_cap`) |
//! | `idbridge_serve_connections_closed_total` | counter | `frontend`, `reason` (`idle`, `header_read`) |
//! | `idbridge_serve_accept_errors_total` | counter | `frontend` |
//! | `idbridge_serve_ready` | gauge (0/1) | — |
//! | `idbridge_serve_fleet_cache_total` (with `[cache] redis_url`) | counter | `event` (`shared_hit`, `shared_error`, `lead`, `fallback`, `rejected`, `fenced`) |
//! | `idbridge_serve_route_health` | gauge (1 for the route's state) | `route`, `state` |
//! | `idbridge_serve_route_consecutive_failures`, `…_route_backoff_seconds` | gauge | `route` |
//! | `idbridge_serve_route_wait_timeouts_total` | counter | `route` |
//!
//! Cache rows come from [`idbridge_broker::cache::Cache::snapshot`]: one per route for its own
//! credential (`keys="route"`) and one per route summing its client-chosen keys
//! (`keys="client"`), so label sets are bounded by the config, never by what clients send.
//! Label values are escaped; none is a secret. `/healthz` is 200 while the process serves;
//! `/readyz` is 200 once the config is loaded and every listener is up, 503 before and while a
//! route is down ([`crate::health`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use idbridge_broker::cache::{CacheSnapshot, EntrySnapshot};

use crate::Frontend;
use crate::broker::{Broker, CredentialKey};
use std::path::PathBuf;

use idbridge_broker::ConfigError;
use idbridge_core::SecretString;
use serde::Deserialize;
use toml::Spanned;

use crate::config::Listen;
use crate::frontend::{Configured, Kind, Section};

/// The kind, registered (last) in [`crate::frontend::KINDS`].
pub static KIND: MetricsListener = MetricsListener;

/// `[serve.metrics]`: serves no credentials, so it does not count as a frontend.
#[derive(Debug)]
pub struct MetricsListener;

impl Kind for MetricsListener {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn section(&self) -> &'static str {
        "[serve.metrics]"
    }

    fn title(&self) -> &'static str {
        "metrics"
    }

    fn frontend(&self) -> Frontend {
        Frontend::Metrics
    }

    fn listener_name(&self) -> String {
        "the metrics listener".to_owned()
    }

    fn serves_credentials(&self) -> bool {
        false
    }

    fn parse(&self, s: Section<'_, '_>) -> Result<Arc<dyn Configured>, ConfigError> {
        let m = s.deserialize_as_file::<RawMetrics>()?.into_inner();
        let listen = s.listen(m.port, m.socket)?;
        Ok(Arc::new(MetricsConfig { listen }))
    }
}

impl Configured for MetricsConfig {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }

    fn listen(&self) -> &Listen {
        &self.listen
    }

    fn routes(&self) -> Vec<String> {
        Vec::new()
    }

    fn router(&self, broker: Arc<Broker>) -> Router {
        router(broker)
    }

    fn env(&self, _base: &str) -> Vec<(&'static str, SecretString)> {
        Vec::new()
    }
}

impl crate::ServeConfig {
    /// The metrics listener, when configured.
    pub fn metrics(&self) -> Option<&MetricsConfig> {
        self.frontend()
    }
}

/// `[serve.metrics]`.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Where it listens.
    pub listen: Listen,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default)]
    port: Option<Spanned<u16>>,
    #[serde(default)]
    socket: Option<Spanned<PathBuf>>,
}

/// Request and denial counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(Frontend, u16), u64>>,
    denials: Mutex<BTreeMap<String, u64>>,
    connections: crate::conn::ConnectionMetrics,
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

    /// Connection counters of the listeners.
    pub fn connections(&self) -> &crate::conn::ConnectionMetrics {
        &self.connections
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
    let client_keys = broker.client_key_snapshots();
    let rows = cache_rows(&snapshot, &client_keys);
    type Pick = fn(&CacheRow) -> Option<f64>;
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
            "Duration of the last upstream load (the longest among client keys).",
            |e| e.latency,
        ),
        (
            "idbridge_serve_credential_expiry_seconds",
            "gauge",
            "Seconds until the cached credential expires (the soonest among client keys).",
            |e| e.expiry,
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
        "idbridge_serve_client_keys",
        "gauge",
        "Client-chosen keys (audiences, scope sets) cached for a route.",
    );
    for (route, snap) in &client_keys {
        let _ = writeln!(
            out,
            "idbridge_serve_client_keys{{route=\"{}\"}} {}",
            label(route),
            snap.entries.len()
        );
    }
    header(
        &mut out,
        "idbridge_serve_client_key_evictions_total",
        "counter",
        "Client-chosen keys evicted for the per-route bound or idleness.",
    );
    for (route, snap) in &client_keys {
        let _ = writeln!(
            out,
            "idbridge_serve_client_key_evictions_total{{route=\"{}\"}} {}",
            label(route),
            snap.evictions
        );
    }
    header(
        &mut out,
        "idbridge_serve_client_keys_max",
        "gauge",
        "Bound on client-chosen keys cached per route.",
    );
    let _ = writeln!(
        out,
        "idbridge_serve_client_keys_max {}",
        broker.max_client_keys_per_route()
    );
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
    if let Some(f) = broker.fleet_stats() {
        header(
            &mut out,
            "idbridge_serve_fleet_cache_total",
            "counter",
            "Fleet cache loads: answered from Redis, by another replica's error, by taking the lease, alone (Redis unavailable); entries rejected; results fenced out.",
        );
        for (event, n) in [
            ("shared_hit", f.shared_hits),
            ("shared_error", f.shared_errors),
            ("lead", f.leads),
            ("fallback", f.fallbacks),
            ("rejected", f.rejected),
            ("fenced", f.fenced),
        ] {
            let _ = writeln!(
                out,
                "idbridge_serve_fleet_cache_total{{event=\"{event}\"}} {n}"
            );
        }
    }
    crate::health::render_metrics(&mut out, broker, header);
    broker.metrics().connections().render(&mut out);
    out
}

/// One row of the cache series: a route's own key, or all of a route's client-chosen keys
/// summed (client-chosen audiences and scopes are never label values: they are unbounded).
#[derive(Debug, Default)]
struct CacheRow {
    hits: u64,
    negative_hits: u64,
    misses: u64,
    loads: u64,
    load_errors: u64,
    latency: Option<f64>,
    expiry: Option<f64>,
}

impl CacheRow {
    fn add(&mut self, e: &EntrySnapshot<CredentialKey>) {
        self.hits += e.hits;
        self.negative_hits += e.negative_hits;
        self.misses += e.misses;
        self.loads += e.loads;
        self.load_errors += e.load_errors;
        self.latency = max_opt(self.latency, e.last_load_latency_seconds, f64::max);
        self.expiry = max_opt(self.expiry, e.seconds_to_expiry, f64::min);
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>, pick: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, b) => a.or(b),
    }
}

/// Rows labelled `route` and `keys` (`route`: the route's own credential; `client`: its
/// client-chosen keys together), sorted by labels.
fn cache_rows(
    own: &CacheSnapshot<CredentialKey>,
    client: &[(String, CacheSnapshot<CredentialKey>)],
) -> Vec<(String, CacheRow)> {
    let mut rows: BTreeMap<String, CacheRow> = BTreeMap::new();
    let labels = |route: &str, keys: &str| format!("route=\"{}\",keys=\"{keys}\"", label(route));
    for e in &own.entries {
        rows.entry(labels(&e.key.route, "route"))
            .or_default()
            .add(e);
    }
    for (route, snap) in client {
        let row = rows.entry(labels(route, "client")).or_default();
        for e in &snap.entries {
            row.add(e);
        }
    }
    rows.into_iter().collect()
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
