//! Runtime errors, named after what the caller does next.
//!
//! `Display` is one lower-case line without the cause chain; secrets never appear in it (error
//! bodies from clouds are reduced to their code and message fields, never echoed raw).

use std::fmt;

/// What kind of failure, i.e. what the caller should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The route or source is not configured (fix the config).
    NotConfigured,
    /// The configuration is invalid (fix the config).
    InvalidConfiguration,
    /// A temporary failure: connection refused, timeout, 5xx, 429. Retry with backoff.
    Transient,
    /// The cloud refused (4xx): retrying the same request will fail the same way.
    Rejected,
    /// The cloud answered something unparsable.
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
    pub hop: String,
    /// The cloud's error code, when it gave one (`AccessDenied`, `invalid_grant`).
    pub code: Option<String>,
    /// One line, no secrets.
    pub message: String,
}

impl BrokerError {
    /// A new error.
    pub fn new(kind: ErrorKind, hop: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            hop: hop.into(),
            code: None,
            message: message.into(),
        }
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

    /// Classifies a reqwest error (connection refused, timeout → transient).
    pub fn from_http(hop: &str, url: &str, e: &reqwest::Error) -> Self {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "request failed"
        };
        Self::new(ErrorKind::Transient, hop, format!("{what}: {url}"))
    }

    /// Classifies an HTTP status: 5xx/429/408 transient, other 4xx rejected.
    pub fn from_status(hop: &str, status: u16, code: Option<String>, message: String) -> Self {
        let kind = if status >= 500 || status == 429 || status == 408 {
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

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{}: {code}: {}", self.hop, self.message),
            None => write!(f, "{}: {}", self.hop, self.message),
        }
    }
}

impl std::error::Error for BrokerError {}
