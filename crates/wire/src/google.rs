//! Google OAuth2, IAM Credentials and error bodies.
//!
//! * OAuth2 `POST /token` with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`: the
//!   assertion carries `scope` (access token) or `target_audience` (ID token); answers
//!   [`OAuth2TokenResponse`] or [`OAuthError`].
//! * IAM Credentials `projects/-/serviceAccounts/{sa}:generateIdToken` and
//!   `:generateAccessToken`; errors are `google.rpc.Status` ([`RpcError`]).
//! * STS `POST /v1/token` (token exchange for workload identity federation): a form
//!   [`StsTokenRequest`] answered with [`StsTokenResponse`] or [`OAuthError`]; an AWS subject
//!   token is a URL-encoded [`AwsSubjectToken`] (a signed `GetCallerIdentity` request).

use serde::{Deserialize, Serialize};

use crate::proto_json::{Field, Kind, ProtoMessage};
use crate::redact::{redacted, redacted_opt};

/// The jwt-bearer grant type.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The scope of every Google Cloud API (the default scope of GCE instances and of most
/// clients).
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The scope of the IAM API (IAM Credentials accepts it too).
pub const IAM_SCOPE: &str = "https://www.googleapis.com/auth/iam";
/// Google's issuer.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// The audience Google expects in a service-account assertion.
pub const OAUTH2_TOKEN_AUDIENCE: &str = "https://oauth2.googleapis.com/token";
/// Legacy audience still accepted by Google (seed 004 uses it).
pub const OAUTH2_TOKEN_AUDIENCE_V4: &str = "https://www.googleapis.com/oauth2/v4/token";

/// Claims of a self-signed service-account assertion.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct ServiceAccountAssertion {
    /// The SA email.
    pub iss: String,
    /// The token endpoint.
    pub aud: String,
    /// Issued at.
    pub iat: i64,
    /// Expiry (iat + at most 3600).
    pub exp: i64,
    /// ID-token audience, for ID-token grants.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target_audience: Option<String>,
    /// Space-separated scopes, for access-token grants.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scope: Option<String>,
    /// Domain-wide delegation subject.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sub: Option<String>,
}

/// OAuth2 token endpoint success body. Its `Debug` shows the tokens' lengths only.
#[derive(Serialize, Deserialize, Default)]
pub struct OAuth2TokenResponse {
    /// Access token (access-token grants).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub access_token: Option<String>,
    /// Lifetime in seconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_in: Option<i64>,
    /// `Bearer`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub token_type: Option<String>,
    /// ID token (ID-token grants).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id_token: Option<String>,
}

impl std::fmt::Debug for OAuth2TokenResponse {
    /// Leaves out the access token and the ID token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2TokenResponse")
            .field("access_token", &redacted_opt(self.access_token.as_ref()))
            .field("expires_in", &self.expires_in)
            .field("token_type", &self.token_type)
            .field("id_token", &redacted_opt(self.id_token.as_ref()))
            .finish()
    }
}

/// OAuth-style error body (`{"error","error_description"}`).
#[derive(Debug, Serialize, Deserialize)]
pub struct OAuthError {
    /// Code, e.g. `invalid_grant`.
    pub error: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_description: Option<String>,
}

/// Claims of a Google-signed ID token.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct GoogleIdTokenClaims {
    /// `https://accounts.google.com`.
    pub iss: String,
    /// The requested audience.
    pub aud: String,
    /// Authorized party: the SA's numeric unique id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub azp: Option<String>,
    /// The SA's numeric unique id.
    pub sub: String,
    /// SA email, when requested.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    /// Whether the email is verified.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email_verified: Option<bool>,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
    /// `format=full` instance details from the metadata server.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub google: Option<serde_json::Value>,
}

/// `generateIdToken` request.
#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GenerateIdTokenRequest {
    /// Audience.
    #[serde(default)]
    pub audience: String,
    /// Delegation chain (`projects/-/serviceAccounts/…`); google-auth sends `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegates: Option<Vec<String>>,
    /// Add `email`/`email_verified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_email: Option<bool>,
    /// Put the service account's email in `azp` instead of its numeric unique id. Not in the
    /// published discovery document; google-auth-library (Node) sends it (= `includeEmail`,
    /// default true), google-auth (Python) sends `"true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_email_azp: Option<bool>,
}

impl ProtoMessage for GenerateIdTokenRequest {
    const FIELDS: &'static [Field] = &[
        Field::one("audience", Kind::String),
        Field::many("delegates", Kind::String),
        Field::one("includeEmail", Kind::Bool),
        Field::one("useEmailAzp", Kind::Bool),
    ];
}

/// `generateIdToken` response. Its `Debug` shows the token's length only.
#[derive(Serialize, Deserialize)]
pub struct GenerateIdTokenResponse {
    /// The JWT.
    pub token: String,
}

impl std::fmt::Debug for GenerateIdTokenResponse {
    /// Leaves out the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateIdTokenResponse")
            .field("token", &redacted(&self.token))
            .finish()
    }
}

/// `generateAccessToken` request.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct GenerateAccessTokenRequest {
    /// Delegation chain; google-auth sends `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegates: Option<Vec<String>>,
    /// Scopes, at least one.
    #[serde(default)]
    pub scope: Vec<String>,
    /// `"3600s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<String>,
}

impl ProtoMessage for GenerateAccessTokenRequest {
    const FIELDS: &'static [Field] = &[
        Field::many("delegates", Kind::String),
        Field::many("scope", Kind::String),
        Field::one("lifetime", Kind::Duration),
    ];
}

/// `generateAccessToken` response. Its `Debug` shows the token's length only.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateAccessTokenResponse {
    /// The token.
    pub access_token: String,
    /// `YYYY-MM-DDTHH:MM:SSZ` (no fraction: google-auth parses it with strptime).
    pub expire_time: String,
}

impl std::fmt::Debug for GenerateAccessTokenResponse {
    /// Leaves out the access token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateAccessTokenResponse")
            .field("access_token", &redacted(&self.access_token))
            .field("expire_time", &self.expire_time)
            .finish()
    }
}

/// `google.rpc.Status` error envelope.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcError {
    /// The status.
    pub error: RpcStatus,
}

/// `google.rpc.Status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcStatus {
    /// HTTP code.
    pub code: u16,
    /// Message.
    pub message: String,
    /// Canonical status, e.g. `PERMISSION_DENIED`.
    pub status: String,
    /// Details (`google.rpc.ErrorInfo` …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<serde_json::Value>,
}

/// The token-exchange grant type (RFC 8693).
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Token type of an access token (the only `requested_token_type` Google STS issues).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Subject token type of an OIDC JWT.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Subject token type of an OIDC ID token (accepted like [`JWT_TOKEN_TYPE`]).
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// Subject token type of a SAML 2.0 assertion.
pub const SAML2_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:saml2";
/// Subject token type of an AWS signed `GetCallerIdentity` request.
pub const AWS4_REQUEST_TOKEN_TYPE: &str = "urn:ietf:params:aws:token-type:aws4_request";
/// The header of an AWS subject token that names the provider it is meant for.
pub const TARGET_RESOURCE_HEADER: &str = "x-goog-cloud-target-resource";

/// STS `POST /v1/token` body: a form (what the auth libraries send), or proto3 JSON
/// (`{"grantType", "subjectToken", …}`, through [`crate::proto_json`]; the camelCase names are
/// serde aliases). Empty fields are left out on the wire (google-auth removes them), so absent
/// fields deserialize as empty strings.
#[derive(Serialize, Deserialize, Default, Clone)]
pub struct StsTokenRequest {
    /// [`TOKEN_EXCHANGE_GRANT`].
    #[serde(default)]
    #[serde(alias = "grantType")]
    pub grant_type: String,
    /// The provider's canonical name,
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/PR`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub audience: String,
    /// Space-separated scopes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// [`ACCESS_TOKEN_TYPE`].
    #[serde(default)]
    #[serde(alias = "requestedTokenType")]
    pub requested_token_type: String,
    /// The external credential.
    #[serde(default)]
    #[serde(alias = "subjectToken")]
    pub subject_token: String,
    /// Its type ([`JWT_TOKEN_TYPE`], [`ID_TOKEN_TYPE`], [`AWS4_REQUEST_TOKEN_TYPE`], …).
    #[serde(default)]
    #[serde(alias = "subjectTokenType")]
    pub subject_token_type: String,
    /// URL-encoded JSON [`StsOptions`] (google-auth quotes it once more inside the form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

impl std::fmt::Debug for StsTokenRequest {
    /// Leaves out the subject token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsTokenRequest")
            .field("grant_type", &self.grant_type)
            .field("audience", &self.audience)
            .field("scope", &self.scope)
            .field("requested_token_type", &self.requested_token_type)
            .field("subject_token_type", &self.subject_token_type)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ProtoMessage for StsTokenRequest {
    const FIELDS: &'static [Field] = &[
        Field::one("grantType", Kind::String),
        Field::one("audience", Kind::String),
        Field::one("scope", Kind::String),
        Field::one("requestedTokenType", Kind::String),
        Field::one("subjectToken", Kind::String),
        Field::one("subjectTokenType", Kind::String),
        Field::one("options", Kind::String),
        Field::one("actorToken", Kind::String),
        Field::one("actorTokenType", Kind::String),
    ];
}

/// The `options` of an STS request.
#[derive(Debug, Serialize, Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct StsOptions {
    /// Project billed for the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_project: Option<String>,
    /// Certificate binding (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_cert_fingerprint: Option<String>,
    /// A Credential Access Boundary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_boundary: Option<serde_json::Value>,
    /// Audiences the token is restricted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
}

/// STS `POST /v1/token` success body.
#[derive(Serialize, Deserialize, Clone)]
pub struct StsTokenResponse {
    /// The federated access token.
    pub access_token: String,
    /// [`ACCESS_TOKEN_TYPE`].
    pub issued_token_type: String,
    /// `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds (absent when the subject is a Google access token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
}

impl std::fmt::Debug for StsTokenResponse {
    /// Leaves out the access token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsTokenResponse")
            .field("issued_token_type", &self.issued_token_type)
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// An AWS subject token: a SigV4-signed `GetCallerIdentity` request, serialized as JSON and
/// URL-encoded. Fields are in alphabetical order, as google-auth (Python) writes them.
#[derive(Serialize, Deserialize, Clone)]
pub struct AwsSubjectToken {
    /// The request headers, `Authorization` and `x-goog-cloud-target-resource` included.
    pub headers: Vec<AwsSubjectTokenHeader>,
    /// `POST` (google-auth) or `GET`.
    pub method: String,
    /// `https://sts.<region>.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15`.
    pub url: String,
    /// The request body, when an implementation includes it (always empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl std::fmt::Debug for AwsSubjectToken {
    /// Shows header names only: the values carry the signature and the session token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSubjectToken")
            .field("method", &self.method)
            .field("url", &self.url)
            .field(
                "header_names",
                &self
                    .headers
                    .iter()
                    .map(|h| h.key.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// One header of an [`AwsSubjectToken`].
#[derive(Serialize, Deserialize, Clone)]
pub struct AwsSubjectTokenHeader {
    /// Header name, in any case.
    pub key: String,
    /// Header value.
    pub value: String,
}

impl std::fmt::Debug for AwsSubjectTokenHeader {
    /// Shows the name only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSubjectTokenHeader")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "ya29.very-secret-token-material";

    #[test]
    fn token_bodies_debug_without_their_tokens() {
        let printed = [
            format!(
                "{:?}",
                OAuth2TokenResponse {
                    access_token: Some(SECRET.to_owned()),
                    expires_in: Some(3599),
                    token_type: Some("Bearer".to_owned()),
                    id_token: Some(format!("{SECRET}-id")),
                }
            ),
            format!(
                "{:#?}",
                GenerateIdTokenResponse {
                    token: SECRET.to_owned(),
                }
            ),
            format!(
                "{:?}",
                GenerateAccessTokenResponse {
                    access_token: SECRET.to_owned(),
                    expire_time: "2025-01-01T00:00:00Z".to_owned(),
                }
            ),
            format!(
                "{:?}",
                StsTokenResponse {
                    access_token: SECRET.to_owned(),
                    issued_token_type: ACCESS_TOKEN_TYPE.to_owned(),
                    token_type: "Bearer".to_owned(),
                    expires_in: Some(3600),
                }
            ),
        ];
        for p in &printed {
            assert!(!p.contains("very-secret"), "{p}");
        }
        assert!(printed[0].contains("redacted") && printed[0].contains("3599"));
        assert!(
            printed[2].contains("2025-01-01T00:00:00Z"),
            "{}",
            printed[2]
        );
        let empty = format!("{:?}", OAuth2TokenResponse::default());
        assert!(empty.contains("access_token: None"), "{empty}");
    }
}
