//! The credential cache: one generic cache in front of every route.
//!
//! A [`Cache`] maps a key (a route name plus its audience or scopes, say) to the last value its
//! [`Loader`] produced, and keeps that value fresh:
//!
//! * **Single flight.** Each key has one driver task, and only the driver calls the loader. However
//!   many callers ask for a cold or stale key at once, one load runs and all of them get its
//!   result. The load runs on its own task, so a caller that gives up (a client that disconnects)
//!   does not cancel it for the others.
//! * **Refresh ahead, with jitter.** The driver sleeps until the refresh point and reloads in the
//!   background while callers keep getting the current value. The refresh point is
//!   [`REFRESH_AHEAD`] before expiry, or a third of the lifetime for short-lived values, moved
//!   earlier by a random amount of up to a quarter of that again.
//! * **Safety margin.** A value is never served within [`SAFETY_MARGIN`] of its expiry (a tenth of
//!   its lifetime for short-lived values). Such a value counts as absent: callers wait for a load.
//! * **Timeouts and retries.** Each attempt is abandoned after [`ATTEMPT_TIMEOUT`] (the hops'
//!   own per-request timeouts, [`crate::context::HOP_TIMEOUT`], normally fire first), so a hung
//!   connection costs one attempt and the retry goes out at once on a fresh one. Transient
//!   errors are retried, [`MAX_ATTEMPTS`] attempts in all, with jittered exponential backoff
//!   from [`RETRY_BASE_DELAY`]; an answer with `Retry-After` ends the load instead (the wait is
//!   honoured across loads). A whole load is abandoned after [`LOAD_TIMEOUT`].
//! * **Backoff across loads.** After a failed load the key backs off: the next load starts no
//!   sooner than [`LOAD_BACKOFF_BASE`], doubling with every further failed load up to
//!   [`LOAD_BACKOFF_MAX`], jittered down to half, and never before the upstream's `Retry-After`
//!   (capped at [`RETRY_AFTER_MAX`]). Callers arriving meanwhile get the last error at once
//!   instead of starting a load, so during an outage a key costs at most [`MAX_ATTEMPTS`]
//!   upstream attempts per backoff period however often clients ask. A success resets it.
//! * **Bounded waits.** A caller waits for a load at most [`MAX_WAIT`]; then it gets the latest
//!   attempt's error (or "still loading") while the load carries on for the next caller. SDK
//!   metadata clients give up after about a second, so holding them longer only turns an error
//!   they could act on into a timeout.
//! * **Last good value.** When a background refresh fails, the current value is served until it
//!   enters the safety margin; the failure is logged and the refresh tried again after the
//!   key's backoff, but always within half the value's remaining servable life (and no sooner
//!   than [`REFRESH_RETRY_MIN`]), so several tries fit before it goes. Once the value is inside
//!   the margin, callers wait for a load (or get the last error while the key backs off).
//! * **Negative caching.** A permanent (non-transient) error is handed out for [`NEGATIVE_TTL`]
//!   without calling upstream again.
//! * **Bounded size.** At most `max_entries` keys. Adding one more evicts the least recently used
//!   key that no caller is waiting on (if every key has a waiter, the cache grows past the bound
//!   until one is idle). A key not asked for during [`IDLE_EVICTION`] is dropped and its driver
//!   stops, so abandoned keys stop costing upstream calls.
//! * **Stats.** [`Cache::snapshot`] returns per-key counters and health (consecutive failed
//!   loads, the last error, the backoff left) for metrics and readiness.
//!
//! What that means for the lifetimes idbridge meets:
//!
//! | lifetime | served until (before expiry) | refreshed between (before expiry) |
//! |---|---|---|
//! | 1 h (Google access token) | 30 s | 5 min and 6 min 15 s |
//! | 15 min (shortest AWS session) | 30 s | 5 min and 6 min 15 s |
//! | 20 s (test credentials) | 2 s | 6.7 s and 8.3 s |
//!
//! A value without an expiry ([`Expiring::expires_at`] is `None`, static AWS keys) is served
//! until its key is evicted and never refreshed.
//!
//! # Time
//!
//! Scheduling uses tokio's clock ([`tokio::time::Instant`], `sleep_until`), so tests can pause it.
//! Expiry is wall-clock time. When a value is loaded, the injected [`Clock`] measures its remaining
//! lifetime, once, and the cache turns that into a tokio deadline; after that only tokio time is
//! read, so a wall-clock step after the load does not move the deadline. The tests use a clock
//! that derives wall time from tokio's paused clock, so the two stay in step.
//!
//! # Logs
//!
//! Failed refreshes are logged with the key's `Debug` and the error's `Display` (which holds no
//! secrets, see [`crate::error`]). Values are never printed, so keys must hold nothing secret.
//!
//! [`Clock`]: idbridge_core::clock::Clock

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use idbridge_core::Credential;
use idbridge_core::clock::{Clock, SharedClock};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::{BrokerError, ErrorKind};

/// Refresh no later than this before expiry. Five minutes lets a refresh ride out a token
/// endpoint outage of a few minutes (retried every [`LOAD_BACKOFF_MAX`] at most) before any
/// client sees the value go, and is only a third of the shortest AWS session (15 minutes), so
/// long-lived values are not reloaded needlessly often.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

/// For short lifetimes, refresh once only `lifetime / REFRESH_AHEAD_DIVISOR` is left instead:
/// a value handed out with little life left (a metadata server's cached token, a test
/// credential) still gets two thirds of its life served before the reload.
pub const REFRESH_AHEAD_DIVISOR: u32 = 3;

/// The refresh point moves earlier by a random amount of up to `refresh_ahead /
/// REFRESH_JITTER_DIVISOR`, so keys loaded together (at start-up, after an outage) do not
/// refresh in lockstep and hit a token endpoint in one burst.
pub const REFRESH_JITTER_DIVISOR: u32 = 4;

/// Never serve a value this close to its expiry. The client still has to use it: sign a
/// request, send it, maybe retry once, against a cloud whose clock may be a little ahead.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(30);

/// For short lifetimes the margin is `lifetime / SAFETY_MARGIN_DIVISOR` instead, so a 20-second
/// test credential stays servable for 18 seconds rather than never.
pub const SAFETY_MARGIN_DIVISOR: u32 = 10;

/// Give up on a load, retries included, after this long: [`MAX_ATTEMPTS`] attempts of at most
/// [`ATTEMPT_TIMEOUT`] each, plus their backoffs, fit inside it. Nobody waits for a load this
/// long (callers are released after [`MAX_WAIT`]); it only bounds the work behind a refresh.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Give up on one attempt (one run of the loader: every hop of a route) after this long, and
/// retry at once. Each hop is bounded by its own request timeout
/// ([`crate::context::HOP_TIMEOUT`], three seconds), so this only catches a loader stuck
/// elsewhere (a local program, a socket) or a chain of slow hops; a third of [`LOAD_TIMEOUT`]
/// keeps all [`MAX_ATTEMPTS`] inside it.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a caller waits for a load before it is answered with the latest error (or
/// "still loading"). Just under botocore's one-second IMDS timeout, the shortest among the SDK
/// metadata clients: an answer later than that reaches nobody. The load itself carries on, so
/// the client's retry finds its result.
pub const MAX_WAIT: Duration = Duration::from_millis(900);

/// Attempts per load on transient errors (the first one included). Three rides out a dropped
/// connection or a single 503 without multiplying load on an endpoint that is really down; the
/// background refresh retries later anyway.
pub const MAX_ATTEMPTS: u32 = 3;

/// Backoff before the second attempt; it doubles for each further one, and each wait is
/// jittered down to half. 200 ms is past a typical connection reset or load-balancer failover,
/// and keeps a whole load with retries well under a second (200 + 400 ms at most).
pub const RETRY_BASE_DELAY: Duration = Duration::from_millis(200);

/// Shortest wait before retrying a failed background refresh, so a value close to its margin
/// cannot turn the driver into a busy loop against a failing endpoint.
pub const REFRESH_RETRY_MIN: Duration = Duration::from_secs(1);

/// The backoff after the first failed load of a key; it doubles with each further failed load
/// (jittered down to half). A second is past a load balancer's failover and keeps a key to
/// [`MAX_ATTEMPTS`] upstream attempts per second at the very worst, a few seconds soon after.
pub const LOAD_BACKOFF_BASE: Duration = Duration::from_secs(1);

/// The longest backoff across loads. Half a minute bounds an outage's cost to a few attempts
/// per key per minute, and still means a recovered upstream is noticed within half a minute;
/// it also leaves about ten tries inside the five-minute refresh window of a long-lived
/// credential, so a short outage is bridged.
pub const LOAD_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Honour an upstream's `Retry-After` up to this long. Longer values (a misconfigured proxy,
/// an HTTP date in the far future) would silence a key for good; a minute is a long throttle.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// How long a permanent error (a refused role, a bad audience) is handed out without asking
/// upstream again. Long enough that a client retrying in a tight loop costs one upstream call
/// every few seconds and does not get the role throttled, short enough that a fixed trust policy
/// or config takes effect at once.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Drop a key nobody asked for during this long, and stop refreshing it. Just over the longest
/// lifetime idbridge hands out by default (one-hour Google tokens and AWS sessions), because
/// well-behaved clients cache a credential and come back only near its expiry: they should still
/// find their key warm, while keys of clients that went away stop costing upstream calls.
pub const IDLE_EVICTION: Duration = Duration::from_secs(65 * 60);

/// The hop name of errors the cache itself produces.
const HOP: &str = "cache";

/// A value with an expiry.
pub trait Expiring {
    /// When the value stops working; `None` if it never does.
    fn expires_at(&self) -> Option<OffsetDateTime>;
}

impl Expiring for Credential {
    fn expires_at(&self) -> Option<OffsetDateTime> {
        Credential::expires_at(self)
    }
}

/// Produces a fresh value for a key; the cache calls it on a miss and ahead of expiry.
///
/// Any `Fn(K) -> impl Future<Output = Result<V, BrokerError>>` closure is a loader.
pub trait Loader<K, V>: Send + Sync + 'static {
    /// Fetches a fresh value for `key`. Transient errors are retried by the cache.
    fn load(&self, key: &K) -> impl Future<Output = Result<V, BrokerError>> + Send;
}

impl<K, V, F, Fut> Loader<K, V> for F
where
    K: Clone,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<V, BrokerError>> + Send,
{
    fn load(&self, key: &K) -> impl Future<Output = Result<V, BrokerError>> + Send {
        self(key.clone())
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The dyn-compatible twin of [`Loader`], so the cache can hold any loader.
trait DynLoader<K, V>: Send + Sync {
    fn load_boxed<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<V, BrokerError>>;
}

impl<K: 'static, V: 'static, L: Loader<K, V>> DynLoader<K, V> for L {
    fn load_boxed<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<V, BrokerError>> {
        Box::pin(self.load(key))
    }
}

/// A cache of expiring values with single-flight loads and background refresh.
///
/// Create it once and share it (`Arc<Cache<…>>`); dropping it stops every background task.
/// [`get`](Self::get) needs a tokio runtime with the `time` driver.
pub struct Cache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("max_entries", &self.inner.max_entries)
            .field("entries", &lock(&self.inner.slots).len())
            .finish_non_exhaustive()
    }
}

impl<K, V> Cache<K, V>
where
    K: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
    V: Expiring + Clone + Send + Sync + 'static,
{
    /// A cache that fills itself with `loader`, reads expiry against `clock`, and holds at most
    /// `max_entries` keys.
    pub fn new(loader: impl Loader<K, V>, clock: SharedClock, max_entries: NonZeroUsize) -> Self {
        Self {
            inner: Arc::new(Inner {
                loader: Arc::new(loader),
                clock,
                max_entries,
                slots: Mutex::new(HashMap::new()),
                evictions: AtomicU64::new(0),
            }),
        }
    }

    /// The value for `key`: the cached one while it is outside its safety margin, otherwise the
    /// result of a load (shared with every other caller waiting for the same key), the cached
    /// permanent error during [`NEGATIVE_TTL`], or — while the key backs off after failed loads,
    /// or once this caller has waited [`MAX_WAIT`] — the latest error.
    pub async fn get(&self, key: &K) -> Result<V, BrokerError> {
        let waiter = self.inner.checkout(key);
        let entry = &*waiter.0;
        let mut changes = entry.state.subscribe();
        let deadline = Instant::now() + MAX_WAIT;
        // The number of completed loads when this caller started waiting for one.
        let mut waiting_since: Option<u64> = None;
        let mut waited = false;
        loop {
            let now = Instant::now();
            let mut wake_driver = false;
            let mut answer = Answer::Wait;
            entry.state.send_if_modified(|state| {
                answer = state.answer(now, &mut waiting_since, &mut wake_driver);
                false
            });
            if wake_driver {
                entry.wake.notify_one();
            }
            match answer {
                Answer::Value(value) => {
                    entry.count(|s| if waited { s.misses += 1 } else { s.hits += 1 });
                    return Ok(value);
                }
                Answer::Error(error) => {
                    entry.count(|s| {
                        if waited {
                            s.misses += 1
                        } else {
                            s.negative_hits += 1
                        }
                    });
                    return Err(error);
                }
                Answer::Wait => waited = true,
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    // The sender lives in the entry this caller holds, so this cannot happen.
                    return Err(BrokerError::new(
                        ErrorKind::Transient,
                        HOP,
                        "cache entry closed",
                    ));
                }
                Err(_) => {
                    entry.count(|s| {
                        s.misses += 1;
                        s.wait_timeouts += 1;
                    });
                    return Err(entry.state.borrow().latest_error());
                }
            }
        }
    }

    /// Counters for every key, for metrics.
    pub fn snapshot(&self) -> CacheSnapshot<K> {
        let now = Instant::now();
        let slots = lock(&self.inner.slots);
        let entries = slots
            .iter()
            .map(|(key, slot)| slot.entry.snapshot(key.clone(), now))
            .collect();
        CacheSnapshot {
            max_entries: self.inner.max_entries.get(),
            evictions: self.inner.evictions.load(Ordering::Relaxed),
            entries,
        }
    }
}

/// The state of a whole cache, for metrics. Serializes with the keys as they serialize.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CacheSnapshot<K> {
    /// The configured bound on keys.
    pub max_entries: usize,
    /// Keys evicted so far, for size or idleness.
    pub evictions: u64,
    /// One row per key, in no particular order.
    pub entries: Vec<EntrySnapshot<K>>,
}

/// The state of one key, for metrics.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct EntrySnapshot<K> {
    /// The key.
    pub key: K,
    /// Calls answered from the cache without waiting.
    pub hits: u64,
    /// Calls answered with the cached permanent error without waiting.
    pub negative_hits: u64,
    /// Calls that had to wait for a load.
    pub misses: u64,
    /// Loads started (each covers its retries).
    pub loads: u64,
    /// Loads that ended in an error (after their retries).
    pub load_errors: u64,
    /// How long the last load took, retries included.
    pub last_load_latency_seconds: Option<f64>,
    /// Whether a value is cached.
    pub cached: bool,
    /// Seconds until the cached value expires (negative once it has); `None` when no value is
    /// cached or it never expires.
    pub seconds_to_expiry: Option<f64>,
    /// Seconds since the key was last asked for.
    pub idle_seconds: f64,
    /// Callers waiting right now.
    pub waiters: usize,
    /// Whether the cached value may be served right now (outside its safety margin).
    pub servable: bool,
    /// Loads in a row that failed (0 after a success).
    pub consecutive_failures: u32,
    /// The error of the latest load, while loads fail (one line, no secret).
    pub last_error: Option<String>,
    /// Seconds until the next load may start, while the key backs off.
    pub backoff_seconds: Option<f64>,
    /// Callers answered after waiting [`MAX_WAIT`] for a load that had not finished.
    pub wait_timeouts: u64,
}

/// What a caller gets after looking at an entry's state.
enum Answer<V> {
    Value(V),
    Error(BrokerError),
    Wait,
}

/// What the driver does next.
enum Step {
    Load { refresh: bool },
    Wait(Instant),
    Evict,
}

/// A value with the instants derived from its expiry.
struct Fresh<V> {
    value: V,
    expiry: Option<Expiry>,
}

struct Expiry {
    deadline: Instant,
    serve_until: Instant,
    refresh_at: Instant,
}

impl<V> Fresh<V> {
    fn servable(&self, now: Instant) -> bool {
        self.expiry.as_ref().is_none_or(|e| now < e.serve_until)
    }
}

/// One key's state, published on a watch channel so waiters learn when a load completes.
struct State<V> {
    /// The last good value.
    value: Option<Fresh<V>>,
    /// The last permanent error, handed out until the instant.
    negative: Option<(BrokerError, Instant)>,
    /// The error of the latest completed load, if it failed.
    last_error: Option<BrokerError>,
    /// A load is running.
    loading: bool,
    /// A caller is waiting for a load that has not started yet.
    demand: bool,
    /// Loads completed.
    completed: u64,
    /// Loads in a row that failed.
    failures: u32,
    /// After a failed load: no load on demand before this instant.
    retry_at: Option<Instant>,
    /// The latest failed attempt of the running load, for callers that stop waiting.
    attempt_error: Option<BrokerError>,
}

impl<V: Clone> State<V> {
    fn servable(&self, now: Instant) -> Option<&V> {
        self.value
            .as_ref()
            .filter(|f| f.servable(now))
            .map(|f| &f.value)
    }

    fn negative(&self, now: Instant) -> Option<&BrokerError> {
        self.negative
            .as_ref()
            .filter(|(_, until)| now < *until)
            .map(|(e, _)| e)
    }

    /// The caller's side: serve, fail, or wait (asking the driver for a load if none runs).
    fn answer(
        &mut self,
        now: Instant,
        waiting_since: &mut Option<u64>,
        wake: &mut bool,
    ) -> Answer<V> {
        if let Some(value) = self.servable(now) {
            return Answer::Value(value.clone());
        }
        if let Some(since) = *waiting_since {
            if self.completed == since {
                return Answer::Wait;
            }
            if let Some(error) = &self.last_error {
                return Answer::Error(error.clone());
            }
            // The load succeeded but its value is no longer servable: ask again.
            *waiting_since = None;
        }
        if let Some(error) = self.negative(now) {
            return Answer::Error(error.clone());
        }
        // Backing off after failed loads: the last error at once, and no load.
        if !self.loading
            && self.backing_off(now)
            && let Some(error) = &self.last_error
        {
            return Answer::Error(error.clone());
        }
        *waiting_since = Some(self.completed);
        if !self.loading {
            self.demand = true;
            *wake = true;
        }
        Answer::Wait
    }

    /// The driver's side: refresh, load on demand, wait, or evict the idle key.
    fn next_step(&mut self, now: Instant, idle_at: Instant, idle: bool) -> Step {
        if idle {
            return Step::Evict;
        }
        let servable = self.value.as_ref().filter(|f| f.servable(now));
        if let Some(fresh) = servable {
            self.demand = false;
            return match &fresh.expiry {
                Some(e) if e.refresh_at <= now => self.start_load(true),
                Some(e) => Step::Wait(e.refresh_at.min(idle_at)),
                None => Step::Wait(idle_at),
            };
        }
        if self.demand && self.negative(now).is_none() {
            if let Some(at) = self.retry_at.filter(|at| now < *at) {
                return Step::Wait(at.min(idle_at));
            }
            return self.start_load(false);
        }
        // Whoever asked has been answered by a load that completed meanwhile.
        self.demand = false;
        Step::Wait(idle_at)
    }

    fn start_load(&mut self, refresh: bool) -> Step {
        self.loading = true;
        self.demand = false;
        self.attempt_error = None;
        Step::Load { refresh }
    }

    fn backing_off(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|at| now < at)
    }

    /// What a caller that stopped waiting gets: the running load's latest failed attempt, else
    /// the last failed load, else "still loading".
    fn latest_error(&self) -> BrokerError {
        self.attempt_error
            .clone()
            .or_else(|| self.last_error.clone())
            .unwrap_or_else(|| {
                BrokerError::new(
                    ErrorKind::Transient,
                    HOP,
                    format!(
                        "the credential is still loading after {} ms; ask again",
                        MAX_WAIT.as_millis()
                    ),
                )
            })
    }

    /// Records a completed load. Returns whether a failed load left a servable value in place.
    fn complete(&mut self, result: Result<Fresh<V>, BrokerError>, now: Instant) -> bool {
        self.loading = false;
        self.completed += 1;
        self.attempt_error = None;
        match result {
            Ok(fresh) => {
                self.value = Some(fresh);
                self.negative = None;
                self.last_error = None;
                self.failures = 0;
                self.retry_at = None;
                false
            }
            Err(error) => {
                if !error.is_transient() {
                    self.negative = Some((error.clone(), now + NEGATIVE_TTL));
                }
                self.failures = self.failures.saturating_add(1);
                // Drop a value that can no longer be served: no reason to keep a secret around.
                if self.value.as_ref().is_some_and(|f| !f.servable(now)) {
                    self.value = None;
                }
                let left = self
                    .value
                    .as_ref()
                    .and_then(|f| f.expiry.as_ref())
                    .map(|e| e.serve_until.saturating_duration_since(now));
                let retry_at = now + retry_delay(self.failures, left, &error);
                self.retry_at = Some(retry_at);
                let kept = match self.value.as_mut().and_then(|f| f.expiry.as_mut()) {
                    Some(expiry) => {
                        expiry.refresh_at = retry_at;
                        true
                    }
                    None => self.value.is_some(),
                };
                self.last_error = Some(error);
                kept
            }
        }
    }
}

#[derive(Default)]
struct Stats {
    hits: u64,
    negative_hits: u64,
    misses: u64,
    loads: u64,
    load_errors: u64,
    last_load_latency: Option<Duration>,
    wait_timeouts: u64,
}

/// One key: its published state, its driver's wake-up, and its bookkeeping.
struct Entry<V> {
    state: watch::Sender<State<V>>,
    /// Wakes the driver when a caller wants a load.
    wake: Notify,
    /// Callers inside `get` for this key; incremented under the cache's lock.
    waiters: AtomicUsize,
    /// When a caller last asked; written under the cache's lock.
    last_used: Mutex<Instant>,
    stats: Mutex<Stats>,
}

impl<V> Entry<V> {
    fn new(now: Instant) -> Self {
        Self {
            state: watch::Sender::new(State {
                value: None,
                negative: None,
                last_error: None,
                loading: false,
                demand: false,
                completed: 0,
                failures: 0,
                retry_at: None,
                attempt_error: None,
            }),
            wake: Notify::new(),
            waiters: AtomicUsize::new(0),
            last_used: Mutex::new(now),
            stats: Mutex::new(Stats::default()),
        }
    }

    fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut lock(&self.stats));
    }

    fn idle_at(&self) -> Instant {
        *lock(&self.last_used) + IDLE_EVICTION
    }

    fn is_idle(&self, now: Instant) -> bool {
        self.waiters.load(Ordering::SeqCst) == 0 && now >= self.idle_at()
    }

    fn snapshot<K>(&self, key: K, now: Instant) -> EntrySnapshot<K> {
        let (cached, seconds_to_expiry, servable, failures, last_error, backoff) = {
            let state = self.state.borrow();
            let cached = state.value.is_some();
            let expiry = state.value.as_ref().and_then(|f| f.expiry.as_ref());
            (
                cached,
                expiry.map(|e| seconds_between(now, e.deadline)),
                state.value.as_ref().is_some_and(|f| f.servable(now)),
                state.failures,
                state.last_error.as_ref().map(ToString::to_string),
                state
                    .retry_at
                    .filter(|at| now < *at)
                    .map(|at| (at - now).as_secs_f64()),
            )
        };
        let stats = lock(&self.stats);
        EntrySnapshot {
            key,
            hits: stats.hits,
            negative_hits: stats.negative_hits,
            misses: stats.misses,
            loads: stats.loads,
            load_errors: stats.load_errors,
            last_load_latency_seconds: stats.last_load_latency.map(|d| d.as_secs_f64()),
            cached,
            seconds_to_expiry,
            idle_seconds: now
                .saturating_duration_since(*lock(&self.last_used))
                .as_secs_f64(),
            waiters: self.waiters.load(Ordering::SeqCst),
            servable,
            consecutive_failures: failures,
            last_error,
            backoff_seconds: backoff,
            wait_timeouts: stats.wait_timeouts,
        }
    }
}

/// A caller inside `get`; keeps the entry from being evicted.
struct Waiter<V>(Arc<Entry<V>>);

impl<V> Drop for Waiter<V> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Slot<V> {
    entry: Arc<Entry<V>>,
    driver: AbortHandle,
}

struct Inner<K, V> {
    loader: Arc<dyn DynLoader<K, V>>,
    clock: SharedClock,
    max_entries: NonZeroUsize,
    slots: Mutex<HashMap<K, Slot<V>>>,
    evictions: AtomicU64,
}

impl<K, V> Drop for Inner<K, V> {
    fn drop(&mut self) {
        let slots = self.slots.get_mut().unwrap_or_else(PoisonError::into_inner);
        for slot in slots.values() {
            slot.driver.abort();
        }
    }
}

impl<K, V> Inner<K, V>
where
    K: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
    V: Expiring + Clone + Send + Sync + 'static,
{
    /// Finds or creates the key's entry (starting its driver) and registers a waiter.
    fn checkout(self: &Arc<Self>, key: &K) -> Waiter<V> {
        let now = Instant::now();
        let mut slots = lock(&self.slots);
        let entry = match slots.get(key) {
            Some(slot) => Arc::clone(&slot.entry),
            None => {
                if slots.len() >= self.max_entries.get() {
                    self.evict_lru(&mut slots);
                }
                let entry = Arc::new(Entry::new(now));
                let driver = Driver {
                    cache: Arc::downgrade(self),
                    key: key.clone(),
                    entry: Arc::clone(&entry),
                    loader: Arc::clone(&self.loader),
                    clock: Arc::clone(&self.clock),
                };
                let driver = tokio::spawn(driver.run()).abort_handle();
                let slot = Slot {
                    entry: Arc::clone(&entry),
                    driver,
                };
                slots.insert(key.clone(), slot);
                entry
            }
        };
        *lock(&entry.last_used) = now;
        entry.waiters.fetch_add(1, Ordering::SeqCst);
        Waiter(entry)
    }

    /// Evicts the least recently used key that no caller waits on, if there is one.
    fn evict_lru(&self, slots: &mut HashMap<K, Slot<V>>) {
        let victim = slots
            .iter()
            .filter(|(_, slot)| slot.entry.waiters.load(Ordering::SeqCst) == 0)
            .min_by_key(|(_, slot)| *lock(&slot.entry.last_used))
            .map(|(key, _)| key.clone());
        let Some(victim) = victim else {
            tracing::debug!(
                max_entries = self.max_entries,
                "cache full of busy keys; growing"
            );
            return;
        };
        if let Some(slot) = slots.remove(&victim) {
            slot.driver.abort();
            self.evictions.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(key = ?victim, "evicted least recently used cache key");
        }
    }

    /// Removes `key` if it still maps to `entry` and is idle. Returns whether the driver of
    /// `entry` should stop.
    fn evict_idle(&self, key: &K, entry: &Arc<Entry<V>>) -> bool {
        let mut slots = lock(&self.slots);
        let ours = slots
            .get(key)
            .is_some_and(|slot| Arc::ptr_eq(&slot.entry, entry));
        if !ours {
            return true;
        }
        if !entry.is_idle(Instant::now()) {
            return false;
        }
        slots.remove(key);
        self.evictions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(key = ?key, "evicted idle cache key");
        true
    }
}

/// The task that owns one key's loads.
struct Driver<K, V> {
    cache: Weak<Inner<K, V>>,
    key: K,
    entry: Arc<Entry<V>>,
    loader: Arc<dyn DynLoader<K, V>>,
    clock: SharedClock,
}

impl<K, V> Driver<K, V>
where
    K: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
    V: Expiring + Clone + Send + Sync + 'static,
{
    async fn run(self) {
        loop {
            let now = Instant::now();
            let idle_at = self.entry.idle_at();
            let idle = self.entry.is_idle(now);
            let mut step = Step::Wait(idle_at);
            self.entry.state.send_if_modified(|state| {
                step = state.next_step(now, idle_at, idle);
                false
            });
            match step {
                Step::Evict => {
                    let Some(cache) = self.cache.upgrade() else {
                        return;
                    };
                    if cache.evict_idle(&self.key, &self.entry) {
                        return;
                    }
                }
                Step::Load { refresh } => self.load(refresh).await,
                Step::Wait(until) => {
                    tokio::select! {
                        () = self.entry.wake.notified() => {}
                        () = tokio::time::sleep_until(until) => {}
                    }
                }
            }
        }
    }

    async fn load(&self, refresh: bool) {
        self.entry.count(|s| s.loads += 1);
        let started = Instant::now();
        let result = load_with_timeout(&self.loader, &self.key, &self.entry).await;
        let now = Instant::now();
        let latency = now.saturating_duration_since(started);
        let result = result.and_then(|value| fresh(value, &*self.clock, now));
        let error = result.as_ref().err().cloned();
        let mut kept = false;
        self.entry
            .state
            .send_modify(|state| kept = state.complete(result, now));
        self.entry.count(|s| {
            s.last_load_latency = Some(latency);
            if error.is_some() {
                s.load_errors += 1;
            }
        });
        match error {
            Some(error) if refresh && kept => tracing::warn!(
                key = ?self.key,
                error = %error,
                "credential refresh failed; serving the current value until it nears expiry"
            ),
            Some(error) => {
                tracing::debug!(key = ?self.key, error = %error, "credential load failed")
            }
            None => tracing::debug!(key = ?self.key, ?latency, refresh, "credential loaded"),
        }
    }
}

/// Runs one load, with retries, on its own task under [`LOAD_TIMEOUT`]. The task keeps a
/// panicking loader from taking the driver (and every waiter) down with it.
async fn load_with_timeout<K, V>(
    loader: &Arc<dyn DynLoader<K, V>>,
    key: &K,
    entry: &Arc<Entry<V>>,
) -> Result<V, BrokerError>
where
    K: Clone + fmt::Debug + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let mut task = AbortOnDrop(tokio::spawn(load_with_retries(
        Arc::clone(loader),
        key.clone(),
        Arc::clone(entry),
    )));
    match tokio::time::timeout(LOAD_TIMEOUT, &mut task.0).await {
        Ok(Ok(result)) => result,
        // A panic is a bug, not an outage: not retried, and negative-cached like a refusal.
        Ok(Err(_)) => Err(BrokerError::new(
            ErrorKind::Protocol,
            HOP,
            "the loader panicked",
        )),
        Err(_) => Err(BrokerError::new(
            ErrorKind::Transient,
            HOP,
            format!("load timed out after {} s", LOAD_TIMEOUT.as_secs()),
        )),
    }
}

async fn load_with_retries<K, V>(
    loader: Arc<dyn DynLoader<K, V>>,
    key: K,
    entry: Arc<Entry<V>>,
) -> Result<V, BrokerError>
where
    K: fmt::Debug,
{
    let mut attempt = 1;
    loop {
        let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, loader.load_boxed(&key)).await {
            Ok(result) => result,
            Err(_) => Err(BrokerError::new(
                ErrorKind::Transient,
                HOP,
                format!("attempt timed out after {} s", ATTEMPT_TIMEOUT.as_secs()),
            )),
        };
        match result {
            // Retry-After: end the load; the wait is honoured across loads.
            Err(error)
                if error.is_transient()
                    && attempt < MAX_ATTEMPTS
                    && error.retry_after.is_none() =>
            {
                let delay = backoff(attempt);
                tracing::debug!(
                    key = ?key,
                    attempt,
                    error = %error,
                    ?delay,
                    "transient load error; retrying"
                );
                entry
                    .state
                    .send_modify(|state| state.attempt_error = Some(error));
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Aborts the task when dropped (the load timed out, or its driver was stopped).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Wraps a loaded value with the instants derived from its expiry.
fn fresh<V: Expiring>(value: V, clock: &dyn Clock, now: Instant) -> Result<Fresh<V>, BrokerError> {
    let Some(expires_at) = value.expires_at() else {
        return Ok(Fresh {
            value,
            expiry: None,
        });
    };
    let lifetime = Duration::try_from(expires_at - clock.now())
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            BrokerError::new(
                ErrorKind::Protocol,
                HOP,
                "the loaded credential has already expired",
            )
        })?;
    let Some(deadline) = now.checked_add(lifetime) else {
        // Expires beyond anything tokio can represent: as good as never.
        return Ok(Fresh {
            value,
            expiry: None,
        });
    };
    let ahead = refresh_ahead(lifetime);
    let before = |d: Duration| deadline.checked_sub(d).unwrap_or(now).max(now);
    Ok(Fresh {
        value,
        expiry: Some(Expiry {
            deadline,
            serve_until: before(safety_margin(lifetime)),
            refresh_at: before(ahead + jitter(ahead / REFRESH_JITTER_DIVISOR)),
        }),
    })
}

/// How long before expiry a value of `lifetime` stops being served.
fn safety_margin(lifetime: Duration) -> Duration {
    SAFETY_MARGIN.min(lifetime / SAFETY_MARGIN_DIVISOR)
}

/// How long before expiry a value of `lifetime` is refreshed, before jitter.
fn refresh_ahead(lifetime: Duration) -> Duration {
    REFRESH_AHEAD.min(lifetime / REFRESH_AHEAD_DIVISOR)
}

/// How long before expiry the earliest refresh of a value loaded with `lifetime` left can
/// fall: its refresh-ahead plus the largest jitter. A copy of a value shared with other caches
/// (the fleet cache) is fresh until then: no cache holding it is due to refresh it sooner, and
/// a cache that does refresh finds it stale and loads a new one.
pub fn refresh_window(lifetime: Duration) -> Duration {
    let ahead = refresh_ahead(lifetime);
    ahead + ahead / REFRESH_JITTER_DIVISOR
}

/// The wait after failed attempt number `attempt` (from 1): doubling, jittered down to half.
fn backoff(attempt: u32) -> Duration {
    let full = RETRY_BASE_DELAY.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    full / 2 + jitter(full / 2)
}

/// The wait before the next load after `failures` failed loads in a row: the key's jittered
/// exponential backoff; while a value stays servable for `left`, no more than half of that (but
/// at least [`REFRESH_RETRY_MIN`]), so a refresh is tried again before the value goes; never
/// before the upstream's `Retry-After` (capped), nor inside the negative-caching window of a
/// permanent error.
fn retry_delay(failures: u32, left: Option<Duration>, error: &BrokerError) -> Duration {
    let full = LOAD_BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(LOAD_BACKOFF_MAX);
    let mut delay = full / 2 + jitter(full / 2);
    if let Some(left) = left {
        delay = delay.min(left / 2).max(REFRESH_RETRY_MIN);
    }
    if let Some(wait) = error.retry_after {
        delay = delay.max(wait.min(RETRY_AFTER_MAX));
    }
    if !error.is_transient() {
        delay = delay.max(NEGATIVE_TTL);
    }
    delay
}

/// A uniformly random duration in `0..=max`.
fn jitter(max: Duration) -> Duration {
    let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::random_range(0..=max))
}

fn seconds_between(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64()
    } else {
        -(from - to).as_secs_f64()
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use idbridge_core::{IdToken, SecretString};
    use tokio::task::JoinSet;

    use super::*;

    /// Wall time derived from tokio's (paused) clock, so expiry and scheduling stay in step.
    #[derive(Debug)]
    struct TokioClock {
        start: Instant,
        base: OffsetDateTime,
    }

    impl Clock for TokioClock {
        fn now(&self) -> OffsetDateTime {
            self.base + self.start.elapsed()
        }
    }

    fn clock() -> Arc<TokioClock> {
        Arc::new(TokioClock {
            start: Instant::now(),
            base: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        })
    }

    fn max(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    /// A test value: which load produced it, and its expiry.
    #[derive(Debug, Clone, PartialEq)]
    struct Tok {
        serial: usize,
        expires_at: Option<OffsetDateTime>,
    }

    impl Expiring for Tok {
        fn expires_at(&self) -> Option<OffsetDateTime> {
            self.expires_at
        }
    }

    fn transient() -> BrokerError {
        BrokerError::new(ErrorKind::Transient, "test", "503")
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn margins_scale_with_lifetime() {
        let cases = [
            // lifetime, safety margin, refresh ahead
            (secs(3600), secs(30), secs(300)),
            (secs(900), secs(30), secs(300)),
            (secs(20), secs(2), Duration::from_nanos(6_666_666_666)),
        ];
        for (lifetime, margin, ahead) in cases {
            assert_eq!(safety_margin(lifetime), margin, "{lifetime:?}");
            assert_eq!(refresh_ahead(lifetime), ahead, "{lifetime:?}");
            // The refresh always starts before the value stops being served.
            assert!(refresh_ahead(lifetime) > safety_margin(lifetime));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_callers_share_one_load() {
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = Arc::clone(&calls);
            move |_key: String| {
                let serial = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Ok(Tok {
                        serial,
                        expires_at: None,
                    })
                }
            }
        };
        let cache = Arc::new(Cache::new(loader, clock(), max(16)));
        let mut callers = JoinSet::new();
        for _ in 0..1000 {
            let cache = Arc::clone(&cache);
            callers.spawn(async move { cache.get(&"route".to_owned()).await });
        }
        let results = callers.join_all().await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(results.len(), 1000);
        for result in results {
            assert_eq!(
                result.unwrap(),
                Tok {
                    serial: 1,
                    expires_at: None
                }
            );
        }
        let snapshot = cache.snapshot();
        let row = &snapshot.entries[0];
        assert_eq!((row.loads, row.misses, row.hits), (1, 1000, 0), "{row:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn short_credentials_are_refreshed_ahead_and_never_served_expired() {
        let clock = clock();
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = Arc::clone(&calls);
            let clock = Arc::clone(&clock);
            move |_key: String| {
                let serial = calls.fetch_add(1, Ordering::SeqCst);
                let expires_at = clock.now() + secs(20);
                async move {
                    Ok(Credential::IdToken(IdToken {
                        token: SecretString::new(format!("token-{serial}")),
                        expires_at,
                    }))
                }
            }
        };
        let cache = Cache::new(loader, Arc::clone(&clock) as SharedClock, max(16));
        let key = "route".to_owned();
        let start = Instant::now();
        let mut seen = std::collections::HashSet::new();
        while start.elapsed() < secs(60) {
            let asked = Instant::now();
            let credential = cache.get(&key).await.unwrap();
            assert_eq!(
                asked.elapsed(),
                Duration::ZERO,
                "callers never wait after the first load"
            );
            let expires_at = credential.expires_at().unwrap();
            assert!(
                expires_at > clock.now(),
                "served an expired credential at {:?}",
                start.elapsed()
            );
            let Credential::IdToken(token) = credential else {
                panic!("not an ID token")
            };
            seen.insert(token.token.expose_secret().to_owned());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Loads at 0 s, then every 20 s − (6.67 s + up to 1.67 s jitter) = 11.7–13.3 s: the
        // 60 s window holds 1 + 4 or 1 + 5 loads.
        let loads = calls.load(Ordering::SeqCst);
        assert!((5..=6).contains(&loads), "{loads} loads");
        // Every refreshed credential was served, except one whose refresh fell in the last poll
        // interval.
        assert!(
            seen.len() == loads || seen.len() + 1 == loads,
            "{} served, {loads} loaded",
            seen.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_refresh_serves_the_last_good_value_until_its_margin() {
        let clock = clock();
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = Arc::clone(&calls);
            let clock = Arc::clone(&clock);
            move |_key: String| {
                let serial = calls.fetch_add(1, Ordering::SeqCst);
                let result = if serial == 0 {
                    Ok(Tok {
                        serial,
                        expires_at: Some(clock.now() + secs(20)),
                    })
                } else {
                    Err(transient())
                };
                async move { result }
            }
        };
        let cache = Cache::new(loader, Arc::clone(&clock) as SharedClock, max(16));
        let key = "route".to_owned();
        let start = Instant::now();
        // 20 s lifetime → 2 s safety margin: servable until 18 s.
        let serve_until = secs(18);
        while start.elapsed() < secs(25) {
            let at = start.elapsed();
            let result = cache.get(&key).await;
            if at < serve_until {
                assert_eq!(result.unwrap().serial, 0, "at {at:?}");
            } else {
                let error = result.unwrap_err();
                assert!(error.is_transient(), "at {at:?}: {error:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The background refresh (from 11.7–13.3 s on) really was tried, and failed.
        let snapshot = cache.snapshot();
        let row = &snapshot.entries[0];
        assert!(
            row.loads >= 2 && row.load_errors == row.loads - 1,
            "{row:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_cached_for_the_negative_ttl() {
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = Arc::clone(&calls);
            move |_key: String| {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    Err::<Tok, _>(
                        BrokerError::new(ErrorKind::Rejected, "aws-sts", "not authorized")
                            .with_code("AccessDenied"),
                    )
                }
            }
        };
        let cache = Cache::new(loader, clock(), max(16));
        let key = "route".to_owned();
        let start = Instant::now();
        let error = cache.get(&key).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Rejected);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "permanent errors are not retried"
        );
        tokio::time::sleep_until(start + NEGATIVE_TTL - Duration::from_millis(1)).await;
        let error = cache.get(&key).await.unwrap_err();
        assert_eq!(error.code.as_deref(), Some("AccessDenied"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "served from the negative cache"
        );
        tokio::time::sleep_until(start + NEGATIVE_TTL).await;
        cache.get(&key).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let snapshot = cache.snapshot();
        assert_eq!(snapshot.entries[0].negative_hits, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_load_that_never_answers_does_not_hold_its_callers() {
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = Arc::clone(&calls);
            move |_key: String| {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<Tok, BrokerError>>()
            }
        };
        let cache = Cache::new(loader, clock(), max(16));
        let key = "route".to_owned();
        let start = Instant::now();
        let error = cache.get(&key).await.unwrap_err();
        assert!(error.is_transient(), "{error:?}");
        assert!(error.message.contains("still loading"), "{error:?}");
        assert_eq!(start.elapsed(), MAX_WAIT);
        // Each attempt is cut at ATTEMPT_TIMEOUT and retried; the load ends with the budget.
        tokio::time::sleep_until(start + LOAD_TIMEOUT + Duration::from_millis(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), MAX_ATTEMPTS as usize);
        let asked = Instant::now();
        let error = cache.get(&key).await.unwrap_err();
        assert_eq!(
            asked.elapsed(),
            Duration::ZERO,
            "backing off: answered at once"
        );
        assert!(error.message.contains("timed out"), "{error:?}");
        let row = &cache.snapshot().entries[0];
        assert_eq!(
            (row.consecutive_failures, row.wait_timeouts),
            (1, 1),
            "{row:?}"
        );
        assert!(row.backoff_seconds.is_some(), "{row:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_attempt_is_retried_at_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = Arc::clone(&calls);
            move |_key: String| {
                let serial = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if serial == 1 {
                        std::future::pending::<()>().await;
                    }
                    Ok(Tok {
                        serial,
                        expires_at: None,
                    })
                }
            }
        };
        let cache = Cache::new(loader, clock(), max(16));
        let key = "route".to_owned();
        let start = Instant::now();
        // The caller is answered within MAX_WAIT, not held for the hung attempt …
        let error = cache.get(&key).await.unwrap_err();
        assert!(error.is_transient(), "{error:?}");
        assert_eq!(start.elapsed(), MAX_WAIT);
        // … which is cut at ATTEMPT_TIMEOUT and retried after one short backoff.
        tokio::time::sleep_until(start + ATTEMPT_TIMEOUT + RETRY_BASE_DELAY).await;
        let asked = Instant::now();
        assert_eq!(cache.get(&key).await.unwrap().serial, 2);
        assert_eq!(asked.elapsed(), Duration::ZERO);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cold_load_slower_than_max_wait_is_kept_for_the_next_caller() {
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = Arc::clone(&calls);
            move |_key: String| {
                let serial = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    tokio::time::sleep(secs(2)).await;
                    Ok(Tok {
                        serial,
                        expires_at: None,
                    })
                }
            }
        };
        let cache = Cache::new(loader, clock(), max(16));
        let key = "route".to_owned();
        let start = Instant::now();
        let error = cache.get(&key).await.unwrap_err();
        assert!(error.message.contains("still loading"), "{error:?}");
        assert_eq!(start.elapsed(), MAX_WAIT);
        // A second caller joins the same load rather than starting one.
        let error = cache.get(&key).await.unwrap_err();
        assert!(error.is_transient(), "{error:?}");
        tokio::time::sleep_until(start + secs(2)).await;
        assert_eq!(cache.get(&key).await.unwrap().serial, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn callers_get_the_last_error_at_once_while_the_key_backs_off() {
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = Arc::clone(&calls);
            move |_key: String| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<Tok, _>(transient()) }
            }
        };
        let cache = Cache::new(loader, clock(), max(16));
        let key = "route".to_owned();
        cache.get(&key).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), MAX_ATTEMPTS as usize);
        for _ in 0..100 {
            let asked = Instant::now();
            let error = cache.get(&key).await.unwrap_err();
            assert_eq!(asked.elapsed(), Duration::ZERO);
            assert_eq!(error.message, "503");
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            MAX_ATTEMPTS as usize,
            "no load while backing off"
        );
        // The backoff is at most LOAD_BACKOFF_BASE after the first failed load.
        tokio::time::sleep(LOAD_BACKOFF_BASE).await;
        cache.get(&key).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 2 * MAX_ATTEMPTS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_costs_a_bounded_number_of_upstream_calls() {
        let calls = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let loader = {
            let calls = Arc::clone(&calls);
            move |key: String| {
                *calls.lock().unwrap().entry(key).or_default() += 1;
                async { Err::<Tok, _>(transient()) }
            }
        };
        let cache = Arc::new(Cache::new(loader, clock(), max(64)));
        let keys: Vec<String> = (0..10).map(|i| format!("route-{i}")).collect();
        let start = Instant::now();
        let mut requests = 0;
        // Every key asked for 100 times a second for a minute.
        while start.elapsed() < secs(60) {
            let mut callers = JoinSet::new();
            for key in &keys {
                let cache = Arc::clone(&cache);
                let key = key.clone();
                callers.spawn(async move {
                    let asked = Instant::now();
                    let result = cache.get(&key).await;
                    (result.is_err(), asked.elapsed())
                });
            }
            for (failed, waited) in callers.join_all().await {
                assert!(failed);
                assert!(waited <= MAX_WAIT, "{waited:?}");
                requests += 1;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Loads at 0 s and after backoffs of 0.5–1, 1–2, 2–4, 4–8, 8–16, 15–30, 15–30 s: at most
        // 8 loads of MAX_ATTEMPTS attempts in a minute, against thousands of requests.
        let calls = calls.lock().unwrap();
        for key in &keys {
            let n = calls[key];
            assert!(
                (5 * MAX_ATTEMPTS as usize..=8 * MAX_ATTEMPTS as usize).contains(&n),
                "{key}: {n} upstream calls in 60 s"
            );
        }
        assert!(requests > 10 * 3000, "{requests} requests");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_across_loads() {
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = Arc::clone(&calls);
            move |_key: String| {
                let serial = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if serial == 1 {
                        Err(BrokerError::new(ErrorKind::Transient, "test", "HTTP 429")
                            .with_retry_after(Some(secs(7))))
                    } else {
                        Ok(Tok {
                            serial,
                            expires_at: None,
                        })
                    }
                }
            }
        };
        let cache = Cache::new(loader, clock(), max(16));
        let key = "route".to_owned();
        let start = Instant::now();
        let error = cache.get(&key).await.unwrap_err();
        assert_eq!(error.retry_after, Some(secs(7)));
        assert_eq!(start.elapsed(), Duration::ZERO, "no retry inside the load");
        while start.elapsed() < secs(7) {
            cache.get(&key).await.unwrap_err();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.get(&key).await.unwrap().serial, 2);
    }

    #[test]
    fn retry_delays_back_off_within_bounds() {
        let e = transient();
        for failures in 1..40 {
            let d = retry_delay(failures, None, &e);
            assert!(d <= LOAD_BACKOFF_MAX, "{failures}: {d:?}");
            assert!(d >= LOAD_BACKOFF_BASE / 2, "{failures}: {d:?}");
        }
        assert!(retry_delay(1, None, &e) <= LOAD_BACKOFF_BASE);
        assert!(retry_delay(10, None, &e) >= LOAD_BACKOFF_MAX / 2);
        // A servable value is retried within half its remaining life, but not busily.
        assert!(retry_delay(10, Some(secs(4)), &e) <= secs(2));
        assert_eq!(
            retry_delay(10, Some(Duration::from_millis(100)), &e),
            REFRESH_RETRY_MIN
        );
        // Retry-After wins, up to its cap.
        let throttled = transient().with_retry_after(Some(secs(3600)));
        assert_eq!(retry_delay(1, None, &throttled), RETRY_AFTER_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_with_backoff() {
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = Arc::clone(&calls);
            move |_key: String| {
                let serial = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if serial < 3 {
                        Err(transient())
                    } else {
                        Ok(Tok {
                            serial,
                            expires_at: None,
                        })
                    }
                }
            }
        };
        let cache = Cache::new(loader, clock(), max(16));
        let start = Instant::now();
        let tok = cache.get(&"route".to_owned()).await.unwrap();
        assert_eq!(tok.serial, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Backoffs of 100–200 ms and 200–400 ms.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited <= Duration::from_millis(600),
            "{waited:?}"
        );
        let row = &cache.snapshot().entries[0];
        assert_eq!((row.loads, row.load_errors), (1, 0), "{row:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_idle_key_is_evicted() {
        let calls = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let loader = {
            let calls = Arc::clone(&calls);
            move |key: String| {
                *calls.lock().unwrap().entry(key).or_default() += 1;
                async {
                    Ok(Tok {
                        serial: 0,
                        expires_at: None,
                    })
                }
            }
        };
        let calls_for = |key: &str| calls.lock().unwrap().get(key).copied().unwrap_or(0);
        let cache = Cache::new(loader, clock(), max(2));
        for key in ["a", "b", "a", "c"] {
            cache.get(&key.to_owned()).await.unwrap();
            tokio::time::sleep(secs(1)).await;
        }
        let snapshot = cache.snapshot();
        let mut keys: Vec<_> = snapshot.entries.iter().map(|e| e.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(snapshot.evictions, 1);
        assert_eq!((calls_for("a"), calls_for("b"), calls_for("c")), (1, 1, 1));
        cache.get(&"b".to_owned()).await.unwrap();
        assert_eq!(calls_for("b"), 2, "b was evicted, so it loads again");
        cache.get(&"c".to_owned()).await.unwrap();
        assert_eq!(calls_for("c"), 1, "c stayed");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_evicted_and_stop_refreshing() {
        let clock = clock();
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = Arc::clone(&calls);
            let clock = Arc::clone(&clock);
            move |_key: String| {
                let serial = calls.fetch_add(1, Ordering::SeqCst);
                let expires_at = Some(clock.now() + secs(15 * 60));
                async move { Ok(Tok { serial, expires_at }) }
            }
        };
        let cache = Cache::new(loader, Arc::clone(&clock) as SharedClock, max(16));
        cache.get(&"route".to_owned()).await.unwrap();
        tokio::time::sleep(IDLE_EVICTION - secs(1)).await;
        assert_eq!(cache.snapshot().entries.len(), 1);
        tokio::time::sleep(secs(2)).await;
        let snapshot = cache.snapshot();
        assert!(snapshot.entries.is_empty());
        assert_eq!(snapshot.evictions, 1);
        // Refreshed every 8.75–10 minutes while kept: 1 + 6 or 1 + 7 loads in 65 minutes.
        let refreshed = calls.load(Ordering::SeqCst);
        assert!((7..=8).contains(&refreshed), "{refreshed} loads");
        tokio::time::sleep(secs(3 * 3600)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            refreshed,
            "no refresh after eviction"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_key_does_not_block_another() {
        let loader = |key: String| async move {
            if key == "slow" {
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            Ok(Tok {
                serial: 0,
                expires_at: None,
            })
        };
        let cache = Arc::new(Cache::new(loader, clock(), max(16)));
        let start = Instant::now();
        let slow = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.get(&"slow".to_owned()).await })
        };
        tokio::task::yield_now().await;
        cache.get(&"fast".to_owned()).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(!slow.is_finished());
        slow.await.unwrap().unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_giving_up_does_not_cancel_the_load() {
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = Arc::clone(&calls);
            move |_key: String| {
                let serial = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    Ok(Tok {
                        serial,
                        expires_at: None,
                    })
                }
            }
        };
        let cache = Cache::new(loader, clock(), max(16));
        let key = "route".to_owned();
        let gave_up = tokio::time::timeout(Duration::from_millis(300), cache.get(&key)).await;
        assert!(gave_up.is_err());
        assert_eq!(cache.get(&key).await.unwrap().serial, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
