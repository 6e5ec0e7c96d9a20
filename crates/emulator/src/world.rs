//! The declarative world file: what exists in the emulated clouds.
//!
//! A world is TOML (see `world/builtin.toml`, the built-in world, for every field):
//!
//! * `[[project]]` — `id`, `number`.
//! * `[[service_account]]` — `email`, `unique_id` (the 21-digit number Google puts in `sub` and
//!   `azp`), `project`, `token_creators` (IAM members holding
//!   `roles/iam.serviceAccountTokenCreator` on the account, e.g. `serviceAccount:x@p.iam…`),
//!   `[[service_account.keys]]` with `id` and `public_key_pem` or `public_key_file`.
//! * `[vm]` — the emulated GCE instance: `project`, `service_account`, `scopes`,
//!   `instance_id`, `instance_name`, `zone`.
//! * `[[aws_account]]` — `id`, `outbound_issuer`, `outbound_federation_enabled`
//!   ([`crate::aws_outbound`]); `[[aws_role]]` — `arn`, `max_session_duration` (3600–43200),
//!   `trust_policy` (IAM JSON, verbatim).
//! * `[[oidc_issuer]]` — `issuer` plus `jwks` (inline JSON), `jwks_file`, or
//!   `generate_key = true` (the emulator holds the key and can mint tokens for tests).
//! * `[lifetimes]` — `id_token_seconds`, `access_token_seconds`.
//! * `[ec2_instance]` — the emulated EC2 instance behind IMDSv2: `instance_id`, `role_arn`,
//!   `availability_zone`, optional `instance_type`, `ami_id`, `local_ipv4`
//!   ([`crate::aws_instance`]).
//! * `[[ecs_task]]` — a container credential endpoint: `path`, `role_arn`,
//!   `authorization_token` ([`crate::aws_instance`]).
//! * `[spiffe]` — the emulated SPIFFE Workload API: `trust_domain`, `jwt_issuer` (an
//!   `[[oidc_issuer]]` with `generate_key = true`), `svid_ttl_seconds`, `x509_svid_ttl_seconds`, and
//!   `[[spiffe.workload]]` with `spiffe_id` and an optional `uid` selector ([`crate::spiffe`]).
//! * `[[workload_identity_pool]]` — a Google workload identity pool: `project`, `id`,
//!   `disabled`, and `[[workload_identity_pool.provider]]` with `id`, `disabled`, `aws =
//!   { account_id }` or `oidc = { issuer_uri, allowed_audiences, jwks_json }`,
//!   `attribute_mapping`, `attribute_condition`; `[google_sts]` — `aws_sts_endpoint`
//!   ([`crate::google::sts`]). Service accounts' `workload_identity_users` grant federated
//!   principals `roles/iam.workloadIdentityUser`.
//! * `[roles_anywhere]` — IAM Roles Anywhere: `[[roles_anywhere.trust_anchor]]` (`arn`, CA
//!   bundle), `[[roles_anywhere.profile]]` (`arn`, `role_arns`, `duration_seconds`),
//!   `[[roles_anywhere.crl]]` ([`crate::roles_anywhere`]).
//! * `[kubernetes]` — the emulated cluster: `issuer` (an `[[oidc_issuer]]` with
//!   `generate_key = true`), `api_audiences`, `[[kubernetes.namespace]]`,
//!   `[[kubernetes.service_account]]`, `[[kubernetes.pod]]` (`namespace`, `name`,
//!   `service_account`, `pod_ip`, `node`, `host_network`, `phase`, `labels`, `annotations`,
//!   `uid`), `[[kubernetes.user]]` (`name`, `token`, `groups`) and `[[kubernetes.grant]]`
//!   (`user` or `group`, `verbs`, `resources`, `namespaces`) ([`crate::kubernetes`]).
//! * `[chaos]` — fault injection per listener: `seed` and `[[chaos.rule]]` ([`crate::chaos`]).
//!
//! Loading never panics: syntax errors and unknown fields name the file, line and field;
//! semantic errors (a VM whose account does not exist, a trust policy AWS would reject) name
//! the object.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::aws_instance::{Ec2Instance, EcsTask};
pub use crate::google::sts::{
    AwsProviderConfig, GoogleStsConfig, OidcProviderConfig, WorkloadIdentityPool,
    WorkloadIdentityProvider,
};
pub use crate::kubernetes::KubernetesConfig;
pub use crate::spiffe::{SpiffeConfig, SpiffeWorkload};

/// The built-in world's TOML.
pub const BUILTIN_TOML: &str = include_str!("../world/builtin.toml");
const BUILTIN_SEED004_PUB: &str = include_str!("../world/seed004-sa-key.pub.pem");

/// Why a world could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The file could not be read.
    #[error("cannot read world file {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax or schema error; the message carries line, column and field.
    #[error("world file {path}: {message}")]
    Parse {
        /// Path.
        path: String,
        /// toml's message (line, column, key).
        message: String,
    },
    /// A consistency error.
    #[error("world file {path}: {message}")]
    Invalid {
        /// Path.
        path: String,
        /// What is wrong, naming the object and field.
        message: String,
    },
}

/// A GCP project.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// Project id.
    pub id: String,
    /// Project number.
    pub number: String,
}

/// A user-managed service-account key (public half).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaKey {
    /// `private_key_id` of the key file; the assertion's `kid`.
    pub id: String,
    /// PEM public key or certificate.
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// Path to the PEM, relative to the world file.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
}

/// A service account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccount {
    /// Email.
    pub email: String,
    /// Numeric unique id (`sub`/`azp` of its ID tokens).
    pub unique_id: String,
    /// Project id.
    pub project: String,
    /// Members with `roles/iam.serviceAccountTokenCreator` on this account.
    #[serde(default)]
    pub token_creators: Vec<String>,
    /// Members with `roles/iam.workloadIdentityUser` on this account.
    #[serde(default)]
    pub workload_identity_users: Vec<String>,
    /// User-managed keys.
    #[serde(default)]
    pub keys: Vec<SaKey>,
}

/// The emulated GCE instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// Project id.
    pub project: String,
    /// Attached service account email.
    pub service_account: String,
    /// Scopes of the attached account.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Instance id.
    #[serde(default = "default_instance_id")]
    pub instance_id: String,
    /// Instance name.
    #[serde(default = "default_instance_name")]
    pub instance_name: String,
    /// Zone, e.g. `us-central1-b`.
    #[serde(default = "default_zone")]
    pub zone: String,
}

fn default_scopes() -> Vec<String> {
    vec![idbridge_wire::google::CLOUD_PLATFORM_SCOPE.to_owned()]
}
fn default_instance_id() -> String {
    "1000000000000000001".to_owned()
}
fn default_instance_name() -> String {
    "emulated-vm".to_owned()
}
fn default_zone() -> String {
    "us-central1-a".to_owned()
}

/// An AWS account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsAccount {
    /// 12-digit id.
    pub id: String,
    /// Outbound identity federation: the account's token issuer, an `[[oidc_issuer]]` with
    /// `generate_key = true` ([`crate::aws_outbound`]).
    #[serde(default)]
    pub outbound_issuer: Option<String>,
    /// Whether outbound identity federation starts enabled.
    #[serde(default)]
    pub outbound_federation_enabled: bool,
}

/// An IAM role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsRole {
    /// `arn:aws:iam::ACCOUNT:role/NAME` (paths allowed).
    pub arn: String,
    /// MaxSessionDuration, 3600–43200.
    #[serde(default = "default_max_session")]
    pub max_session_duration: u32,
    /// Trust policy JSON, verbatim.
    pub trust_policy: String,
}

fn default_max_session() -> u32 {
    3600
}

impl AwsRole {
    /// The account id in the ARN.
    pub fn account(&self) -> &str {
        self.arn.split(':').nth(4).unwrap_or_default()
    }

    /// The role name (last path segment).
    pub fn name(&self) -> &str {
        self.arn.rsplit('/').next().unwrap_or_default()
    }
}

/// An extra OIDC issuer trusted by the emulated clouds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuer {
    /// Issuer URL (`https://…`).
    pub issuer: String,
    /// Inline JWKS JSON.
    #[serde(default)]
    pub jwks: Option<String>,
    /// JWKS file, relative to the world file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Let the emulator generate and hold a key (it can then mint tokens for tests).
    #[serde(default)]
    pub generate_key: bool,
}

/// Token lifetimes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifetimes {
    /// Lifetime of Google-signed ID tokens.
    #[serde(default = "default_hour")]
    pub id_token_seconds: i64,
    /// Default lifetime of Google access tokens.
    #[serde(default = "default_hour")]
    pub access_token_seconds: i64,
}

fn default_hour() -> i64 {
    3600
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            id_token_seconds: 3600,
            access_token_seconds: 3600,
        }
    }
}

/// The whole world, as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct World {
    /// Lifetimes.
    #[serde(default)]
    pub lifetimes: Lifetimes,
    /// Projects.
    #[serde(default, rename = "project")]
    pub projects: Vec<Project>,
    /// Service accounts.
    #[serde(default, rename = "service_account")]
    pub service_accounts: Vec<ServiceAccount>,
    /// The VM.
    #[serde(default)]
    pub vm: Option<Vm>,
    /// AWS accounts.
    #[serde(default, rename = "aws_account")]
    pub aws_accounts: Vec<AwsAccount>,
    /// IAM roles.
    #[serde(default, rename = "aws_role")]
    pub aws_roles: Vec<AwsRole>,
    /// Extra OIDC issuers.
    #[serde(default, rename = "oidc_issuer")]
    pub oidc_issuers: Vec<OidcIssuer>,
    /// The emulated EC2 instance (IMDSv2).
    #[serde(default)]
    pub ec2_instance: Option<Ec2Instance>,
    /// ECS task credential endpoints.
    #[serde(default, rename = "ecs_task")]
    pub ecs_tasks: Vec<EcsTask>,
    /// The emulated SPIFFE Workload API.
    #[serde(default)]
    pub spiffe: Option<SpiffeConfig>,
    /// Workload identity pools and their providers (Google STS).
    #[serde(default, rename = "workload_identity_pool")]
    pub workload_identity_pools: Vec<WorkloadIdentityPool>,
    /// Google STS settings.
    #[serde(default)]
    pub google_sts: GoogleStsConfig,
    /// IAM Roles Anywhere trust anchors, profiles and CRLs.
    #[serde(default)]
    pub roles_anywhere: crate::roles_anywhere::RolesAnywhereConfig,
    /// The emulated Kubernetes cluster.
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
    /// Fault injection.
    #[serde(default)]
    pub chaos: crate::chaos::ChaosConfig,
    /// Resolved PEMs of SA keys, keyed by key id (filled by [`World::load`]).
    #[serde(skip)]
    pub resolved_sa_keys: BTreeMap<String, (String, String)>,
    /// Resolved JWKS documents of issuers, keyed by issuer (filled by [`World::load`]).
    #[serde(skip)]
    pub resolved_jwks: BTreeMap<String, String>,
}

impl World {
    /// The built-in world.
    pub fn builtin() -> Result<World, WorldError> {
        Self::from_str_at(BUILTIN_TOML, "<built-in world>", None)
    }

    /// Loads a world file.
    pub fn load(path: &Path) -> Result<World, WorldError> {
        let text =
            idbridge_core::file::read_config_file(path).map_err(|source| WorldError::Read {
                path: path.to_owned(),
                source,
            })?;
        Self::from_str_at(&text, &path.display().to_string(), path.parent())
    }

    /// Parses and validates world TOML; `base` resolves relative file references.
    pub fn from_str_at(text: &str, name: &str, base: Option<&Path>) -> Result<World, WorldError> {
        let mut world: World = toml::from_str(text).map_err(|e| WorldError::Parse {
            path: name.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        world.resolve(name, base)?;
        Ok(world)
    }

    fn resolve(&mut self, name: &str, base: Option<&Path>) -> Result<(), WorldError> {
        let invalid = |message: String| WorldError::Invalid {
            path: name.to_owned(),
            message,
        };
        let read = |p: &Path| -> Result<String, WorldError> {
            if base.is_none() && p == Path::new("seed004-sa-key.pub.pem") {
                return Ok(BUILTIN_SEED004_PUB.to_owned());
            }
            let full = base.map(|b| b.join(p)).unwrap_or_else(|| p.to_owned());
            idbridge_core::file::read_config_file(&full)
                .map_err(|source| WorldError::Read { path: full, source })
        };
        for (i, sa) in self.service_accounts.iter().enumerate() {
            if !self.projects.iter().any(|p| p.id == sa.project) {
                return Err(invalid(format!(
                    "service_account[{i}] ({}): field `project`: unknown project {:?}",
                    sa.email, sa.project
                )));
            }
            if sa.unique_id.is_empty() || !sa.unique_id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!(
                    "service_account[{i}] ({}): field `unique_id` must be a decimal number",
                    sa.email
                )));
            }
            for (j, key) in sa.keys.iter().enumerate() {
                let pem = match (&key.public_key_pem, &key.public_key_file) {
                    (Some(pem), None) => pem.clone(),
                    (None, Some(file)) => read(file)?,
                    _ => {
                        return Err(invalid(format!(
                            "service_account[{i}].keys[{j}]: set exactly one of `public_key_pem`, `public_key_file`"
                        )));
                    }
                };
                self.resolved_sa_keys
                    .insert(key.id.clone(), (sa.email.clone(), pem));
            }
        }
        if let Some(vm) = &self.vm {
            if self.service_account(&vm.service_account).is_none() {
                return Err(invalid(format!(
                    "vm: field `service_account`: unknown service account {:?}",
                    vm.service_account
                )));
            }
            if self.project(&vm.project).is_none() {
                return Err(invalid(format!(
                    "vm: field `project`: unknown project {:?}",
                    vm.project
                )));
            }
        }
        for (i, role) in self.aws_roles.iter().enumerate() {
            let parts: Vec<&str> = role.arn.split(':').collect();
            if parts.len() != 6
                || parts[0] != "arn"
                || parts[2] != "iam"
                || !parts[5].starts_with("role/")
            {
                return Err(invalid(format!(
                    "aws_role[{i}]: field `arn`: {:?} is not an IAM role ARN",
                    role.arn
                )));
            }
            if !(3600..=43200).contains(&role.max_session_duration) {
                return Err(invalid(format!(
                    "aws_role[{i}] ({}): field `max_session_duration` must be 3600..=43200",
                    role.arn
                )));
            }
            if let Err(e) = idbridge_policy::aws::TrustPolicy::parse(&role.trust_policy)
                .and_then(|p| p.validate_as_role_trust_policy())
            {
                return Err(invalid(format!(
                    "aws_role[{i}] ({}): field `trust_policy`: MalformedPolicyDocument: {e}",
                    role.arn
                )));
            }
        }
        for (i, iss) in self.oidc_issuers.iter().enumerate() {
            let sources = usize::from(iss.jwks.is_some())
                + usize::from(iss.jwks_file.is_some())
                + usize::from(iss.generate_key);
            if sources != 1 {
                return Err(invalid(format!(
                    "oidc_issuer[{i}] ({}): set exactly one of `jwks`, `jwks_file`, `generate_key`",
                    iss.issuer
                )));
            }
            if let Some(j) = &iss.jwks {
                self.resolved_jwks.insert(iss.issuer.clone(), j.clone());
            }
            if let Some(f) = &iss.jwks_file {
                self.resolved_jwks.insert(iss.issuer.clone(), read(f)?);
            }
        }
        crate::aws_instance::validate_world(self).map_err(invalid)?;
        crate::spiffe::validate_world(self).map_err(invalid)?;
        crate::google::sts::validate_world(self).map_err(invalid)?;
        crate::roles_anywhere::resolve_world(self, base).map_err(invalid)?;
        crate::aws_outbound::validate_world(self).map_err(invalid)?;
        crate::kubernetes::validate_world(self).map_err(invalid)?;
        self.chaos.validate().map_err(invalid)?;
        Ok(())
    }

    /// A service account by email or unique id.
    pub fn service_account(&self, email_or_id: &str) -> Option<&ServiceAccount> {
        self.service_accounts
            .iter()
            .find(|s| s.email == email_or_id || s.unique_id == email_or_id)
    }

    /// A project by id.
    pub fn project(&self, id: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }

    /// A role by ARN.
    pub fn role(&self, arn: &str) -> Option<&AwsRole> {
        self.aws_roles.iter().find(|r| r.arn == arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_loads() {
        let w = World::builtin().unwrap();
        assert!(w.vm.is_some());
        assert_eq!(w.resolved_sa_keys.len(), 1);
        assert!(
            w.role("arn:aws:iam::111122223333:role/google-cloud-myapp")
                .is_some()
        );
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let err = World::from_str_at(
            "[[project]]\nid = \"p\"\nnumber = \"1\"\ncolour = \"red\"\n",
            "w.toml",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("w.toml"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn malformed_trust_policy_is_named() {
        let err = World::from_str_at(
            "[[aws_role]]\narn = \"arn:aws:iam::1:role/r\"\ntrust_policy = \"{\"\n",
            "w.toml",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("trust_policy"), "{err}");
    }
}
