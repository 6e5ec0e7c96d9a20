//! Running a route: source, then each exchange in turn.

use std::time::Duration;

use idbridge_core::Credential;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::config::{ExchangeConfig, RouteConfig};
use crate::exchange::aws_sts;
use crate::{BrokerError, Context, ErrorKind, source};

/// What one hop did, for `demo`, `doctor` and logs. Holds no secrets.
#[derive(Debug, Clone)]
pub struct HopReport {
    /// Hop name (`gce-metadata`, `aws-sts`, …).
    pub hop: String,
    /// The endpoint called (no query string).
    pub endpoint: String,
    /// The identity obtained, described.
    pub identity: String,
    /// When it expires.
    pub expires_at: Option<OffsetDateTime>,
    /// Time taken.
    pub elapsed: Duration,
}

impl HopReport {
    /// A report for a hop started at `started`.
    pub fn new(
        hop: &str,
        endpoint: impl Into<String>,
        identity: impl Into<String>,
        expires_at: Option<OffsetDateTime>,
        started: Instant,
    ) -> Self {
        Self {
            hop: hop.to_owned(),
            endpoint: endpoint.into(),
            identity: identity.into(),
            expires_at,
            elapsed: started.elapsed(),
        }
    }
}

/// A route's result.
#[derive(Debug, Clone)]
pub struct RouteOutput {
    /// The final credential.
    pub credential: Credential,
    /// Every hop, in order.
    pub hops: Vec<HopReport>,
}

/// A runnable route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its config.
    pub config: RouteConfig,
}

impl Route {
    /// Wraps a validated route config.
    pub fn new(config: RouteConfig) -> Self {
        Self { config }
    }

    /// Runs the route once (no caching), returning the credential and the hops.
    pub async fn run(&self, ctx: &Context) -> Result<RouteOutput, (BrokerError, Vec<HopReport>)> {
        let mut hops = Vec::new();
        match self.run_inner(ctx, &mut hops).await {
            Ok(credential) => Ok(RouteOutput { credential, hops }),
            Err(e) => Err((e, hops)),
        }
    }

    async fn run_inner(
        &self,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let mut current = source::fetch(&self.config.source, ctx, hops).await?;
        for ex in &self.config.exchange {
            current = match ex {
                ExchangeConfig::AwsSts {
                    role_arn,
                    session_name,
                    duration_seconds,
                    policy,
                    region,
                } => {
                    let Credential::IdToken(token) = &current else {
                        return Err(BrokerError::new(
                            ErrorKind::InvalidConfiguration,
                            "aws-sts",
                            "needs an ID token from the previous hop",
                        ));
                    };
                    let default_name = format!("idbridge-{}", self.config.name);
                    let session_name = session_name
                        .clone()
                        .unwrap_or_else(|| truncate_session(&default_name));
                    let req = aws_sts::Request {
                        role_arn,
                        session_name: &session_name,
                        duration_seconds: *duration_seconds,
                        policy: policy.as_deref(),
                        region: region.as_deref(),
                    };
                    aws_sts::exchange(ctx, token, &req, hops).await?
                }
            };
        }
        Ok(current)
    }
}

/// Session names are 2–64 characters of `[\w+=,.@-]`.
fn truncate_session(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}
