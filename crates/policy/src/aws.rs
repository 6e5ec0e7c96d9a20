//! AWS IAM role trust policies: parsing, evaluation, web-identity context and lint.
//!
//! This module answers "would STS let this caller assume this role?" the way IAM decides it for
//! a role's trust policy, without any I/O:
//!
//! 1. [`TrustPolicy::parse`] reads the IAM JSON policy grammar as users write it and rejects what
//!    IAM rejects, with IAM's `MalformedPolicyDocument` messages where they are known
//!    ([`MalformedPolicy`]).
//! 2. [`web_identity_context`] builds the [`RequestContext`] AWS evaluates for
//!    `sts:AssumeRoleWithWebIdentity` from a token's claims: which claim becomes which condition
//!    key for Google, Cognito and other OIDC issuers (Google's `:aud`/`:oaud`/`azp` mapping
//!    included).
//!    [`assume_role_context`] does the same for `sts:AssumeRole` by a role session (role
//!    chaining: external id, source identity, session tags) and [`roles_anywhere_context`] for
//!    IAM Roles Anywhere `CreateSession` (the certificate's attributes as principal tags);
//!    [`evaluate_actions`] evaluates every action such a request needs.
//! 3. [`evaluate`] applies the policy to a context: principal and action matching, all 27
//!    condition operators with `IfExists`, `ForAnyValue:`/`ForAllValues:` and policy variables,
//!    then explicit deny > allow > implicit deny. The [`Evaluation`] records every statement
//!    and condition so a denial can be explained.
//! 4. [`lint`] points out known traps, above all a Google service-account audience written into
//!    `accounts.google.com:aud` instead of `accounts.google.com:oaud`.
//!
//! ```
//! use idbridge_policy::aws::{
//!     Decision, TrustPolicy, WebIdentityProvider, WebIdentityRequest, evaluate,
//!     web_identity_context,
//! };
//!
//! let policy = TrustPolicy::parse(r#"{
//!   "Version": "2012-10-17",
//!   "Statement": [{
//!     "Effect": "Allow",
//!     "Principal": {"Federated": "accounts.google.com"},
//!     "Action": "sts:AssumeRoleWithWebIdentity",
//!     "Condition": {"StringEquals": {
//!       "accounts.google.com:aud": "myapp@my-project.iam.gserviceaccount.com",
//!       "accounts.google.com:oaud": "aws-trust-1"
//!     }}
//!   }]
//! }"#)?;
//! let claims = serde_json::json!({
//!     "iss": "https://accounts.google.com",
//!     "aud": "aws-trust-1",
//!     "azp": "myapp@my-project.iam.gserviceaccount.com",
//!     "sub": "10036718611111111111"
//! });
//! let claims = claims.as_object().ok_or("claims are an object")?;
//! let provider = WebIdentityProvider::from_issuer("https://accounts.google.com");
//! let request = WebIdentityRequest::new(
//!     "111122223333",
//!     "my-session",
//!     time::macros::datetime!(2024-01-01 00:00 UTC),
//! );
//! let ctx = web_identity_context(&provider, claims, &request)?;
//! assert_eq!(evaluate(&policy, &ctx).decision, Decision::Allow);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Not modelled: identity-based policies, permission boundaries, SCPs/RCPs and session policies
//! (a trust policy alone decides `AssumeRole*` for the role's own account and federated callers);
//! whether named IAM users and roles exist; the token's signature and claims validation (the
//! emulator does that before building the context).
//!
//! AWS documentation: "IAM JSON policy elements reference", "IAM policy elements: Variables and
//! tags", "Condition operators", and "Available keys for AWS web identity federation" in the IAM
//! User Guide.

mod assume_role;
mod condition;
mod evaluate;
mod json;
mod lint;
mod pattern;
mod policy;
mod roles_anywhere;
mod web_identity;

pub use assume_role::{
    ASSUME_ROLE, AssumeRoleRequest, CallerSession, SET_SOURCE_IDENTITY, TAG_SESSION,
    assume_role_context, evaluate_actions,
};
pub use condition::{ConditionOperator, OperatorKind, SetOperator};
pub use evaluate::{
    ConditionTrace, ContextValue, Decision, Evaluation, Principal, RequestContext, StatementTrace,
    evaluate,
};
pub use lint::{Severity, Warning, codes, lint};
pub use policy::{
    ActionSpec, Condition, Effect, MalformedKind, MalformedPolicy, PolicyVersion, PrincipalEntry,
    PrincipalKind, PrincipalSet, PrincipalSpec, ResourceSpec, Statement, TrustPolicy,
};
pub use roles_anywhere::{
    ROLES_ANYWHERE_PRINCIPAL, RolesAnywhereRequest, certificate_request, roles_anywhere_context,
};
pub use web_identity::{
    ASSUME_ROLE_WITH_WEB_IDENTITY, ClaimsError, SOURCE_IDENTITY_CLAIM, TAGS_CLAIM,
    WebIdentityProvider, WebIdentityRequest, web_identity_context,
};

#[cfg(test)]
mod scenarios;
