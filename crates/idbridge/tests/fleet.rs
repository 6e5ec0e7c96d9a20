#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration test helpers fail loudly"
)]
//! Eight `idbridge serve` daemons on one `redis-server` (started here on 127.0.0.1, on a free
//! port, in a temp dir; a missing `redis-server` fails the test), polled concurrently through
//! their GCE metadata frontends for 20-second access tokens. The emulator counts the mints
//! (`generateAccessToken`):
//!
//! 1. steady load: at most one mint per refresh window for the whole fleet;
//! 2. the lease holder killed mid-refresh (the emulator slows the mint down): another daemon
//!    takes the refresh over, the others keep serving;
//! 3. redis-server stopped: every daemon refreshes on its own (one mint per daemon per window)
//!    and no client sees an error;
//! 4. redis-server back (empty): the daemons rejoin, one mint per window again.
//!
//! Bounded: about two minutes, eight daemons, sixteen polling clients at 10 requests a second.
//! The bounds on mints are counts per elapsed window (as in `refresh_live.rs`), no timing.
//!
//! A second test runs two daemons with an `entra` route and a `roles-anywhere` route: one
//! exchange each for both daemons, and nothing of either credential in clear in Redis.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const REPLICAS: usize = 8;
/// Lifetime 20 s: refresh 6.7 s before expiry minus up to 1.7 s of jitter, so a token is fresh
/// for the fleet for 20 − 8.3 = 11.7 s and a refresh window opens at least that often.
const FRESH_FOR: f64 = 20.0 - 20.0 / 3.0 * 1.25;
const MINTS: &str = "google.iamcredentials.generateAccessToken";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start(port: u16, dir: tempfile::TempDir) -> Self {
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
                    child: Some(child),
                    port,
                    dir,
                };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not listen on {port}");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{}/0", self.port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Daemon {
    child: Child,
    port: u16,
    metrics: u16,
    alive: Arc<AtomicBool>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(port: u16, metrics: u16, redis_port: u16, key: &Path) -> String {
    format!(
        r#"
[[route]]
name = "short"
source = {{ kind = "impersonate", service_account = "myapp@gcp-project.iam.gserviceaccount.com", scopes = ["https://www.googleapis.com/auth/cloud-platform"], lifetime_seconds = 20 }}

[cache]
redis_url = "redis://127.0.0.1:{redis_port}/0"
key_file = "{key}"
lease_ms = 1500

[serve]
bind = "127.0.0.1"
[serve.gce_metadata]
port = {port}
token_route = "short"
project_id = "gcp-project"
numeric_project_id = "271828182845"
[serve.metrics]
port = {metrics}
"#,
        key = key.display()
    )
}

#[derive(Default)]
struct Load {
    requests: AtomicU64,
    errors: AtomicU64,
    tokens: std::sync::Mutex<BTreeSet<String>>,
}

/// Polls every live daemon with two clients each, every 100 ms, for `secs`.
async fn load(daemons: &[Daemon], secs: u64) -> Arc<Load> {
    let stats = Arc::new(Load::default());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for d in daemons {
        for _ in 0..2 {
            let (http, stats, alive) = (http.clone(), Arc::clone(&stats), Arc::clone(&d.alive));
            let url = format!(
                "http://127.0.0.1:{}/computeMetadata/v1/instance/service-accounts/default/token",
                d.port
            );
            tasks.spawn(async move {
                while Instant::now() < until && alive.load(Ordering::SeqCst) {
                    let r = http
                        .get(&url)
                        .header("Metadata-Flavor", "Google")
                        .send()
                        .await;
                    if !alive.load(Ordering::SeqCst) {
                        break;
                    }
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let body: serde_json::Value = r.json().await.unwrap();
                            let t = body["access_token"].as_str().unwrap().to_owned();
                            stats.tokens.lock().unwrap().insert(t);
                        }
                        other => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("client error from {url}: {other:?}");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    }
    tasks.join_all().await;
    stats
}

/// Most mints a fleet sharing its refreshes makes in `secs`: one at the start of each window
/// that opens, plus the one in flight.
fn one_per_window(secs: f64) -> u64 {
    (secs / FRESH_FOR).ceil() as u64 + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_daemons_one_exchange_per_refresh_window() {
    let running = common::emulator().await;
    let emu = Arc::clone(&running.emulator);
    let env: Vec<(String, String)> = running.env_pairs();
    let google = env
        .iter()
        .find(|(k, _)| k == "IDBRIDGE_EMULATOR_GOOGLE_URL")
        .unwrap()
        .1
        .clone();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cache.key");
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&key)
        .unwrap();
    std::fs::write(&key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    let redis_port = free_port();
    let mut redis = Redis::start(redis_port, tempfile::tempdir().unwrap());

    let mut daemons = Vec::new();
    for i in 0..REPLICAS {
        let (port, metrics) = (free_port(), free_port());
        let cfg = dir.path().join(format!("d{i}.toml"));
        std::fs::write(&cfg, config(port, metrics, redis_port, &key)).unwrap();
        let log = std::fs::File::create(dir.path().join(format!("d{i}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_idbridge"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env_clear()
            .envs(env.iter().cloned())
            .env("HOME", dir.path())
            .env("RUST_LOG", "idbridge_broker=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        daemons.push(Daemon {
            child,
            port,
            metrics,
            alive: Arc::new(AtomicBool::new(true)),
        });
    }
    let http = reqwest::Client::new();
    for d in &daemons {
        let url = format!(
            "http://127.0.0.1:{}/computeMetadata/v1/instance/service-accounts/default/token",
            d.port
        );
        let mut ok = false;
        for _ in 0..300 {
            if let Ok(r) = http
                .get(&url)
                .header("Metadata-Flavor", "Google")
                .send()
                .await
                && r.status() == 200
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "daemon on {} never served a token", d.port);
    }
    assert_eq!(
        emu.count(MINTS),
        1,
        "the cold start of eight daemons: one exchange"
    );

    // 1. Steady load.
    let before = emu.count(MINTS);
    let started = Instant::now();
    let l = load(&daemons, 30).await;
    let mints = emu.count(MINTS) - before;
    let limit = one_per_window(started.elapsed().as_secs_f64());
    eprintln!(
        "steady: {mints} mints, {} requests",
        l.requests.load(Ordering::Relaxed)
    );
    assert_eq!(l.errors.load(Ordering::Relaxed), 0);
    assert!(
        (1..=limit).contains(&mints),
        "{mints} mints for 8 daemons in 30 s (at most {limit})"
    );

    // 2. The lease holder killed mid-refresh: the mint takes 1.5 s, the holder dies in it.
    let chaos = serde_json::json!({"rule": [{"listener": "google", "path_prefix": "/v1/projects/", "latency_ms": 1500}]});
    let r = http
        .put(format!("{google}/_emulator/chaos"))
        .json(&chaos)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
    let mut conn = redis.conn().await;
    let before = emu.count(MINTS);
    let started = Instant::now();
    let victim = {
        let mut victim = None;
        while victim.is_none() && started.elapsed() < Duration::from_secs(20) {
            let leases: Vec<String> = redis::cmd("KEYS")
                .arg("idbridge:v1:lease:*")
                .query_async(&mut conn)
                .await
                .unwrap();
            for k in leases {
                let v: Option<String> = redis::cmd("GET")
                    .arg(&k)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let pid = v.and_then(|v| v.rsplit('/').next().and_then(|p| p.parse::<u32>().ok()));
                if let Some(pid) = pid {
                    victim = daemons.iter().position(|d| d.child.id() == pid);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        victim.expect("a daemon took the lease within 20 s")
    };
    daemons[victim].alive.store(false, Ordering::SeqCst);
    let _ = daemons[victim].child.kill();
    let _ = daemons[victim].child.wait();
    let l = load(&daemons, 10).await;
    let mints = emu.count(MINTS) - before;
    eprintln!(
        "holder killed: {mints} mints, {} requests",
        l.requests.load(Ordering::Relaxed)
    );
    assert_eq!(
        l.errors.load(Ordering::Relaxed),
        0,
        "the others kept serving"
    );
    // The takeover's mint, plus the killed holder's if it reached the emulator before dying.
    assert!(
        (1..=2).contains(&mints),
        "{mints} mints after the holder died"
    );
    let r = http
        .put(format!("{google}/_emulator/chaos"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let live: Vec<Daemon> = daemons
        .into_iter()
        .enumerate()
        .filter_map(|(i, d)| (i != victim).then_some(d))
        .collect();

    // 3. redis-server stopped: each daemon refreshes alone, and clients see no error.
    let redis_dir = std::mem::replace(&mut redis.dir, tempfile::tempdir().unwrap());
    redis.stop();
    let before = emu.count(MINTS);
    let started = Instant::now();
    let l = load(&live, 25).await;
    let mints = emu.count(MINTS) - before;
    let windows = one_per_window(started.elapsed().as_secs_f64());
    eprintln!(
        "redis down: {mints} mints, {} requests",
        l.requests.load(Ordering::Relaxed)
    );
    assert_eq!(
        l.errors.load(Ordering::Relaxed),
        0,
        "no client errors while Redis is down"
    );
    let replicas = live.len() as u64;
    assert!(
        (replicas..=replicas * windows).contains(&mints),
        "{mints} mints for {replicas} daemons alone in 25 s"
    );

    // 4. redis-server back, empty: the daemons rejoin (their backoff is at most 10 s).
    let redis = Redis::start(redis_port, redis_dir);
    let _ = load(&live, 25).await;
    let before = emu.count(MINTS);
    let started = Instant::now();
    let l = load(&live, 25).await;
    let mints = emu.count(MINTS) - before;
    let limit = one_per_window(started.elapsed().as_secs_f64());
    eprintln!(
        "rejoined: {mints} mints, {} requests",
        l.requests.load(Ordering::Relaxed)
    );
    assert_eq!(l.errors.load(Ordering::Relaxed), 0);
    assert!(
        mints <= limit,
        "{mints} mints after rejoining (at most {limit})"
    );
    let mut conn = redis.conn().await;
    let entries: Vec<String> = redis::cmd("KEYS")
        .arg("idbridge:v1:entry:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "the fleet writes to the restarted Redis");
    let mut events = std::collections::BTreeMap::new();
    for d in &live {
        let text = http
            .get(format!("http://127.0.0.1:{}/metrics", d.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in text
            .lines()
            .filter(|l| l.starts_with("idbridge_serve_fleet_cache_total{"))
        {
            let (name, n) = line.rsplit_once(' ').unwrap();
            *events.entry(name.to_owned()).or_insert(0u64) += n.parse::<u64>().unwrap();
        }
    }
    eprintln!("fleet cache counters: {events:?}");
    let event = |e: &str| events[&format!("idbridge_serve_fleet_cache_total{{event=\"{e}\"}}")];
    assert!(
        event("shared_hit") > 0 && event("lead") > 0 && event("fallback") > 0,
        "{events:?}"
    );
    assert_eq!(event("rejected"), 0, "{events:?}");
    drop(live);
    running.shutdown().await;
}

/// Two daemons on one Redis, each with an Entra route (GCE ID token → `entra`, served over
/// Azure IMDS) and a Roles Anywhere route (X.509-SVID → `roles-anywhere`, served over AWS
/// IMDSv2): the second daemon is served the first one's sealed credential, field for field,
/// and upstream sees one exchange per route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_entra_and_roles_anywhere_credentials() {
    let running = common::emulator().await;
    let emu = Arc::clone(&running.emulator);
    let env: Vec<(String, String)> = running.env_pairs();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cache.key");
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&key)
        .unwrap();
    std::fs::write(&key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    let redis_port = free_port();
    let redis = Redis::start(redis_port, tempfile::tempdir().unwrap());
    let mut daemons = Vec::new();
    for i in 0..2 {
        let (azure, aws, metrics) = (free_port(), free_port(), free_port());
        let text = format!(
            r#"
[[route]]
name = "to-entra"
source = {{ kind = "gce-metadata", audience = "api://AzureADTokenExchange" }}
exchange = [
  {{ kind = "entra", tenant = "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d", client_id = "c1111111-0000-4000-8000-000000000011", scope = "api://idbridge-billing/.default" }},
]

[[route]]
name = "to-roles-anywhere"
source = {{ kind = "spiffe", svid = "x509" }}
exchange = [
  {{ kind = "roles-anywhere", trust_anchor_arn = "arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/0c9d1f7e-5a1b-4c2d-9e3f-7a6b5c4d3e21", profile_arn = "arn:aws:rolesanywhere:us-east-1:111122223333:profile/3f2e1d0c-9b8a-4765-8432-10fedcba9876", role_arn = "arn:aws:iam::111122223333:role/spiffe-billing" }},
]

[cache]
redis_url = "redis://127.0.0.1:{redis_port}/0"
key_file = "{key}"

[serve]
bind = "127.0.0.1"
[serve.azure_imds]
port = {azure}
[[serve.azure_imds.resource]]
resource = "api://idbridge-billing"
route = "to-entra"
[serve.aws_imds]
port = {aws}
route = "to-roles-anywhere"
[serve.metrics]
port = {metrics}
"#,
            key = key.display()
        );
        let cfg = dir.path().join(format!("kinds{i}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let log = std::fs::File::create(dir.path().join(format!("kinds{i}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_idbridge"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env_clear()
            .envs(env.iter().cloned())
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        daemons.push((
            Daemon {
                child,
                port: azure,
                metrics,
                alive: Arc::new(AtomicBool::new(true)),
            },
            aws,
        ));
    }
    let http = reqwest::Client::new();
    let entra = |port: u16| {
        let http = http.clone();
        async move {
            let url = format!(
                "http://127.0.0.1:{port}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://idbridge-billing"
            );
            for _ in 0..300 {
                if let Ok(r) = http.get(&url).header("Metadata", "true").send().await
                    && r.status() == 200
                {
                    return r.json::<serde_json::Value>().await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("no Entra token from the daemon on {port}");
        }
    };
    let aws = |port: u16| {
        let http = http.clone();
        async move {
            let base = format!("http://127.0.0.1:{port}/latest");
            for _ in 0..300 {
                if let Ok(r) = http
                    .put(format!("{base}/api/token"))
                    .header("x-aws-ec2-metadata-token-ttl-seconds", "60")
                    .send()
                    .await
                    && r.status() == 200
                {
                    let t = r.text().await.unwrap();
                    let r = http
                        .get(format!(
                            "{base}/meta-data/iam/security-credentials/spiffe-billing"
                        ))
                        .header("x-aws-ec2-metadata-token", &t)
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 200 {
                        return r.json::<serde_json::Value>().await.unwrap();
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("no AWS credentials from the daemon on {port}");
        }
    };
    let first = entra(daemons[0].0.port).await;
    let second = entra(daemons[1].0.port).await;
    assert_eq!(first, second, "the same token, expiry and resource");
    assert_eq!(emu.count("azure.entra.token"), 1, "one Entra exchange");
    let first = aws(daemons[0].1).await;
    let second = aws(daemons[1].1).await;
    assert_eq!(
        (&first["AccessKeyId"], &first["Token"], &first["Expiration"]),
        (
            &second["AccessKeyId"],
            &second["Token"],
            &second["Expiration"]
        ),
    );
    assert_eq!(
        emu.count("roles_anywhere.CreateSession"),
        1,
        "one Roles Anywhere exchange"
    );
    // What the store holds is sealed: no secret of either credential in it.
    let secrets = [
        first["SecretAccessKey"].as_str().unwrap().to_owned(),
        first["Token"].as_str().unwrap().to_owned(),
    ];
    let mut conn = redis.conn().await;
    let entries: Vec<String> = redis::cmd("KEYS")
        .arg("idbridge:v1:entry:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    for e in entries {
        let sealed: Vec<u8> = redis::cmd("GET")
            .arg(&e)
            .query_async(&mut conn)
            .await
            .unwrap();
        let sealed = String::from_utf8_lossy(&sealed);
        assert!(secrets.iter().all(|s| !sealed.contains(s.as_str())));
        assert!(!sealed.contains("eyJ"), "no JWT in clear");
    }
    let text = http
        .get(format!("http://127.0.0.1:{}/metrics", daemons[1].0.metrics))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("idbridge_serve_fleet_cache_total{event=\"shared_hit\"} 2"),
        "{text}"
    );
    drop(daemons);
    running.shutdown().await;
}
