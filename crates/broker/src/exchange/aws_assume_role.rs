//! Exchange `aws-assume-role`: AWS credentials → AWS credentials, by `sts:AssumeRole` through
//! `aws-sdk-sts` (role chaining).
//!
//! The call is signed with the previous step's credentials, so the target role's trust policy
//! names the first role (its `arn:aws:iam::…:role/…` or the assumed-role session). AWS limits
//! a session obtained by role chaining to one hour: a route whose previous step assumes a role
//! and that asks for more is refused when the config is read (field `duration_seconds`), and
//! AWS's own `ValidationError` is what a caller gets otherwise. Endpoint, timeouts and error
//! classification are the `aws-sts` exchange's ([`super::aws_sts`]).

use std::collections::BTreeMap;

use aws_sdk_sts::types::Tag;
use idbridge_core::{AwsCredentials, Credential};
use serde::Deserialize;
use tokio::time::Instant;

use super::aws_sts::{DEFAULT_REGION, map_sdk_error, sts_client};
use crate::step::{
    AssumeRoleFacts, AwsRole, Facts, Input, KindError, Parse, Step, StepFuture, Yields,
};
use crate::values::{RoleArn, SessionName};
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport, Overrides};

/// The hop (the same STS endpoint as `aws-sts`).
pub const HOP: Hop = super::aws_sts::HOP;

/// The longest session AWS grants to a role assumed with another role's credentials.
pub const CHAINED_MAX_SECONDS: u32 = 3600;

/// `exchange = [{ kind = "aws-assume-role", … }]`: `role_arn`, `external_id`, `session_name`
/// (default `idbridge-<route>`), `source_identity`, `tags` (a table of session tags),
/// `transitive_tag_keys`, `duration_seconds` (900–43200; at most 3600 after another role),
/// `policy`, `region` (default: the previous step's, else `us-east-1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsAssumeRole {
    role_arn: RoleArn,
    external_id: Option<String>,
    session_name: Option<SessionName>,
    source_identity: Option<String>,
    tags: BTreeMap<String, String>,
    transitive_tag_keys: Vec<String>,
    duration_seconds: Option<u32>,
    policy: Option<String>,
    region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    role_arn: String,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    session_name: Option<String>,
    #[serde(default)]
    source_identity: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    transitive_tag_keys: Vec<String>,
    #[serde(default, alias = "duration")]
    duration_seconds: Option<u32>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

impl AwsAssumeRole {
    /// Reads `{ kind = "aws-assume-role", … }` in `exchange`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Raw = p.table(table)?;
        let invalid =
            |field: &str, m: String| KindError::Invalid(format!("field `{}`: {m}", p.field(field)));
        let (role_arn, session_name) = super::role_fields(
            &invalid,
            &raw.role_arn,
            raw.session_name.as_deref(),
            raw.duration_seconds,
        )?;
        if let Some(id) = &raw.external_id
            && !(2..=1224).contains(&id.len())
        {
            return Err(invalid(
                "external_id",
                "must be 2 to 1224 characters".to_owned(),
            ));
        }
        if let Some(s) = &raw.source_identity
            && (!(2..=64).contains(&s.len())
                || s.starts_with("aws:")
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)))
        {
            return Err(invalid(
                "source_identity",
                format!("{s:?} must be 2 to 64 of [A-Za-z0-9_+=,.@-], not starting with `aws:`"),
            ));
        }
        if raw.tags.len() > 50 {
            return Err(invalid("tags", "at most 50 session tags".to_owned()));
        }
        if let Some(k) = raw
            .transitive_tag_keys
            .iter()
            .find(|k| !raw.tags.contains_key(*k))
        {
            return Err(invalid(
                "transitive_tag_keys",
                format!("{k:?} is not one of `tags`"),
            ));
        }
        Ok(Box::new(AwsAssumeRole {
            role_arn,
            external_id: raw.external_id,
            session_name,
            source_identity: raw.source_identity,
            tags: raw.tags,
            transitive_tag_keys: raw.transitive_tag_keys,
            duration_seconds: raw.duration_seconds,
            policy: raw.policy,
            region: raw.region,
        }))
    }

    async fn assume(
        &self,
        input: Input<'_>,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let Some(Credential::Aws(caller)) = input.credential else {
            return Err(BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                "needs AWS credentials from the previous hop",
            ));
        };
        let session_name = match &self.session_name {
            Some(n) => n.clone(),
            None => SessionName::derived(&format!("idbridge-{}", input.route)),
        };
        let region = self
            .region
            .as_deref()
            .or(input.region)
            .unwrap_or(DEFAULT_REGION);
        let started = Instant::now();
        let (client, endpoint) = sts_client(ctx, region, Some(caller));
        let tags = self
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BrokerError::new(ErrorKind::InvalidConfiguration, HOP, e.to_string()))?;
        let out = client
            .assume_role()
            .role_arn(self.role_arn.as_str())
            .role_session_name(session_name.as_str())
            .set_external_id(self.external_id.clone())
            .set_source_identity(self.source_identity.clone())
            .set_tags((!tags.is_empty()).then_some(tags))
            .set_transitive_tag_keys(
                (!self.transitive_tag_keys.is_empty()).then(|| self.transitive_tag_keys.clone()),
            )
            .set_duration_seconds(self.duration_seconds.map(|d| d as i32))
            .set_policy(self.policy.clone())
            .send()
            .await
            .map_err(|e| map_sdk_error(ctx, &endpoint, e))?;
        let creds = out
            .credentials()
            .ok_or_else(|| BrokerError::unparsable(HOP, "the response has no Credentials"))?;
        let expiration = time::OffsetDateTime::from_unix_timestamp(creds.expiration().secs()).ok();
        let arn = out.assumed_role_user().map(|u| u.arn().to_owned());
        hops.push(HopReport::new(
            HOP,
            endpoint,
            format!(
                "AWS session: {}",
                arn.as_deref().unwrap_or(self.role_arn.as_str())
            ),
            expiration,
            started,
        ));
        Ok(Credential::Aws(AwsCredentials {
            access_key_id: creds.access_key_id().to_owned(),
            secret_access_key: creds.secret_access_key().into(),
            session_token: Some(creds.session_token().into()),
            expiration,
            account_id: Some(self.role_arn.account().to_owned()),
            arn,
        }))
    }
}

impl Step for AwsAssumeRole {
    fn kind(&self) -> &'static str {
        "aws-assume-role"
    }

    fn takes(&self) -> &'static [Yields] {
        &[Yields::AwsCredentials]
    }

    fn follows(&self, previous: &dyn Step) -> Result<(), String> {
        match self.duration_seconds {
            Some(d) if d > CHAINED_MAX_SECONDS && previous.facts().aws_role.is_some() => {
                Err(format!(
                    "`duration_seconds` = {d} exceeds the 1 hour ({CHAINED_MAX_SECONDS} s) \
                     limit AWS sets for a role assumed by role chaining (the previous hop \
                     assumes {})",
                    previous.describe()
                ))
            }
            _ => Ok(()),
        }
    }

    fn yields(&self) -> Yields {
        Yields::AwsCredentials
    }

    fn describe(&self) -> String {
        format!("role {} (chained)", self.role_arn)
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            aws_role: Some(AwsRole {
                arn: &self.role_arn,
                session_name: self.session_name.as_deref(),
                duration_seconds: self.duration_seconds,
                region: self.region.as_deref(),
            }),
            assume_role: Some(AssumeRoleFacts {
                external_id: self.external_id.as_deref(),
                source_identity: self.source_identity.as_deref(),
                tags: &self.tags,
                transitive_tag_keys: &self.transitive_tag_keys,
            }),
            ..Facts::default()
        }
    }

    fn with_overrides(&self, _overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        Some(Err(
            "its last hop yields AWS credentials; audience/scopes do not apply".to_owned(),
        ))
    }

    fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    fn run<'a>(
        &'a self,
        input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(self.assume(input, ctx, hops))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const GCP_TO_ROLE: &str = r#"
[[route]]
name = "r"
source = { kind = "gce-metadata", audience = "https://psoxy.example/aws" }
exchange = [
  { kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/psoxy-tenant-access" },
  { kind = "aws-assume-role", role_arn = "arn:aws:iam::111122223333:role/chained-reader", external_id = "tenant-7", DURATION },
]
"#;

    #[test]
    fn a_chained_session_over_an_hour_is_a_config_error() {
        let text = GCP_TO_ROLE.replace("DURATION", "duration_seconds = 7200");
        let e = Config::parse(&text, "c.toml", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml, line"), "{e}");
        assert!(e.contains("`exchange[1]`"), "{e}");
        assert!(e.contains("`duration_seconds`"), "{e}");
        assert!(e.contains("role chaining"), "{e}");
        let ok = GCP_TO_ROLE.replace("DURATION", "duration_seconds = 3600");
        Config::parse(&ok, "c.toml", None).unwrap();
    }

    #[test]
    fn transitive_keys_must_be_tags() {
        let text = GCP_TO_ROLE.replace(
            "DURATION",
            r#"tags = { team = "a" }, transitive_tag_keys = ["project"]"#,
        );
        let e = Config::parse(&text, "c.toml", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`transitive_tag_keys`"), "{e}");
    }

    #[test]
    fn needs_aws_credentials() {
        let text = r#"
[[route]]
name = "r"
source = { kind = "gce-metadata", audience = "a" }
exchange = [{ kind = "aws-assume-role", role_arn = "arn:aws:iam::111122223333:role/x" }]
"#;
        let e = Config::parse(text, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("aws-assume-role needs AWS credentials"), "{e}");
    }
}
