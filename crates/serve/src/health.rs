//! Per-route health, read from the cache's per-key state, for `/readyz` and `/metrics`.
//!
//! A route's keys (its own credential and each client audience or scope set) are each
//! healthy (the latest load succeeded), degraded (loads fail, but the last good value is still
//! served) or down (loads fail and nothing servable is left). A route is:
//!
//! | state | when | `/readyz` |
//! |---|---|---|
//! | `idle` | no key is cached (never asked for, or evicted) | 200 |
//! | `ok` | every key's latest load succeeded | 200 |
//! | `degraded` | some key's loads fail, but not every key is down | 200 |
//! | `down` | the route's own keys are down and every client key fails: clients of the route get errors | 503 |
//!
//! Client-chosen keys alone never make a route `down` (only `degraded`): a local client asking
//! for an audience upstream refuses must not be able to fail the daemon's readiness. A route
//! used only with client audiences (an identity route) is therefore at worst `degraded`.
//!
//! So `/readyz` answers 503 through a total upstream outage once the last good credentials run
//! out, and 200 again after the first successful load. Its body is `ready` or `not ready`,
//! then one line per route that is not idle: `route NAME: STATE`, and for failing keys how
//! many and the latest error (one line, no secret). Route names come from the config, so the
//! metrics' label sets are bounded by it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::broker::Broker;

/// The state of one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// No key cached.
    Idle,
    /// Every key's latest load succeeded.
    Ok,
    /// Some loads fail; something is still served.
    Degraded,
    /// Every key failing with nothing left to serve.
    Down,
}

impl State {
    /// Every state, for metrics.
    pub const ALL: [State; 4] = [State::Idle, State::Ok, State::Degraded, State::Down];

    /// The label value: `idle`, `ok`, `degraded`, `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Ok => "ok",
            State::Degraded => "degraded",
            State::Down => "down",
        }
    }
}

/// One route's health.
#[derive(Debug, Clone)]
pub struct RouteHealth {
    /// The route.
    pub route: String,
    /// Its state.
    pub state: State,
    /// Keys cached.
    pub keys: usize,
    /// Keys whose latest load failed.
    pub failing: usize,
    /// The most consecutive failed loads of any key.
    pub consecutive_failures: u32,
    /// The longest backoff left of any key, in seconds.
    pub backoff_seconds: f64,
    /// Callers released after waiting the cache's longest wait, summed over keys.
    pub wait_timeouts: u64,
    /// The latest error of a failing key.
    pub last_error: Option<String>,
}

/// The health of every configured route (and of any other route the cache holds), by name.
pub fn routes(broker: &Broker) -> Vec<RouteHealth> {
    let mut by_route: BTreeMap<String, RouteHealth> = broker
        .route_names()
        .iter()
        .map(|name| (name.clone(), empty(name)))
        .collect();
    // Per route: (its own keys, those of them that cannot be served).
    let mut own_keys: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    // Client-chosen keys (audiences, scope sets) count as keys of their route and make it
    // degraded when failing, but never down: otherwise any local client could fail readiness by
    // asking for an audience upstream refuses.
    let own = broker
        .cache_snapshot()
        .entries
        .into_iter()
        .map(|e| (e, true));
    let client = broker
        .client_key_snapshots()
        .into_iter()
        .flat_map(|(_, snapshot)| snapshot.entries)
        .map(|e| (e, false));
    for (entry, counts_for_down) in own.chain(client) {
        let route = &entry.key.route;
        let h = by_route
            .entry(route.clone())
            .or_insert_with(|| empty(route));
        h.keys += 1;
        h.wait_timeouts += entry.wait_timeouts;
        if counts_for_down {
            own_keys.entry(route.clone()).or_default().0 += 1;
        }
        if entry.consecutive_failures > 0 {
            h.failing += 1;
            h.consecutive_failures = h.consecutive_failures.max(entry.consecutive_failures);
            h.backoff_seconds = h.backoff_seconds.max(entry.backoff_seconds.unwrap_or(0.0));
            if entry.last_error.is_some() {
                h.last_error = entry.last_error;
            }
            if !entry.servable && counts_for_down {
                own_keys.entry(route.clone()).or_default().1 += 1;
            }
        }
    }
    by_route
        .into_values()
        .map(|mut h| {
            let (own, own_down) = own_keys.get(&h.route).copied().unwrap_or((0, 0));
            h.state = if h.keys == 0 {
                State::Idle
            } else if own > 0 && own_down == own && h.failing == h.keys {
                State::Down
            } else if h.failing > 0 {
                State::Degraded
            } else {
                State::Ok
            };
            h
        })
        .collect()
}

fn empty(route: &str) -> RouteHealth {
    RouteHealth {
        route: route.to_owned(),
        state: State::Idle,
        keys: 0,
        failing: 0,
        consecutive_failures: 0,
        backoff_seconds: 0.0,
        wait_timeouts: 0,
        last_error: None,
    }
}

/// `/readyz`: whether the daemon is ready (started, no route down), and the body.
pub fn readiness(broker: &Broker) -> (bool, String) {
    if !broker.is_ready() {
        return (false, "starting\n".to_owned());
    }
    let routes = routes(broker);
    let ready = routes.iter().all(|h| h.state != State::Down);
    let mut body = if ready { "ready\n" } else { "not ready\n" }.to_owned();
    for h in routes.iter().filter(|h| h.state != State::Idle) {
        let _ = write!(body, "route {}: {}", h.route, h.state.as_str());
        if h.failing > 0 {
            let _ = write!(body, " ({} of {} keys failing", h.failing, h.keys);
            if let Some(e) = &h.last_error {
                let _ = write!(body, "; {}", e.replace('\n', " "));
            }
            body.push(')');
        }
        body.push('\n');
    }
    (ready, body)
}

/// Appends the per-route health series to a Prometheus text exposition.
pub fn render_metrics(
    out: &mut String,
    broker: &Broker,
    header: fn(&mut String, &str, &str, &str),
) {
    let routes = routes(broker);
    header(
        out,
        "idbridge_serve_route_health",
        "gauge",
        "1 for the route's state (idle, ok, degraded: failing but serving the last good value, down: failing with nothing to serve), 0 for the others.",
    );
    for h in &routes {
        for state in State::ALL {
            let _ = writeln!(
                out,
                "idbridge_serve_route_health{{route=\"{}\",state=\"{}\"}} {}",
                crate::metrics::label(&h.route),
                state.as_str(),
                u8::from(h.state == state)
            );
        }
    }
    type Pick = fn(&RouteHealth) -> f64;
    let series: [(&str, &str, &str, Pick); 3] = [
        (
            "idbridge_serve_route_consecutive_failures",
            "gauge",
            "The most failed loads in a row of any key of the route.",
            |h| f64::from(h.consecutive_failures),
        ),
        (
            "idbridge_serve_route_backoff_seconds",
            "gauge",
            "The longest wait left before a key of the route may load again.",
            |h| h.backoff_seconds,
        ),
        (
            "idbridge_serve_route_wait_timeouts_total",
            "counter",
            "Requests answered with an error after waiting the cache's longest wait for a load.",
            |h| h.wait_timeouts as f64,
        ),
    ];
    for (name, kind, help, pick) in series {
        header(out, name, kind, help);
        for h in &routes {
            let _ = writeln!(
                out,
                "{name}{{route=\"{}\"}} {}",
                crate::metrics::label(&h.route),
                pick(h)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use idbridge_broker::{BrokerError, ErrorKind};
    use idbridge_core::clock::SharedClock;
    use idbridge_core::{Credential, IdToken, SecretString};
    use idbridge_emulator::test_util::TokioClock;

    use super::*;
    use crate::CredentialKey;
    use crate::caller::CallerPolicy;

    /// Route "up" always loads; "flaky" loads once (a 20 s token), then fails; "gone" always
    /// fails.
    #[tokio::test(start_paused = true)]
    async fn routes_are_ok_degraded_or_down() {
        let clock: SharedClock = TokioClock::at(1_750_000_000);
        let flaky_calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let clock = Arc::clone(&clock);
            let flaky_calls = Arc::clone(&flaky_calls);
            move |key: CredentialKey| {
                let first_flaky =
                    key.route == "flaky" && flaky_calls.fetch_add(1, Ordering::SeqCst) == 0;
                let ok = key.route == "up" || first_flaky;
                let token = Credential::IdToken(IdToken {
                    token: SecretString::new("t"),
                    expires_at: clock.now() + Duration::from_secs(20),
                });
                async move {
                    if ok {
                        Ok(token)
                    } else {
                        Err(BrokerError::new(
                            ErrorKind::Transient,
                            "aws-sts",
                            "HTTP 503: down",
                        ))
                    }
                }
            }
        };
        let broker = Broker::with_loader(
            loader,
            clock,
            CallerPolicy::open(),
            NonZeroUsize::new(8).unwrap(),
        );
        broker.set_ready();
        assert_eq!(readiness(&broker), (true, "ready\n".to_owned()));
        for route in ["up", "flaky"] {
            broker
                .credential(None, &CredentialKey::route(route))
                .await
                .unwrap();
        }
        let (ready, body) = readiness(&broker);
        assert!(ready, "{body}");
        assert!(
            body.contains("route flaky: ok\n") && body.contains("route up: ok\n"),
            "{body}"
        );

        // The flaky route's refresh (from 11.7 s on) fails: it serves its last good token.
        tokio::time::sleep(Duration::from_secs(14)).await;
        let state = |name: &str| {
            routes(&broker)
                .into_iter()
                .find(|h| h.route == name)
                .unwrap()
        };
        assert_eq!(state("flaky").state, State::Degraded);
        broker
            .credential(None, &CredentialKey::route("flaky"))
            .await
            .unwrap();

        // A route with nothing to serve is down, and so is readiness.
        broker
            .credential(None, &CredentialKey::route("gone"))
            .await
            .unwrap_err();
        let (ready, body) = readiness(&broker);
        assert!(!ready);
        assert!(body.starts_with("not ready\n"), "{body}");
        assert!(
            body.contains("route gone: down (1 of 1 keys failing; aws-sts: HTTP 503: down)"),
            "{body}"
        );
        let text = crate::metrics::render(&broker);
        for line in [
            "idbridge_serve_route_health{route=\"gone\",state=\"down\"} 1",
            "idbridge_serve_route_health{route=\"flaky\",state=\"degraded\"} 1",
            "idbridge_serve_route_health{route=\"up\",state=\"ok\"} 1",
            "idbridge_serve_route_health{route=\"up\",state=\"down\"} 0",
            "idbridge_serve_route_consecutive_failures{route=\"gone\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // Past its margin the flaky route is down too.
        tokio::time::sleep(Duration::from_secs(6)).await;
        broker
            .credential(None, &CredentialKey::route("flaky"))
            .await
            .unwrap_err();
        assert_eq!(state("flaky").state, State::Down);
        assert_eq!(state("up").state, State::Ok);
    }
}
