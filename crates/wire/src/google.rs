//! Google OAuth2, IAM Credentials and error bodies.
//!
//! * OAuth2 `POST /token` with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`: the
//!   assertion carries `scope` (access token) or `target_audience` (ID token); answers
//!   [`OAuth2TokenResponse`] or [`OAuthError`].
//! * IAM Credentials `projects/-/serviceAccounts/{sa}:generateIdToken` and
//!   `:generateAccessToken`; errors are `google.rpc.Status` ([`RpcError`]).

use serde::{Deserialize, Serialize};

/// The jwt-bearer grant type.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
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

/// OAuth2 token endpoint success body.
#[derive(Debug, Serialize, Deserialize, Default)]
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
    pub audience: String,
    /// Delegation chain (`projects/-/serviceAccounts/…`); google-auth sends `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegates: Option<Vec<String>>,
    /// Add `email`/`email_verified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_email: Option<bool>,
}

/// `generateIdToken` response.
#[derive(Debug, Serialize, Deserialize)]
pub struct GenerateIdTokenResponse {
    /// The JWT.
    pub token: String,
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

/// `generateAccessToken` response.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateAccessTokenResponse {
    /// The token.
    pub access_token: String,
    /// `YYYY-MM-DDTHH:MM:SSZ` (no fraction: google-auth parses it with strptime).
    pub expire_time: String,
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
