//! The credential side every frontend shares: one cache, the caller policy and the metrics.
//!
//! A frontend turns a request into a [`CredentialKey`] (a route name and the client's audience
//! or scopes) and asks [`Broker::credential`]. The broker first checks the caller against the
//! [`CallerPolicy`] (the caller was identified once, when its connection was accepted), then
//! asks the cache, whose loader runs `Route::with_overrides(..)?.run(..)`. So however many
//! frontends and clients ask for the same key, upstream sees one exchange per refresh.
//!
//! Keys a client chooses (an `?audience=`, a `?scopes=` set) live apart from the routes' own
//! keys: each route has its own [`Cache`] for them, bounded by `max_client_keys_per_route`
//! with least-recently-used eviction. A client inventing audiences therefore evicts only older
//! client keys of the same route, never a route's own credential or another route's keys.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use idbridge_broker::cache::{Cache, CacheSnapshot, Loader};
use idbridge_broker::shared_cache;
use idbridge_broker::source::kubernetes_pod::{ApiServer, CallingPod, PodRef};
use idbridge_broker::{BrokerError, Context, ErrorKind, Overrides, Route};
use idbridge_core::Credential;
use idbridge_core::clock::SharedClock;
use tokio::sync::watch;

use crate::caller::{Caller, CallerPolicy, Peer, PeerResolver};
use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::pods::PodIndex;

/// What the cache is keyed by: a route and what the client asked of its last hop. Holds no
/// secret (it is logged at debug; only its route is a metric label).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialKey {
    /// Route name.
    pub route: String,
    /// The client's audience or scopes, if any.
    pub overrides: Overrides,
    /// The calling pod, when the route runs as a pod's identity (`[serve.kubernetes]`).
    pub pod: Option<PodRef>,
}

impl CredentialKey {
    /// The route's own credential.
    pub fn route(name: &str) -> Self {
        Self {
            route: name.to_owned(),
            overrides: Overrides::default(),
            pod: None,
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
            pod: None,
        }
    }

    /// Whether the client chose part of this key (an audience or scopes), or the key is a
    /// pod's: either way it lives in its route's bounded cache of client keys.
    pub fn is_client_chosen(&self) -> bool {
        self.overrides.audience.is_some() || self.overrides.scopes.is_some() || self.pod.is_some()
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
            pod: None,
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

    /// The status every frontend answers a refusal with (unless its protocol says otherwise):
    /// 403 when denied, 503 when a retry may succeed, 500 otherwise.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Refusal::Denied { .. } => StatusCode::FORBIDDEN,
            _ if self.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error code of the route's failure, when it has one.
    pub fn failure_code(&self) -> Option<&str> {
        match self {
            Refusal::Failed { error, .. } => error.code.as_deref(),
            Refusal::Denied { .. } => None,
        }
    }
}

type CredentialCache = Cache<CredentialKey, Credential>;

/// One loader behind several caches.
struct SharedLoader<L>(Arc<L>);

impl<L: Loader<CredentialKey, Credential>> Loader<CredentialKey, Credential> for SharedLoader<L> {
    fn load(
        &self,
        key: &CredentialKey,
    ) -> impl Future<Output = Result<Credential, BrokerError>> + Send {
        self.0.load(key)
    }
}

type CacheFactory = Box<dyn Fn(NonZeroUsize) -> CredentialCache + Send + Sync>;

/// The per-route caches of client-chosen keys, created on first use.
struct ClientKeys {
    make: CacheFactory,
    max_per_route: NonZeroUsize,
    by_route: Mutex<HashMap<String, Arc<CredentialCache>>>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeys")
            .field("max_per_route", &self.max_per_route)
            .finish_non_exhaustive()
    }
}

impl ClientKeys {
    fn cache(&self, route: &str) -> Arc<CredentialCache> {
        let mut by_route = self.by_route.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = by_route.get(route) {
            return Arc::clone(c);
        }
        let c = Arc::new((self.make)(self.max_per_route));
        by_route.insert(route.to_owned(), Arc::clone(&c));
        c
    }

    fn snapshots(&self) -> Vec<(String, CacheSnapshot<CredentialKey>)> {
        let by_route: Vec<_> = self
            .by_route
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(r, c)| (r.clone(), Arc::clone(c)))
            .collect();
        let mut out: Vec<_> = by_route
            .into_iter()
            .map(|(r, c)| (r, c.snapshot()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The shared credential service.
#[derive(Debug)]
pub struct Broker {
    cache: CredentialCache,
    client_keys: ClientKeys,
    clock: SharedClock,
    policy: CallerPolicy,
    resolver: PeerResolver,
    /// Pod identity (`[serve.kubernetes]`), if configured.
    pods: Option<Arc<PodIndex>>,
    metrics: Metrics,
    ready: AtomicBool,
    /// The configured routes' names, for per-route health.
    route_names: Vec<String>,
    /// Bumped after every successful load (see [`Broker::loads`]).
    loads: Arc<watch::Sender<u64>>,
    /// The fleet cache, when `[cache]` has a Redis (for its counters).
    fleet: Option<Arc<shared_cache::Fleet>>,
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
        let pods = config
            .kubernetes
            .as_ref()
            .map(|k| Arc::new(PodIndex::new(k.clone(), ctx.env.as_ref())));
        let api = Arc::new(config.kubernetes.as_ref().map(|k| k.api.clone()));
        let loader = move |key: CredentialKey| {
            let routes = Arc::clone(&routes);
            let ctx = ctx.clone();
            let api = Arc::clone(&api);
            async move { run_route(&routes, &ctx, api.as_ref().as_ref(), &key).await }
        };
        // Through the fleet's Redis when `[cache]` has one: one exchange per refresh per fleet.
        let fleet = shared_cache::Fleet::new(
            &config.cache,
            Arc::clone(&clock),
            shared_cache::holder_name(),
        )
        .map(Arc::new);
        let loader = shared_cache::FleetLoader::new(fleet.clone(), loader, |k: &CredentialKey| {
            shared_cache::SharedName::for_overrides(&k.route, &k.overrides)
        });
        let mut broker = Self::with_loader(
            loader,
            clock,
            config.callers.clone(),
            config.max_cached_credentials,
        )
        .with_client_keys_per_route(config.max_client_keys_per_route);
        broker.fleet = fleet;
        broker.route_names = config
            .routes
            .routes
            .iter()
            .map(|r| r.name.clone())
            .collect();
        if let Some(pods) = pods {
            if tokio::runtime::Handle::try_current().is_ok() {
                pods.start();
            }
            broker.pods = Some(pods);
        }
        broker
    }

    /// Identifies pods with `index` (tests; [`Broker::new`] does it from the config).
    pub fn with_pods(mut self, index: Arc<PodIndex>) -> Self {
        self.pods = Some(index);
        self
    }

    /// Identifies the caller of a connection: its uid (loopback, unix socket), and with
    /// `[serve.kubernetes]` the pod at a TCP peer's address.
    pub async fn identify(&self, peer: Option<&Peer>) -> Caller {
        let mut caller = self.resolver.identify(peer).await;
        if let (Some(pods), Some(Peer::Tcp { remote, .. }), None) = (&self.pods, peer, caller.uid) {
            caller.pod = pods.lookup(remote.ip()).await;
        }
        caller
    }

    /// A broker over any loader (tests use fakes), reading expiries against `clock`.
    pub fn with_loader(
        loader: impl Loader<CredentialKey, Credential>,
        clock: SharedClock,
        policy: CallerPolicy,
        max_entries: NonZeroUsize,
    ) -> Self {
        let loads = Arc::new(watch::Sender::new(0));
        let loader = Arc::new(Announcing {
            inner: loader,
            loads: Arc::clone(&loads),
        });
        let make: CacheFactory = {
            let (loader, clock) = (Arc::clone(&loader), Arc::clone(&clock));
            Box::new(move |max| {
                Cache::new(SharedLoader(Arc::clone(&loader)), Arc::clone(&clock), max)
            })
        };
        Self {
            cache: Cache::new(SharedLoader(loader), Arc::clone(&clock), max_entries),
            client_keys: ClientKeys {
                make,
                max_per_route: NonZeroUsize::new(crate::config::DEFAULT_MAX_CLIENT_KEYS_PER_ROUTE)
                    .unwrap_or(NonZeroUsize::MIN),
                by_route: Mutex::default(),
            },
            clock,
            policy,
            resolver: PeerResolver::default(),
            pods: None,
            metrics: Metrics::default(),
            ready: AtomicBool::new(false),
            route_names: Vec::new(),
            loads,
            fleet: None,
        }
    }

    /// The fleet cache's counters, when `[cache]` has a Redis.
    pub fn fleet_stats(&self) -> Option<shared_cache::lease::FleetStats> {
        self.fleet.as_ref().map(|f| f.stats())
    }

    /// The configured routes (empty for a broker over a test loader).
    pub fn route_names(&self) -> &[String] {
        &self.route_names
    }

    /// Bounds the client-chosen keys cached per route (before any request is served).
    pub fn with_client_keys_per_route(mut self, max: NonZeroUsize) -> Self {
        self.client_keys.max_per_route = max;
        self
    }

    /// How callers are identified.
    pub fn resolver(&self) -> &PeerResolver {
        &self.resolver
    }

    /// Changes once a credential has been loaded (a first load or a refresh), so the metadata
    /// frontend's hanging GETs on `token` and `identity` re-read theirs.
    pub fn loads(&self) -> watch::Receiver<u64> {
        self.loads.subscribe()
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

    /// The counters of the routes' own keys.
    pub fn cache_snapshot(&self) -> CacheSnapshot<CredentialKey> {
        self.cache.snapshot()
    }

    /// The counters of each route's client-chosen keys, by route name.
    pub fn client_key_snapshots(&self) -> Vec<(String, CacheSnapshot<CredentialKey>)> {
        self.client_keys.snapshots()
    }

    /// The bound on each route's client-chosen keys.
    pub fn max_client_keys_per_route(&self) -> NonZeroUsize {
        self.client_keys.max_per_route
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
        if let Some(pods) = &self.pods {
            let caller = self.identify(peer).await;
            if let Some(pod) = &caller.pod {
                // A pod's route comes from the [[serve.pod]] rules, whichever frontend it asks.
                let Some(route) = pods.rules().route_for(pod) else {
                    tracing::info!(caller = %caller, route = %key.route, "refused: no [[serve.pod]] rule gives this pod a route");
                    self.metrics.count_denial(&key.route);
                    return Err(Refusal::Denied {
                        caller,
                        route: key.route.clone(),
                    });
                };
                let key = CredentialKey {
                    route: route.to_owned(),
                    overrides: key.overrides.clone(),
                    pod: Some(pod.id.clone()),
                };
                return self
                    .client_keys
                    .cache(&key.route)
                    .get(&key)
                    .await
                    .map_err(|error| Refusal::Failed {
                        route: key.route.clone(),
                        error,
                    });
            }
            if caller.uid.is_none() {
                // Neither a local process nor a pod of this node.
                tracing::info!(caller = %caller, route = %key.route, "refused: not a pod of this node");
                self.metrics.count_denial(&key.route);
                return Err(Refusal::Denied {
                    caller,
                    route: key.route.clone(),
                });
            }
        }
        if !self.policy.is_open() {
            let caller = self.identify(peer).await;
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
        let result = if key.is_client_chosen() {
            self.client_keys.cache(&key.route).get(key).await
        } else {
            self.cache.get(key).await
        };
        result.map_err(|error| Refusal::Failed {
            route: key.route.clone(),
            error,
        })
    }
}

/// When, after a load returns, [`Broker::loads`] announces it. The cache stores a value once
/// its loader's future has returned, so the announcement waits for that; a second one covers a
/// cache driver that was slow to run (a watcher whose re-read still saw the old value).
const ANNOUNCE_AFTER: [Duration; 2] = [Duration::from_millis(50), Duration::from_secs(1)];

/// A loader that announces each successful load on a watch channel.
struct Announcing<L> {
    inner: L,
    loads: Arc<watch::Sender<u64>>,
}

impl<L: Loader<CredentialKey, Credential>> Loader<CredentialKey, Credential> for Announcing<L> {
    fn load(
        &self,
        key: &CredentialKey,
    ) -> impl Future<Output = Result<Credential, BrokerError>> + Send {
        let load = self.inner.load(key);
        let loads = Arc::clone(&self.loads);
        async move {
            let out = load.await;
            if out.is_ok() && loads.receiver_count() > 0 {
                tokio::spawn(async move {
                    for delay in ANNOUNCE_AFTER {
                        tokio::time::sleep(delay).await;
                        loads.send_modify(|n| *n = n.wrapping_add(1));
                    }
                });
            }
            out
        }
    }
}

/// The real loader: the route with the key's overrides, run once. Hops are logged (they hold
/// no secret); the credential is not.
async fn run_route(
    routes: &HashMap<String, Route>,
    ctx: &Context,
    api: Option<&ApiServer>,
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
    let pod_ctx;
    let ctx = match &key.pod {
        Some(pod) => {
            pod_ctx = ctx.clone().with_pod(CallingPod {
                pod: pod.clone(),
                api: api.cloned().unwrap_or_default(),
            });
            &pod_ctx
        }
        None => ctx,
    };
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
