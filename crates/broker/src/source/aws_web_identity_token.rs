//! Source `aws-web-identity-token`: a JWT minted by AWS for the caller's role
//! (`sts:GetWebIdentityToken`, AWS outbound identity federation), through `aws-sdk-sts`.
//!
//! The caller is `caller`, a source yielding AWS credentials (by default the `aws` source with
//! aws-config's chain). Its credentials sign the call; the token is an OIDC ID token of the
//! account's issuer, which a Google workload identity OIDC provider or an Entra federated
//! credential accepts — AWS → elsewhere without a signed GetCallerIdentity. The account's
//! switch (`iam:EnableOutboundWebIdentityFederation`) must be on; otherwise AWS answers
//! `OutboundWebIdentityFederationDisabledException`. Endpoint, timeouts and error
//! classification are the `aws-sts` exchange's ([`crate::exchange::aws_sts`]).

use std::collections::BTreeMap;

use aws_sdk_sts::types::Tag;
use idbridge_core::Credential;
use serde::Deserialize;
use tokio::time::Instant;

use crate::exchange::aws_sts::{DEFAULT_REGION, HOP, map_sdk_error, sts_client};
use crate::step::{AwsOutboundFacts, Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::token::id_token_hop;
use crate::{BrokerError, Context, ErrorKind, HopReport};

/// The signing algorithms AWS offers.
const ALGORITHMS: [&str; 2] = ["RS256", "ES384"];

/// `source = { kind = "aws-web-identity-token", … }`: `audience` (one string or a list),
/// `signing_algorithm` (`RS256`, default, or `ES384`), `duration_seconds` (60–3600), `tags`
/// (a table of request tags), `region` (default: the caller's, else `us-east-1`), `caller`
/// (a source yielding AWS credentials; default `{ kind = "aws" }`).
#[derive(Debug, Clone)]
pub struct AwsWebIdentityToken {
    caller: Box<dyn Step>,
    audience: Vec<String>,
    signing_algorithm: String,
    duration_seconds: Option<u32>,
    tags: BTreeMap<String, String>,
    region: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    audience: Audience,
    #[serde(default)]
    signing_algorithm: Option<String>,
    #[serde(default)]
    duration_seconds: Option<u32>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    caller: Option<toml::Value>,
}

impl AwsWebIdentityToken {
    /// Reads `source = { kind = "aws-web-identity-token", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Raw = p.table(table)?;
        let audience = match raw.audience {
            Audience::One(a) => vec![a],
            Audience::Many(a) => a,
        };
        if audience.is_empty() || audience.len() > 10 || audience.iter().any(String::is_empty) {
            return Err(p.invalid("audience", "must be 1 to 10 non-empty audiences"));
        }
        let signing_algorithm = raw.signing_algorithm.unwrap_or_else(|| "RS256".to_owned());
        if !ALGORITHMS.contains(&signing_algorithm.as_str()) {
            return Err(p.invalid(
                "signing_algorithm",
                format!("{signing_algorithm:?} is not RS256 or ES384"),
            ));
        }
        if let Some(d) = raw.duration_seconds
            && !(60..=3600).contains(&d)
        {
            return Err(p.invalid("duration_seconds", format!("{d} is outside 60..=3600")));
        }
        let at = p.field("caller");
        let caller = match raw.caller {
            Some(table) => p.registry.source(table, &at, p.base)?,
            None => {
                let mut t = toml::Table::new();
                t.insert("kind".into(), "aws".into());
                p.registry.source(toml::Value::Table(t), &at, p.base)?
            }
        };
        if caller.yields() != Yields::AwsCredentials {
            return Err(p.invalid("caller", "must yield AWS credentials"));
        }
        Ok(Box::new(AwsWebIdentityToken {
            caller,
            audience,
            signing_algorithm,
            duration_seconds: raw.duration_seconds,
            tags: raw.tags,
            region: raw.region,
        }))
    }

    async fn fetch(
        &self,
        input: Input<'_>,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let caller = self.caller.run(input, ctx, hops).await?;
        let Credential::Aws(caller_creds) = &caller else {
            return Err(BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                "the caller source must yield AWS credentials",
            ));
        };
        let region = self
            .region
            .as_deref()
            .or(self.caller.region())
            .unwrap_or(DEFAULT_REGION);
        let started = Instant::now();
        let (client, endpoint) = sts_client(ctx, region, Some(caller_creds));
        let tags = self
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BrokerError::new(ErrorKind::InvalidConfiguration, HOP, e.to_string()))?;
        let out = client
            .get_web_identity_token()
            .set_audience(Some(self.audience.clone()))
            .signing_algorithm(&self.signing_algorithm)
            .set_duration_seconds(self.duration_seconds.map(|d| d as i32))
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(|e| map_sdk_error(ctx, &endpoint, e))?;
        let jwt = out
            .web_identity_token()
            .ok_or_else(|| BrokerError::unparsable(HOP, "the response has no WebIdentityToken"))?;
        id_token_hop(
            HOP,
            jwt,
            endpoint,
            |_| "AWS web identity token".to_owned(),
            started,
            hops,
        )
    }
}

impl Step for AwsWebIdentityToken {
    fn kind(&self) -> &'static str {
        "aws-web-identity-token"
    }

    fn yields(&self) -> Yields {
        Yields::IdToken
    }

    fn describe(&self) -> String {
        format!(
            "AWS web identity token for {} ({}), as {}",
            self.audience.join(", "),
            self.signing_algorithm,
            self.caller.describe()
        )
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            audience: self.audience.first().map(String::as_str),
            caller: Some(self.caller.as_ref()),
            region: self.region.as_deref(),
            aws_outbound: Some(AwsOutboundFacts {
                audience: &self.audience,
                signing_algorithm: &self.signing_algorithm,
            }),
            ..Facts::default()
        }
    }

    fn run<'a>(
        &'a self,
        input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(self.fetch(input, ctx, hops))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(source: &str) -> Result<(), String> {
        let text = format!(
            "[[route]]\nname = \"r\"\nsource = {source}\nexchange = [{{ kind = \"google-sts\", audience = \"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q\", subject_token_type = \"urn:ietf:params:oauth:token-type:jwt\" }}]\n"
        );
        Config::parse(&text, "c.toml", None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_and_checks_its_fields() {
        parse(r#"{ kind = "aws-web-identity-token", audience = "a" }"#).unwrap();
        parse(r#"{ kind = "aws-web-identity-token", audience = ["a", "b"], signing_algorithm = "ES384", caller = { kind = "aws", provider = "imds" } }"#).unwrap();
        let e = parse(
            r#"{ kind = "aws-web-identity-token", audience = "a", signing_algorithm = "HS256" }"#,
        )
        .unwrap_err();
        assert!(e.contains("`source.signing_algorithm`"), "{e}");
        let e = parse(r#"{ kind = "aws-web-identity-token", audience = "a", caller = { kind = "gce-metadata", audience = "x" } }"#).unwrap_err();
        assert!(
            e.contains("`source.caller`") && e.contains("AWS credentials"),
            "{e}"
        );
        let e = parse(
            r#"{ kind = "aws-web-identity-token", audience = "a", duration_seconds = 7200 }"#,
        )
        .unwrap_err();
        assert!(e.contains("`source.duration_seconds`"), "{e}");
    }
}
