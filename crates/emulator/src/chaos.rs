//! Fault injection for every emulated listener, so users and tests can rehearse what real
//! upstreams do: fail, throttle, hang, reset, cut answers short, answer garbage, slow down, go
//! away altogether.
//!
//! One axum middleware ([`layer`]) sits in front of each listener's router (AWS STS, Google
//! APIs, GCE metadata, IMDS, ECS, the SPIFFE issuer's discovery); handlers know nothing of it.
//! Each request that reaches a listener is counted as `requests.<listener>` in the emulator's
//! counters (`GET /_emulator/stats`), faulted or not, and each injected fault as
//! `chaos.<listener>.<fault>`; the control endpoints under `/_emulator/` are never faulted or
//! counted.
//!
//! # Configuration
//!
//! From the world file, or replaced at run time with `PUT /_emulator/chaos` (the same document
//! as JSON; `GET` returns the one in force). Rules are tried in order; the first whose
//! `listener` and `path_prefix` match a request decides its fate:
//!
//! ```toml
//! [chaos]
//! seed = 7                    # decisions come from a PRNG seeded with this (omit: random)
//!
//! [[chaos.rule]]
//! listener = "aws_sts"        # aws_sts, google, metadata, imds, ecs, spiffe_oidc, roles_anywhere,
//!                             # aws_iam, kubernetes, or "*"
//! path_prefix = "/"           # optional: only requests whose path starts with it
//! error_500 = 0.05            # probabilities per request, summing to at most 1:
//! error_502 = 0.05            #   5xx with a load balancer's HTML page (not the cloud's body)
//! error_503 = 0.05
//! throttle_429 = 0.05         #   429 with `Retry-After: retry_after_seconds`
//! retry_after_seconds = 1
//! hang = 0.02                 #   accept, never answer (until the emulator shuts down)
//! reset = 0.02                #   close the connection without an answer
//! truncate = 0.02             #   the real answer, cut off halfway through its Content-Length
//! garbage = 0.02              #   200 with a body that is no document of the endpoint's
//! latency_ms = 20             # added before every request this rule matches
//! outage = false              # true: every request gets a 503 page, whatever the rates
//! script = ["hang", "ok"]     # the first matching requests' fates, in order, before the rates
//! ```
//!
//! `script` entries are `ok`, `error_500`, `error_502`, `error_503`, `throttle_429`, `hang`,
//! `reset`, `truncate`, `garbage`. With a seed and requests arriving one after another (as a
//! single-flight cache sends them), the sequence of faults is the same on every run.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::Emulator;

/// How long a hung request is held at most (unless the emulator shuts down first): longer
/// than any client's timeout, short enough that a forgotten connection does not live forever.
const HANG_LIMIT: Duration = Duration::from_secs(300);

/// The largest body the `truncate` fault buffers to cut (emulated answers are a few KB).
const TRUNCATE_BUFFER_LIMIT: usize = 1 << 20;

/// Bounds on the knobs, so a typo cannot make the emulator sleep for a day.
const MAX_LATENCY_MS: u64 = 60_000;
const MAX_RETRY_AFTER_SECONDS: u64 = 3_600;

/// An emulated listener, as chaos rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Listener {
    /// AWS STS.
    AwsSts,
    /// Google APIs (OAuth2, STS, IAM Credentials, certificates).
    Google,
    /// The GCE metadata server.
    Metadata,
    /// EC2 IMDSv2.
    Imds,
    /// ECS container credentials.
    Ecs,
    /// The SPIFFE issuer's OIDC discovery.
    SpiffeOidc,
    /// IAM Roles Anywhere.
    RolesAnywhere,
    /// AWS IAM (outbound federation) and the outbound issuers' discovery.
    AwsIam,
    /// The Kubernetes API server.
    Kubernetes,
    /// Every listener.
    #[serde(rename = "*")]
    Any,
}

impl Listener {
    /// The name used in rules and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::AwsSts => "aws_sts",
            Listener::Google => "google",
            Listener::Metadata => "metadata",
            Listener::Imds => "imds",
            Listener::Ecs => "ecs",
            Listener::SpiffeOidc => "spiffe_oidc",
            Listener::RolesAnywhere => "roles_anywhere",
            Listener::AwsIam => "aws_iam",
            Listener::Kubernetes => "kubernetes",
            Listener::Any => "*",
        }
    }

    fn matches(self, other: Listener) -> bool {
        self == Listener::Any || self == other
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Served normally.
    Ok,
    /// 500 with an HTML page.
    Error500,
    /// 502 with an HTML page.
    Error502,
    /// 503 with an HTML page.
    Error503,
    /// 429 with `Retry-After`.
    Throttle429,
    /// Never answered.
    Hang,
    /// The connection closed without an answer.
    Reset,
    /// The real answer, cut off halfway.
    Truncate,
    /// 200 with a body that is not the endpoint's document.
    Garbage,
    /// The switched-on outage: 503.
    Outage,
}

impl Fault {
    fn as_str(self) -> &'static str {
        match self {
            Fault::Ok => "ok",
            Fault::Error500 => "error_500",
            Fault::Error502 => "error_502",
            Fault::Error503 => "error_503",
            Fault::Throttle429 => "throttle_429",
            Fault::Hang => "hang",
            Fault::Reset => "reset",
            Fault::Truncate => "truncate",
            Fault::Garbage => "garbage",
            Fault::Outage => "outage",
        }
    }
}

/// The `[chaos]` section of a world file, and the body of `PUT /_emulator/chaos`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosConfig {
    /// Seed of the decisions' PRNG; random when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Rules, first match wins.
    #[serde(default, rename = "rule")]
    pub rules: Vec<ChaosRule>,
}

/// Faults for the requests of one listener (and path prefix).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosRule {
    /// Which listener.
    pub listener: Listener,
    /// Only paths starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Probability of a 500.
    #[serde(default)]
    pub error_500: f64,
    /// Probability of a 502.
    #[serde(default)]
    pub error_502: f64,
    /// Probability of a 503.
    #[serde(default)]
    pub error_503: f64,
    /// Probability of a 429.
    #[serde(default)]
    pub throttle_429: f64,
    /// `Retry-After` of the 429s, in seconds.
    #[serde(default = "default_retry_after")]
    pub retry_after_seconds: u64,
    /// Probability of a hang.
    #[serde(default)]
    pub hang: f64,
    /// Probability of a reset.
    #[serde(default)]
    pub reset: f64,
    /// Probability of a truncated answer.
    #[serde(default)]
    pub truncate: f64,
    /// Probability of a garbage 200.
    #[serde(default)]
    pub garbage: f64,
    /// Latency added to every matching request.
    #[serde(default)]
    pub latency_ms: u64,
    /// Every matching request fails with 503.
    #[serde(default)]
    pub outage: bool,
    /// The fates of the first matching requests, before the rates apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<Fault>,
}

fn default_retry_after() -> u64 {
    1
}

impl ChaosRule {
    /// A rule for `listener` that injects nothing (set fields on it).
    pub fn new(listener: Listener) -> Self {
        Self {
            listener,
            path_prefix: None,
            error_500: 0.0,
            error_502: 0.0,
            error_503: 0.0,
            throttle_429: 0.0,
            retry_after_seconds: default_retry_after(),
            hang: 0.0,
            reset: 0.0,
            truncate: 0.0,
            garbage: 0.0,
            latency_ms: 0,
            outage: false,
            script: Vec::new(),
        }
    }

    fn rates(&self) -> [(Fault, f64); 8] {
        [
            (Fault::Error500, self.error_500),
            (Fault::Error502, self.error_502),
            (Fault::Error503, self.error_503),
            (Fault::Throttle429, self.throttle_429),
            (Fault::Hang, self.hang),
            (Fault::Reset, self.reset),
            (Fault::Truncate, self.truncate),
            (Fault::Garbage, self.garbage),
        ]
    }

    fn matches(&self, listener: Listener, path: &str) -> bool {
        self.listener.matches(listener)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
    }
}

impl ChaosConfig {
    /// Checks every rule; the message names the rule and the field.
    pub fn validate(&self) -> Result<(), String> {
        for (i, rule) in self.rules.iter().enumerate() {
            let name = format!("chaos.rule[{i}] ({})", rule.listener.as_str());
            let mut sum = 0.0;
            for (fault, p) in rule.rates() {
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!(
                        "{name}: field `{}` must be a probability in 0..=1",
                        fault.as_str()
                    ));
                }
                sum += p;
            }
            if sum > 1.0 + 1e-9 {
                return Err(format!(
                    "{name}: the fault probabilities add up to {sum}, more than 1"
                ));
            }
            if rule.latency_ms > MAX_LATENCY_MS {
                return Err(format!(
                    "{name}: field `latency_ms` must be at most {MAX_LATENCY_MS}"
                ));
            }
            if rule.retry_after_seconds > MAX_RETRY_AFTER_SECONDS {
                return Err(format!(
                    "{name}: field `retry_after_seconds` must be at most {MAX_RETRY_AFTER_SECONDS}"
                ));
            }
            if rule
                .path_prefix
                .as_deref()
                .is_some_and(|p| !p.starts_with('/'))
            {
                return Err(format!("{name}: field `path_prefix` must start with `/`"));
            }
            if rule.script.contains(&Fault::Outage) {
                return Err(format!(
                    "{name}: field `script`: use `outage = true` rather than an `outage` entry"
                ));
            }
        }
        Ok(())
    }
}

/// The fate of one request, as decided.
#[derive(Debug, Clone, Copy)]
struct Decision {
    fault: Fault,
    latency: Duration,
    retry_after_seconds: u64,
}

/// The chaos in force and its PRNG.
#[derive(Debug)]
pub struct Chaos {
    config: RwLock<ChaosConfig>,
    /// The PRNG and each rule's position in its script.
    rng: Mutex<(StdRng, Vec<usize>)>,
    /// Set at shutdown: hung requests are let go.
    release: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn seeded(seed: Option<u64>) -> StdRng {
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    }
}

impl Chaos {
    /// Chaos as `config` says (no rules: none).
    pub fn new(config: ChaosConfig) -> Self {
        let rng = (seeded(config.seed), vec![0; config.rules.len()]);
        Self {
            config: RwLock::new(config),
            rng: Mutex::new(rng),
            release: watch::Sender::new(false),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> ChaosConfig {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the configuration (reseeding the PRNG and restarting scripts).
    pub fn set(&self, config: ChaosConfig) -> Result<(), String> {
        config.validate()?;
        let mut rng = lock(&self.rng);
        *rng = (seeded(config.seed), vec![0; config.rules.len()]);
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// Switches an outage on or off for `listener`: a rule of its own in front of the others.
    pub fn set_outage(&self, listener: Listener, outage: bool) {
        let mut config = self.config();
        config
            .rules
            .retain(|r| !(r.listener == listener && r.outage && r.path_prefix.is_none()));
        if outage {
            let mut rule = ChaosRule::new(listener);
            rule.outage = true;
            config.rules.insert(0, rule);
        }
        // The rule is valid by construction.
        let _ = self.set(config);
    }

    /// Lets every hung request go (the emulator is shutting down).
    pub fn release_hangs(&self) {
        self.release.send_replace(true);
    }

    fn decide(&self, listener: Listener, path: &str) -> Decision {
        let config = self.config.read().unwrap_or_else(PoisonError::into_inner);
        let Some((index, rule)) = config
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(listener, path))
        else {
            return Decision {
                fault: Fault::Ok,
                latency: Duration::ZERO,
                retry_after_seconds: 0,
            };
        };
        let fault = if rule.outage {
            Fault::Outage
        } else {
            let mut guard = lock(&self.rng);
            let (rng, positions) = &mut *guard;
            match positions.get_mut(index) {
                Some(at) if *at < rule.script.len() => {
                    *at += 1;
                    rule.script[*at - 1]
                }
                _ => {
                    let roll: f64 = rng.random();
                    let mut acc = 0.0;
                    rule.rates()
                        .into_iter()
                        .find(|(_, p)| {
                            acc += p;
                            roll < acc
                        })
                        .map_or(Fault::Ok, |(f, _)| f)
                }
            }
        };
        Decision {
            fault,
            latency: Duration::from_millis(rule.latency_ms),
            retry_after_seconds: rule.retry_after_seconds,
        }
    }
}

/// Puts the chaos middleware in front of `router`, the router of `listener`.
pub fn layer(router: Router, emulator: Arc<Emulator>, listener: Listener) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        (emulator, listener),
        middleware,
    ))
}

async fn middleware(
    State((emulator, listener)): State<(Arc<Emulator>, Listener)>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if path.starts_with("/_emulator/") {
        return next.run(req).await;
    }
    emulator.bump(&format!("requests.{}", listener.as_str()));
    let decision = emulator.chaos.decide(listener, path);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    if decision.fault != Fault::Ok {
        emulator.bump(&format!(
            "chaos.{}.{}",
            listener.as_str(),
            decision.fault.as_str()
        ));
        tracing::debug!(
            listener = listener.as_str(),
            fault = decision.fault.as_str(),
            "chaos"
        );
    }
    match decision.fault {
        Fault::Ok => next.run(req).await,
        Fault::Error500 => page(StatusCode::INTERNAL_SERVER_ERROR),
        Fault::Error502 => page(StatusCode::BAD_GATEWAY),
        Fault::Error503 | Fault::Outage => page(StatusCode::SERVICE_UNAVAILABLE),
        Fault::Throttle429 => {
            let mut resp = page(StatusCode::TOO_MANY_REQUESTS);
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(decision.retry_after_seconds),
            );
            resp
        }
        Fault::Hang => {
            let mut release = emulator.chaos.release.subscribe();
            let _ = tokio::time::timeout(HANG_LIMIT, release.wait_for(|go| *go)).await;
            page(StatusCode::GATEWAY_TIMEOUT)
        }
        Fault::Reset => broken(StatusCode::OK, Bytes::new(), 512),
        Fault::Truncate => truncated(next.run(req).await).await,
        Fault::Garbage => garbage(&emulator),
    }
}

/// A load balancer's error page: HTML, nothing of the cloud's error format.
fn page(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/html"))],
        body,
    )
        .into_response()
}

/// An answer that announces `length` bytes, sends `prefix`, and breaks the connection.
fn broken(status: StatusCode, prefix: Bytes, length: usize) -> Response {
    let cut = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "chaos: connection cut");
    let chunks: Vec<Result<Bytes, std::io::Error>> = if prefix.is_empty() {
        vec![Err(cut)]
    } else {
        vec![Ok(prefix), Err(cut)]
    };
    let mut resp = Response::new(Body::from_stream(tokio_stream::iter(chunks)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    resp
}

/// The real answer, cut off halfway through.
async fn truncated(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, TRUNCATE_BUFFER_LIMIT).await else {
        return broken(parts.status, Bytes::new(), 512);
    };
    let length = bytes.len().max(2);
    let mut cut = broken(parts.status, bytes.slice(..bytes.len() / 2), length);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH {
            cut.headers_mut().insert(name.clone(), value.clone());
        }
    }
    cut
}

/// A 200 whose body is nobody's document: a captive portal's page, or noise.
fn garbage(emulator: &Emulator) -> Response {
    let noise: [u8; 48] = {
        let mut guard = lock(&emulator.chaos.rng);
        guard.0.random()
    };
    let (content_type, body) = if noise[0].is_multiple_of(2) {
        (
            "text/html",
            Bytes::from_static(
                b"<html><body><h1>Welcome</h1><p>Please sign in to continue.</p></body></html>",
            ),
        )
    } else {
        ("application/json", Bytes::copy_from_slice(&noise))
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// `GET /_emulator/chaos`: the configuration in force.
pub(crate) async fn get_config(State(emulator): State<Arc<Emulator>>) -> Response {
    axum::Json(emulator.chaos.config()).into_response()
}

/// `PUT /_emulator/chaos`: replaces the configuration (400 with the reason when invalid).
pub(crate) async fn put_config(State(emulator): State<Arc<Emulator>>, body: Bytes) -> Response {
    let config: ChaosConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("chaos: invalid configuration: {e}\n"),
            )
                .into_response();
        }
    };
    match emulator.chaos.set(config) {
        Ok(()) => axum::Json(emulator.chaos.config()).into_response(),
        Err(message) => (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::World;

    fn emulator(config: ChaosConfig) -> Arc<Emulator> {
        let mut world = World::builtin().unwrap();
        world.chaos = config;
        Emulator::new(world, idbridge_core::clock::system()).unwrap()
    }

    fn app(emu: &Arc<Emulator>) -> Router {
        let inner = Router::new().route("/doc", get(|| async { "{\"field\":\"a value\"}" }));
        layer(inner, Arc::clone(emu), Listener::AwsSts)
    }

    async fn call(app: &Router, path: &str) -> (StatusCode, Result<Bytes, String>) {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .map_err(|e| e.to_string());
        (status, body)
    }

    #[tokio::test]
    async fn scripts_run_in_order_then_the_rates_apply() {
        let mut rule = ChaosRule::new(Listener::AwsSts);
        rule.script = vec![
            Fault::Error502,
            Fault::Throttle429,
            Fault::Garbage,
            Fault::Truncate,
            Fault::Reset,
            Fault::Ok,
        ];
        rule.retry_after_seconds = 4;
        let emu = emulator(ChaosConfig {
            seed: Some(1),
            rules: vec![rule],
        });
        let app = app(&emu);
        let (status, body) = call(&app, "/doc").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(String::from_utf8_lossy(&body.unwrap()).contains("<html>"));
        let resp = app
            .clone()
            .oneshot(Request::get("/doc").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "4");
        let (status, body) = call(&app, "/doc").await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(body.unwrap().as_ref(), b"{\"field\":\"a value\"}");
        let (status, body) = call(&app, "/doc").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_err(), "a truncated body is an error");
        let (_, body) = call(&app, "/doc").await;
        assert!(body.is_err(), "a reset is an error");
        let (status, body) = call(&app, "/doc").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.unwrap().as_ref(), b"{\"field\":\"a value\"}");
        assert_eq!(emu.count("requests.aws_sts"), 6);
        assert_eq!(emu.count("chaos.aws_sts.error_502"), 1);
        assert_eq!(emu.count("chaos.aws_sts.truncate"), 1);
    }

    #[tokio::test]
    async fn a_seed_gives_the_same_faults_every_time() {
        let mut rule = ChaosRule::new(Listener::Any);
        rule.error_503 = 0.3;
        rule.garbage = 0.2;
        let config = ChaosConfig {
            seed: Some(42),
            rules: vec![rule],
        };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let emu = emulator(config.clone());
            let app = app(&emu);
            let mut statuses = Vec::new();
            for _ in 0..50 {
                let (status, body) = call(&app, "/doc").await;
                statuses.push((status, body.map(|b| b.len()).unwrap_or(0)));
            }
            runs.push(statuses);
        }
        assert_eq!(runs[0], runs[1]);
        let faults = runs[0]
            .iter()
            .filter(|(s, len)| *s != StatusCode::OK || *len != b"{\"field\":\"a value\"}".len())
            .count();
        assert!((10..=40).contains(&faults), "{faults} faults in 50");
    }

    #[tokio::test]
    async fn an_outage_is_switched_on_and_off_and_control_is_spared() {
        let emu = emulator(ChaosConfig::default());
        let app = app(&emu).merge(
            Router::new()
                .route("/_emulator/chaos", get(get_config).put(put_config))
                .with_state(Arc::clone(&emu)),
        );
        assert_eq!(call(&app, "/doc").await.0, StatusCode::OK);
        emu.chaos.set_outage(Listener::AwsSts, true);
        assert_eq!(call(&app, "/doc").await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(call(&app, "/_emulator/chaos").await.0, StatusCode::OK);
        // Through the control endpoint: back to no chaos.
        let resp = app
            .clone()
            .oneshot(
                Request::put("/_emulator/chaos")
                    .body(Body::from("{\"rule\": []}"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(call(&app, "/doc").await.0, StatusCode::OK);
        let resp = app
            .clone()
            .oneshot(
                Request::put("/_emulator/chaos")
                    .body(Body::from(
                        "{\"rule\": [{\"listener\": \"google\", \"hang\": 1.5}]}",
                    ))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(emu.count("requests.aws_sts"), 3);
    }

    #[tokio::test]
    async fn hung_requests_are_released_at_shutdown() {
        let mut rule = ChaosRule::new(Listener::AwsSts);
        rule.script = vec![Fault::Hang];
        let emu = emulator(ChaosConfig {
            seed: None,
            rules: vec![rule],
        });
        let app = app(&emu);
        let hung = tokio::spawn(async move { call(&app, "/doc").await.0 });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!hung.is_finished());
        emu.chaos.release_hangs();
        assert_eq!(hung.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn world_files_declare_chaos() {
        let text = format!(
            "{}\n[chaos]\nseed = 3\n[[chaos.rule]]\nlistener = \"metadata\"\nerror_503 = 0.2\nscript = [\"hang\", \"ok\"]\n",
            crate::world::BUILTIN_TOML
        );
        let world = World::from_str_at(&text, "w.toml", None).unwrap();
        assert_eq!(world.chaos.seed, Some(3));
        assert_eq!(world.chaos.rules[0].listener, Listener::Metadata);
        assert_eq!(world.chaos.rules[0].script, [Fault::Hang, Fault::Ok]);
        let bad = format!(
            "{}\n[chaos]\n[[chaos.rule]]\nlistener = \"metadata\"\nerror_503 = 0.7\ngarbage = 0.7\n",
            crate::world::BUILTIN_TOML
        );
        let err = World::from_str_at(&bad, "w.toml", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("chaos.rule[0]"), "{err}");
    }
}
