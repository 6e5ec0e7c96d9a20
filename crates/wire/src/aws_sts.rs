//! AWS STS query-protocol responses (`https://sts.amazonaws.com/doc/2011-06-15/`).
//!
//! Shapes follow botocore's `sts/2011-06-15/service-2.json`: result wrappers
//! `AssumeRoleWithWebIdentityResult`, `AssumeRoleResult` and `GetCallerIdentityResult`, and the error document
//! `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`.
//! Note the wire error codes are inconsistent on purpose: `InvalidIdentityToken` but
//! `ExpiredTokenException`; `IDPRejectedClaim` and `AccessDenied` are 403, the others 400.

use serde::Serialize;

/// The STS XML namespace.
pub const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// `Credentials` element. Its `Debug` shows the access key id and the lengths of the secrets.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token.
    pub session_token: String,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub expiration: String,
}

impl std::fmt::Debug for Credentials {
    /// Leaves out the secret access key and the session token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &crate::redact::redacted(&self.secret_access_key),
            )
            .field(
                "session_token",
                &crate::redact::redacted(&self.session_token),
            )
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// `AssumedRoleUser` element.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AssumedRoleUser {
    /// `AROA…:session`.
    pub assumed_role_id: String,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub arn: String,
}

/// `AssumeRoleWithWebIdentityResult`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AssumeRoleWithWebIdentityResult {
    /// The token's `sub`.
    pub subject_from_web_identity_token: String,
    /// The token's audience (for Google tokens with `azp`, the `azp`).
    pub audience: String,
    /// The assumed role.
    pub assumed_role_user: AssumedRoleUser,
    /// The credentials.
    pub credentials: Credentials,
    /// The issuing provider (`accounts.google.com` or the OIDC provider ARN).
    pub provider: String,
    /// Packed size of the session policy, in percent of the allowed maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packed_policy_size: Option<u32>,
}

/// `ResponseMetadata`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResponseMetadata {
    /// Request id (a UUID).
    pub request_id: String,
}

/// `AssumeRoleWithWebIdentityResponse` document.
#[derive(Debug, Serialize)]
#[serde(
    rename = "AssumeRoleWithWebIdentityResponse",
    rename_all = "PascalCase"
)]
pub struct AssumeRoleWithWebIdentityResponse {
    /// Namespace attribute.
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    /// Result.
    pub assume_role_with_web_identity_result: AssumeRoleWithWebIdentityResult,
    /// Metadata.
    pub response_metadata: ResponseMetadata,
}

/// `AssumeRoleResult`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AssumeRoleResult {
    /// The assumed role.
    pub assumed_role_user: AssumedRoleUser,
    /// The credentials.
    pub credentials: Credentials,
    /// Packed size of the session policy and tags, in percent of the allowed maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packed_policy_size: Option<u32>,
    /// The session's source identity, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
}

/// `AssumeRoleResponse` document.
#[derive(Debug, Serialize)]
#[serde(rename = "AssumeRoleResponse", rename_all = "PascalCase")]
pub struct AssumeRoleResponse {
    /// Namespace attribute.
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    /// Result.
    pub assume_role_result: AssumeRoleResult,
    /// Metadata.
    pub response_metadata: ResponseMetadata,
}

/// `GetWebIdentityTokenResult`. Its `Debug` shows the token's length only.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetWebIdentityTokenResult {
    /// The JWT.
    pub web_identity_token: String,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub expiration: String,
}

impl std::fmt::Debug for GetWebIdentityTokenResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetWebIdentityTokenResult")
            .field(
                "web_identity_token",
                &crate::redact::redacted(&self.web_identity_token),
            )
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// `GetWebIdentityTokenResponse` document.
#[derive(Debug, Serialize)]
#[serde(rename = "GetWebIdentityTokenResponse", rename_all = "PascalCase")]
pub struct GetWebIdentityTokenResponse {
    /// Namespace attribute.
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    /// Result.
    pub get_web_identity_token_result: GetWebIdentityTokenResult,
    /// Metadata.
    pub response_metadata: ResponseMetadata,
}

/// `GetCallerIdentityResult`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetCallerIdentityResult {
    /// Caller ARN.
    pub arn: String,
    /// `AROA…:session` or the access key for users.
    pub user_id: String,
    /// Account id.
    pub account: String,
}

/// `GetCallerIdentityResponse` document.
#[derive(Debug, Serialize)]
#[serde(rename = "GetCallerIdentityResponse", rename_all = "PascalCase")]
pub struct GetCallerIdentityResponse {
    /// Namespace attribute.
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    /// Result.
    pub get_caller_identity_result: GetCallerIdentityResult,
    /// Metadata.
    pub response_metadata: ResponseMetadata,
}

/// `Error` element.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    /// `Sender` or `Receiver`.
    #[serde(rename = "Type")]
    pub kind: &'static str,
    /// Wire error code, e.g. `InvalidIdentityToken`.
    pub code: String,
    /// Human message.
    pub message: String,
}

/// `ErrorResponse` document.
#[derive(Debug, Serialize)]
#[serde(rename = "ErrorResponse", rename_all = "PascalCase")]
pub struct ErrorResponse {
    /// Namespace attribute.
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    /// The error.
    pub error: ErrorBody,
    /// Request id.
    pub request_id: String,
}

/// Serializes one of the documents above to an XML string.
pub fn to_xml<T: Serialize>(doc: &T) -> Result<String, quick_xml::SeError> {
    quick_xml::se::to_string(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_without_secrets() {
        let response = AssumeRoleWithWebIdentityResponse {
            xmlns: XMLNS,
            assume_role_with_web_identity_result: AssumeRoleWithWebIdentityResult {
                subject_from_web_identity_token: "sub".into(),
                audience: "aud".into(),
                assumed_role_user: AssumedRoleUser {
                    assumed_role_id: "AROAEXAMPLE:s".into(),
                    arn: "arn:aws:sts::111122223333:assumed-role/r/s".into(),
                },
                credentials: Credentials {
                    access_key_id: "ASIAEXAMPLE".into(),
                    secret_access_key: "wJalrXUtnFEMI-secret-key".into(),
                    session_token: "FQoGZXIvYXdz-session-token".into(),
                    expiration: "2025-01-01T01:00:00Z".into(),
                },
                provider: "accounts.google.com".into(),
                packed_policy_size: None,
            },
            response_metadata: ResponseMetadata {
                request_id: "r-1".into(),
            },
        };
        let printed = format!("{response:?} {response:#?}");
        assert!(!printed.contains("secret-key"), "{printed}");
        assert!(!printed.contains("session-token"), "{printed}");
        assert!(printed.contains("ASIAEXAMPLE"), "{printed}");
        assert!(printed.contains("redacted"), "{printed}");
    }

    #[test]
    fn error_document_shape() -> Result<(), quick_xml::SeError> {
        let xml = to_xml(&ErrorResponse {
            xmlns: XMLNS,
            error: ErrorBody {
                kind: "Sender",
                code: "InvalidIdentityToken".into(),
                message: "bad <token>".into(),
            },
            request_id: "r-1".into(),
        })?;
        assert_eq!(
            xml,
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>bad &lt;token&gt;</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
        );
        Ok(())
    }
}
