//! The workload identity pool and provider schema: what a pool's provider declares (its kind,
//! issuer or account, mapping and condition), as the emulator's world file and
//! `explain --gcp-provider` write it, and the rules Google applies to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    AttributeCondition, AttributeMapping, ConditionError, MappingError, PoolName, ProviderKind,
    ProviderName,
};

/// A workload identity pool (`[[workload_identity_pool]]` of a world file).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIdentityPool {
    /// The project id (a `[[project]]`); its number goes into principal identifiers.
    pub project: String,
    /// Pool id: 4–32 characters of `[a-z0-9-]`, not starting with `gcp-`.
    pub id: String,
    /// A disabled pool exchanges nothing.
    #[serde(default)]
    pub disabled: bool,
    /// Its providers (`[[workload_identity_pool.provider]]`).
    #[serde(default, rename = "provider")]
    pub providers: Vec<WorkloadIdentityProvider>,
}

/// A provider of a workload identity pool.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIdentityProvider {
    /// Provider id: 4–32 characters of `[a-z0-9-]`, not starting with `gcp-`.
    pub id: String,
    /// A disabled provider exchanges nothing.
    #[serde(default)]
    pub disabled: bool,
    /// Set for an AWS provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsProviderConfig>,
    /// Set for an OIDC provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcProviderConfig>,
    /// Target → CEL expression; optional for AWS providers (Google's default), required for
    /// OIDC providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_mapping: Option<BTreeMap<String, String>>,
    /// A CEL condition over `assertion`, `google` and `attribute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_condition: Option<String>,
}

/// An AWS provider's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsProviderConfig {
    /// The 12-digit AWS account whose identities may exchange.
    pub account_id: String,
}

/// An OIDC provider's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// The issuer (`iss`), `https://…` (`http://` only for loopback hosts, a relaxation for
    /// local issuers).
    pub issuer_uri: String,
    /// Accepted `aud` values (at most 10, each at most 256 characters); empty means the
    /// provider's canonical name, with or without `https:`.
    #[serde(default)]
    pub allowed_audiences: Vec<String>,
    /// The issuer's JWK set, inline; otherwise the keys come from the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_json: Option<String>,
}

impl OidcProviderConfig {
    /// Whether a token's `iss` is this provider's issuer. Google compares them ignoring one
    /// trailing `/` on either side: Entra's v1 tokens carry `https://sts.windows.net/{tid}/`
    /// while Google's Azure guide writes the issuer URI without the slash.
    pub fn issuer_matches(&self, iss: &str) -> bool {
        let bare = |s: &str| s.strip_suffix('/').unwrap_or(s).to_owned();
        !iss.is_empty() && bare(iss) == bare(&self.issuer_uri)
    }
}

impl WorkloadIdentityProvider {
    /// AWS or OIDC.
    pub fn kind(&self) -> ProviderKind {
        if self.aws.is_some() {
            ProviderKind::Aws
        } else {
            ProviderKind::Oidc
        }
    }

    /// The attribute mapping in force (Google's AWS default when an AWS provider has none).
    pub fn mapping(&self) -> Result<AttributeMapping, MappingError> {
        let entries = self.attribute_mapping.clone().unwrap_or_default();
        AttributeMapping::parse(entries, self.kind())
    }

    /// The attribute condition, if any.
    pub fn condition(&self) -> Result<Option<AttributeCondition>, ConditionError> {
        self.attribute_condition
            .as_deref()
            .map(AttributeCondition::parse)
            .transpose()
    }

    /// Checks the provider as Google's IAM API does when it is created: its id, its AWS
    /// account or OIDC issuer and audiences, its mapping and condition. `check_jwks` judges an
    /// inline `oidc.jwks_json` (reading keys is the verifier's business, not this crate's).
    /// The message names the field (``field `oidc.issuer_uri`: …``).
    pub fn validate(&self, check_jwks: impl Fn(&str) -> Result<(), String>) -> Result<(), String> {
        if !valid_id(&self.id) {
            return Err("field `id`: provider ids are 4 to 32 characters of [a-z0-9-], not starting with gcp-".to_owned());
        }
        match (&self.aws, &self.oidc) {
            (Some(aws), None) => {
                if aws.account_id.len() != 12 || !aws.account_id.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(format!(
                        "field `aws.account_id`: {:?} is not a 12-digit AWS account id",
                        aws.account_id
                    ));
                }
            }
            (None, Some(oidc)) => {
                if !valid_issuer_uri(&oidc.issuer_uri) {
                    return Err(format!(
                        "field `oidc.issuer_uri`: {:?} must be an https:// URL",
                        oidc.issuer_uri
                    ));
                }
                if oidc.allowed_audiences.len() > 10 {
                    return Err(
                        "field `oidc.allowed_audiences`: at most 10 audiences are allowed"
                            .to_owned(),
                    );
                }
                if let Some(aud) = oidc
                    .allowed_audiences
                    .iter()
                    .find(|a| a.is_empty() || a.chars().count() > 256)
                {
                    return Err(format!(
                        "field `oidc.allowed_audiences`: {aud:?} must be 1 to 256 characters"
                    ));
                }
                if let Some(jwks) = &oidc.jwks_json
                    && let Err(e) = check_jwks(jwks)
                {
                    return Err(format!("field `oidc.jwks_json`: not a JWK set: {e}"));
                }
            }
            _ => return Err("set exactly one of `aws`, `oidc`".to_owned()),
        }
        self.mapping()
            .map_err(|e| format!("field `attribute_mapping`: {e}"))?;
        self.condition()
            .map_err(|e| format!("field `attribute_condition`: {e}"))?;
        Ok(())
    }
}

impl WorkloadIdentityPool {
    /// Checks the pool's id as Google's IAM API does (its providers are checked by
    /// [`WorkloadIdentityProvider::validate`]).
    pub fn validate_id(&self) -> Result<(), String> {
        if valid_id(&self.id) {
            Ok(())
        } else {
            Err(
                "field `id`: pool ids are 4 to 32 characters of [a-z0-9-], not starting with gcp-"
                    .to_owned(),
            )
        }
    }
}

/// A provider together with the pool it belongs to: what a token exchange is decided against
/// ([`super::federate`]).
#[derive(Debug, Clone)]
pub struct PoolProvider {
    /// The provider's resource name (pool, project number, provider id).
    pub name: ProviderName,
    /// Whether the pool is disabled.
    pub pool_disabled: bool,
    /// The provider as declared.
    pub provider: WorkloadIdentityProvider,
}

impl PoolProvider {
    /// `provider` of `pool`, whose project has number `project_number`.
    pub fn new(
        project_number: &str,
        pool: &WorkloadIdentityPool,
        provider: &WorkloadIdentityProvider,
    ) -> PoolProvider {
        PoolProvider {
            name: ProviderName {
                pool: PoolName {
                    project_number: project_number.to_owned(),
                    pool: pool.id.clone(),
                },
                provider: provider.id.clone(),
            },
            pool_disabled: pool.disabled,
            provider: provider.clone(),
        }
    }

    /// Whether neither the pool nor the provider is disabled.
    pub fn enabled(&self) -> bool {
        !self.pool_disabled && !self.provider.disabled
    }
}

/// Pool and provider ids: 4–32 characters of `[a-z0-9-]`, not starting with `gcp-`.
fn valid_id(id: &str) -> bool {
    (4..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with("gcp-")
}

/// An `https://` URL, or an `http://` one on a loopback host.
fn valid_issuer_uri(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")),
        _ => false,
    }
}
