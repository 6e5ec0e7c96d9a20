//! The fleet cache: credentials shared between processes, sealed, so that a fleet of brokers
//! (or a loop of short-lived CLI calls) costs upstream one exchange per refresh.
//!
//! It sits *behind* the in-process [`crate::cache::Cache`], as a wrapper around its loader: the
//! hot path stays local, and the shared store is read only when the local cache loads (a cold
//! start or a refresh), never per request.
//!
//! * **On Redis** ([`Fleet`], `redis_url` set): a load first reads the key's sealed entry; if
//!   it is fresh (not yet inside anyone's refresh window, see
//!   [`crate::cache::refresh_window`]) it is the result. Otherwise one replica takes the key's
//!   lease ([`lease`]) and exchanges; the others poll for its result. A failed exchange is
//!   shared as a sealed error marker for the error's backoff, so a fleet does not multiply an
//!   upstream outage. Redis down or slow: every call is bounded, the store is skipped for a
//!   backoff, and each replica loads on its own (the local cache keeps serving); it rejoins
//!   with the first call that succeeds after the backoff.
//! * **In a file** ([`file::FileCache`], no `redis_url`): `idbridge credential-process` and
//!   `token` keep a per-user encrypted cache under the XDG cache directory, one locked file per
//!   key, so a client that runs the command on every call does one exchange per credential
//!   lifetime.
//!
//! Entries are sealed with AES-256-GCM under data keys, bound to route and cache key, and data
//! keys are wrapped by a key-encryption key ([`seal`]; [`Keyring`] rotates data keys). An entry
//! that does not open (tampered, swapped, another key) is logged and treated as absent: the
//! reader exchanges and overwrites it.
//!
//! # Configuration
//!
//! ```toml
//! [cache]
//! redis_url = "redis://127.0.0.1:6379/0"   # the fleet's store; omit for none
//! key_file = "/etc/idbridge/cache.key"     # key-encryption key: 32 bytes, base64 or hex
//! # key_env = "IDBRIDGE_CACHE_KEY"         # … or from this environment variable
//! prefix = "idbridge"                      # namespace of this fleet's keys in Redis
//! lease_ms = 3000                          # the refresh lease, renewed while held
//! data_key_rotation_seconds = 3600         # a new data key this often
//! file = true                              # the CLI's file cache when there is no redis_url
//! ```

pub mod file;
pub mod lease;
mod payload;
pub mod redis_store;
pub mod seal;

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use idbridge_core::env::Env;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub use lease::{Fleet, FleetLoader};

use crate::ConfigError;
use crate::route::Overrides;
use redis_store::{RedisStore, Unavailable};
use seal::{DataKey, KeyEncryptionKey, LocalKek, SealError};

/// Default lease: long enough for a route's first hop to answer, short enough that a dead
/// holder's refresh is taken over within a few seconds. The holder renews it every third of
/// this while it exchanges, so slow upstreams do not lose it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);

/// Default data key rotation: a new data key every hour keeps each key's use to a few thousand
/// entries, far below AES-GCM's random-nonce limit, and means one wrapped key per replica per
/// hour in the store.
pub const DEFAULT_DATA_KEY_ROTATION: Duration = Duration::from_secs(3600);

/// A wrapped data key stays in the store this long after its rotation period ends: longer than
/// any credential sealed under it lives (AWS sessions last at most 12 hours).
pub const DATA_KEY_GRACE: Duration = Duration::from_secs(13 * 3600);

/// Unwrapped data keys kept in memory per process: one per replica per rotation is what a
/// fleet produces; more than this are dropped oldest first and fetched again when needed.
const MAX_KNOWN_DATA_KEYS: usize = 64;

/// Environment variable that turns the CLI's file cache off (`1`, `true`).
pub const ENV_NO_CACHE: &str = "IDBRIDGE_NO_CACHE";

/// The validated `[cache]` section.
#[derive(Clone)]
pub struct CacheSettings {
    /// The fleet's Redis, if configured.
    pub redis: Option<Arc<RedisStore>>,
    /// The key-encryption key (required with `redis_url`).
    pub kek: Option<Arc<dyn KeyEncryptionKey>>,
    /// The namespace of keys in the store.
    pub prefix: String,
    /// The refresh lease.
    pub lease: Duration,
    /// How often a replica starts a new data key.
    pub data_key_rotation: Duration,
    /// Whether the CLI uses its per-user file cache when there is no Redis.
    pub file: bool,
    /// SHA-256 of the whole config file (hex), so the CLI's file cache keeps the entries of
    /// different configs (or of one config before and after an edit) apart.
    pub config_digest: String,
}

impl fmt::Debug for CacheSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheSettings")
            .field("redis", &self.redis)
            .field("kek", &self.kek.as_ref().map(|k| k.id().to_owned()))
            .field("prefix", &self.prefix)
            .field("lease", &self.lease)
            .field("data_key_rotation", &self.data_key_rotation)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            redis: None,
            kek: None,
            prefix: "idbridge".to_owned(),
            lease: DEFAULT_LEASE,
            data_key_rotation: DEFAULT_DATA_KEY_ROTATION,
            file: true,
            config_digest: String::new(),
        }
    }
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    cache: Option<toml::Spanned<RawCache>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default)]
    redis_url: Option<toml::Spanned<String>>,
    #[serde(default)]
    key_file: Option<toml::Spanned<String>>,
    #[serde(default)]
    key_env: Option<toml::Spanned<String>>,
    #[serde(default)]
    prefix: Option<toml::Spanned<String>>,
    #[serde(default)]
    lease_ms: Option<toml::Spanned<u64>>,
    #[serde(default)]
    data_key_rotation_seconds: Option<toml::Spanned<u64>>,
    #[serde(default)]
    file: Option<bool>,
}

impl CacheSettings {
    /// Parses the `[cache]` section of a config file's text (defaults when absent); `base`
    /// resolves a relative `key_file`, `env` holds `key_env`'s variable. The key is read here,
    /// so a missing or malformed key is a config error before anything starts.
    pub fn parse(
        text: &str,
        path: &str,
        base: Option<&Path>,
        env: &dyn Env,
    ) -> Result<Self, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: crate::config::toml_error_message(text, &e),
        })?;
        let config_digest = hex::encode(Sha256::digest(text.as_bytes()));
        let Some(section) = raw.cache else {
            return Ok(Self {
                config_digest,
                ..Self::default()
            });
        };
        let section_span = section.span();
        let raw = section.into_inner();
        let err = |span: Range<usize>, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: text
                .get(..span.start)
                .map_or(1, |t| t.matches('\n').count() + 1),
            message: format!("[cache] {message}"),
        };
        let mut s = Self {
            config_digest,
            ..Self::default()
        };
        if let Some(p) = &raw.prefix {
            let ok = !p.get_ref().is_empty()
                && p.get_ref().len() <= 64
                && p.get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            if !ok {
                return Err(err(
                    p.span(),
                    "field `prefix` must be 1–64 letters, digits or `-_.:`".to_owned(),
                ));
            }
            s.prefix = p.get_ref().clone();
        }
        if let Some(ms) = &raw.lease_ms {
            if !(500..=60_000).contains(ms.get_ref()) {
                return Err(err(
                    ms.span(),
                    "field `lease_ms` must be between 500 and 60000".to_owned(),
                ));
            }
            s.lease = Duration::from_millis(*ms.get_ref());
        }
        if let Some(secs) = &raw.data_key_rotation_seconds {
            if !(60..=86_400).contains(secs.get_ref()) {
                return Err(err(
                    secs.span(),
                    "field `data_key_rotation_seconds` must be between 60 and 86400".to_owned(),
                ));
            }
            s.data_key_rotation = Duration::from_secs(*secs.get_ref());
        }
        s.file = raw.file.unwrap_or(true);
        s.kek = match (&raw.key_file, &raw.key_env) {
            (Some(_), Some(e)) => {
                return Err(err(
                    e.span(),
                    "set one of `key_file` and `key_env`, not both".to_owned(),
                ));
            }
            (Some(f), None) => {
                let p = PathBuf::from(f.get_ref());
                let p = match base {
                    Some(b) if p.is_relative() => b.join(p),
                    _ => p,
                };
                let kek = LocalKek::from_file(&p)
                    .map_err(|e| err(f.span(), format!("field `key_file`: {e}")))?;
                Some(Arc::new(kek) as Arc<dyn KeyEncryptionKey>)
            }
            (None, Some(e)) => {
                let value = zeroize::Zeroizing::new(env.get(e.get_ref()).ok_or_else(|| {
                    err(
                        e.span(),
                        format!("field `key_env`: {} is not set", e.get_ref()),
                    )
                })?);
                let kek = LocalKek::from_text(&value, e.get_ref())
                    .map_err(|x| err(e.span(), format!("field `key_env`: {x}")))?;
                Some(Arc::new(kek) as Arc<dyn KeyEncryptionKey>)
            }
            (None, None) => None,
        };
        if let Some(url) = &raw.redis_url {
            let store = RedisStore::new(url.get_ref())
                .map_err(|m| err(url.span(), format!("field `redis_url`: {m}")))?;
            if s.kek.is_none() {
                return Err(err(
                    section_span,
                    "`redis_url` needs a key-encryption key: set `key_file` or `key_env`"
                        .to_owned(),
                ));
            }
            s.redis = Some(Arc::new(store));
        }
        Ok(s)
    }

    /// Reads and parses the `[cache]` section of the config file at `path`.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        let text =
            idbridge_core::file::read_config_file(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
        let base = path.parent().map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        });
        Self::parse(&text, &path.display().to_string(), base, env)
    }
}

/// Whether `value` (of [`ENV_NO_CACHE`]) asks for no cache.
pub fn is_opt_out(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// A one-shot command's credential for `route`: through the fleet's Redis when the config has
/// one, else through the per-user file cache (unless `[cache] file = false`, `no_cache`, or
/// [`ENV_NO_CACHE`]), else straight from `fetch`.
pub async fn one_shot<F, Fut>(
    settings: &CacheSettings,
    route: &str,
    no_cache: bool,
    ctx: &crate::Context,
    fetch: F,
) -> Result<idbridge_core::Credential, crate::BrokerError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<idbridge_core::Credential, crate::BrokerError>>,
{
    if no_cache || is_opt_out(ctx.env.get(ENV_NO_CACHE).as_deref()) {
        return fetch().await;
    }
    if let Some(fleet) = Fleet::new(settings, Arc::clone(&ctx.clock), holder_name()) {
        return fleet.load(&SharedName::new(route, ""), fetch).await;
    }
    if !settings.file {
        return fetch().await;
    }
    let cache = file::cache_dir(&*ctx.env)
        .ok_or_else(|| "neither XDG_CACHE_HOME nor HOME is an absolute path".to_owned())
        .and_then(|dir| file::FileCache::open(&dir));
    match cache {
        Ok(cache) => {
            // The endpoints come from the environment: a credential of the emulator's STS is
            // not one of the real STS's.
            let endpoints = hex::encode(Sha256::digest(format!("{:?}", ctx.endpoints)));
            let name = SharedName::new(
                route,
                format!(
                    "config-sha256={}\nendpoints-sha256={endpoints}",
                    settings.config_digest
                ),
            );
            cache.get_or_fetch(&name, &*ctx.clock, fetch).await
        }
        Err(why) => {
            tracing::info!(why, "credential file cache skipped");
            fetch().await
        }
    }
}

/// This process in leases: the host name and the process id (`host/pid`).
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().replace(char::is_whitespace, "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}/{}", std::process::id())
}

/// What a shared entry is for: a route and, as text, the cache key within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedName {
    /// The route.
    pub route: String,
    /// The key within the route (empty for the route's own credential).
    pub key: String,
}

impl SharedName {
    /// A name for `route` and `key`.
    pub fn new(route: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            route: route.into(),
            key: key.into(),
        }
    }

    /// The name of a route's credential for a client's overrides (audience or scopes).
    pub fn for_overrides(route: &str, overrides: &Overrides) -> Self {
        let mut key = String::new();
        if let Some(a) = &overrides.audience {
            key.push_str("audience=");
            key.push_str(a);
        }
        if let Some(s) = &overrides.scopes {
            if !key.is_empty() {
                key.push('\n');
            }
            key.push_str("scopes=");
            key.push_str(&s.join(" "));
        }
        Self::new(route, key)
    }

    /// 32 hex digits of SHA-256 over route and key: the name in the store and on disk.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for part in [self.route.as_bytes(), self.key.as_bytes()] {
            h.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            h.update(part);
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// The data keys of one process: the newest (used for every new entry, replaced every
/// rotation period) and those of other replicas met when opening their entries.
pub struct Keyring {
    kek: Arc<dyn KeyEncryptionKey>,
    namespace: String,
    rotation: Duration,
    current: tokio::sync::Mutex<Option<CurrentKey>>,
    known: Mutex<VecDeque<Arc<DataKey>>>,
}

struct CurrentKey {
    key: Arc<DataKey>,
    wrapped: Vec<u8>,
    born: Instant,
    /// The store's connection generation when the key was last published.
    generation: u64,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kek", &self.kek.id())
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Why an entry could not be sealed or opened.
#[derive(Debug)]
pub(crate) enum KeyError {
    /// The store is unavailable.
    Unavailable,
    /// The entry or its data key does not open.
    Seal(SealError),
}

impl From<Unavailable> for KeyError {
    fn from(_: Unavailable) -> Self {
        KeyError::Unavailable
    }
}

impl From<SealError> for KeyError {
    fn from(e: SealError) -> Self {
        KeyError::Seal(e)
    }
}

impl Keyring {
    /// A keyring wrapping its data keys with `kek`, in `namespace`.
    pub fn new(kek: Arc<dyn KeyEncryptionKey>, namespace: &str, rotation: Duration) -> Self {
        Self {
            kek,
            namespace: namespace.to_owned(),
            rotation,
            current: tokio::sync::Mutex::new(None),
            known: Mutex::new(VecDeque::new()),
        }
    }

    fn dek_key(&self, id: &str) -> String {
        format!("{}:v1:dek:{id}", self.namespace)
    }

    /// The data key new entries are sealed with: the current one, or a new one (published to
    /// the store, wrapped) once the current one is a rotation period old. The current key is
    /// published again after a reconnect, in case the server restarted without it.
    pub(crate) async fn current(&self, store: &RedisStore) -> Result<Arc<DataKey>, KeyError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_mut()
            && c.born.elapsed() < self.rotation
        {
            let generation = store.generation();
            if c.generation != generation {
                store
                    .set(
                        &self.dek_key(c.key.id()),
                        &c.wrapped,
                        self.rotation + DATA_KEY_GRACE,
                    )
                    .await?;
                // The set itself may have reconnected: record the generation it ran in.
                c.generation = store.generation();
            }
            return Ok(Arc::clone(&c.key));
        }
        let (key, bytes) = DataKey::generate()?;
        let context = seal::data_key_context(&self.namespace, key.id());
        let wrapped = self.kek.wrap(&bytes[..], &context).await?;
        store
            .set(
                &self.dek_key(key.id()),
                &wrapped,
                self.rotation + DATA_KEY_GRACE,
            )
            .await?;
        let key = Arc::new(key);
        tracing::debug!(data_key = key.id(), "new shared cache data key");
        self.remember(Arc::clone(&key));
        *current = Some(CurrentKey {
            key: Arc::clone(&key),
            wrapped,
            born: Instant::now(),
            generation: store.generation(),
        });
        Ok(key)
    }

    fn remember(&self, key: Arc<DataKey>) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.retain(|k| k.id() != key.id());
        known.push_back(key);
        while known.len() > MAX_KNOWN_DATA_KEYS {
            known.pop_front();
        }
    }

    /// The data key `id`: known, or fetched from the store and unwrapped.
    pub(crate) async fn get(&self, store: &RedisStore, id: &str) -> Result<Arc<DataKey>, KeyError> {
        let found = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|k| k.id() == id)
            .cloned();
        if let Some(k) = found {
            return Ok(k);
        }
        let wrapped = store
            .get(&self.dek_key(id))
            .await?
            .ok_or_else(|| SealError::UnknownDataKey(id.to_owned()))?;
        let context = seal::data_key_context(&self.namespace, id);
        let bytes = self.kek.unwrap(&wrapped, &context).await?;
        let key = Arc::new(DataKey::from_bytes(id, &bytes)?);
        self.remember(Arc::clone(&key));
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use idbridge_core::env::MapEnv;

    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<CacheSettings, String> {
        let env = MapEnv(
            env.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        CacheSettings::parse(text, "c.toml", None, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn the_cache_section_is_validated_with_file_line_and_field() {
        let s = parse("", &[]).unwrap();
        assert!(s.redis.is_none() && s.file && !s.config_digest.is_empty());
        let s = parse(
            "[cache]\nredis_url = \"redis://127.0.0.1:1/0\"\nkey_env = \"K\"\nlease_ms = 900\n",
            &[("K", KEY)],
        )
        .unwrap();
        assert!(s.redis.is_some() && s.kek.is_some());
        assert_eq!(s.lease, Duration::from_millis(900));
        assert!(!format!("{s:?}").contains(KEY));
        for (text, needle) in [
            ("[cache]\nredis_url = \"redis://h/0\"\n", "line 1"),
            ("[cache]\n\nlease_ms = 1\n", "line 3"),
            ("[cache]\nkey_env = \"MISSING\"\n", "MISSING is not set"),
            ("[cache]\nkey_env = \"SHORT\"\n", "32 bytes"),
            ("[cache]\nprefix = \"a b\"\n", "`prefix`"),
            ("[cache]\nkey_file = \"/nonexistent/k\"\n", "key_file"),
            ("[cache]\nfrobnicate = 1\n", "frobnicate"),
        ] {
            let e = parse(text, &[("SHORT", "abcd")]).unwrap_err();
            assert!(e.contains("c.toml") && e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn names_digest_route_and_key_apart() {
        let a = SharedName::new("ab", "c").digest();
        let b = SharedName::new("a", "bc").digest();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let o = Overrides {
            audience: Some("x".into()),
            scopes: None,
        };
        assert_eq!(SharedName::for_overrides("r", &o).key, "audience=x");
        assert!(is_opt_out(Some("1")) && is_opt_out(Some("TRUE")) && !is_opt_out(Some("0")));
    }
}
