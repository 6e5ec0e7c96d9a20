#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration test helpers fail loudly"
)]
//! The fleet cache against a real `redis-server` (started here on 127.0.0.1, on a free port,
//! in a temp dir; a missing `redis-server` fails the test): entries shared between replicas,
//! tampered, swapped and wrongly keyed entries rejected and refetched, data key rotation, the
//! lease's single flight, and a Redis outage.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idbridge_broker::shared_cache::redis_store::RedisStore;
use idbridge_broker::shared_cache::seal::{KeyEncryptionKey, LocalKek};
use idbridge_broker::shared_cache::{CacheSettings, Fleet, SharedName};
use idbridge_broker::{BrokerError, ErrorKind};
use idbridge_core::clock;
use idbridge_core::{AzureAccessToken, Credential, IdToken, X509Credential};
use time::OffsetDateTime;

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self {
                    child,
                    port,
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not listen on {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kek(byte: u8) -> Arc<dyn KeyEncryptionKey> {
    Arc::new(LocalKek::from_bytes(&[byte; 32]).unwrap())
}

fn settings(url: &str, kek: Arc<dyn KeyEncryptionKey>) -> CacheSettings {
    CacheSettings {
        redis: Some(Arc::new(RedisStore::new(url).unwrap())),
        kek: Some(kek),
        ..CacheSettings::default()
    }
}

fn replica(s: &CacheSettings, name: &str) -> Fleet {
    Fleet::new(s, clock::system(), name.to_owned()).unwrap()
}

/// A fetch that counts its calls and mints `tok-<n>`, valid for an hour.
fn minter(
    calls: &Arc<AtomicUsize>,
) -> impl FnOnce() -> std::future::Ready<Result<Credential, BrokerError>> {
    let calls = Arc::clone(calls);
    move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(Ok(Credential::IdToken(IdToken {
            token: format!("tok-{n}").into(),
            expires_at: clock::system().now() + time::Duration::hours(1),
        })))
    }
}

fn token(c: &Credential) -> String {
    match c {
        Credential::IdToken(t) => t.token.expose_secret().to_owned(),
        other => panic!("{other:?}"),
    }
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn replicas_share_and_reject_tampered_swapped_and_foreign_entries() {
    let redis = Redis::start();
    let s = settings(&redis.url(), kek(1));
    let (a, b) = (replica(&s, "a/1"), replica(&s, "b/2"));
    let calls = Arc::new(AtomicUsize::new(0));
    let one = SharedName::new("route", "audience=x");
    let two = SharedName::new("route", "audience=y");

    assert_eq!(token(&a.load(&one, minter(&calls)).await.unwrap()), "tok-1");
    assert_eq!(
        token(&b.load(&one, minter(&calls)).await.unwrap()),
        "tok-1",
        "shared"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(b.stats().shared_hits, 1);

    let mut conn = raw(&redis.url()).await;
    let keys = a.keys(&one);
    let sealed: Vec<u8> = redis::cmd("GET")
        .arg(keys.entry())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed).contains("tok-1"),
        "sealed, not in clear"
    );

    // Tampered: one flipped byte.
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let _: () = redis::cmd("SET")
        .arg(keys.entry())
        .arg(&tampered)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        token(&b.load(&one, minter(&calls)).await.unwrap()),
        "tok-2",
        "refetched"
    );
    let rejected = b.stats().rejected;
    assert!(rejected >= 1, "{rejected}");

    // Swapped: another key's valid entry copied over this one's.
    assert_eq!(token(&a.load(&two, minter(&calls)).await.unwrap()), "tok-3");
    let other: Vec<u8> = redis::cmd("GET")
        .arg(a.keys(&two).entry())
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(keys.entry())
        .arg(&other)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        token(&b.load(&one, minter(&calls)).await.unwrap()),
        "tok-4",
        "swap rejected"
    );
    assert!(b.stats().rejected > rejected);

    // A replica with another key-encryption key cannot open the fleet's entries.
    let stranger = replica(&settings(&redis.url(), kek(2)), "c/3");
    assert_eq!(
        token(&stranger.load(&two, minter(&calls)).await.unwrap()),
        "tok-5",
        "wrong key"
    );
    assert!(stranger.stats().rejected >= 1);
    // … and what it wrote does not open for the others either.
    assert_eq!(token(&a.load(&two, minter(&calls)).await.unwrap()), "tok-6");
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    // Never served: every answer above was a freshly minted token, checked in order.
}

#[tokio::test]
async fn entries_under_an_older_data_key_still_open() {
    let redis = Redis::start();
    let mut s = settings(&redis.url(), kek(1));
    s.data_key_rotation = Duration::from_millis(200);
    let writer = replica(&s, "w/1");
    let calls = Arc::new(AtomicUsize::new(0));
    let old = SharedName::new("route", "old");
    let new = SharedName::new("route", "new");
    writer.load(&old, minter(&calls)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.load(&new, minter(&calls)).await.unwrap();
    let mut conn = raw(&redis.url()).await;
    let ids: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("idbridge:v1:dek:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ids.len(), 2, "a second data key after the rotation period");
    let reader = replica(&s, "r/2");
    assert_eq!(
        token(&reader.load(&old, minter(&calls)).await.unwrap()),
        "tok-1"
    );
    assert_eq!(
        token(&reader.load(&new, minter(&calls)).await.unwrap()),
        "tok-2"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_exchanges_the_others_wait_and_errors_are_shared() {
    let redis = Redis::start();
    let s = settings(&redis.url(), kek(1));
    let calls = Arc::new(AtomicUsize::new(0));
    let name = SharedName::new("route", "");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let fleet = replica(&s, &format!("r/{i}"));
        let (calls, name) = (Arc::clone(&calls), name.clone());
        tasks.spawn(async move {
            fleet
                .load(&name, || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Ok(Credential::IdToken(IdToken {
                        token: "slow".into(),
                        expires_at: clock::system().now() + time::Duration::hours(1),
                    }))
                })
                .await
        });
    }
    for r in tasks.join_all().await {
        assert_eq!(token(&r.unwrap()), "slow");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one exchange for eight replicas"
    );

    // A failed exchange is handed to the waiting replicas instead of being repeated by each.
    let failing = SharedName::new("route", "failing");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let fleet = replica(&s, &format!("f/{i}"));
        let (calls, name) = (Arc::clone(&calls), failing.clone());
        tasks.spawn(async move {
            fleet
                .load(&name, || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Err::<Credential, _>(BrokerError::new(ErrorKind::Rejected, "aws-sts", "denied"))
                })
                .await
        });
    }
    for r in tasks.join_all().await {
        assert_eq!(r.unwrap_err().message, "denied");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one failed exchange for eight replicas"
    );
}

#[tokio::test]
async fn a_dead_holders_lease_expires_and_redis_down_means_loading_alone() {
    let redis = Redis::start();
    let mut s = settings(&redis.url(), kek(1));
    s.lease = Duration::from_millis(600);
    let calls = Arc::new(AtomicUsize::new(0));
    let name = SharedName::new("route", "");
    // A holder that never finishes (and whose task is then dropped, as a killed process).
    let dead = replica(&s, "dead/1");
    let stuck = tokio::time::timeout(
        Duration::from_millis(300),
        dead.load(&name, std::future::pending),
    )
    .await;
    assert!(stuck.is_err());
    drop(dead);
    let live = replica(&s, "live/2");
    assert_eq!(
        token(&live.load(&name, minter(&calls)).await.unwrap()),
        "tok-1",
        "took over"
    );
    assert_eq!(live.stats().leads, 1);

    // Redis gone: the load goes straight to the fetch, without an error.
    let port = redis.port;
    drop(redis);
    let fresh = SharedName::new("route", "while-down");
    assert_eq!(
        token(&live.load(&fresh, minter(&calls)).await.unwrap()),
        "tok-2"
    );
    assert!(live.stats().fallbacks >= 1);
    // Back (empty): rejoined after the backoff.
    let _redis = Redis::start_on(port);
    tokio::time::sleep(idbridge_broker::shared_cache::redis_store::DOWN_BACKOFF_BASE).await;
    assert_eq!(
        token(&live.load(&fresh, minter(&calls)).await.unwrap()),
        "tok-3"
    );
    let other = replica(&s, "other/3");
    assert_eq!(
        token(&other.load(&fresh, minter(&calls)).await.unwrap()),
        "tok-3",
        "shared again"
    );
}

#[tokio::test]
async fn entra_tokens_and_x509_credentials_are_shared_whole_and_sealed() {
    let redis = Redis::start();
    let s = settings(&redis.url(), kek(1));
    let (a, b) = (replica(&s, "a/1"), replica(&s, "b/2"));
    let expires_at = OffsetDateTime::from_unix_timestamp(clock::system().now().unix_timestamp())
        .unwrap()
        + time::Duration::hours(1);
    let creds = [
        (
            "entra",
            "azure-secret-token",
            Credential::AzureAccessToken(AzureAccessToken {
                token: "eyJ.azure-secret-token".into(),
                expires_at,
                tenant: "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d".into(),
                client_id: "c1111111-0000-4000-8000-000000000011".into(),
                scope: "api://idbridge-billing/.default".into(),
            }),
        ),
        (
            "svid",
            "x509-key-material",
            Credential::X509(X509Credential {
                chain_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
                key_pem:
                    "-----BEGIN PRIVATE KEY-----\nx509-key-material\n-----END PRIVATE KEY-----\n"
                        .into(),
                expires_at,
                subject: "spiffe://example.org/billing".into(),
            }),
        ),
    ];
    let calls = Arc::new(AtomicUsize::new(0));
    let mut conn = raw(&redis.url()).await;
    for (route, secret, cred) in creds {
        let name = SharedName::new(route, "");
        let fetch = |c: Credential| {
            let calls = Arc::clone(&calls);
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Ok(c))
            }
        };
        assert_eq!(a.load(&name, fetch(cred.clone())).await.unwrap(), cred);
        assert_eq!(
            b.load(&name, fetch(cred.clone())).await.unwrap(),
            cred,
            "{route}: every field through the store"
        );
        let sealed: Vec<u8> = redis::cmd("GET")
            .arg(a.keys(&name).entry())
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&sealed).contains(secret),
            "{route}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one fetch per credential");
    assert_eq!(b.stats().shared_hits, 2);
}
