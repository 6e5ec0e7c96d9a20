//! GCE metadata server JSON bodies.
//!
//! `instance/service-accounts/{sa}/token` answers `{"access_token","expires_in","token_type"}`
//! (Go rejects `expires_in == 0`); `instance/service-accounts/{sa}/?recursive=true` answers
//! `{"aliases","email","scopes"}` and google-auth requires `email`.
//!
//! [`server`] holds the serving side of the protocol (request rules, response headers, the
//! metadata tree), [`watch`] the hanging GETs of `?wait_for_change=true`, both shared by
//! idbridge's metadata frontend and the emulator's.

use serde::{Deserialize, Serialize};

pub mod server;
pub mod watch;

/// Metadata token response. Its `Debug` shows the token's length only.
#[derive(Serialize, Deserialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// Seconds until expiry, > 0.
    pub expires_in: i64,
    /// `Bearer`.
    pub token_type: String,
}

impl std::fmt::Debug for TokenResponse {
    /// Leaves out the access token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &crate::redact::redacted(&self.access_token))
            .field("expires_in", &self.expires_in)
            .field("token_type", &self.token_type)
            .finish()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_response_debug_without_the_token() {
        let t = TokenResponse {
            access_token: "ya29.metadata-secret".to_owned(),
            expires_in: 3599,
            token_type: "Bearer".to_owned(),
        };
        let printed = format!("{t:?} {t:#?}");
        assert!(!printed.contains("metadata-secret"), "{printed}");
        assert!(
            printed.contains("redacted") && printed.contains("Bearer"),
            "{printed}"
        );
    }
}
