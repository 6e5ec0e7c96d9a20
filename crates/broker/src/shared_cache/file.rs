//! The per-user file cache of the short-lived CLI commands (`credential-process`, `token`):
//! one exchange per credential lifetime for a client that runs the command on every call.
//!
//! Layout, under `$XDG_CACHE_HOME/idbridge` (or `$HOME/.cache/idbridge`), directory mode 0700:
//!
//! * `key`: 32 random bytes (base64), mode 0600, created on first use (`create_new`, so two
//!   first calls at once agree on one key);
//! * `<digest>.cred`: one sealed entry per route and config file (see
//!   [`super::SharedName::digest`]), mode 0600, replaced by rename;
//! * `<digest>.lock`: locked exclusively around read, exchange and write, so concurrent calls
//!   for one key do one exchange between them.
//!
//! An entry is taken while it is fresh (before its refresh window, as the daemon's cache would
//! refresh it, and with at least [`SDK_REFRESH_AHEAD`] left); past that, the call exchanges and
//! rewrites it. An entry that does not open (a
//! changed key, a tampered file) is replaced. Any file problem (no home, a read-only
//! directory, a lock held for [`LOCK_WAIT`]) skips the cache for that call, with a log line:
//! the cache only ever saves exchanges, it never fails a call.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use idbridge_core::Credential;
use idbridge_core::clock::Clock;
use idbridge_core::env::Env;
use zeroize::Zeroizing;

use super::seal::{Binding, DataKey, KEY_LEN};
use super::{SharedName, payload};
use crate::BrokerError;

/// The longest a call waits for another call holding the same key's lock (it is exchanging);
/// past that it exchanges on its own. Longer than a route's exchange normally takes, and well
/// under the AWS CLI's patience for a credential process.
pub const LOCK_WAIT: Duration = Duration::from_secs(15);

/// A cached credential is handed out only while it has at least this long left (when its
/// lifetime is over twice that): botocore refreshes a `credential_process` credential 15
/// minutes before expiry (its advisory window), and a credential with less left would make a
/// long-running SDK client run the command again on every request until it expired.
pub const SDK_REFRESH_AHEAD: Duration = Duration::from_secs(15 * 60);

/// How often a waiting call tries the lock again.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// The per-user file cache.
#[derive(Debug)]
pub struct FileCache {
    dir: PathBuf,
    key: DataKey,
}

/// The cache directory from the environment: `$XDG_CACHE_HOME/idbridge` when that is an
/// absolute path, else `$HOME/.cache/idbridge`.
pub fn cache_dir(env: &dyn Env) -> Option<PathBuf> {
    if let Some(x) = env
        .get("XDG_CACHE_HOME")
        .filter(|x| Path::new(x).is_absolute())
    {
        return Some(Path::new(&x).join("idbridge"));
    }
    let home = env.get("HOME").filter(|h| Path::new(h).is_absolute())?;
    Some(Path::new(&home).join(".cache").join("idbridge"))
}

impl FileCache {
    /// Opens (creating on first use) the cache in `dir`.
    pub fn open(dir: &Path) -> Result<Self, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {}", dir.display(), e.kind()))?;
        let key_path = dir.join("key");
        let text = match read_private(&key_path)? {
            Some(text) => text,
            None => create_key(&key_path)?,
        };
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()
                .filter(|b| b.len() == KEY_LEN)
                .ok_or_else(|| format!("{} is not a cache key", key_path.display()))?,
        );
        let key = DataKey::from_bytes("file", &bytes).map_err(|e| e.to_string())?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
        })
    }

    fn binding<'a>(name: &'a SharedName) -> Binding<'a> {
        Binding {
            purpose: "credential",
            namespace: "file",
            route: &name.route,
            key: &name.key,
        }
    }

    /// The credential for `name`: a fresh cached one, else the result of `fetch` (cached when
    /// it succeeds). Concurrent calls for one name wait for each other's exchange.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        name: &SharedName,
        clock: &dyn Clock,
        fetch: F,
    ) -> Result<Credential, BrokerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Credential, BrokerError>>,
    {
        let digest = name.digest();
        let lock = match self.lock(&digest).await {
            Ok(lock) => Some(lock),
            Err(why) => {
                tracing::info!(why, "credential file cache skipped");
                None
            }
        };
        let path = self.dir.join(format!("{digest}.cred"));
        if lock.is_some()
            && let Some(c) = self.read(&path, name, clock)
        {
            tracing::debug!(route = %name.route, "credential from the file cache");
            return Ok(c);
        }
        let result = fetch().await;
        if lock.is_some()
            && let Ok(c) = &result
            && let Err(why) = self.write(&path, name, c, clock)
        {
            tracing::info!(why, "credential file cache not written");
        }
        drop(lock);
        result
    }

    async fn lock(&self, digest: &str) -> Result<File, String> {
        let path = self.dir.join(format!("{digest}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {}", path.display(), e.kind()))?;
        let started = tokio::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                    tokio::time::sleep(LOCK_POLL).await;
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(format!("{} stayed locked", path.display()));
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(format!("cannot lock {}: {}", path.display(), e.kind()));
                }
            }
        }
    }

    fn read(&self, path: &Path, name: &SharedName, clock: &dyn Clock) -> Option<Credential> {
        let bytes = fs::read(path).ok()?;
        let plain = match self.key.open(&Self::binding(name), &bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "credential file cache entry rejected; exchanging afresh");
                return None;
            }
        };
        let p = payload::decode(&plain)?;
        let now = clock.now();
        match p.body {
            Ok(c) if p.fresh_until.is_none_or(|f| now < f) => Some(c),
            _ => None,
        }
    }

    fn write(
        &self,
        path: &Path,
        name: &SharedName,
        c: &Credential,
        clock: &dyn Clock,
    ) -> Result<(), String> {
        let now = clock.now();
        let fresh_until = super::lease::fresh_until(c, now).map(|f| match c.expires_at() {
            Some(e) if e - now > SDK_REFRESH_AHEAD * 2 => f.min(e - SDK_REFRESH_AHEAD),
            _ => f,
        });
        let plain = payload::encode("cli", fresh_until, Ok(c))
            .ok_or_else(|| format!("a {} credential is not cached", c.kind()))?;
        let sealed = self
            .key
            .seal(&Self::binding(name), &plain)
            .map_err(|e| e.to_string())?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {}", tmp.display(), e.kind()))?;
        f.write_all(&sealed)
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("cannot write {}: {}", tmp.display(), e.kind()))?;
        fs::rename(&tmp, path)
            .map_err(|e| format!("cannot replace {}: {}", path.display(), e.kind()))
    }
}

/// Reads a file that must be private to its owner; `None` if it does not exist.
fn read_private(path: &Path) -> Result<Option<Zeroizing<String>>, String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {}", path.display(), e.kind())),
    };
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} must be a regular file readable by its owner only (mode 0600)",
            path.display()
        ));
    }
    // The directory was created (0700) by this user: the key must be theirs too.
    let owner = path
        .parent()
        .and_then(|d| fs::metadata(d).ok())
        .map(|m| m.uid());
    if owner != Some(meta.uid()) {
        return Err(format!(
            "{} belongs to another user than its directory",
            path.display()
        ));
    }
    fs::read_to_string(path)
        .map(|t| Some(Zeroizing::new(t)))
        .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))
}

fn create_key(path: &Path) -> Result<Zeroizing<String>, String> {
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    aws_lc_rs::rand::fill(&mut bytes[..]).map_err(|_| "no randomness".to_owned())?;
    let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&bytes[..]));
    match OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("cannot write {}: {}", path.display(), e.kind()))?;
            Ok(text)
        }
        // Another call created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_private(path)?.ok_or_else(|| format!("{} vanished", path.display()))
        }
        Err(e) => Err(format!("cannot create {}: {}", path.display(), e.kind())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use idbridge_core::IdToken;
    use idbridge_core::clock;

    use super::*;

    fn minting(
        calls: &AtomicUsize,
        minutes: i64,
    ) -> std::future::Ready<Result<Credential, BrokerError>> {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Credential::IdToken(IdToken {
            token: format!("tok-{n}").into(),
            expires_at: clock::system().now() + time::Duration::minutes(minutes),
        })))
    }

    #[tokio::test]
    async fn one_fetch_per_lifetime_private_files_and_a_shared_key() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("idbridge");
        let clock = clock::system();
        let calls = AtomicUsize::new(0);
        let name = SharedName::new("r", "config-sha256=x");
        for _ in 0..3 {
            let cache = FileCache::open(&root).unwrap();
            cache
                .get_or_fetch(&name, &*clock, || minting(&calls, 60))
                .await
                .unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for e in fs::read_dir(&root).unwrap() {
            let meta = e.unwrap().metadata().unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        // A 40-minute credential is handed out again for its first 25 minutes (15 left).
        let short = SharedName::new("r", "short");
        let cache = FileCache::open(&root).unwrap();
        for _ in 0..2 {
            cache
                .get_or_fetch(&short, &*clock, || minting(&calls, 40))
                .await
                .unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A key file readable by others is refused.
        fs::set_permissions(root.join("key"), fs::Permissions::from_mode(0o644)).unwrap();
        let e = FileCache::open(&root).unwrap_err();
        assert!(e.contains("0600"), "{e}");
    }

    #[tokio::test]
    async fn an_hour_long_credential_is_refetched_with_fifteen_minutes_left() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::open(&dir.path().join("idbridge")).unwrap();
        let clock = clock::ManualClock::at(1_900_000_000);
        let expires_at = clock.now() + time::Duration::hours(1);
        let calls = AtomicUsize::new(0);
        let name = SharedName::new("r", "k");
        let fetch = || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Credential::IdToken(IdToken {
                token: "t".into(),
                expires_at,
            })))
        };
        cache.get_or_fetch(&name, &clock, fetch).await.unwrap();
        clock.advance(44 * 60);
        cache.get_or_fetch(&name, &clock, fetch).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "16 minutes left: cached");
        clock.advance(2 * 60);
        cache.get_or_fetch(&name, &clock, fetch).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "14 minutes left: refetched"
        );
    }
}
