//! Pure policy evaluation for idbridge: no I/O, no clock, no network.
//!
//! * [`aws`]: AWS IAM role trust policies — the IAM JSON grammar, every condition operator, the
//!   condition keys `sts:AssumeRoleWithWebIdentity` derives from an OIDC token (Google's
//!   `aud`/`oaud`/`azp` mapping included), evaluation with a full trace, and a lint for known
//!   traps.
//! * [`gcp`]: GCP workload identity federation — attribute mappings and conditions in CEL
//!   (Google's `extract` included), the AWS provider's default mapping, and IAM members
//!   (`principal://`, `principalSet://`, `serviceAccount:`) matched against federated and
//!   Google principals.
//!
//! * [`azure`]: Microsoft Entra ID workload identity federation — which federated identity
//!   credential of an app or managed identity takes an external token, or the AADSTS error.
//!
//! The main entry points are re-exported here.
#![warn(missing_docs, unreachable_pub)]

pub mod aws;
pub mod azure;
pub mod gcp;

pub use aws::{
    Decision, Evaluation, MalformedPolicy, Principal, RequestContext, TrustPolicy, Warning,
    WebIdentityProvider, WebIdentityRequest, evaluate, lint, web_identity_context,
};
