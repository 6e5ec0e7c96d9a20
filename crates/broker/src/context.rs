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

/// How long to wait for a TCP connection to a cloud endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on one HTTP exchange: token endpoints answer in well under a second; 30 s covers
/// a cold cloud without letting a hung peer block a refresh forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
        let http = HttpClient::new(CONNECT_TIMEOUT, REQUEST_TIMEOUT).map_err(|e| {
            crate::BrokerError::new(
                crate::ErrorKind::InvalidConfiguration,
                "http",
                format!("cannot build HTTP client: {e}"),
            )
        })?;
        let endpoints = resolve(env.as_ref(), config);
        Ok(Self {
            env,
            clock,
            http,
            endpoints,
        })
    }
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
