//! The core of idbridge: sources, exchanges, routes and their configuration.
//!
//! A **route** is a named pipeline: one [`source`] (who am I), zero or more [`exchange`] steps
//! (trade that identity at a cloud's token service), ending in one credential
//! ([`idbridge_core::Credential`]). Routes are declared in TOML ([`config`]); every endpoint
//! can be overridden by config or environment ([`context`]), which is how the emulator, moto or
//! private endpoints plug in.
//!
//! Each source and exchange kind is one type implementing [`step::Step`] in its own module,
//! listed once in [`source::KINDS`] or [`exchange::KINDS`]:
//!
//! | source | what it yields | protocol |
//! |---|---|---|
//! | `gce-metadata` | Google ID token or access token of the VM's account | GCE metadata server |
//! | `service-account-key` | Google ID token or access token | self-signed JWT → OAuth2 jwt-bearer |
//! | `impersonate` | ID token or access token of another account | a caller source, then IAM Credentials generateIdToken / generateAccessToken |
//! | `oidc-file` | any OIDC token in a file (Kubernetes projected token) | re-read on every refresh |
//! | `oidc-url` | an OIDC token served over HTTP | GET, whole body or a JSON field |
//! | `executable` | an OIDC token printed by a program | Google's executable-sourced response |
//! | `aws` | AWS credentials | aws-config's chain, IMDSv2, the ECS container endpoint |
//! | `spiffe` | a JWT-SVID | SPIFFE Workload API |
//!
//! | exchange | takes | yields |
//! |---|---|---|
//! | `aws-sts` | an ID token | AWS session credentials (AssumeRoleWithWebIdentity) |
//! | `google-sts` | an ID token or AWS credentials | a federated Google access token (token exchange) |
//! | `impersonate` | a Google access token | an ID token or access token of a service account (IAM Credentials) |
#![warn(missing_docs, unreachable_pub)]

pub mod cache;
pub mod config;
pub mod context;
pub mod error;
pub mod exchange;
pub mod external_account;
mod google;
pub mod hop;
pub mod http_client;
pub mod proof;
pub mod route;
pub mod sigv4;
pub mod source;
pub mod step;
mod token;
mod upstream;
pub mod values;
pub mod x509_sigv4;

pub use config::{Config, ConfigError};
pub use context::Context;
pub use error::{BrokerError, ErrorKind};
pub use hop::Hop;
pub use route::{HopReport, Overrides, Route, RouteOutput, StepOutcome};
pub use step::{Step, Yields};
