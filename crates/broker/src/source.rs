//! Sources: where a route's first identity comes from.
//!
//! Each source is one type in its own module, implementing [`crate::step::Step`], and one line
//! in [`KINDS`]. It yields an OIDC ID token, a Google access token, AWS credentials or an X.509
//! certificate and key
//! ([`crate::step::Yields`]), and records one [`crate::HopReport`] per network hop.

pub mod aws;
pub mod aws_web_identity_token;
pub mod azure_managed_identity;
pub mod executable;
pub mod gce_metadata;
pub mod impersonate;
pub mod kubernetes_pod;
pub mod oidc_file;
pub mod oidc_url;
pub mod sa_key;
pub mod spiffe;
pub mod x509_file;

use crate::step::Kind;

/// Every source kind: the name written in `source = { kind = "…" }` and its parser.
pub const KINDS: &[Kind] = &[
    Kind::new("gce-metadata", gce_metadata::GceMetadata::parse),
    Kind::new("service-account-key", sa_key::ServiceAccountKey::parse),
    Kind::new("impersonate", impersonate::ImpersonateSource::parse),
    Kind::new("oidc-file", oidc_file::OidcFile::parse),
    Kind::new("oidc-url", oidc_url::OidcUrl::parse),
    Kind::new("executable", executable::Executable::parse),
    Kind::new("aws", aws::Aws::parse),
    Kind::new(
        "aws-web-identity-token",
        aws_web_identity_token::AwsWebIdentityToken::parse,
    ),
    Kind::new("spiffe", spiffe::Spiffe::parse),
    Kind::new("kubernetes-pod", kubernetes_pod::KubernetesPod::parse),
    Kind::new("x509-file", x509_file::X509File::parse),
    Kind::new(
        "azure-managed-identity",
        azure_managed_identity::AzureManagedIdentity::parse,
    ),
];
