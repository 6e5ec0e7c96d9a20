//! Everything a route needs from the outside world, injected: environment, clock, HTTP client
//! and resolved endpoints.
//!
//! Endpoint precedence, highest first: the config file's `[endpoints]` table, the environment
//! variable (`AWS_ENDPOINT_URL_STS`, `GCE_METADATA_HOST`, `IDBRIDGE_GOOGLE_OAUTH2_URL`,
//! `IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL`; see [`idbridge_core::env`]), the cloud's public default.

use std::sync::Arc;
use std::time::Duration;

use idbridge_core::clock::{SharedClock, SystemClock};
use idbridge_core::env::{self, Env, ProcessEnv};

use crate::config::EndpointsConfig;
use crate::http_client::HttpClient;

/// How long to wait for a TCP (and TLS) connection to a cloud endpoint: a regional endpoint
/// connects in tens of milliseconds, so two seconds means it is not going to.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Upper bound on one attempt of one hop (one HTTP exchange, connecting and reading the whole
/// answer included), for reqwest and the AWS SDK alike. Token endpoints answer in well under a
/// second; three seconds is past any healthy answer's tail, so a hung connection costs three
/// seconds and the cache's retry ([`crate::cache`]) goes out on a fresh one, well inside the
/// cache's per-attempt ([`crate::cache::ATTEMPT_TIMEOUT`]) and per-load budgets.
pub const HOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Resolved endpoint URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// AWS STS base URL.
    pub aws_sts: Option<String>,
    /// GCE metadata `host:port`.
    pub gce_metadata_host: String,
    /// Google OAuth2 token URL.
    pub google_oauth2: Option<String>,
    /// IAM Credentials base URL.
    pub google_iamcredentials: String,
}

/// The injected world of a route run.
#[derive(Debug, Clone)]
pub struct Context {
    /// Environment.
    pub env: Arc<dyn Env>,
    /// Clock.
    pub clock: SharedClock,
    /// HTTP clients (rustls), built on first use ([`crate::http_client`]).
    pub http: HttpClient,
    /// Endpoints.
    pub endpoints: Endpoints,
    /// Upper bound on one attempt of one hop ([`HOP_TIMEOUT`] unless set with
    /// [`Context::with_hop_timeout`]); the AWS SDK clients read it too.
    pub hop_timeout: Duration,
    /// The pod a request comes from, when `serve` found one (the `kubernetes-pod` source
    /// mints its token).
    pub pod: Option<crate::source::kubernetes_pod::CallingPod>,
}

impl Context {
    /// A context over the process environment and real clock.
    pub fn from_process(config: &EndpointsConfig) -> Result<Self, crate::BrokerError> {
        Self::new(Arc::new(ProcessEnv), Arc::new(SystemClock), config)
    }

    /// A context over the given environment and clock.
    pub fn new(
        env: Arc<dyn Env>,
        clock: SharedClock,
        config: &EndpointsConfig,
    ) -> Result<Self, crate::BrokerError> {
        let endpoints = resolve(env.as_ref(), config);
        Ok(Self {
            env,
            clock,
            http: http_client(HOP_TIMEOUT)?,
            endpoints,
            hop_timeout: HOP_TIMEOUT,
            pod: None,
        })
    }

    /// The same context for a request from `pod`.
    pub fn with_pod(mut self, pod: crate::source::kubernetes_pod::CallingPod) -> Self {
        self.pod = Some(pod);
        self
    }

    /// The same context with another per-attempt hop timeout (tests against a fault-injecting
    /// emulator use a short one; an operator facing a slow private endpoint a longer one).
    pub fn with_hop_timeout(mut self, timeout: Duration) -> Result<Self, crate::BrokerError> {
        self.http = http_client(timeout)?;
        self.hop_timeout = timeout;
        Ok(self)
    }

    /// How long to wait for a connection: [`CONNECT_TIMEOUT`], or less under a shorter hop
    /// timeout.
    pub fn connect_timeout(&self) -> Duration {
        CONNECT_TIMEOUT.min(self.hop_timeout)
    }
}

/// The HTTP clients ([`crate::http_client`]: built on first use), with `timeout` on every
/// request (connecting and reading the body included).
fn http_client(timeout: Duration) -> Result<HttpClient, crate::BrokerError> {
    HttpClient::new(CONNECT_TIMEOUT.min(timeout), timeout).map_err(|e| {
        crate::BrokerError::new(
            crate::ErrorKind::InvalidConfiguration,
            "http",
            format!("cannot build HTTP client: {e}"),
        )
    })
}

fn resolve(e: &dyn Env, c: &EndpointsConfig) -> Endpoints {
    let pick = |cfg: &Option<String>, vars: &[&str]| -> Option<String> {
        cfg.clone()
            .or_else(|| vars.iter().find_map(|v| e.get(v)))
            .map(|s| s.trim_end_matches('/').to_owned())
    };
    Endpoints {
        aws_sts: pick(
            &c.aws_sts,
            &[env::AWS_ENDPOINT_URL_STS, env::AWS_ENDPOINT_URL],
        ),
        gce_metadata_host: pick(&c.gce_metadata_host, &[env::GCE_METADATA_HOST])
            .unwrap_or_else(|| env::DEFAULT_GCE_METADATA_HOST.to_owned()),
        google_oauth2: pick(&c.google_oauth2, &[env::IDBRIDGE_GOOGLE_OAUTH2_URL]),
        google_iamcredentials: pick(
            &c.google_iamcredentials,
            &[env::IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL],
        )
        .unwrap_or_else(|| env::DEFAULT_GOOGLE_IAMCREDENTIALS_URL.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use idbridge_core::env::MapEnv;

    use super::*;

    #[test]
    fn config_beats_env_beats_default() {
        let e = MapEnv::from_pairs([
            ("AWS_ENDPOINT_URL", "http://global:1"),
            ("IDBRIDGE_GOOGLE_OAUTH2_URL", "http://env:2/token"),
        ]);
        let c = EndpointsConfig {
            google_oauth2: Some("http://cfg:3/token".into()),
            ..Default::default()
        };
        let r = resolve(&e, &c);
        assert_eq!(r.aws_sts.as_deref(), Some("http://global:1"));
        assert_eq!(r.google_oauth2.as_deref(), Some("http://cfg:3/token"));
        assert_eq!(r.gce_metadata_host, "metadata.google.internal");
        assert_eq!(
            r.google_iamcredentials,
            "https://iamcredentials.googleapis.com"
        );
    }
}
