//! The core of idbridge: sources, exchanges, routes and their configuration.
//!
//! A **route** is a named pipeline: one [`source`] (who am I), zero or more [`exchange`] steps
//! (trade that identity at a cloud's token service), ending in one credential
//! ([`idbridge_core::Credential`]). Routes are declared in TOML ([`config`]); every endpoint
//! can be overridden by config or environment ([`context`]), which is how the emulator, moto or
//! private endpoints plug in.
//!
//! | source | what it yields | protocol |
//! |---|---|---|
//! | `gce-metadata` | Google ID token or access token of the VM's account | GCE metadata server |
//! | `service-account-key` | Google ID token or access token | self-signed JWT → OAuth2 jwt-bearer |
//! | `impersonate` | ID token or access token of another account | IAM Credentials generateIdToken / generateAccessToken |
//! | `oidc-file` | any OIDC token in a file (Kubernetes projected token) | re-read on every refresh |
//!
//! | exchange | consumes | yields |
//! |---|---|---|
//! | `aws-sts` | an OIDC ID token | AWS session credentials (AssumeRoleWithWebIdentity) |
#![warn(missing_docs, unreachable_pub)]

pub mod cache;
pub mod config;
pub mod context;
pub mod error;
pub mod exchange;
pub mod external_account;
pub mod http_client;
pub mod route;
pub mod sigv4;
pub mod source;
mod upstream;
pub mod x509_sigv4;

pub use config::{Config, ConfigError};
pub use context::Context;
pub use error::{BrokerError, ErrorKind};
pub use route::{HopReport, Overrides, Route, RouteOutput, StepOutcome};
