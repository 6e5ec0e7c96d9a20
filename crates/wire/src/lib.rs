//! Serde types that mirror each cloud's wire format exactly.
//!
//! Both the idbridge client side and the emulator use these types, which is exactly why every
//! format here is also exercised by a real third-party client or server in the test suite
//! (boto3, the AWS CLI, google-auth, PyJWT, moto): a wrong field name would otherwise pass our
//! own tests on both ends. Domain types live in `idbridge-core`; conversion happens at the edge.
#![warn(missing_docs, unreachable_pub)]

pub mod aws_imds;
pub mod aws_sts;
pub mod gce_metadata;
pub mod google;
pub mod proto_json;
mod redact;
pub mod x509_sigv4;
