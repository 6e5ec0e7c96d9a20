//! Shared types of idbridge.
//!
//! * [`secret`]: secret newtypes — redacted `Debug`, no `Display`, zeroized on drop, and an
//!   explicit `expose_secret()` accessor. Every token, key and password idbridge handles lives in
//!   one of them.
//! * [`credential`]: the credentials a route produces (AWS session credentials, Google access
//!   tokens, OIDC ID tokens), each with its expiry.
//! * [`clock`]: the injectable clock; nothing else in idbridge reads the system time.
//! * [`env`](mod@env): the environment variables idbridge reads, declared once.
//! * [`jwt`]: reading (never trusting) the claims of a JWT for display and expiry.
//! * [`jwks`]: JWK sets: an issuer's keys and signature checks with an algorithm allowlist.
//! * [`file`](mod@file): reading config-like files: regular files only, with a size cap.
#![warn(missing_docs, unreachable_pub)]

pub mod clock;
pub mod credential;
pub mod env;
pub mod file;
pub mod jwks;
pub mod jwt;
pub mod secret;
pub mod timefmt;

pub use clock::{Clock, SystemClock};
pub use credential::{
    AwsCredentials, AzureAccessToken, Credential, GoogleAccessToken, IdToken, X509Credential,
};
pub use secret::SecretString;
