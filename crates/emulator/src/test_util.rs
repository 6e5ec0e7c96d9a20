//! Test helpers for crates that test against the emulator's routers (feature `test-util`; the
//! emulator's own tests use them too): a clock that follows tokio's pausable clock, and a
//! one-shot request to a router with its answer read whole.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly"
)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use idbridge_core::clock::Clock;
use time::OffsetDateTime;
use tower::ServiceExt as _;

/// Wall time derived from tokio's (pausable) clock: `base` plus the time elapsed since
/// creation, so that expiry and scheduling stay in step under `tokio::time::pause`.
#[derive(Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
    base: OffsetDateTime,
}

impl TokioClock {
    /// A clock that reads `unix` (seconds) now.
    pub fn at(unix: i64) -> Arc<TokioClock> {
        Arc::new(TokioClock {
            start: tokio::time::Instant::now(),
            base: OffsetDateTime::from_unix_timestamp(unix).expect("a valid timestamp"),
        })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> OffsetDateTime {
        self.base + self.start.elapsed()
    }
}

/// A router's answer, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body, as text.
    pub body: String,
}

impl Reply {
    /// The body as JSON (panics, quoting the body, when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// A header's value, `""` when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or_default())
    }
}

/// Sends `req` to `router` and reads the answer.
pub async fn send(router: &Router, req: Request<Body>) -> Reply {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}
