//! The fleet cache's store on Redis: entries, error markers, wrapped data keys, and the lease
//! that elects one refreshing replica per key.
//!
//! Every call is bounded ([`CONNECT_TIMEOUT`], [`OP_TIMEOUT`]). A failed or slow call marks the
//! store down for a jittered backoff ([`DOWN_BACKOFF_BASE`] doubling to [`DOWN_BACKOFF_MAX`]);
//! meanwhile every call fails at once with [`Unavailable`] and replicas load on their own. The
//! first call after the backoff reconnects; its success is the rejoin.
//!
//! Keys (`<h>` is 32 hex digits of SHA-256 over the route and cache key, so client-chosen
//! audiences never appear in the store in clear):
//!
//! | key | value | expiry |
//! |---|---|---|
//! | `<prefix>:v1:entry:<h>` | sealed credential | the credential's expiry |
//! | `<prefix>:v1:error:<h>` | sealed error of the last failed load | the error's backoff |
//! | `<prefix>:v1:lease:<h>` | `<token> <holder>` | the lease, renewed by its holder |
//! | `<prefix>:v1:fence:<h>` | the latest fencing token issued | a day after the last lease |
//! | `<prefix>:v1:dek:<id>` | a data key wrapped by the key-encryption key | see [`super::Keyring`] |

use std::fmt;
use std::future::Future;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};
use tokio::time::Instant;

/// Connecting to Redis gives up after this long: it is on the local network, and a replica
/// waiting longer holds its load back for nothing.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// One Redis call gives up after this long. A healthy Redis answers in well under a
/// millisecond; a quarter second still rides out a pause, and a refresh that falls back to
/// loading alone has lost only that.
pub const OP_TIMEOUT: Duration = Duration::from_millis(250);

/// After a failed call the store is left alone for this long, doubling with each further
/// failure (jittered down to half) …
pub const DOWN_BACKOFF_BASE: Duration = Duration::from_millis(500);

/// … up to this long, so a replica notices a recovered Redis within ten seconds.
pub const DOWN_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How long the fencing counter outlives the last lease taken on its key.
const FENCE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Redis is down or too slow; the caller carries on without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Takes the lease if nobody holds it (`SET NX PX`) and issues a fencing token: the key's
/// counter, incremented only when the lease is taken, so tokens grow with every new holder.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('SET', KEYS[1], 'pending', 'NX', 'PX', ARGV[2]) then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
return token
",
    )
});

/// Extends the lease while its value is still ours.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
",
    )
});

/// Writes a result only if the writer's token is still the latest issued (a holder whose lease
/// expired and was taken over is fenced out), then releases the lease if it is still held.
/// KEYS: fence, target, lease, the other of entry/error (deleted on a write).
static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if ARGV[5] == '1' then redis.call('DEL', KEYS[4]) end
if redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end
return 1
",
    )
});

/// Releases the lease if it is still ours.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// A lease held: its fencing token and the value that proves it is ours.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The fencing token.
    pub token: i64,
    value: String,
}

/// The keys of one cache entry in the store.
#[derive(Debug, Clone)]
pub struct EntryKeys {
    entry: String,
    error: String,
    lease: String,
    fence: String,
}

impl EntryKeys {
    /// The keys under `prefix` for the entry hash `h`.
    pub fn new(prefix: &str, h: &str) -> Self {
        let k = |what: &str| format!("{prefix}:v1:{what}:{h}");
        Self {
            entry: k("entry"),
            error: k("error"),
            lease: k("lease"),
            fence: k("fence"),
        }
    }

    /// The lease's key (tests read who holds it).
    pub fn lease(&self) -> &str {
        &self.lease
    }

    /// The entry's key.
    pub fn entry(&self) -> &str {
        &self.entry
    }
}

#[derive(Default)]
struct Health {
    failures: u32,
    down_until: Option<Instant>,
}

/// A Redis server, reached through one multiplexed connection, made again after a failure.
pub struct RedisStore {
    client: redis::Client,
    /// The server's address without credentials, for logs.
    display: String,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    health: Mutex<Health>,
    /// Connections made so far: a new one may be to a restarted, empty server.
    generation: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.display)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `url` (`redis://[user:password@]host:port/db`, or `rediss://`… is refused: TLS
    /// is not built in). Connects on first use.
    pub fn new(url: &str) -> Result<Self, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("not a Redis URL ({:?})", e.kind()))?;
        let info = client.get_connection_info();
        let display = format!("{}", info.addr());
        Ok(Self {
            client,
            display,
            conn: tokio::sync::Mutex::new(None),
            health: Mutex::new(Health::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many connections were made so far. What was written before a reconnect may be gone
    /// (the server restarted empty), so writers of long-lived keys write them again.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The server's address, without credentials.
    pub fn server(&self) -> &str {
        &self.display
    }

    /// Whether the store is backing off after a failure (calls would fail at once).
    pub fn is_down(&self) -> bool {
        let h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        h.down_until.is_some_and(|at| Instant::now() < at)
    }

    fn mark_down(&self, why: &str) {
        let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        h.failures = h.failures.saturating_add(1);
        let full = DOWN_BACKOFF_BASE
            .saturating_mul(2u32.saturating_pow(h.failures.saturating_sub(1).min(16)))
            .min(DOWN_BACKOFF_MAX);
        let max = u64::try_from((full / 2).as_nanos()).unwrap_or(u64::MAX);
        let delay = full / 2 + Duration::from_nanos(rand::random_range(0..=max));
        h.down_until = Some(Instant::now() + delay);
        if h.failures == 1 {
            tracing::warn!(server = %self.display, why, "shared cache unavailable; each replica loads on its own until it is back");
        } else {
            tracing::debug!(server = %self.display, why, failures = h.failures, ?delay, "shared cache still unavailable");
        }
    }

    fn mark_up(&self) {
        let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if h.failures > 0 {
            tracing::info!(server = %self.display, "shared cache reachable again; rejoined");
        }
        *h = Health::default();
    }

    async fn connection(&self) -> Result<MultiplexedConnection, Unavailable> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT));
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(c)) => {
                *slot = Some(c.clone());
                self.generation
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(c)
            }
            Ok(Err(e)) => {
                drop(slot);
                self.mark_down(&format!("{:?}", e.kind()));
                Err(Unavailable)
            }
            Err(_) => {
                drop(slot);
                self.mark_down("connect timed out");
                Err(Unavailable)
            }
        }
    }

    /// Runs one call under [`OP_TIMEOUT`]; any failure marks the store down.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.is_down() {
            return Err(Unavailable);
        }
        let conn = self.connection().await?;
        let why = match tokio::time::timeout(OP_TIMEOUT, f(conn)).await {
            Ok(Ok(v)) => {
                self.mark_up();
                return Ok(v);
            }
            Ok(Err(e)) => format!("{:?}", e.kind()),
            Err(_) => "call timed out".to_owned(),
        };
        *self.conn.lock().await = None;
        self.mark_down(&why);
        Err(Unavailable)
    }

    /// `GET key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        self.call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
    }

    /// `SET key value PX ttl`.
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Unavailable> {
        let ms = ttl_ms(ttl);
        self.call(|mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Takes the lease of `keys` for `ttl` if it is free; `holder` names this replica.
    pub async fn acquire(
        &self,
        keys: &EntryKeys,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, Unavailable> {
        let ms = ttl_ms(ttl);
        let token: i64 = self
            .call(|mut c| async move {
                ACQUIRE
                    .key(&keys.lease)
                    .key(&keys.fence)
                    .arg(holder)
                    .arg(ms)
                    .arg(ttl_ms(FENCE_TTL))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok((token > 0).then(|| Lease {
            token,
            value: format!("{token} {holder}"),
        }))
    }

    /// Extends a held lease; `false` if it is no longer ours.
    pub async fn renew(
        &self,
        keys: &EntryKeys,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<bool, Unavailable> {
        let ms = ttl_ms(ttl);
        let n: i64 = self
            .call(|mut c| async move {
                RENEW
                    .key(&keys.lease)
                    .arg(&lease.value)
                    .arg(ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    /// Releases a held lease (if it still is).
    pub async fn release(&self, keys: &EntryKeys, lease: &Lease) -> Result<(), Unavailable> {
        self.call(|mut c| async move {
            RELEASE
                .key(&keys.lease)
                .arg(&lease.value)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    /// Writes a sealed credential (`error = false`, clearing the error marker) or error marker
    /// under the lease's fencing token and releases the lease. `false`: fenced out (another
    /// replica took the lease over since), nothing written.
    pub async fn write(
        &self,
        keys: &EntryKeys,
        lease: &Lease,
        error: bool,
        sealed: &[u8],
        ttl: Duration,
    ) -> Result<bool, Unavailable> {
        let ms = ttl_ms(ttl);
        let (target, other) = if error {
            (&keys.error, &keys.entry)
        } else {
            (&keys.entry, &keys.error)
        };
        let n: i64 = self
            .call(|mut c| async move {
                WRITE
                    .key(&keys.fence)
                    .key(target)
                    .key(&keys.lease)
                    .key(other)
                    .arg(lease.token)
                    .arg(sealed)
                    .arg(ms)
                    .arg(&lease.value)
                    .arg(if error { "0" } else { "1" })
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    /// The entry and the error marker of `keys`, in one round trip.
    pub async fn read(
        &self,
        keys: &EntryKeys,
    ) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), Unavailable> {
        self.call(|mut c| async move {
            redis::cmd("MGET")
                .arg(&keys.entry)
                .arg(&keys.error)
                .query_async(&mut c)
                .await
        })
        .await
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
