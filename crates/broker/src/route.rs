//! Running a route: source, then each exchange in turn.

use std::time::Duration;

use idbridge_core::Credential;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::config::{ExchangeConfig, RouteConfig};
use crate::exchange::{aws_sts, google_sts};
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

/// Per-request changes to a route's last hop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Overrides {
    /// ID-token audience.
    pub audience: Option<String>,
    /// Access-token scopes.
    pub scopes: Option<Vec<String>>,
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

    /// The route with `overrides` applied to its last hop (the one that mints the final
    /// credential): an ID-token audience or access-token scopes asked for by a client, e.g.
    /// `…/identity?audience=X` on the GCE metadata frontend.
    pub fn with_overrides(&self, overrides: &Overrides) -> Result<Route, BrokerError> {
        let mut config = self.config.clone();
        if overrides.audience.is_none() && overrides.scopes.is_none() {
            return Ok(self.clone());
        }
        let bad = |m: &str| {
            BrokerError::new(
                ErrorKind::InvalidConfiguration,
                "route",
                format!("route {:?}: {m}", self.config.name),
            )
        };
        match config.exchange.last_mut() {
            Some(ExchangeConfig::Impersonate {
                audience, scopes, ..
            }) => {
                if let Some(a) = &overrides.audience {
                    *audience = Some(a.clone());
                    *scopes = None;
                } else {
                    *scopes = overrides.scopes.clone();
                    *audience = None;
                }
            }
            Some(ExchangeConfig::GoogleSts { scopes, .. }) => {
                match (&overrides.audience, &overrides.scopes) {
                    (None, Some(s)) => *scopes = Some(s.clone()),
                    _ => {
                        return Err(bad(
                            "its last hop (google-sts) yields access tokens, not ID tokens for an audience",
                        ));
                    }
                }
            }
            Some(ExchangeConfig::AwsSts { .. }) => {
                return Err(bad(
                    "its last hop yields AWS credentials; audience/scopes do not apply",
                ));
            }
            None => {
                use crate::config::SourceConfig as S;
                match &mut config.source {
                    S::GceMetadata {
                        audience, scopes, ..
                    }
                    | S::Impersonate {
                        audience, scopes, ..
                    } => {
                        *audience = overrides.audience.clone();
                        *scopes = if overrides.audience.is_some() {
                            None
                        } else {
                            overrides.scopes.clone()
                        };
                    }
                    S::ServiceAccountKey {
                        target_audience,
                        scopes,
                        ..
                    } => {
                        *target_audience = overrides.audience.clone();
                        *scopes = if overrides.audience.is_some() {
                            None
                        } else {
                            overrides.scopes.clone()
                        };
                    }
                    S::Spiffe { audience, .. } => match &overrides.audience {
                        Some(a) => *audience = a.clone(),
                        None => {
                            return Err(bad(
                                "a SPIFFE source yields JWT-SVIDs; scopes do not apply",
                            ));
                        }
                    },
                    _ => {
                        return Err(bad(
                            "its source cannot mint tokens for another audience or scopes",
                        ));
                    }
                }
            }
        }
        Ok(Route { config })
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
            current = self.exchange_one(ex, &current, ctx, hops).await?;
        }
        Ok(current)
    }

    /// Runs one exchange on the previous hop's credential.
    async fn exchange_one(
        &self,
        ex: &ExchangeConfig,
        current: &Credential,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let next = match ex {
            ExchangeConfig::AwsSts {
                role_arn,
                session_name,
                duration_seconds,
                policy,
                region,
            } => {
                let Credential::IdToken(token) = current else {
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
            ExchangeConfig::GoogleSts {
                audience,
                scopes,
                token_url,
                subject_token_type,
                region,
            } => {
                let default_scopes = [google_sts::CLOUD_PLATFORM.to_owned()];
                let source_region = match &self.config.source {
                    crate::config::SourceConfig::Aws { region, .. } => region.as_deref(),
                    _ => None,
                };
                let req = google_sts::Request {
                    audience,
                    scopes: scopes.as_deref().unwrap_or(&default_scopes),
                    token_url: token_url.as_deref(),
                    subject_token_type: subject_token_type.as_deref(),
                    region: region.as_deref().or(source_region),
                };
                google_sts::exchange(ctx, current, &req, hops).await?
            }
            ExchangeConfig::Impersonate {
                service_account,
                audience,
                scopes,
                delegates,
                include_email,
                lifetime_seconds,
                endpoint,
            } => {
                let Credential::GoogleAccessToken(caller) = current else {
                    return Err(BrokerError::new(
                        ErrorKind::InvalidConfiguration,
                        "impersonate",
                        "needs a Google access token from the previous hop",
                    ));
                };
                let default_scopes = [source::impersonate::CLOUD_PLATFORM.to_owned()];
                let req = source::impersonate::Request {
                    service_account,
                    audience: audience.as_deref(),
                    scopes: if audience.is_some() {
                        None
                    } else {
                        Some(scopes.as_deref().unwrap_or(&default_scopes))
                    },
                    delegates,
                    include_email: *include_email,
                    lifetime_seconds: *lifetime_seconds,
                };
                match endpoint {
                    Some(base) => {
                        let mut ctx = ctx.clone();
                        ctx.endpoints.google_iamcredentials = base.trim_end_matches('/').to_owned();
                        source::impersonate::fetch(&ctx, caller, &req, hops).await?
                    }
                    None => source::impersonate::fetch(ctx, caller, &req, hops).await?,
                }
            }
        };
        Ok(next)
    }

    /// Runs the route step by step — the source, then each exchange — and stops at the first
    /// step that fails (the last outcome then holds the error). Each outcome keeps the
    /// credential its step produced, so `doctor` can show what every hop received; those
    /// credentials hold secrets and are never to be printed.
    pub async fn run_steps(&self, ctx: &Context) -> Vec<StepOutcome> {
        let mut out = Vec::new();
        let mut hops = Vec::new();
        let started = Instant::now();
        let first = source::fetch(&self.config.source, ctx, &mut hops).await;
        let mut current = match first {
            Ok(c) => {
                out.push(StepOutcome::new(
                    self.config.source.kind(),
                    0,
                    std::mem::take(&mut hops),
                    Ok(c.clone()),
                    started,
                ));
                c
            }
            Err(e) => {
                out.push(StepOutcome::new(
                    self.config.source.kind(),
                    0,
                    hops,
                    Err(e),
                    started,
                ));
                return out;
            }
        };
        for (i, ex) in self.config.exchange.iter().enumerate() {
            let started = Instant::now();
            match self.exchange_one(ex, &current, ctx, &mut hops).await {
                Ok(c) => {
                    out.push(StepOutcome::new(
                        ex.kind(),
                        i + 1,
                        std::mem::take(&mut hops),
                        Ok(c.clone()),
                        started,
                    ));
                    current = c;
                }
                Err(e) => {
                    out.push(StepOutcome::new(
                        ex.kind(),
                        i + 1,
                        std::mem::take(&mut hops),
                        Err(e),
                        started,
                    ));
                    break;
                }
            }
        }
        out
    }
}

/// One step of [`Route::run_steps`]: the source (index 0) or exchange `index - 1`.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// The source or exchange kind (`gce-metadata`, `aws-sts`, …).
    pub step: String,
    /// 0 for the source, `i + 1` for `exchange[i]`.
    pub index: usize,
    /// The network hops the step made.
    pub hops: Vec<HopReport>,
    /// What it produced (holds secrets: show claims or identities, never the credential), or
    /// why it failed.
    pub result: Result<Credential, BrokerError>,
    /// Time taken by the whole step.
    pub elapsed: Duration,
}

impl StepOutcome {
    fn new(
        step: &str,
        index: usize,
        hops: Vec<HopReport>,
        result: Result<Credential, BrokerError>,
        started: Instant,
    ) -> Self {
        Self {
            step: step.to_owned(),
            index,
            hops,
            result,
            elapsed: started.elapsed(),
        }
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
