//! The credentials a route produces.
//!
//! Each kind carries its expiry so one cache can serve them all. Secrets sit in
//! [`SecretString`]; the derived `Debug` of these structs is therefore safe to print.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

use crate::secret::SecretString;
use crate::timefmt::rfc3339_seconds;

/// Temporary AWS credentials (an STS session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// `ASIA…` access key id (not a secret by AWS's own convention; it appears in logs).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// The session token, for temporary credentials.
    pub session_token: Option<SecretString>,
    /// When the credentials stop working.
    pub expiration: Option<OffsetDateTime>,
    /// The AWS account id, when known.
    pub account_id: Option<String>,
    /// The assumed-role ARN, when known (for display).
    pub arn: Option<String>,
}

/// A Google OAuth2 access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleAccessToken {
    /// The bearer token.
    pub token: SecretString,
    /// When it expires.
    pub expires_at: OffsetDateTime,
    /// The identity it acts as (service-account email or federated principal), for display.
    pub principal: Option<String>,
    /// Scopes granted, when known.
    pub scopes: Vec<String>,
}

/// An OIDC ID token (a signed JWT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdToken {
    /// The compact JWS.
    pub token: SecretString,
    /// Its `exp`.
    pub expires_at: OffsetDateTime,
}

/// An X.509 certificate chain and its private key (an X.509-SVID, a workload certificate).
///
/// The certificates are public; the key is a [`SecretString`] (redacted `Debug`, zeroized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Credential {
    /// PEM `CERTIFICATE` blocks, the leaf first, then any intermediates.
    pub chain_pem: String,
    /// The private key as PEM (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_pem: SecretString,
    /// The leaf's `notAfter`.
    pub expires_at: OffsetDateTime,
    /// Who the leaf names, for display: its SPIFFE ID or subject.
    pub subject: String,
}

/// A Microsoft Entra ID access token (for an Azure resource, from `client_credentials`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureAccessToken {
    /// The bearer token.
    pub token: SecretString,
    /// When it expires.
    pub expires_at: OffsetDateTime,
    /// The tenant that issued it.
    pub tenant: String,
    /// The app or managed identity it acts as (client id).
    pub client_id: String,
    /// The scope it was asked for (`<resource>/.default`).
    pub scope: String,
}

/// Any credential a route can produce.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// AWS session credentials.
    Aws(AwsCredentials),
    /// A Google access token.
    GoogleAccessToken(GoogleAccessToken),
    /// An OIDC ID token.
    IdToken(IdToken),
    /// An X.509 certificate chain and key.
    X509(X509Credential),
    /// A Microsoft Entra ID access token.
    AzureAccessToken(AzureAccessToken),
}

impl Credential {
    /// When the credential expires, if it does.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        match self {
            Credential::Aws(c) => c.expiration,
            Credential::GoogleAccessToken(t) => Some(t.expires_at),
            Credential::IdToken(t) => Some(t.expires_at),
            Credential::X509(c) => Some(c.expires_at),
            Credential::AzureAccessToken(t) => Some(t.expires_at),
        }
    }

    /// A short, secret-free description of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Aws(_) => "aws",
            Credential::GoogleAccessToken(_) => "google-access-token",
            Credential::IdToken(_) => "id-token",
            Credential::X509(_) => "x509",
            Credential::AzureAccessToken(_) => "azure-access-token",
        }
    }
}

/// AWS `credential_process` output, version 1.
///
/// `Version` must be the number 1 (botocore compares with `!= 1`; the Rust SDK requires a JSON
/// number) and `Expiration` is RFC 3339 without fractional seconds. It borrows the secrets
/// (exposing them is what it is for); its `Debug` leaves them out.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CredentialProcessOutput<'a> {
    /// Always 1.
    pub version: u8,
    /// Access key id.
    pub access_key_id: &'a str,
    /// Secret access key.
    pub secret_access_key: &'a str,
    /// Session token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_token: Option<&'a str>,
    /// Expiration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    /// Account id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<&'a str>,
}

impl fmt::Debug for CredentialProcessOutput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialProcessOutput")
            .field("version", &self.version)
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

impl AwsCredentials {
    /// The `credential_process` v1 view of these credentials. It exposes the secrets: only
    /// serialize it to the process's stdout.
    pub fn credential_process(&self) -> CredentialProcessOutput<'_> {
        CredentialProcessOutput {
            version: 1,
            access_key_id: &self.access_key_id,
            secret_access_key: self.secret_access_key.expose_secret(),
            session_token: self.session_token.as_ref().map(SecretString::expose_secret),
            expiration: self.expiration.map(rfc3339_seconds),
            account_id: self.account_id.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credential::Aws(AwsCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: SecretString::new("s3cr3t-key-material"),
            session_token: Some(SecretString::new("session-token-material")),
            expiration: None,
            account_id: None,
            arn: None,
        });
        let printed = format!("{c:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(!printed.contains("session-token-material"), "{printed}");
        let g = Credential::GoogleAccessToken(GoogleAccessToken {
            token: SecretString::new("ya29.secret"),
            expires_at: OffsetDateTime::UNIX_EPOCH,
            principal: None,
            scopes: vec![],
        });
        assert!(!format!("{g:?}").contains("ya29.secret"));
        let x = Credential::X509(X509Credential {
            chain_pem: "-----BEGIN CERTIFICATE-----".into(),
            key_pem: SecretString::new("-----BEGIN PRIVATE KEY-----\nkey-material"),
            expires_at: OffsetDateTime::UNIX_EPOCH,
            subject: "spiffe://example.org/billing".into(),
        });
        assert!(!format!("{x:?}").contains("key-material"));
        let a = Credential::AzureAccessToken(AzureAccessToken {
            token: SecretString::new("eyJ.azure-secret"),
            expires_at: OffsetDateTime::UNIX_EPOCH,
            tenant: "t".into(),
            client_id: "c".into(),
            scope: "api://x/.default".into(),
        });
        assert!(!format!("{a:?}").contains("azure-secret"));
    }

    #[test]
    fn credential_process_view_debug_never_shows_secrets() {
        let c = AwsCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: SecretString::new("s3cr3t-key-material"),
            session_token: Some(SecretString::new("session-token-material")),
            expiration: Some(OffsetDateTime::UNIX_EPOCH),
            account_id: Some("111122223333".into()),
            arn: None,
        };
        let view = c.credential_process();
        let printed = format!("{view:?} {view:#?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(!printed.contains("session-token-material"), "{printed}");
        assert!(printed.contains("ASIAEXAMPLE"), "{printed}");
        // The serialized form still carries them: printing it is what it is for.
        let json = serde_json::to_string(&view).unwrap_or_default();
        assert!(json.contains("s3cr3t-key-material"), "{json}");
    }
}
