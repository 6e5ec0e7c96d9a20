#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers fail loudly"
)]
//! The daemon's refresh-ahead against real short-lived credentials from the emulator: a client
//! polls the GCE metadata frontend for 60 s while the route mints 20-second access tokens
//! (IAM Credentials `generateAccessToken` with `lifetime = "20s"`). Every token the client gets is
//! live at the emulator when it gets it, and the emulator sees about one mint per refresh period.
//!
//! This runs in real time (about a minute, alongside the other tests), because the emulator and
//! the daemon share the wall clock; the same property is also checked on a paused clock in
//! `crates/broker/src/cache.rs`.

use std::time::Duration;

use idbridge_emulator::World;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_second_tokens_polled_for_a_minute() {
    let stack = common::ShortTokenDaemon::start(World::builtin().unwrap(), None).await;
    let (emu, url) = (&stack.emulator, &stack.token_url);
    let http = reqwest::Client::new();

    let started = tokio::time::Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    let mut polls = 0;
    while started.elapsed() < Duration::from_secs(60) {
        let resp = http
            .get(url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap().to_owned();
        assert!(body["expires_in"].as_i64().unwrap() > 0, "{body}");
        assert!(
            emu.google_token(&token).is_some(),
            "the daemon served a token the emulator no longer accepts after {:?}",
            started.elapsed()
        );
        seen.insert(token);
        polls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mints = emu.count("google.iamcredentials.generateAccessToken");
    // Refresh when min(5 min, 20 s / 3) is left, minus up to a quarter of that in jitter:
    // every 11.7–13.3 s, so 1 initial mint + 4 or 5 refreshes in 60 s.
    assert!(
        (5..=6).contains(&mints),
        "{mints} mints in 60 s for {polls} polls"
    );
    assert!(
        seen.len() as u64 >= mints - 1,
        "{} distinct tokens served, {mints} minted",
        seen.len()
    );
    stack.shutdown().await;
}
