//! Running a route: source, then each exchange in turn.

use std::time::Duration;

use idbridge_core::Credential;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::config::RouteConfig;
use crate::step::{Input, Step};
use crate::{BrokerError, Context, ErrorKind, Hop};

/// What one hop did, for `demo`, `doctor` and logs. Holds no secrets.
#[derive(Debug, Clone)]
pub struct HopReport {
    /// Hop name (`gce-metadata`, `aws-sts`, …).
    pub hop: Hop,
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
        hop: Hop,
        endpoint: impl Into<String>,
        identity: impl Into<String>,
        expires_at: Option<OffsetDateTime>,
        started: Instant,
    ) -> Self {
        Self {
            hop,
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
    /// `…/identity?audience=X` on the GCE metadata frontend. The last step decides
    /// ([`Step::with_overrides`]).
    pub fn with_overrides(&self, overrides: &Overrides) -> Result<Route, BrokerError> {
        if overrides.audience.is_none() && overrides.scopes.is_none() {
            return Ok(self.clone());
        }
        let bad = |m: &str| {
            BrokerError::new(
                ErrorKind::InvalidConfiguration,
                Hop::ROUTE,
                format!("route {:?}: {m}", self.config.name),
            )
        };
        let mut config = self.config.clone();
        let last: &mut Box<dyn Step> = config.exchange.last_mut().unwrap_or(&mut config.source);
        let source = self.config.exchange.is_empty();
        *last = match last.with_overrides(overrides) {
            Some(Ok(step)) => step,
            Some(Err(why)) => return Err(bad(&why)),
            None if source => {
                return Err(bad(
                    "its source cannot mint tokens for another audience or scopes",
                ));
            }
            None => {
                return Err(bad(&format!(
                    "its last hop ({}) cannot mint tokens for another audience or scopes",
                    last.kind()
                )));
            }
        };
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
        let mut current = self
            .run_step(self.config.source.as_ref(), None, None, ctx, hops)
            .await?;
        let mut previous: &dyn Step = self.config.source.as_ref();
        for ex in &self.config.exchange {
            current = self
                .run_step(ex.as_ref(), Some(&current), previous.region(), ctx, hops)
                .await?;
            previous = ex.as_ref();
        }
        Ok(current)
    }

    /// Runs one step on the previous step's credential.
    async fn run_step(
        &self,
        step: &dyn Step,
        credential: Option<&Credential>,
        region: Option<&str>,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let input = Input {
            credential,
            route: &self.config.name,
            region,
        };
        step.run(input, ctx, hops).await
    }

    /// Runs the route step by step — the source, then each exchange — and stops at the first
    /// step that fails (the last outcome then holds the error). Each outcome keeps the
    /// credential its step produced, so `doctor` can show what every hop received; those
    /// credentials hold secrets and are never to be printed.
    pub async fn run_steps(&self, ctx: &Context) -> Vec<StepOutcome> {
        let mut out = Vec::new();
        let mut hops = Vec::new();
        let mut current: Option<Credential> = None;
        let mut region: Option<&str> = None;
        for (index, step) in self.config.steps().enumerate() {
            let started = Instant::now();
            let result = self
                .run_step(step, current.as_ref(), region, ctx, &mut hops)
                .await;
            let ok = result.is_ok();
            current = result.as_ref().ok().cloned();
            out.push(StepOutcome::new(
                step.kind(),
                index,
                std::mem::take(&mut hops),
                result,
                started,
            ));
            if !ok {
                break;
            }
            region = step.region();
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
