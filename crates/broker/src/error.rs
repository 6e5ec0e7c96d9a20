//! Runtime errors, named after what the caller does next.
//!
//! `Display` is one lower-case line without the cause chain; secrets never appear in it (error
//! bodies from clouds are reduced to their code and message fields, never echoed raw).
//!
//! # Classification
//!
//! Every hop classifies its upstream's answer the same way, by HTTP status first and body
//! validity second, never by error code alone:
//!
//! | answer | kind |
//! |---|---|
//! | connect error, timeout, reset, a body cut short | [`ErrorKind::Transient`] |
//! | 5xx, 429, 408 — with or without the cloud's error body (a load balancer's HTML page) | [`ErrorKind::Transient`], with `Retry-After` when sent |
//! | other 4xx | [`ErrorKind::Rejected`], with the cloud's code when its body has one |
//! | 200 whose body does not parse as the expected document (garbage, a captive portal) | [`ErrorKind::Transient`] |
//!
//! A well-formed answer can still be a refusal (AWS's `AccessDenied` in a 403); what matters
//! for the next step is whether asking again may work, and a body that does not parse says
//! nothing about that, so it is retried (the cache bounds how often, see [`crate::cache`]).

use std::fmt;
use std::time::Duration;

pub use crate::hop::Hop;

/// What kind of failure, i.e. what the caller should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The route or source is not configured (fix the config).
    NotConfigured,
    /// The configuration is invalid (fix the config).
    InvalidConfiguration,
    /// A temporary failure: connection refused, timeout, reset, 5xx, 429, or an answer that
    /// does not parse (truncated, garbage). Retry with backoff.
    Transient,
    /// The cloud refused (4xx): retrying the same request will fail the same way.
    Rejected,
    /// Something retrying cannot fix: a loader bug, a credential that arrives already expired,
    /// a local program's malformed output. (An upstream's unparsable answer is transient.)
    Protocol,
    /// A local I/O problem (reading a key or token file).
    Io,
}

/// A broker failure: which hop, what kind, a one-line message, and the cloud's error code.
#[derive(Debug, Clone)]
pub struct BrokerError {
    /// What to do next.
    pub kind: ErrorKind,
    /// The hop (`gce-metadata`, `aws-sts`, …).
    pub hop: Hop,
    /// The cloud's error code, when it gave one (`AccessDenied`, `invalid_grant`).
    pub code: Option<String>,
    /// One line, no secrets.
    pub message: String,
    /// How long the upstream asked us to wait (`Retry-After` on a 429 or 503), if it did.
    pub retry_after: Option<Duration>,
}

impl BrokerError {
    /// A new error.
    pub fn new(kind: ErrorKind, hop: impl Into<Hop>, message: impl Into<String>) -> Self {
        Self {
            kind,
            hop: hop.into(),
            code: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// An upstream's 200 answer that is not the document it should be (garbage, a truncated or
    /// empty document, a proxy's page): transient, because the next answer may well be right.
    pub fn unparsable(hop: impl Into<Hop>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, hop, message)
    }

    /// Attaches the upstream's `Retry-After`.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Attaches the cloud's error code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// Classifies a reqwest error (connection refused, timeout, reset, a body cut short →
    /// transient).
    pub fn from_http(hop: Hop, url: &str, e: &reqwest::Error) -> Self {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else if e.is_body() || e.is_decode() {
            "the answer was cut short"
        } else {
            "request failed"
        };
        Self::new(ErrorKind::Transient, hop, format!("{what}: {url}"))
    }

    /// Classifies an HTTP status: 5xx/429/408 transient, other 4xx rejected.
    pub fn from_status(
        hop: impl Into<Hop>,
        status: u16,
        code: Option<String>,
        message: String,
    ) -> Self {
        let kind = if status_is_transient(status) {
            ErrorKind::Transient
        } else {
            ErrorKind::Rejected
        };
        let e = Self::new(kind, hop, format!("HTTP {status}: {message}"));
        match code {
            Some(c) => e.with_code(c),
            None => e,
        }
    }
}

/// Whether an HTTP error status says "ask again later": 5xx, 429 (throttled), 408.
pub fn status_is_transient(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

/// Reads `Retry-After` (delta-seconds, or an HTTP date against `now`) as a wait.
pub fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{}: {code}: {}", self.hop, self.message),
            None => write!(f, "{}: {}", self.hop, self.message),
        }
    }
}

impl std::error::Error for BrokerError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = time::macros::datetime!(2026-11-22 04:00:00 UTC);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 04:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 03:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn statuses_are_classified_before_bodies() {
        for status in [500, 502, 503, 504, 429, 408] {
            let e = BrokerError::from_status("h", status, None, "x".into());
            assert!(e.is_transient(), "{status}");
        }
        for status in [400, 401, 403, 404] {
            let e = BrokerError::from_status("h", status, None, "x".into());
            assert_eq!(e.kind, ErrorKind::Rejected, "{status}");
        }
    }
}
