//! The credential side every frontend shares: one cache, the caller policy and the metrics.
//!
//! A frontend turns a request into a [`CredentialKey`] (a route name and the client's audience
//! or scopes) and asks [`Broker::credential`]. The broker first checks the caller against the
//! [`CallerPolicy`] (reading the socket tables only when there are rules), then asks the one
//! [`Cache`], whose loader runs `Route::with_overrides(..)?.run(..)`. So however many frontends
//! and clients ask for the same key, upstream sees one exchange per refresh.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use idbridge_broker::cache::{Cache, CacheSnapshot, Loader};
use idbridge_broker::{BrokerError, Context, ErrorKind, Overrides, Route};
use idbridge_core::Credential;
use idbridge_core::clock::SharedClock;

use crate::caller::{Caller, CallerPolicy, Peer, PeerResolver};
use crate::config::ServeConfig;
use crate::metrics::Metrics;

/// What the cache is keyed by: a route and what the client asked of its last hop. Holds no
/// secret (it is logged and exported as metric labels).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialKey {
    /// Route name.
    pub route: String,
    /// The client's audience or scopes, if any.
    pub overrides: Overrides,
}

impl CredentialKey {
    /// The route's own credential.
    pub fn route(name: &str) -> Self {
        Self {
            route: name.to_owned(),
            overrides: Overrides::default(),
        }
    }

    /// An ID token of the route for `audience`.
    pub fn audience(name: &str, audience: &str) -> Self {
        Self {
            route: name.to_owned(),
            overrides: Overrides {
                audience: Some(audience.to_owned()),
                scopes: None,
            },
        }
    }

    /// An access token of the route for `scopes` (sorted and deduplicated, so that one set is
    /// one key).
    pub fn scopes(name: &str, mut scopes: Vec<String>) -> Self {
        scopes.sort();
        scopes.dedup();
        Self {
            route: name.to_owned(),
            overrides: Overrides {
                audience: None,
                scopes: Some(scopes),
            },
        }
    }
}

/// Why no credential was handed out.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The caller may not use the route.
    Denied {
        /// Who asked.
        caller: Caller,
        /// What for.
        route: String,
    },
    /// The route failed (after the cache's retries).
    Failed {
        /// The route.
        route: String,
        /// Why; its `Display` holds no secret.
        error: BrokerError,
    },
}

impl Refusal {
    /// One line for the client (no secret: broker errors never carry one).
    pub fn message(&self) -> String {
        match self {
            Refusal::Denied { caller, route } => {
                format!("{caller} is not allowed to use route {route:?}")
            }
            Refusal::Failed { route, error } => format!("route {route:?} failed: {error}"),
        }
    }

    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Refusal::Failed { error, .. } if error.is_transient())
    }
}

/// The shared credential service.
#[derive(Debug)]
pub struct Broker {
    cache: Cache<CredentialKey, Credential>,
    clock: SharedClock,
    policy: CallerPolicy,
    resolver: PeerResolver,
    metrics: Metrics,
    ready: AtomicBool,
    /// The configured routes' names, for per-route health.
    route_names: Vec<String>,
}

impl Broker {
    /// A broker running the config's routes in `ctx`.
    pub fn new(config: &ServeConfig, ctx: Context) -> Self {
        let routes: Arc<HashMap<String, Route>> = Arc::new(
            config
                .routes
                .routes
                .iter()
                .map(|r| (r.name.clone(), Route::new(r.clone())))
                .collect(),
        );
        let clock = Arc::clone(&ctx.clock);
        let loader = move |key: CredentialKey| {
            let routes = Arc::clone(&routes);
            let ctx = ctx.clone();
            async move { run_route(&routes, &ctx, &key).await }
        };
        let mut broker = Self::with_loader(
            loader,
            clock,
            config.callers.clone(),
            config.max_cached_credentials,
        );
        broker.route_names = config
            .routes
            .routes
            .iter()
            .map(|r| r.name.clone())
            .collect();
        broker
    }

    /// A broker over any loader (tests use fakes), reading expiries against `clock`.
    pub fn with_loader(
        loader: impl Loader<CredentialKey, Credential>,
        clock: SharedClock,
        policy: CallerPolicy,
        max_entries: NonZeroUsize,
    ) -> Self {
        Self {
            cache: Cache::new(loader, Arc::clone(&clock), max_entries),
            clock,
            policy,
            resolver: PeerResolver::default(),
            metrics: Metrics::default(),
            ready: AtomicBool::new(false),
            route_names: Vec::new(),
        }
    }

    /// The configured routes (empty for a broker over a test loader).
    pub fn route_names(&self) -> &[String] {
        &self.route_names
    }

    /// Replaces how TCP callers are identified (tests point it at sample socket tables).
    pub fn with_resolver(mut self, resolver: PeerResolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// The clock expiries are read against.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Request and denial counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The cache's per-key counters.
    pub fn cache_snapshot(&self) -> CacheSnapshot<CredentialKey> {
        self.cache.snapshot()
    }

    /// Marks the daemon ready (every listener is up); `/readyz` answers 200 from then on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Whether [`Self::set_ready`] was called.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The credential for `key`, if the caller behind `peer` may use its route.
    pub async fn credential(
        &self,
        peer: Option<&Peer>,
        key: &CredentialKey,
    ) -> Result<Credential, Refusal> {
        if !self.policy.is_open() {
            let caller = self.resolver.identify(peer).await;
            if !self.policy.allows(&caller, &key.route) {
                tracing::info!(caller = %caller, route = %key.route, "refused: the caller may not use this route");
                self.metrics.count_denial(&key.route);
                return Err(Refusal::Denied {
                    caller,
                    route: key.route.clone(),
                });
            }
            tracing::debug!(caller = %caller, route = %key.route, "caller allowed");
        }
        self.cache.get(key).await.map_err(|error| Refusal::Failed {
            route: key.route.clone(),
            error,
        })
    }
}

/// The real loader: the route with the key's overrides, run once. Hops are logged (they hold
/// no secret); the credential is not.
async fn run_route(
    routes: &HashMap<String, Route>,
    ctx: &Context,
    key: &CredentialKey,
) -> Result<Credential, BrokerError> {
    let Some(route) = routes.get(&key.route) else {
        return Err(BrokerError::new(
            ErrorKind::NotConfigured,
            "serve",
            format!("no route named {:?}", key.route),
        ));
    };
    let route = route.with_overrides(&key.overrides)?;
    match route.run(ctx).await {
        Ok(out) => {
            for h in &out.hops {
                tracing::info!(
                    route = %key.route,
                    hop = %h.hop,
                    endpoint = %h.endpoint,
                    identity = %h.identity,
                    elapsed_ms = u64::try_from(h.elapsed.as_millis()).unwrap_or(u64::MAX),
                    "hop ok"
                );
            }
            tracing::info!(
                route = %key.route,
                audience = key.overrides.audience.as_deref().unwrap_or_default(),
                kind = out.credential.kind(),
                expires_at = out
                    .credential
                    .expires_at()
                    .map(idbridge_core::timefmt::rfc3339_seconds)
                    .unwrap_or_default(),
                "credential loaded"
            );
            Ok(out.credential)
        }
        Err((error, hops)) => {
            for h in &hops {
                tracing::debug!(route = %key.route, hop = %h.hop, endpoint = %h.endpoint, "hop ok before the failure");
            }
            tracing::warn!(route = %key.route, error = %error, "route failed");
            Err(error)
        }
    }
}
