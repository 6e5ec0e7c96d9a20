#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers fail loudly"
)]
//! What upstream faults do to routes and to the daemon's clients, injected by the emulator's
//! chaos layer: every hop (AWS included) classifies a 5xx page, a throttle, a reset, a
//! truncated or garbage answer as transient; a hung attempt is cut and retried while the client
//! waits; a total outage costs a bounded number of upstream calls however hard clients ask,
//! never reaches an IMDS client as a 200 error document, and shows in `/readyz`.

mod common;
use common::*;

use std::sync::Arc;
use std::time::Duration;

use idbridge_broker::{Config, Context, ErrorKind, Route};
use idbridge_core::env::MapEnv;
use idbridge_emulator::Running;
use idbridge_emulator::chaos::{ChaosConfig, ChaosRule, Fault, Listener};

/// A short hop timeout, so hangs cost little test time.
const HOP_TIMEOUT: Duration = Duration::from_millis(300);

fn ctx(running: &Running) -> Context {
    Context::new(
        Arc::new(MapEnv(running.env_pairs().into_iter().collect())),
        idbridge_core::clock::system(),
        &Default::default(),
    )
    .unwrap()
    .with_hop_timeout(HOP_TIMEOUT)
    .unwrap()
}

fn script(listener: Listener, faults: &[Fault]) -> ChaosConfig {
    let mut rule = ChaosRule::new(listener);
    rule.script = faults.to_vec();
    ChaosConfig {
        seed: Some(9),
        rules: vec![rule],
    }
}

async fn run_once(
    running: &Running,
    file: &str,
    route: &str,
) -> Result<idbridge_broker::RouteOutput, idbridge_broker::BrokerError> {
    let config = Config::load(&examples().join(file)).unwrap();
    Route::new(config.route(route).unwrap().clone())
        .run(&ctx(running))
        .await
        .map_err(|(e, _)| e)
}

const FAULTS: [Fault; 8] = [
    Fault::Error500,
    Fault::Error502,
    Fault::Error503,
    Fault::Throttle429,
    Fault::Hang,
    Fault::Reset,
    Fault::Truncate,
    Fault::Garbage,
];

#[tokio::test]
async fn every_fault_on_every_hop_is_transient() {
    let r = emulator().await;
    let hops = [
        // GCE metadata ID token → AWS STS.
        (
            Listener::AwsSts,
            "seed000-gce-to-aws.toml",
            "tenant-to-aws",
            "aws-sts",
        ),
        (
            Listener::Metadata,
            "seed000-gce-to-aws.toml",
            "tenant-to-aws",
            "gce-metadata",
        ),
        // EC2 role (IMDSv2) → signed GetCallerIdentity → Google STS → generateAccessToken.
        (
            Listener::Imds,
            "seed001-aws-to-gcp.toml",
            "ec2-to-gcp",
            "aws",
        ),
        (
            Listener::Google,
            "seed001-aws-to-gcp.toml",
            "ec2-to-gcp",
            "google-sts",
        ),
        // Metadata access token → IAM Credentials generateIdToken → AWS STS.
        (
            Listener::Google,
            "seed002-impersonate-to-aws.toml",
            "myapp-to-aws",
            "impersonate",
        ),
    ];
    for (listener, file, route, hop) in hops {
        for fault in FAULTS {
            r.emulator.chaos.set(script(listener, &[fault])).unwrap();
            let err = run_once(&r, file, route).await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::Transient, "{fault:?} on {hop}: {err}");
            assert_eq!(err.hop, hop, "{fault:?}: {err}");
            assert_ne!(err.code.as_deref(), Some("Unknown"), "{fault:?}: {err}");
            assert!(!err.to_string().contains("<html>"), "{fault:?}: {err}");
            if fault == Fault::Throttle429 {
                assert_eq!(err.retry_after, Some(Duration::from_secs(1)), "{err}");
            }
            // The script is spent: the next run works.
            run_once(&r, file, route)
                .await
                .unwrap_or_else(|e| panic!("after {fault:?} on {hop}: {e}"));
        }
    }
    assert_eq!(r.emulator.count("chaos.aws_sts.error_502"), 1);
    assert_eq!(r.emulator.count("chaos.google.garbage"), 2);
    assert_eq!(r.emulator.count("chaos.imds.reset"), 1);
    r.shutdown().await;
}

const SERVE: &str = r#"
[[route]]
name = "tenant-to-aws"
source = { kind = "gce-metadata", audience = "https://psoxy.example/aws" }
exchange = [
  { kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/psoxy-tenant-access", session_name = "psoxy-tenant" },
]

[serve]
bind = "127.0.0.1"
[serve.aws_imds]
port = 0
route = "tenant-to-aws"
[serve.metrics]
port = 0
"#;

struct Daemon {
    running: idbridge_serve::Running,
    imds: String,
    metrics: String,
    http: reqwest::Client,
}

impl Daemon {
    async fn start(emulator: &Running) -> Self {
        let config = idbridge_serve::ServeConfig::parse(
            SERVE,
            "faults.toml",
            None,
            &idbridge_serve::accounts::Accounts::system(),
        )
        .unwrap();
        let broker = Arc::new(idbridge_serve::Broker::new(&config, ctx(emulator)));
        let running = idbridge_serve::start(&config, broker).await.unwrap();
        let addr = |f| running.tcp_addr(f).unwrap();
        let imds = format!("http://{}", addr(idbridge_serve::Frontend::AwsImds));
        let metrics = format!("http://{}", addr(idbridge_serve::Frontend::Metrics));
        Self {
            running,
            imds,
            metrics,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// Asks for the role's credentials, IMDSv2 style: (status, body).
    async fn credentials(&self) -> (u16, String) {
        let token = self
            .http
            .put(format!("{}/latest/api/token", self.imds))
            .header("x-aws-ec2-metadata-token-ttl-seconds", "60")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let resp = self
            .http
            .get(format!(
                "{}/latest/meta-data/iam/security-credentials/psoxy-tenant-access",
                self.imds
            ))
            .header("x-aws-ec2-metadata-token", token)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn readyz(&self) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}/readyz", self.metrics))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_failing_sts_attempt_is_retried_while_the_client_waits() {
    let r = emulator().await;
    let daemon = Daemon::start(&r).await;
    // The first attempt hangs (cut after HOP_TIMEOUT), the second gets a load balancer's 502
    // page: the third answers, inside the cache's bounded wait, so the client gets credentials.
    r.emulator
        .chaos
        .set(script(Listener::AwsSts, &[Fault::Hang, Fault::Error502]))
        .unwrap();
    let (status, body) = daemon.credentials().await;
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["Code"], "Success", "{doc}");
    assert_eq!(r.emulator.count("chaos.aws_sts.hang"), 1);
    assert_eq!(r.emulator.count("chaos.aws_sts.error_502"), 1);
    assert_eq!(r.emulator.count("requests.aws_sts"), 3);
    daemon.running.shutdown().await;
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sts_outage_costs_bounded_upstream_calls_and_shows_in_readyz() {
    let r = emulator().await;
    let daemon = Daemon::start(&r).await;
    r.emulator.chaos.set_outage(Listener::AwsSts, true);
    let started = tokio::time::Instant::now();
    let mut answers = 0;
    // About a hundred requests a second for three seconds.
    while started.elapsed() < Duration::from_secs(3) {
        let (status, body) = daemon.credentials().await;
        // Never EC2's 200 error document for an outage: a 503 the SDKs retry.
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("HTTP 503"), "{body}");
        answers += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Loads at 0 s and after backoffs of 0.5–1 s and 1–2 s: at most 4 loads in 3 s, each of at
    // most 3 attempts, against a hundred or more requests.
    let calls = r.emulator.count("requests.aws_sts");
    assert!(
        (3..=12).contains(&calls),
        "{calls} STS calls for {answers} requests"
    );
    assert!(answers >= 50, "{answers} requests answered in 3 s");
    let (status, body) = daemon.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("route tenant-to-aws: down"), "{body}");
    let metrics = daemon
        .http
        .get(format!("{}/metrics", daemon.metrics))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("idbridge_serve_route_health{route=\"tenant-to-aws\",state=\"down\"} 1"),
        "{metrics}"
    );

    // The outage ends (through the control endpoint): after its backoff the key loads again.
    let control = format!("http://{}/_emulator/chaos", r.google);
    let resp = daemon
        .http
        .put(&control)
        .body("{\"rule\": []}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = daemon.credentials().await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = daemon.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("route tenant-to-aws: ok"), "{body}");
    daemon.running.shutdown().await;
    r.shutdown().await;
}
