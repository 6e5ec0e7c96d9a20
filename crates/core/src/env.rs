//! Environment variables idbridge reads, each declared once.
//!
//! Endpoint overrides are shared with the official SDKs where one exists (`AWS_ENDPOINT_URL_STS`,
//! `GCE_METADATA_HOST`, …) so that one `set -a; . emulator.env` points the SDKs *and* idbridge at
//! the emulator. A route's config fields win over these variables.

/// AWS STS endpoint (the SDKs' own variable).
pub const AWS_ENDPOINT_URL_STS: &str = "AWS_ENDPOINT_URL_STS";
/// Global AWS endpoint override (the SDKs' own variable), used when the STS one is unset.
pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
/// GCE metadata server `host:port` (google-auth, Go metadata client).
pub const GCE_METADATA_HOST: &str = "GCE_METADATA_HOST";
/// GCE metadata server `ip:port` used by google-auth's detection ping.
pub const GCE_METADATA_IP: &str = "GCE_METADATA_IP";
/// Google OAuth2 token endpoint (`https://oauth2.googleapis.com/token`).
pub const IDBRIDGE_GOOGLE_OAUTH2_URL: &str = "IDBRIDGE_GOOGLE_OAUTH2_URL";
/// IAM Credentials API base (`https://iamcredentials.googleapis.com`).
pub const IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL: &str = "IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL";
/// Google STS token endpoint (`https://sts.googleapis.com/v1/token`).
pub const IDBRIDGE_GOOGLE_STS_URL: &str = "IDBRIDGE_GOOGLE_STS_URL";
/// Google's JWKS for ID tokens (`https://www.googleapis.com/oauth2/v3/certs`).
pub const IDBRIDGE_GOOGLE_CERTS_URL: &str = "IDBRIDGE_GOOGLE_CERTS_URL";
/// EC2 IMDS endpoint (the SDKs' own variable).
pub const AWS_EC2_METADATA_SERVICE_ENDPOINT: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// SPIFFE Workload API socket.
pub const SPIFFE_ENDPOINT_SOCKET: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Default Google OAuth2 token endpoint.
pub const DEFAULT_GOOGLE_OAUTH2_URL: &str = "https://oauth2.googleapis.com/token";
/// Default IAM Credentials base URL.
pub const DEFAULT_GOOGLE_IAMCREDENTIALS_URL: &str = "https://iamcredentials.googleapis.com";
/// Default Google STS endpoint.
pub const DEFAULT_GOOGLE_STS_URL: &str = "https://sts.googleapis.com/v1/token";
/// Default GCE metadata host.
pub const DEFAULT_GCE_METADATA_HOST: &str = "metadata.google.internal";
/// Default AWS STS endpoint (global).
pub const DEFAULT_AWS_STS_URL: &str = "https://sts.amazonaws.com";

/// Read access to the environment, injectable for tests.
pub trait Env: std::fmt::Debug + Send + Sync {
    /// The value of `key`, if set and valid UTF-8.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

/// A fixed environment, for tests.
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub std::collections::BTreeMap<String, String>);

impl MapEnv {
    /// Builds one from pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

impl Env for MapEnv {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}
