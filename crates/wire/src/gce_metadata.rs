//! GCE metadata server JSON bodies.
//!
//! `instance/service-accounts/{sa}/token` answers `{"access_token","expires_in","token_type"}`
//! (Go rejects `expires_in == 0`); `instance/service-accounts/{sa}/?recursive=true` answers
//! `{"aliases","email","scopes"}` and google-auth requires `email`.

use serde::{Deserialize, Serialize};

/// Metadata token response.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// Seconds until expiry, > 0.
    pub expires_in: i64,
    /// `Bearer`.
    pub token_type: String,
}

/// `service-accounts/{sa}/?recursive=true` response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceAccountInfo {
    /// Aliases, e.g. `["default"]`.
    pub aliases: Vec<String>,
    /// Service-account email.
    pub email: String,
    /// OAuth scopes.
    pub scopes: Vec<String>,
}
