//! Microsoft Entra ID's token endpoint, on the wire: the `client_credentials` request with a
//! client assertion (workload identity federation), the success document and Entra's error
//! body with its AADSTS code. Shared by the emulator's Entra and (later) the broker's `entra`
//! exchange.
//!
//! * Request: `POST /{tenant}/oauth2/v2.0/token`, a form with `grant_type=client_credentials`,
//!   `client_id`, `client_assertion_type` = [`JWT_BEARER_ASSERTION_TYPE`], `client_assertion`
//!   and `scope` (`<resource>/.default`; MSAL adds `openid offline_access profile`, and may add
//!   `client_info=1` and `claims`). The v1 endpoint (`/{tenant}/oauth2/token`) takes `resource`
//!   instead of `scope`.
//! * Success: [`TokenResponse`], `expires_in` and `ext_expires_in` as numbers.
//! * Failure: [`ErrorBody`]: `error`, `error_description` (which starts with `AADSTS<code>: `
//!   and ends with the trace id, correlation id and timestamp lines), `error_codes`,
//!   `timestamp` (`YYYY-MM-DD HH:MM:SSZ`), `trace_id`, `correlation_id`, `error_uri`.

use serde::{Deserialize, Serialize};

/// `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The audience Entra expects in federated assertions unless a credential says otherwise.
pub const DEFAULT_FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Scope values MSAL appends that name no resource.
pub const OIDC_SCOPES: &[&str] = &["openid", "offline_access", "profile", "email"];

/// The form of a token request (fields of both endpoint versions).
#[derive(Clone, Default, Deserialize)]
pub struct TokenRequestForm {
    /// `client_credentials`.
    pub grant_type: Option<String>,
    /// The app's or managed identity's client id.
    pub client_id: Option<String>,
    /// [`JWT_BEARER_ASSERTION_TYPE`].
    pub client_assertion_type: Option<String>,
    /// The external JWT.
    pub client_assertion: Option<String>,
    /// A client secret (not supported by federated apps).
    pub client_secret: Option<String>,
    /// v2: space-separated scopes.
    pub scope: Option<String>,
    /// v1: the resource.
    pub resource: Option<String>,
    /// A claims request (CAE's `xms_cc`).
    pub claims: Option<String>,
    /// MSAL's `client_info=1`.
    pub client_info: Option<String>,
}

impl std::fmt::Debug for TokenRequestForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequestForm")
            .field("grant_type", &self.grant_type)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

/// A successful token answer.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until expiry.
    pub expires_in: i64,
    /// Extended lifetime, seconds.
    pub ext_expires_in: i64,
    /// v1 only: expiry, Unix seconds (a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<String>,
    /// v1 only: the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The access token.
    pub access_token: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Entra's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// OAuth error: `invalid_request`, `invalid_client`, `unauthorized_client`,
    /// `invalid_scope`, `invalid_resource`, `unsupported_grant_type`.
    pub error: String,
    /// `AADSTS<code>: <message>\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: …`.
    pub error_description: String,
    /// The AADSTS code(s), as numbers.
    pub error_codes: Vec<u32>,
    /// `YYYY-MM-DD HH:MM:SSZ`.
    pub timestamp: String,
    /// A request id.
    pub trace_id: String,
    /// The client's `client-request-id`, or a fresh id.
    pub correlation_id: String,
    /// `https://login.microsoftonline.com/error?code=<code>`.
    pub error_uri: String,
}

impl ErrorBody {
    /// The body for AADSTS `code` with `message`.
    pub fn new(
        error: &str,
        code: u32,
        message: &str,
        timestamp: &str,
        trace_id: &str,
        correlation_id: &str,
    ) -> Self {
        ErrorBody {
            error: error.to_owned(),
            error_description: format!(
                "AADSTS{code}: {message}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
            ),
            error_codes: vec![code],
            timestamp: timestamp.to_owned(),
            trace_id: trace_id.to_owned(),
            correlation_id: correlation_id.to_owned(),
            error_uri: format!("https://login.microsoftonline.com/error?code={code}"),
        }
    }

    /// The AADSTS code, when the body has one.
    pub fn code(&self) -> Option<u32> {
        self.error_codes.first().copied()
    }
}

/// The resource a `client_credentials` scope names: the one scope left after MSAL's OIDC
/// scopes, which must end in `/.default`. `Err` says why not (no resource, several, or no
/// `/.default`).
pub fn resource_of_scope(scope: &str) -> Result<&str, ScopeError> {
    let named: Vec<&str> = scope
        .split(' ')
        .filter(|s| !s.is_empty() && !OIDC_SCOPES.contains(s))
        .collect();
    match named.as_slice() {
        [] => Err(ScopeError::Empty),
        [one] => one
            .strip_suffix("/.default")
            .filter(|r| !r.is_empty())
            .ok_or(ScopeError::NotDefault),
        _ => Err(ScopeError::Several),
    }
}

/// Why a scope names no resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeError {
    /// Only OIDC scopes, or nothing.
    Empty,
    /// More than one resource.
    Several,
    /// Not `<resource>/.default`.
    NotDefault,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(
            resource_of_scope("https://vault.azure.net/.default openid offline_access profile"),
            Ok("https://vault.azure.net")
        );
        assert_eq!(resource_of_scope("api://x/.default"), Ok("api://x"));
        assert_eq!(resource_of_scope("openid"), Err(ScopeError::Empty));
        assert_eq!(
            resource_of_scope("api://x/read"),
            Err(ScopeError::NotDefault)
        );
        assert_eq!(
            resource_of_scope("a/.default b/.default"),
            Err(ScopeError::Several)
        );
    }

    #[test]
    fn error_body_shape() {
        let b = ErrorBody::new(
            "invalid_client",
            700024,
            "m",
            "2026-01-01 00:00:00Z",
            "t",
            "c",
        );
        let v = serde_json::to_value(&b).unwrap();
        assert!(
            v["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS700024: m\r\n")
        );
        assert_eq!(v["error_codes"][0], 700024);
        assert_eq!(b.code(), Some(700024));
    }
}
