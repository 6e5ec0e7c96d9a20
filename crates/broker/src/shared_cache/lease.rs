//! Distributed single flight on Redis: one replica refreshes a key under a lease, the others
//! wait for its result.
//!
//! A load ([`Fleet::load`]) loops, polling every [`POLL`]:
//!
//! 1. Read the key's entry and error marker (one `MGET`). A fresh entry that opens is the
//!    result. An error marker written by another replica is the result too: the leader's
//!    exchange failed, and trying again from every replica would multiply the load on a
//!    failing upstream (the marker lives for that error's backoff, see [`marker_ttl`]).
//! 2. Otherwise take the lease (`SET NX PX` with a fencing token from the key's counter, in one
//!    script). The holder reads once more (a result may have landed just before), exchanges
//!    while renewing the lease every third of its lifetime, and writes the sealed result with
//!    its token: the write is refused if a newer token was issued since (its lease expired and
//!    another replica took over), and releases the lease.
//! 3. Otherwise someone else holds the lease: wait. A holder that dies stops renewing; its
//!    lease expires and the next poll takes it over.
//!
//! A follower gives up after [`FOLLOW_MAX`] (inside the cache's attempt timeout) with a
//! transient error; the cache retries as for any failed attempt. Whenever Redis is unavailable
//! the load falls back to exchanging alone, so a Redis outage costs each replica one exchange
//! per refresh, never an error.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idbridge_core::Credential;
use idbridge_core::clock::SharedClock;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::redis_store::{EntryKeys, Lease, RedisStore};
use super::seal::{self, Binding};
use super::{CacheSettings, KeyError, Keyring, SharedName, payload};
use crate::cache::{self, Loader};
use crate::{BrokerError, ErrorKind};

/// How often a follower looks for the leader's result. Redis answers such a read in well
/// under a millisecond; 50 ms adds little to a refresh and is 20 reads a second per waiting
/// replica, only while a refresh runs.
pub const POLL: Duration = Duration::from_millis(50);

/// The longest a follower waits for another replica's result in one attempt: under the
/// cache's [`cache::ATTEMPT_TIMEOUT`], so the attempt ends with a clear error rather than a
/// timeout, and long enough for a leader that was killed to lose its lease to a follower.
pub const FOLLOW_MAX: Duration = Duration::from_secs(8);

const HOP: &str = "shared-cache";

/// Counters of one process's fleet cache, for metrics and tests.
#[derive(Debug, Default, Serialize, Clone, Copy, PartialEq, Eq)]
pub struct FleetStats {
    /// Loads answered from the store (a fresh entry another replica wrote).
    pub shared_hits: u64,
    /// Loads answered with another replica's error marker.
    pub shared_errors: u64,
    /// Loads that took the lease and exchanged.
    pub leads: u64,
    /// Loads that exchanged alone because Redis was unavailable.
    pub fallbacks: u64,
    /// Entries or markers that did not open (tampered, swapped, another key), refetched.
    pub rejected: u64,
    /// Results refused because another replica's newer lease fenced them out.
    pub fenced: u64,
}

#[derive(Default)]
struct Counters {
    shared_hits: AtomicU64,
    shared_errors: AtomicU64,
    leads: AtomicU64,
    fallbacks: AtomicU64,
    rejected: AtomicU64,
    fenced: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One replica's view of the fleet cache.
pub struct Fleet {
    store: Arc<RedisStore>,
    keyring: Keyring,
    prefix: String,
    holder: String,
    lease: Duration,
    clock: SharedClock,
    counters: Counters,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("store", &self.store)
            .field("prefix", &self.prefix)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

enum Read {
    Fresh(Credential),
    Error(BrokerError),
    Nothing,
}

impl Fleet {
    /// The fleet cache of `settings`, if it has a Redis; `holder` names this replica in leases
    /// (the daemon uses its host name and process id).
    pub fn new(settings: &CacheSettings, clock: SharedClock, holder: String) -> Option<Self> {
        let store = Arc::clone(settings.redis.as_ref()?);
        let kek = Arc::clone(settings.kek.as_ref()?);
        Some(Self {
            store,
            keyring: Keyring::new(kek, &settings.prefix, settings.data_key_rotation),
            prefix: settings.prefix.clone(),
            holder,
            lease: settings.lease,
            clock,
            counters: Counters::default(),
        })
    }

    /// This process's counters.
    pub fn stats(&self) -> FleetStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FleetStats {
            shared_hits: l(&c.shared_hits),
            shared_errors: l(&c.shared_errors),
            leads: l(&c.leads),
            fallbacks: l(&c.fallbacks),
            rejected: l(&c.rejected),
            fenced: l(&c.fenced),
        }
    }

    /// The store's keys for `name` (tests inspect and tamper with them).
    pub fn keys(&self, name: &SharedName) -> EntryKeys {
        EntryKeys::new(&self.prefix, &name.digest())
    }

    /// The credential for `name`: a fresh shared one, another replica's error, or the result
    /// of `fetch` run under the key's lease (or alone, when Redis is unavailable).
    pub async fn load<F, Fut>(&self, name: &SharedName, fetch: F) -> Result<Credential, BrokerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Credential, BrokerError>>,
    {
        let keys = self.keys(name);
        let started = Instant::now();
        loop {
            match self.read(name, &keys).await {
                Err(()) => return self.alone(fetch).await,
                Ok(Read::Fresh(c)) => {
                    bump(&self.counters.shared_hits);
                    return Ok(c);
                }
                Ok(Read::Error(e)) => {
                    bump(&self.counters.shared_errors);
                    return Err(e);
                }
                Ok(Read::Nothing) => {}
            }
            match self.store.acquire(&keys, &self.holder, self.lease).await {
                Err(_) => return self.alone(fetch).await,
                Ok(Some(lease)) => return self.lead(name, &keys, lease, fetch).await,
                Ok(None) => {}
            }
            if started.elapsed() >= FOLLOW_MAX {
                return Err(BrokerError::new(
                    ErrorKind::Transient,
                    HOP,
                    format!(
                        "another replica's refresh did not finish within {} s",
                        FOLLOW_MAX.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn alone<F, Fut>(&self, fetch: F) -> Result<Credential, BrokerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Credential, BrokerError>>,
    {
        bump(&self.counters.fallbacks);
        fetch().await
    }

    async fn lead<F, Fut>(
        &self,
        name: &SharedName,
        keys: &EntryKeys,
        lease: Lease,
        fetch: F,
    ) -> Result<Credential, BrokerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Credential, BrokerError>>,
    {
        // A result may have landed between the read and the lease.
        if let Ok(Read::Fresh(c)) = self.read(name, keys).await {
            let _ = self.store.release(keys, &lease).await;
            bump(&self.counters.shared_hits);
            return Ok(c);
        }
        bump(&self.counters.leads);
        let renew = async {
            loop {
                tokio::time::sleep(self.lease / 3).await;
                if !matches!(self.store.renew(keys, &lease, self.lease).await, Ok(true)) {
                    break;
                }
            }
            std::future::pending::<()>().await;
        };
        let result = tokio::select! {
            r = fetch() => r,
            () = renew => unreachable_result(),
        };
        let now = self.clock.now();
        let (sealed, ttl, error) = match &result {
            Ok(c) => {
                let fresh_until = fresh_until(c, now);
                let ttl = c
                    .expires_at()
                    .and_then(|e| Duration::try_from(e - now).ok())
                    .unwrap_or(Duration::from_secs(3600));
                (
                    self.seal(name, "credential", fresh_until, Ok(c)).await,
                    ttl,
                    false,
                )
            }
            Err(e) => (
                self.seal(name, "error", None, Err(e)).await,
                marker_ttl(e),
                true,
            ),
        };
        match sealed {
            Some(bytes) if !ttl.is_zero() => {
                match self.store.write(keys, &lease, error, &bytes, ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        bump(&self.counters.fenced);
                        tracing::debug!(route = %name.route, "result fenced out by a newer lease");
                    }
                    Err(_) => {}
                }
            }
            _ => {
                let _ = self.store.release(keys, &lease).await;
            }
        }
        result
    }

    async fn seal(
        &self,
        name: &SharedName,
        purpose: &str,
        fresh_until: Option<OffsetDateTime>,
        body: Result<&Credential, &BrokerError>,
    ) -> Option<Vec<u8>> {
        let key = self.keyring.current(&self.store).await.ok()?;
        let plain = payload::encode(&self.holder, fresh_until, body)?;
        key.seal(&self.binding(name, purpose), &plain).ok()
    }

    fn binding<'a>(&'a self, name: &'a SharedName, purpose: &'a str) -> Binding<'a> {
        Binding {
            purpose,
            namespace: &self.prefix,
            route: &name.route,
            key: &name.key,
        }
    }

    /// Reads the key's entry and marker; `Err` when Redis is unavailable.
    async fn read(&self, name: &SharedName, keys: &EntryKeys) -> Result<Read, ()> {
        let (entry, marker) = self.store.read(keys).await.map_err(drop)?;
        let now = self.clock.now();
        if let Some(bytes) = entry {
            match self.open(name, "credential", &bytes).await {
                Ok(p) => {
                    if let Ok(c) = p.body
                        && p.fresh_until.is_none_or(|f| now < f)
                    {
                        return Ok(Read::Fresh(c));
                    }
                }
                Err(KeyError::Unavailable) => return Err(()),
                Err(KeyError::Seal(e)) => self.rejected(name, "entry", &e),
            }
        }
        if let Some(bytes) = marker {
            match self.open(name, "error", &bytes).await {
                Ok(p) => {
                    if let Err(e) = p.body
                        && p.writer != self.holder
                    {
                        return Ok(Read::Error(e));
                    }
                }
                Err(KeyError::Unavailable) => return Err(()),
                Err(KeyError::Seal(e)) => self.rejected(name, "error marker", &e),
            }
        }
        Ok(Read::Nothing)
    }

    fn rejected(&self, name: &SharedName, what: &str, e: &seal::SealError) {
        bump(&self.counters.rejected);
        tracing::warn!(route = %name.route, error = %e, "shared cache {what} rejected; loading afresh");
    }

    async fn open(
        &self,
        name: &SharedName,
        purpose: &str,
        bytes: &[u8],
    ) -> Result<payload::Payload, KeyError> {
        let id = seal::entry_key_id(bytes)?;
        let key = self.keyring.get(&self.store, id).await?;
        let plain = key.open(&self.binding(name, purpose), bytes)?;
        payload::decode(&plain).ok_or(KeyError::Seal(seal::SealError::Malformed))
    }
}

fn unreachable_result() -> Result<Credential, BrokerError> {
    Err(BrokerError::new(
        ErrorKind::Protocol,
        HOP,
        "lease renewal ended",
    ))
}

/// Until when a credential loaded at `now` is taken as it is by other readers: the start of
/// its refresh window. `None` for one that never expires.
pub(crate) fn fresh_until(c: &Credential, now: OffsetDateTime) -> Option<OffsetDateTime> {
    let expires = c.expires_at()?;
    let lifetime = Duration::try_from(expires - now).unwrap_or(Duration::ZERO);
    Some(expires - cache::refresh_window(lifetime))
}

/// How long a failed load's error is shared: what the cache itself would wait before loading
/// again (its first backoff, or the upstream's `Retry-After`, or the negative-caching period of
/// a permanent error).
pub fn marker_ttl(e: &BrokerError) -> Duration {
    if !e.is_transient() {
        return cache::NEGATIVE_TTL;
    }
    e.retry_after
        .map_or(cache::LOAD_BACKOFF_BASE, |r| r.min(cache::RETRY_AFTER_MAX))
}

/// A loader that goes through the fleet cache when there is one, and straight to `inner`
/// otherwise. `name` maps a cache key to its shared name.
pub struct FleetLoader<K, L> {
    fleet: Option<Arc<Fleet>>,
    inner: Arc<L>,
    name: fn(&K) -> SharedName,
}

impl<K, L> fmt::Debug for FleetLoader<K, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetLoader")
            .field("fleet", &self.fleet)
            .finish_non_exhaustive()
    }
}

impl<K, L> FleetLoader<K, L> {
    /// Wraps `inner`.
    pub fn new(fleet: Option<Arc<Fleet>>, inner: L, name: fn(&K) -> SharedName) -> Self {
        Self {
            fleet,
            inner: Arc::new(inner),
            name,
        }
    }
}

impl<K, L> Loader<K, Credential> for FleetLoader<K, L>
where
    K: Send + Sync + 'static,
    L: Loader<K, Credential>,
{
    fn load(&self, key: &K) -> impl Future<Output = Result<Credential, BrokerError>> + Send {
        let fleet = self.fleet.clone();
        let name = (self.name)(key);
        async move {
            match fleet {
                Some(f) => f.load(&name, || self.inner.load(key)).await,
                None => self.inner.load(key).await,
            }
        }
    }
}
