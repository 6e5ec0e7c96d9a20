//! The route configuration file (TOML).
//!
//! ```toml
//! [endpoints]                 # optional; see `context` for precedence
//! aws_sts = "http://127.0.0.1:4001"
//!
//! [[route]]
//! name = "tenant-to-aws"
//! source = { kind = "gce-metadata", audience = "https://psoxy.example/aws" }
//! exchange = [
//!   { kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/psoxy-tenant-access" },
//! ]
//! ```
//!
//! Sources (`source.kind`):
//! * `gce-metadata` — `audience` (ID token) or `scopes` (access token); `service_account`
//!   (default `default`); `format` `full`|`standard` for ID tokens (default `full`).
//! * `service-account-key` — `key_file` (Google JSON key, relative to this file),
//!   `target_audience` (ID token) or `scopes` (access token).
//! * `impersonate` — `service_account`, `audience` or `scopes`, `delegates`, `include_email`
//!   (default true), `lifetime_seconds`; `caller` is the source of the caller's access token
//!   (default: the metadata server's token).
//! * `oidc-file` — `path` of a token file, re-read on every refresh; `json_field` when the file
//!   is JSON.
//! * `oidc-url` — `url`, `headers`, `json_field`: a token served over HTTP.
//! * `executable` — `command` printing Google's executable-sourced response; `timeout_millis`,
//!   `output_file`, `audience`, `token_type`.
//! * `aws` — `provider` `chain` (default: aws-config's chain), `imds`, `ecs` or `env-or-imds`;
//!   `profile`, `region`, `imds_endpoint`.
//! * `spiffe` — `audience`, `spiffe_id`, `socket` (default `SPIFFE_ENDPOINT_SOCKET`).
//!
//! Exchanges (`exchange[].kind`):
//! * `aws-sts` — `role_arn`, `session_name` (default `idbridge-<route>`), `duration_seconds`
//!   (900–43200, default 3600), `policy` (session policy JSON), `region` (default `us-east-1`).
//! * `google-sts` — `audience` (the workload identity provider), `scopes`, `token_url`,
//!   `subject_token_type` (for OIDC subjects), `region` (for AWS subjects).
//! * `impersonate` — `service_account`, `audience` or `scopes`, `delegates`, `include_email`,
//!   `lifetime_seconds`, `endpoint`.
//!
//! Instead of `source` and `exchange`, a route may name a Google credential file:
//! `external_account = "cred.json"` (see [`crate::external_account`]).
//!
//! A `[serve]` table is allowed and ignored here: `idbridge serve` reads it (see the
//! `idbridge-serve` crate).
//!
//! Every error names the file, the line and the field. The whole file is validated before
//! anything is fetched or bound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a config file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Cannot read the file.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Syntax, type or unknown-field error (toml's message carries line, column and field).
    #[error("config file {path}: {message}")]
    Parse {
        /// Path.
        path: String,
        /// Message.
        message: String,
    },
    /// A semantic error at a given line.
    #[error("config file {path}, line {line}: {message}")]
    Invalid {
        /// Path.
        path: String,
        /// 1-based line.
        line: usize,
        /// Message naming the field.
        message: String,
    },
    /// The route does not exist.
    #[error("no route named {name:?} in {path} (routes: {known})")]
    NoSuchRoute {
        /// Path.
        path: String,
        /// Asked-for name.
        name: String,
        /// Known names.
        known: String,
    },
}

/// Endpoint overrides.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EndpointsConfig {
    /// AWS STS base URL.
    #[serde(default)]
    pub aws_sts: Option<String>,
    /// GCE metadata `host:port`.
    #[serde(default)]
    pub gce_metadata_host: Option<String>,
    /// Google OAuth2 token URL.
    #[serde(default)]
    pub google_oauth2: Option<String>,
    /// IAM Credentials base URL.
    #[serde(default)]
    pub google_iamcredentials: Option<String>,
}

/// Where the first identity comes from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SourceConfig {
    /// The GCE metadata server.
    GceMetadata {
        /// Account name on the metadata server (`default` or an email).
        #[serde(default = "default_sa")]
        service_account: String,
        /// ID-token audience.
        #[serde(default)]
        audience: Option<String>,
        /// Access-token scopes.
        #[serde(default)]
        scopes: Option<Vec<String>>,
        /// `full` (default) or `standard`.
        #[serde(default)]
        format: Option<String>,
    },
    /// A service-account key file.
    ServiceAccountKey {
        /// Path to the JSON key.
        key_file: PathBuf,
        /// ID-token audience.
        #[serde(default)]
        target_audience: Option<String>,
        /// Access-token scopes.
        #[serde(default)]
        scopes: Option<Vec<String>>,
    },
    /// IAM Credentials impersonation.
    Impersonate {
        /// Target service account.
        service_account: String,
        /// ID-token audience.
        #[serde(default)]
        audience: Option<String>,
        /// Access-token scopes.
        #[serde(default)]
        scopes: Option<Vec<String>>,
        /// Delegation chain.
        #[serde(default)]
        delegates: Vec<String>,
        /// Put `email` in ID tokens.
        #[serde(default = "yes")]
        include_email: bool,
        /// Access-token lifetime.
        #[serde(default)]
        lifetime_seconds: Option<u32>,
        /// Source of the caller's access token (default: metadata server).
        #[serde(default)]
        caller: Option<Box<SourceConfig>>,
    },
    /// A token file.
    OidcFile {
        /// Path.
        path: PathBuf,
        /// When the file is JSON, the field holding the token.
        #[serde(default)]
        json_field: Option<String>,
    },
    /// A token served over HTTP (a URL-sourced credential).
    OidcUrl {
        /// URL (GET).
        url: String,
        /// Extra request headers.
        #[serde(default)]
        headers: RequestHeaders,
        /// When the response is JSON, the field holding the token.
        #[serde(default)]
        json_field: Option<String>,
    },
    /// A token printed by a program in Google's executable-sourced response format.
    Executable {
        /// Command line (split on whitespace, no shell).
        command: String,
        /// Time limit (5–120 s; default 30 s).
        #[serde(default)]
        timeout_millis: Option<u64>,
        /// Where the program caches its response, if it does.
        #[serde(default)]
        output_file: Option<PathBuf>,
        /// `GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE` passed to the program.
        #[serde(default)]
        audience: Option<String>,
        /// `GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE` passed to the program.
        #[serde(default)]
        token_type: Option<String>,
    },
    /// AWS credentials: the standard chain, or one provider of it.
    Aws {
        /// `chain` (default: environment, profile, web identity, ECS, IMDS — via aws-config,
        /// reading the process environment), `imds` (the EC2 instance role through IMDSv2 at
        /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`), or `ecs` (the container endpoint at
        /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` with `AWS_CONTAINER_AUTHORIZATION_TOKEN`).
        #[serde(default)]
        provider: Option<String>,
        /// Named profile for `chain`.
        #[serde(default)]
        profile: Option<String>,
        /// Region (used for the GetCallerIdentity URL of a Google subject token).
        #[serde(default)]
        region: Option<String>,
        /// IMDS endpoint for `imds` and `env-or-imds` (default `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
        #[serde(default)]
        imds_endpoint: Option<String>,
    },
    /// A JWT-SVID from the SPIFFE Workload API.
    Spiffe {
        /// Audience of the JWT-SVID.
        audience: String,
        /// A specific SPIFFE ID (default: the workload's first identity).
        #[serde(default)]
        spiffe_id: Option<String>,
        /// Workload API socket (default: `SPIFFE_ENDPOINT_SOCKET`).
        #[serde(default)]
        socket: Option<String>,
    },
}

/// The extra request headers of an `oidc-url` source, name → value. A value may be a
/// credential (an `Authorization` header for the token server), so `Debug` shows the names
/// only, and the source marks every value sensitive when it sends them.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct RequestHeaders(pub BTreeMap<String, String>);

impl std::ops::Deref for RequestHeaders {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl FromIterator<(String, String)> for RequestHeaders {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl std::fmt::Debug for RequestHeaders {
    /// Header names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestHeaders")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn default_sa() -> String {
    "default".to_owned()
}
fn yes() -> bool {
    true
}

/// What the source yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Yields {
    /// An OIDC ID token.
    IdToken,
    /// A Google access token.
    AccessToken,
    /// AWS credentials.
    AwsCredentials,
}

impl SourceConfig {
    /// The hop name.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::GceMetadata { .. } => "gce-metadata",
            SourceConfig::ServiceAccountKey { .. } => "service-account-key",
            SourceConfig::Impersonate { .. } => "impersonate",
            SourceConfig::OidcFile { .. } => "oidc-file",
            SourceConfig::OidcUrl { .. } => "oidc-url",
            SourceConfig::Executable { .. } => "executable",
            SourceConfig::Aws { .. } => "aws",
            SourceConfig::Spiffe { .. } => "spiffe",
        }
    }

    fn audience_scopes(&self) -> (Option<&String>, Option<&Vec<String>>, &'static str) {
        match self {
            SourceConfig::GceMetadata {
                audience, scopes, ..
            } => (audience.as_ref(), scopes.as_ref(), "audience"),
            SourceConfig::ServiceAccountKey {
                target_audience,
                scopes,
                ..
            } => (target_audience.as_ref(), scopes.as_ref(), "target_audience"),
            SourceConfig::Impersonate {
                audience, scopes, ..
            } => (audience.as_ref(), scopes.as_ref(), "audience"),
            SourceConfig::OidcFile { .. }
            | SourceConfig::OidcUrl { .. }
            | SourceConfig::Executable { .. }
            | SourceConfig::Aws { .. }
            | SourceConfig::Spiffe { .. } => (None, None, ""),
        }
    }

    /// What the source yields, or which field is wrong.
    pub fn yields(&self) -> Result<Yields, String> {
        match self {
            SourceConfig::OidcFile { .. }
            | SourceConfig::OidcUrl { .. }
            | SourceConfig::Executable { .. }
            | SourceConfig::Spiffe { .. } => {
                return Ok(Yields::IdToken);
            }
            SourceConfig::Aws { .. } => return Ok(Yields::AwsCredentials),
            _ => {}
        }
        match self.audience_scopes() {
            (Some(a), None, field) if a.is_empty() => {
                Err(format!("field `source.{field}` is empty"))
            }
            (Some(_), None, _) => Ok(Yields::IdToken),
            (None, Some(s), _) if s.is_empty() => Err("field `source.scopes` is empty".to_owned()),
            (None, Some(_), _) => Ok(Yields::AccessToken),
            (Some(_), Some(_), field) => Err(format!(
                "set only one of `source.{field}` and `source.scopes`"
            )),
            (None, None, field) => Err(format!(
                "set `source.{field}` (for an ID token) or `source.scopes` (for an access token)"
            )),
        }
    }
}

/// One exchange step.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ExchangeConfig {
    /// AWS STS AssumeRoleWithWebIdentity.
    AwsSts {
        /// Role ARN.
        role_arn: String,
        /// Session name.
        #[serde(default)]
        session_name: Option<String>,
        /// Session length.
        #[serde(default)]
        duration_seconds: Option<u32>,
        /// Session policy JSON.
        #[serde(default)]
        policy: Option<String>,
        /// Region for the STS client.
        #[serde(default)]
        region: Option<String>,
    },
    /// Google STS token exchange (workload identity federation).
    GoogleSts {
        /// The provider: `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/PR`.
        audience: String,
        /// Scopes (default cloud-platform).
        #[serde(default)]
        scopes: Option<Vec<String>>,
        /// Token endpoint (default `IDBRIDGE_GOOGLE_STS_URL`, then Google's).
        #[serde(default)]
        token_url: Option<String>,
        /// For an OIDC subject: `urn:ietf:params:oauth:token-type:jwt` (default) or `…:id_token`.
        #[serde(default)]
        subject_token_type: Option<String>,
        /// For an AWS subject: the region of the signed GetCallerIdentity URL (default us-east-1).
        #[serde(default)]
        region: Option<String>,
    },
    /// IAM Credentials: the previous hop's access token impersonates a service account.
    Impersonate {
        /// Target service account.
        service_account: String,
        /// ID-token audience.
        #[serde(default)]
        audience: Option<String>,
        /// Access-token scopes (default cloud-platform when no audience).
        #[serde(default)]
        scopes: Option<Vec<String>>,
        /// Delegation chain.
        #[serde(default)]
        delegates: Vec<String>,
        /// Put `email` in ID tokens.
        #[serde(default = "yes")]
        include_email: bool,
        /// Access-token lifetime.
        #[serde(default)]
        lifetime_seconds: Option<u32>,
        /// IAM Credentials base URL for this hop (default: the resolved endpoint).
        #[serde(default)]
        endpoint: Option<String>,
    },
}

impl ExchangeConfig {
    /// The hop name.
    pub fn kind(&self) -> &'static str {
        match self {
            ExchangeConfig::AwsSts { .. } => "aws-sts",
            ExchangeConfig::GoogleSts { .. } => "google-sts",
            ExchangeConfig::Impersonate { .. } => "impersonate",
        }
    }
}

/// One route as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The source.
    pub source: SourceConfig,
    /// The exchanges, in order.
    #[serde(default)]
    pub exchange: Vec<ExchangeConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    endpoints: EndpointsConfig,
    #[serde(default)]
    route: Vec<toml::Spanned<RawRoute>>,
    /// `[serve]`: read by `idbridge serve` (crate `idbridge-serve`), ignored here so that one
    /// file holds a daemon's routes and its listeners.
    #[serde(default, rename = "serve")]
    _serve: Option<serde::de::IgnoredAny>,
    /// `[cache]`: read by [`crate::shared_cache::CacheSettings`].
    #[serde(default, rename = "cache")]
    _cache: Option<serde::de::IgnoredAny>,
}

/// A route as written: either `source` (+ `exchange`) or `external_account`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    source: Option<SourceConfig>,
    #[serde(default)]
    exchange: Option<Vec<ExchangeConfig>>,
    /// A Google `external_account` credential file standing for source + exchanges.
    #[serde(default)]
    external_account: Option<PathBuf>,
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from.
    pub path: String,
    /// Endpoint overrides.
    pub endpoints: EndpointsConfig,
    /// Routes, in file order.
    pub routes: Vec<RouteConfig>,
}

impl Config {
    /// Loads and validates a config file. Relative paths inside resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            idbridge_core::file::read_config_file(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
        Self::parse(&text, &path.display().to_string(), path.parent())
    }

    /// Parses and validates config text.
    pub fn parse(text: &str, path: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: toml_error_message(text, &e),
        })?;
        let mut routes = Vec::new();
        for spanned in raw.route {
            let line = line_of(text, spanned.span().start);
            let raw_route = spanned.into_inner();
            let name = raw_route.name.clone();
            let invalid = |message: String| ConfigError::Invalid {
                path: path.to_owned(),
                line,
                message: format!("route {name:?}: {message}"),
            };
            let mut route = match (
                raw_route.source,
                raw_route.exchange,
                raw_route.external_account,
            ) {
                (None, None, Some(file)) => {
                    let file = match base {
                        Some(b) if file.is_relative() => b.join(file),
                        _ => file,
                    };
                    let (source, exchange) = crate::external_account::load(&file).map_err(|m| {
                        invalid(format!("field `external_account`: {}: {m}", file.display()))
                    })?;
                    RouteConfig {
                        name: raw_route.name,
                        description: raw_route.description,
                        source,
                        exchange,
                    }
                }
                (Some(source), exchange, None) => RouteConfig {
                    name: raw_route.name,
                    description: raw_route.description,
                    source,
                    exchange: exchange.unwrap_or_default(),
                },
                (None, _, None) => {
                    return Err(invalid(
                        "missing field `source` (or `external_account`)".into(),
                    ));
                }
                (_, _, Some(_)) => {
                    return Err(invalid(
                        "`external_account` replaces `source` and `exchange`; set only one".into(),
                    ));
                }
            };
            if route.name.is_empty()
                || !route
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(
                    "field `name` must be non-empty letters, digits, `-`, `_`, `.`".into(),
                ));
            }
            if routes.iter().any(|r: &RouteConfig| r.name == route.name) {
                return Err(invalid("field `name`: duplicate route name".into()));
            }
            validate_source(&route.source, "source").map_err(&invalid)?;
            resolve_paths(&mut route.source, base);
            let mut yields = route.source.yields().map_err(&invalid)?;
            for (i, ex) in route.exchange.iter().enumerate() {
                yields = validate_exchange(ex, yields)
                    .map_err(|m| invalid(format!("field `exchange[{i}]`: {m}")))?;
            }
            routes.push(route);
        }
        Ok(Config {
            path: path.to_owned(),
            endpoints: raw.endpoints,
            routes,
        })
    }

    /// A route by name.
    pub fn route(&self, name: &str) -> Result<&RouteConfig, ConfigError> {
        self.routes
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| ConfigError::NoSuchRoute {
                path: self.path.clone(),
                name: name.to_owned(),
                known: if self.routes.is_empty() {
                    "none".to_owned()
                } else {
                    self.routes
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }
}

fn validate_source(s: &SourceConfig, at: &str) -> Result<(), String> {
    s.yields()
        .map_err(|m| m.replace("source.", &format!("{at}.")))?;
    match s {
        SourceConfig::GceMetadata { format, .. } => {
            if let Some(f) = format
                && f != "full"
                && f != "standard"
            {
                return Err(format!(
                    "field `{at}.format` must be \"full\" or \"standard\", not {f:?}"
                ));
            }
        }
        SourceConfig::ServiceAccountKey { .. } | SourceConfig::OidcFile { .. } => {}
        SourceConfig::OidcUrl { url, .. } => {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(format!("field `{at}.url` must be an http(s) URL"));
            }
        }
        SourceConfig::Executable {
            command,
            timeout_millis,
            ..
        } => {
            if command.trim().is_empty() {
                return Err(format!("field `{at}.command` is empty"));
            }
            if let Some(t) = timeout_millis
                && !(5000..=120_000).contains(t)
            {
                return Err(format!("field `{at}.timeout_millis` must be 5000..=120000"));
            }
        }
        SourceConfig::Aws { provider, .. } => {
            if let Some(p) = provider
                && !["chain", "imds", "ecs", "env-or-imds"].contains(&p.as_str())
            {
                return Err(format!(
                    "field `{at}.provider` must be \"chain\", \"imds\", \"ecs\" or \"env-or-imds\", not {p:?}"
                ));
            }
        }
        SourceConfig::Spiffe {
            audience,
            spiffe_id,
            ..
        } => {
            if audience.is_empty() {
                return Err(format!("field `{at}.audience` is empty"));
            }
            if let Some(id) = spiffe_id
                && !id.starts_with("spiffe://")
            {
                return Err(format!("field `{at}.spiffe_id` must start with spiffe://"));
            }
        }
        SourceConfig::Impersonate {
            service_account,
            caller,
            lifetime_seconds,
            ..
        } => {
            if !service_account.contains('@')
                && !service_account.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(format!(
                    "field `{at}.service_account` must be an email or a numeric unique id"
                ));
            }
            if let Some(l) = lifetime_seconds
                && !(1..=43200).contains(l)
            {
                return Err(format!("field `{at}.lifetime_seconds` must be 1..=43200"));
            }
            if let Some(c) = caller {
                if c.yields() != Ok(Yields::AccessToken) {
                    return Err(format!(
                        "field `{at}.caller` must yield an access token (set `scopes`)"
                    ));
                }
                validate_source(c, &format!("{at}.caller"))?;
            }
        }
    }
    Ok(())
}

fn resolve_paths(s: &mut SourceConfig, base: Option<&Path>) {
    let Some(base) = base else { return };
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    match s {
        SourceConfig::ServiceAccountKey { key_file, .. } => fix(key_file),
        SourceConfig::OidcFile { path, .. } => fix(path),
        SourceConfig::Impersonate {
            caller: Some(c), ..
        } => resolve_paths(c, Some(base)),
        _ => {}
    }
}

fn validate_exchange(ex: &ExchangeConfig, input: Yields) -> Result<Yields, String> {
    match ex {
        ExchangeConfig::AwsSts {
            role_arn,
            session_name,
            duration_seconds,
            ..
        } => {
            if input != Yields::IdToken {
                return Err("aws-sts needs an ID token, but the previous hop yields an access token (set an audience)".into());
            }
            let parts: Vec<&str> = role_arn.split(':').collect();
            if parts.len() != 6
                || parts[0] != "arn"
                || parts[2] != "iam"
                || !parts[5].starts_with("role/")
            {
                return Err(format!(
                    "field `role_arn`: {role_arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
                ));
            }
            if let Some(n) = session_name
                && (n.len() < 2
                    || n.len() > 64
                    || !n
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)))
            {
                return Err(format!(
                    "field `session_name`: {n:?} must be 2–64 characters of [A-Za-z0-9_+=,.@-]"
                ));
            }
            if let Some(d) = duration_seconds
                && !(900..=43200).contains(d)
            {
                return Err(format!(
                    "field `duration_seconds`: {d} is outside 900..=43200"
                ));
            }
            Ok(Yields::AwsCredentials)
        }
        ExchangeConfig::GoogleSts {
            audience,
            subject_token_type,
            scopes,
            ..
        } => {
            if input == Yields::AccessToken {
                return Err("google-sts needs AWS credentials or an OIDC token, but the previous hop yields a Google access token".into());
            }
            let a = audience.strip_prefix("https:").unwrap_or(audience);
            if !a.starts_with("//iam.googleapis.com/")
                || !a.contains("/workloadIdentityPools/")
                || !a.contains("/providers/")
            {
                return Err(format!(
                    "field `audience`: {audience:?} is not a workload identity provider (//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER)"
                ));
            }
            if let Some(t) = subject_token_type
                && ![
                    "urn:ietf:params:oauth:token-type:jwt",
                    "urn:ietf:params:oauth:token-type:id_token",
                ]
                .contains(&t.as_str())
            {
                return Err(format!(
                    "field `subject_token_type`: {t:?} is not a JWT token type"
                ));
            }
            if scopes.as_ref().is_some_and(Vec::is_empty) {
                return Err("field `scopes` is empty".into());
            }
            Ok(Yields::AccessToken)
        }
        ExchangeConfig::Impersonate {
            service_account,
            audience,
            scopes,
            lifetime_seconds,
            ..
        } => {
            if input != Yields::AccessToken {
                return Err("impersonate needs a Google access token from the previous hop".into());
            }
            if !service_account.contains('@')
                && !service_account.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(
                    "field `service_account` must be an email or a numeric unique id".into(),
                );
            }
            if audience.is_some() && scopes.is_some() {
                return Err("set only one of `audience` and `scopes`".into());
            }
            if let Some(l) = lifetime_seconds
                && !(1..=43200).contains(l)
            {
                return Err("field `lifetime_seconds` must be 1..=43200".into());
            }
            Ok(if audience.is_some() {
                Yields::IdToken
            } else {
                Yields::AccessToken
            })
        }
    }
}

/// toml's message for text that does not parse, with its line and column but without the
/// excerpt of the file toml's `Display` adds: the offending line may hold an inline secret (an
/// `authorization_token`, a header value), and these messages reach terminals and logs.
pub fn toml_error_message(text: &str, e: &toml::de::Error) -> String {
    let at = match e.span() {
        Some(span) => {
            let line = line_of(text, span.start);
            let column = text.get(..span.start).map_or(1, |t| {
                t.rsplit('\n').next().unwrap_or(t).chars().count() + 1
            });
            format!(" at line {line}, column {column}")
        }
        None => String::new(),
    };
    format!(
        "TOML parse error{at}: {}",
        e.message().trim_end().replace('\n', "\n  ")
    )
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[route]]
name = "a"
source = { kind = "gce-metadata", audience = "x" }
exchange = [{ kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/r" }]
"#;

    #[test]
    fn parses_good() {
        let c = Config::parse(GOOD, "c.toml", None).unwrap();
        assert_eq!(c.routes.len(), 1);
        assert!(c.route("a").is_ok());
        let e = c.route("b").unwrap_err().to_string();
        assert!(e.contains("routes: a"), "{e}");
    }

    #[test]
    fn unknown_field_names_file_line_field() {
        let bad = GOOD.replace("audience = \"x\"", "audience = \"x\", colour = 1");
        let e = Config::parse(&bad, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("c.toml"), "{e}");
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn parse_errors_quote_no_line_of_the_file() {
        let bad = GOOD.replace(
            "audience = \"x\" }",
            "audience = \"x\" }\nsecret_line = \"inline-secret-value",
        );
        let e = Config::parse(&bad, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("line 5"), "{e}");
        assert!(!e.contains("inline-secret-value"), "{e}");
    }

    #[test]
    fn semantic_error_names_line_and_field() {
        let bad = GOOD.replace("role/r", "user/r");
        let e = Config::parse(&bad, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("c.toml, line 2"), "{e}");
        assert!(e.contains("role_arn"), "{e}");
        let bad = GOOD.replace("audience = \"x\"", "scopes = [\"s\"]");
        let e = Config::parse(&bad, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("needs an ID token"), "{e}");
        let bad = GOOD.replace(
            "kind = \"aws-sts\"",
            "kind = \"aws-sts\", duration_seconds = 60",
        );
        let e = Config::parse(&bad, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("duration_seconds"), "{e}");
    }

    #[test]
    fn debug_of_a_route_shows_no_header_values() {
        let text = "[[route]]\nname = \"u\"\nsource = { kind = \"oidc-url\", url = \"http://127.0.0.1:1/token\", headers = { Authorization = \"Bearer inline-secret-value\" } }\n";
        let c = Config::parse(text, "u.toml", None).unwrap();
        let printed = format!("{c:?} {:#?}", c.routes[0]);
        assert!(!printed.contains("inline-secret-value"), "{printed}");
        assert!(printed.contains("Authorization"), "{printed}");
        let SourceConfig::OidcUrl { headers, .. } = &c.routes[0].source else {
            panic!("not an oidc-url source");
        };
        assert_eq!(headers["Authorization"], "Bearer inline-secret-value");
    }

    #[test]
    fn second_route_line() {
        let two = format!(
            "{GOOD}\n[[route]]\nname = \"a\"\nsource = {{ kind = \"oidc-file\", path = \"t\" }}\n"
        );
        let e = Config::parse(&two, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("line 7"), "{e}");
        assert!(e.contains("duplicate"), "{e}");
    }
}
