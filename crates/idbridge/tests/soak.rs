#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers fail loudly"
)]
//! A bounded soak of the daemon under upstream faults: for 60 s, clients poll the GCE metadata
//! frontend while the route mints 20-second access tokens (metadata token → IAM Credentials
//! `generateAccessToken`) through an emulator whose chaos layer faults 30% of the requests on
//! both upstream listeners — 500, 502 and 503 pages, 429 with `Retry-After`, hangs, resets,
//! truncated and garbage answers — and adds latency. The figures that must hold:
//!
//! * every request is answered 200 with a token the emulator still accepts (0 expired, 0
//!   errors: a refresh lands before the current token leaves its safety margin);
//! * no client waits 2 s or more;
//! * upstream calls (the emulator's `requests.<listener>` counters) stay bounded by the
//!   refresh schedule, not by the client rate.
//!
//! `IDBRIDGE_SOAK_SECONDS` lengthens it (BENCHMARKS.md has the longer run and its command).
//! The seed fixes the fault sequence: upstream requests of one key go one at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idbridge_emulator::World;
use idbridge_emulator::chaos::{ChaosConfig, ChaosRule, Listener};

mod common;

/// 30% faults, spread over every kind.
fn faults(listener: Listener) -> ChaosRule {
    let mut rule = ChaosRule::new(listener);
    rule.error_500 = 0.04;
    rule.error_502 = 0.04;
    rule.error_503 = 0.04;
    rule.throttle_429 = 0.04;
    rule.retry_after_seconds = 1;
    rule.hang = 0.03;
    rule.reset = 0.04;
    rule.truncate = 0.04;
    rule.garbage = 0.03;
    rule.latency_ms = 5;
    rule
}

const CLIENTS: usize = 4;
const POLL: Duration = Duration::from_millis(50);
/// The per-attempt hop timeout: a hang costs this much of a refresh window.
const HOP_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_faults_twenty_second_tokens() {
    let seconds: u64 = std::env::var("IDBRIDGE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut world = World::builtin().unwrap();
    world.chaos = ChaosConfig {
        seed: Some(20261202),
        rules: vec![faults(Listener::Metadata), faults(Listener::Google)],
    };
    let stack = common::ShortTokenDaemon::start(world, Some(HOP_TIMEOUT)).await;
    let (emu, url) = (stack.emulator.clone(), stack.token_url.clone());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let get = |http: reqwest::Client, url: String| async move {
        let resp = http
            .get(&url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    };

    // Warm-up: the first token (the cold load may meet faults; its callers are answered fast).
    let warm = tokio::time::Instant::now();
    loop {
        let (status, _) = get(http.clone(), url.clone()).await;
        if status == 200 {
            break;
        }
        assert!(warm.elapsed() < Duration::from_secs(10), "no first token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before_google = emu.count("requests.google");
    let before_metadata = emu.count("requests.metadata");

    let requests = Arc::new(AtomicU64::new(0));
    let slowest_ms = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (http, url, emu) = (http.clone(), url.clone(), emu.clone());
        let (requests, slowest_ms) = (Arc::clone(&requests), Arc::clone(&slowest_ms));
        clients.spawn(async move {
            while started.elapsed() < Duration::from_secs(seconds) {
                let asked = tokio::time::Instant::now();
                let (status, body) = get(http.clone(), url.clone()).await;
                let waited = asked.elapsed();
                slowest_ms.fetch_max(
                    u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                let at = started.elapsed();
                assert_eq!(status, 200, "at {at:?}: {body}");
                let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
                let token = doc["access_token"].as_str().unwrap();
                assert!(doc["expires_in"].as_i64().unwrap() > 0, "at {at:?}: {doc}");
                assert!(
                    emu.google_token(token).is_some(),
                    "at {at:?}: served a token the emulator no longer accepts"
                );
                assert!(
                    waited < Duration::from_secs(2),
                    "at {at:?}: a client waited {waited:?}"
                );
                requests.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(POLL).await;
            }
        });
    }
    clients.join_all().await;

    let requests = requests.load(Ordering::Relaxed);
    let google = emu.count("requests.google") - before_google;
    let metadata = emu.count("requests.metadata") - before_metadata;
    let mints = emu.count("google.iamcredentials.generateAccessToken");
    let faults: u64 = emu
        .stats_snapshot()
        .iter()
        .filter(|(k, _)| k.starts_with("chaos."))
        .map(|(_, v)| v)
        .sum();
    println!(
        "soak: {seconds} s, {requests} client requests, slowest {} ms; upstream: {google} Google, {metadata} metadata requests, {faults} faults injected, {mints} tokens minted",
        slowest_ms.load(Ordering::Relaxed)
    );
    // The daemon refreshes every 11.7–13.3 s: about five refreshes a minute. Each takes a few
    // attempts under 30% faults (an attempt is a metadata token, its email and one
    // generateAccessToken), and no client request adds any.
    let refreshes = seconds / 11 + 1;
    assert!(
        google <= refreshes * 12,
        "{google} Google requests for {refreshes} refreshes"
    );
    assert!(
        metadata <= refreshes * 24,
        "{metadata} metadata requests for {refreshes} refreshes"
    );
    assert!(
        requests > 20 * seconds,
        "{requests} requests in {seconds} s"
    );
    assert!(faults > 0, "no fault was injected");
    stack.shutdown().await;
}
