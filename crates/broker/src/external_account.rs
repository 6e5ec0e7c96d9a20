//! Google `external_account` credential files (AIP-4117), the JSON that
//! `gcloud iam workload-identity-pools create-cred-config` writes, as routes.
//!
//! A file maps onto a source and exchanges:
//!
//! | `credential_source` | source |
//! |---|---|
//! | `environment_id: aws1` (+ `url`, `region_url`, `imdsv2_session_token_url`) | `aws` with `provider = "env-or-imds"` (environment credentials first, as Google's libraries do) |
//! | `file` (+ `format.type = json`, `subject_token_field_name`) | `oidc-file` |
//! | `url` (+ `headers`, `format`) | `oidc-url` |
//! | `executable.command` (+ `timeout_millis`, `output_file`) | `executable` |
//!
//! then `google-sts` with the file's `audience`, `subject_token_type` and `token_url`, then,
//! when `service_account_impersonation_url` is set, `impersonate` of that account (with
//! `service_account_impersonation.token_lifetime_seconds`). URLs equal to Google's defaults are
//! left unset so that endpoint overrides (`IDBRIDGE_GOOGLE_STS_URL`, …) apply.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::RequestHeaders;
use crate::step::{KindError, Registry, Step};

/// The source a credential file stands for, as a route would write it. It becomes a step
/// through the same kind parsers as a config file's table ([`SourceConfig::to_step`]), so
/// the kinds' checks and defaults apply unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SourceConfig {
    /// `aws` ([`crate::source::aws`]).
    Aws {
        /// Provider.
        #[serde(skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
        /// Named profile.
        #[serde(skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
        /// Region.
        #[serde(skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// IMDS endpoint.
        #[serde(skip_serializing_if = "Option::is_none")]
        imds_endpoint: Option<String>,
    },
    /// `oidc-file` ([`crate::source::oidc_file`]).
    OidcFile {
        /// Path.
        path: PathBuf,
        /// JSON field holding the token.
        #[serde(skip_serializing_if = "Option::is_none")]
        json_field: Option<String>,
    },
    /// `oidc-url` ([`crate::source::oidc_url`]).
    OidcUrl {
        /// URL.
        url: String,
        /// Extra request headers.
        headers: RequestHeaders,
        /// JSON field holding the token.
        #[serde(skip_serializing_if = "Option::is_none")]
        json_field: Option<String>,
    },
    /// `executable` ([`crate::source::executable`]).
    Executable {
        /// Command line.
        command: String,
        /// Time limit.
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_millis: Option<u64>,
        /// Cached response file.
        #[serde(skip_serializing_if = "Option::is_none")]
        output_file: Option<PathBuf>,
        /// Audience passed to the program.
        #[serde(skip_serializing_if = "Option::is_none")]
        audience: Option<String>,
        /// Token type passed to the program.
        #[serde(skip_serializing_if = "Option::is_none")]
        token_type: Option<String>,
    },
}

/// An exchange a credential file stands for, as a route would write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ExchangeConfig {
    /// `google-sts` ([`crate::exchange::google_sts`]).
    GoogleSts {
        /// The provider.
        audience: String,
        /// Scopes.
        #[serde(skip_serializing_if = "Option::is_none")]
        scopes: Option<Vec<String>>,
        /// Token URL.
        #[serde(skip_serializing_if = "Option::is_none")]
        token_url: Option<String>,
        /// Subject token type for OIDC subjects.
        #[serde(skip_serializing_if = "Option::is_none")]
        subject_token_type: Option<String>,
        /// Region for AWS subjects.
        #[serde(skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    /// `impersonate` ([`crate::exchange::iam_credentials`]).
    Impersonate {
        /// Target service account.
        service_account: String,
        /// ID-token audience.
        #[serde(skip_serializing_if = "Option::is_none")]
        audience: Option<String>,
        /// Access-token scopes.
        #[serde(skip_serializing_if = "Option::is_none")]
        scopes: Option<Vec<String>>,
        /// Delegation chain.
        delegates: Vec<String>,
        /// Put `email` in ID tokens.
        include_email: bool,
        /// Access-token lifetime.
        #[serde(skip_serializing_if = "Option::is_none")]
        lifetime_seconds: Option<u32>,
        /// IAM Credentials base URL.
        #[serde(skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
}

/// `value` as the TOML table a route would hold.
fn table<T: Serialize>(value: &T) -> Result<toml::Value, KindError> {
    toml::Value::try_from(value).map_err(|e| KindError::Shape(e.to_string()))
}

impl SourceConfig {
    /// The step, read by its kind's parser (`base`: where relative paths resolve).
    pub fn to_step(
        &self,
        registry: &Registry,
        base: Option<&Path>,
    ) -> Result<Box<dyn Step>, KindError> {
        registry.source(table(self)?, "source", base)
    }
}

impl ExchangeConfig {
    /// The step, read by its kind's parser.
    pub fn to_step(
        &self,
        registry: &Registry,
        base: Option<&Path>,
    ) -> Result<Box<dyn Step>, KindError> {
        registry.exchange(table(self)?, base)
    }
}

/// The file, as Google writes it. Its `Debug` leaves out the values of
/// `credential_source.headers` (a URL source's headers may carry a credential).
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ExternalAccount {
    /// Always `external_account`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The provider resource name.
    pub audience: String,
    /// Subject token type.
    pub subject_token_type: String,
    /// STS token URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// `…/serviceAccounts/EMAIL:generateAccessToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_impersonation_url: Option<String>,
    /// `{"token_lifetime_seconds": N}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_impersonation: Option<serde_json::Value>,
    /// Where the subject token comes from.
    pub credential_source: serde_json::Value,
    /// Universe domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub universe_domain: Option<String>,
}

impl std::fmt::Debug for ExternalAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut source = self.credential_source.clone();
        if let Some(headers) = source
            .get_mut("headers")
            .and_then(serde_json::Value::as_object_mut)
        {
            for v in headers.values_mut() {
                *v = serde_json::Value::from("** redacted **");
            }
        }
        f.debug_struct("ExternalAccount")
            .field("kind", &self.kind)
            .field("audience", &self.audience)
            .field("subject_token_type", &self.subject_token_type)
            .field("token_url", &self.token_url)
            .field(
                "service_account_impersonation_url",
                &self.service_account_impersonation_url,
            )
            .field(
                "service_account_impersonation",
                &self.service_account_impersonation,
            )
            .field("credential_source", &source)
            .field("universe_domain", &self.universe_domain)
            .finish()
    }
}

const DEFAULT_STS: &str = "https://sts.googleapis.com/v1/token";
const DEFAULT_IAMCREDENTIALS: &str = "https://iamcredentials.googleapis.com";

fn json_field(src: &serde_json::Value) -> Option<String> {
    let f = src.get("format")?;
    (f.get("type")?.as_str()? == "json").then(|| {
        f.get("subject_token_field_name")
            .and_then(|v| v.as_str())
            .unwrap_or("access_token")
            .to_owned()
    })
}

/// Reads a file into (source, exchanges).
pub fn load(path: &Path) -> Result<(SourceConfig, Vec<ExchangeConfig>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let ea: ExternalAccount =
        serde_json::from_str(&text).map_err(|e| format!("not an external_account file: {e}"))?;
    to_route(&ea)
}

/// Maps a parsed file onto a source and exchanges.
pub fn to_route(ea: &ExternalAccount) -> Result<(SourceConfig, Vec<ExchangeConfig>), String> {
    if ea.kind != "external_account" {
        return Err(format!(
            "field `type` is {:?}, expected \"external_account\"",
            ea.kind
        ));
    }
    let src = &ea.credential_source;
    let s = |k: &str| src.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let (source, region) = if let Some(env_id) = s("environment_id") {
        if !env_id.starts_with("aws") {
            return Err(format!(
                "credential_source.environment_id {env_id:?} is not supported (aws1 is)"
            ));
        }
        let imds_endpoint = s("url").and_then(|u| url::Url::parse(&u).ok()).map(|u| {
            let host = u.host_str().unwrap_or_default().to_owned();
            match u.port() {
                Some(p) => format!("{}://{host}:{p}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        });
        // The region of the signed request comes from AWS_REGION/AWS_DEFAULT_REGION at run time.
        (
            SourceConfig::Aws {
                provider: Some("env-or-imds".into()),
                profile: None,
                region: None,
                imds_endpoint,
            },
            None,
        )
    } else if let Some(file) = s("file") {
        (
            SourceConfig::OidcFile {
                path: file.into(),
                json_field: json_field(src),
            },
            None,
        )
    } else if let Some(url) = s("url") {
        let headers = src
            .get("headers")
            .and_then(|h| h.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        (
            SourceConfig::OidcUrl {
                url,
                headers,
                json_field: json_field(src),
            },
            None,
        )
    } else if let Some(exe) = src.get("executable") {
        let command = exe
            .get("command")
            .and_then(|v| v.as_str())
            .ok_or("credential_source.executable.command is missing")?;
        (
            SourceConfig::Executable {
                command: command.to_owned(),
                timeout_millis: exe
                    .get("timeout_millis")
                    .and_then(serde_json::Value::as_u64),
                output_file: exe
                    .get("output_file")
                    .and_then(|v| v.as_str())
                    .map(Into::into),
                audience: Some(ea.audience.clone()),
                token_type: Some(ea.subject_token_type.clone()),
            },
            None,
        )
    } else {
        return Err("credential_source has none of environment_id, file, url, executable".into());
    };
    let jwt_type = (ea.subject_token_type != "urn:ietf:params:aws:token-type:aws4_request")
        .then(|| ea.subject_token_type.clone());
    let mut exchanges = vec![ExchangeConfig::GoogleSts {
        audience: ea.audience.clone(),
        scopes: None,
        token_url: ea.token_url.clone().filter(|u| u != DEFAULT_STS),
        subject_token_type: jwt_type,
        region,
    }];
    if let Some(url) = &ea.service_account_impersonation_url {
        let (base, rest) = url
            .split_once("/v1/projects/-/serviceAccounts/")
            .ok_or_else(|| {
                format!("service_account_impersonation_url {url:?} is not an IAM Credentials URL")
            })?;
        let email = rest.strip_suffix(":generateAccessToken").ok_or_else(|| {
            format!(
                "service_account_impersonation_url {url:?} does not end in :generateAccessToken"
            )
        })?;
        let lifetime = ea
            .service_account_impersonation
            .as_ref()
            .and_then(|v| v.get("token_lifetime_seconds"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u32::try_from(v).ok());
        exchanges.push(ExchangeConfig::Impersonate {
            service_account: percent_encoding::percent_decode_str(email)
                .decode_utf8_lossy()
                .into_owned(),
            audience: None,
            scopes: None,
            delegates: Vec::new(),
            include_email: true,
            lifetime_seconds: lifetime,
            endpoint: (base != DEFAULT_IAMCREDENTIALS).then(|| base.to_owned()),
        });
    }
    Ok((source, exchanges))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ea(source: serde_json::Value, sat: &str, imp: Option<&str>) -> ExternalAccount {
        serde_json::from_value(serde_json::json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/aws-pool/providers/aws-test-account",
            "subject_token_type": sat,
            "token_url": "https://sts.googleapis.com/v1/token",
            "service_account_impersonation_url": imp,
            "service_account_impersonation": {"token_lifetime_seconds": 1200},
            "credential_source": source,
        }))
        .unwrap()
    }

    #[test]
    fn aws_source_with_impersonation() {
        let (src, ex) = to_route(&ea(
            serde_json::json!({
                "environment_id": "aws1",
                "region_url": "http://127.0.0.1:9/latest/meta-data/placement/availability-zone",
                "url": "http://127.0.0.1:9/latest/meta-data/iam/security-credentials",
                "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
                "imdsv2_session_token_url": "http://127.0.0.1:9/latest/api/token"
            }),
            "urn:ietf:params:aws:token-type:aws4_request",
            Some("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa%40p.iam.gserviceaccount.com:generateAccessToken"),
        ))
        .unwrap();
        assert!(
            matches!(src, SourceConfig::Aws { ref provider, ref imds_endpoint, .. } if provider.as_deref() == Some("env-or-imds") && imds_endpoint.as_deref() == Some("http://127.0.0.1:9")),
            "{src:?}"
        );
        assert!(
            matches!(
                &ex[0],
                ExchangeConfig::GoogleSts {
                    token_url: None,
                    subject_token_type: None,
                    ..
                }
            ),
            "{ex:?}"
        );
        assert!(
            matches!(&ex[1], ExchangeConfig::Impersonate { service_account, lifetime_seconds: Some(1200), endpoint: None, .. } if service_account == "sa@p.iam.gserviceaccount.com"),
            "{ex:?}"
        );
    }

    #[test]
    fn debug_leaves_out_url_source_header_values() {
        let jwt = "urn:ietf:params:oauth:token-type:jwt";
        let file = ea(
            serde_json::json!({"url": "http://127.0.0.1:1/token", "headers": {"Authorization": "Bearer header-secret"}}),
            jwt,
            None,
        );
        let (src, _) = to_route(&file).unwrap();
        let printed = format!("{file:?} {src:?}");
        assert!(!printed.contains("header-secret"), "{printed}");
        assert!(printed.contains("Authorization"), "{printed}");
        assert_eq!(
            file.credential_source["headers"]["Authorization"],
            "Bearer header-secret"
        );
    }

    #[test]
    fn file_url_and_executable_sources() {
        let jwt = "urn:ietf:params:oauth:token-type:jwt";
        let (src, ex) = to_route(&ea(serde_json::json!({"file": "/var/run/token", "format": {"type": "json", "subject_token_field_name": "id_token"}}), jwt, None)).unwrap();
        assert_eq!(
            src,
            SourceConfig::OidcFile {
                path: "/var/run/token".into(),
                json_field: Some("id_token".into())
            }
        );
        assert_eq!(ex.len(), 1);
        assert!(
            matches!(&ex[0], ExchangeConfig::GoogleSts { subject_token_type: Some(t), .. } if t == jwt)
        );
        let (src, _) = to_route(&ea(
            serde_json::json!({"url": "http://127.0.0.1:1/token", "headers": {"Metadata": "True"}}),
            jwt,
            None,
        ))
        .unwrap();
        assert!(
            matches!(src, SourceConfig::OidcUrl { ref headers, json_field: None, .. } if headers["Metadata"] == "True")
        );
        let (src, _) = to_route(&ea(
            serde_json::json!({"executable": {"command": "/bin/tok --x", "timeout_millis": 5000}}),
            jwt,
            None,
        ))
        .unwrap();
        assert!(
            matches!(src, SourceConfig::Executable { ref command, timeout_millis: Some(5000), .. } if command == "/bin/tok --x")
        );
        let err = to_route(&ea(serde_json::json!({"nothing": 1}), jwt, None)).unwrap_err();
        assert!(err.contains("credential_source"), "{err}");
        let err = to_route(&ea(
            serde_json::json!({"file": "/t"}),
            jwt,
            Some("https://example.com/x"),
        ))
        .unwrap_err();
        assert!(err.contains("IAM Credentials"), "{err}");
    }
}
