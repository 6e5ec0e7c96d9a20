//! Exchange `roles-anywhere`: an X.509 certificate and key → AWS credentials, by IAM Roles
//! Anywhere `CreateSession`.
//!
//! The request is `POST /sessions?profileArn=…&roleArn=…&trustAnchorArn=…` with a JSON body
//! (`durationSeconds`, `roleSessionName`), signed with the certificate's key
//! ([`crate::x509_sigv4::X509Signer`]: `AWS4-X509-RSA-SHA256` / `AWS4-X509-ECDSA-SHA256`), the
//! leaf in `X-Amz-X509` and the intermediates in `X-Amz-X509-Chain`, as the Roles Anywhere
//! credential helper sends it. The endpoint is `endpoint`, then `AWS_ENDPOINT_URL_ROLESANYWHERE`,
//! then `AWS_ENDPOINT_URL`, then `https://rolesanywhere.<region>.amazonaws.com`; the region is
//! `region`, else the trust anchor's. A refusal carries Roles Anywhere's error type
//! (`X-Amzn-ErrorType`: `AccessDeniedException`, `ValidationException`,
//! `ResourceNotFoundException`) as its code, and is classified like every hop: 5xx/429/408
//! transient, other 4xx rejected, an unreadable 201 transient.

use idbridge_core::{AwsCredentials, Credential};
use serde::Deserialize;
use tokio::time::Instant;

use crate::step::{
    AwsRole, Facts, Input, KindError, Parse, RolesAnywhereFacts, Step, StepFuture, Yields,
};
use crate::values::{RoleArn, SessionName};
use crate::x509_sigv4::X509Signer;
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport, Overrides};

/// The hop.
pub const HOP: Hop = Hop::new(
    "roles-anywhere",
    "AWS_ENDPOINT_URL_ROLESANYWHERE (or AWS_ENDPOINT_URL, or the exchange's `endpoint`)",
);

/// The variable naming the Roles Anywhere endpoint, as the AWS SDKs read it.
pub const ENDPOINT_VARIABLE: &str = "AWS_ENDPOINT_URL_ROLESANYWHERE";

/// Largest answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// `exchange = [{ kind = "roles-anywhere", … }]`: `trust_anchor_arn`, `profile_arn`,
/// `role_arn`, `session_name` (sent only when set; the profile must accept it),
/// `duration_seconds` (900–43200; the profile's default otherwise), `region` (default: the
/// trust anchor's), `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolesAnywhere {
    trust_anchor_arn: String,
    profile_arn: String,
    role_arn: RoleArn,
    session_name: Option<SessionName>,
    duration_seconds: Option<u32>,
    region: String,
    endpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    trust_anchor_arn: String,
    profile_arn: String,
    role_arn: String,
    #[serde(default)]
    session_name: Option<String>,
    #[serde(default, alias = "duration")]
    duration_seconds: Option<u32>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
}

/// `arn:aws:rolesanywhere:REGION:ACCOUNT:KIND/ID`: the region, when `arn` is one of `kind`.
fn rolesanywhere_region<'a>(arn: &'a str, kind: &str) -> Option<&'a str> {
    let parts: Vec<&str> = arn.split(':').collect();
    (parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "rolesanywhere"
        && !parts[3].is_empty()
        && parts[5].starts_with(&format!("{kind}/")))
    .then_some(parts[3])
}

impl RolesAnywhere {
    /// Reads `{ kind = "roles-anywhere", … }` in `exchange`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Raw = p.table(table)?;
        let invalid =
            |field: &str, m: String| KindError::Invalid(format!("field `{}`: {m}", p.field(field)));
        let anchor_region =
            rolesanywhere_region(&raw.trust_anchor_arn, "trust-anchor").ok_or_else(|| {
                invalid(
                    "trust_anchor_arn",
                    format!(
                        "{:?} is not a trust anchor ARN (arn:aws:rolesanywhere:REGION:ACCOUNT:trust-anchor/ID)",
                        raw.trust_anchor_arn
                    ),
                )
            })?;
        rolesanywhere_region(&raw.profile_arn, "profile").ok_or_else(|| {
            invalid(
                "profile_arn",
                format!(
                    "{:?} is not a profile ARN (arn:aws:rolesanywhere:REGION:ACCOUNT:profile/ID)",
                    raw.profile_arn
                ),
            )
        })?;
        let (role_arn, session_name) = super::role_fields(
            &invalid,
            &raw.role_arn,
            raw.session_name.as_deref(),
            raw.duration_seconds,
        )?;
        if let Some(e) = &raw.endpoint
            && url::Url::parse(e).is_err()
        {
            return Err(invalid("endpoint", format!("{e:?} is not a URL")));
        }
        let region = raw.region.unwrap_or_else(|| anchor_region.to_owned());
        Ok(Box::new(RolesAnywhere {
            trust_anchor_arn: raw.trust_anchor_arn,
            profile_arn: raw.profile_arn,
            role_arn,
            session_name,
            duration_seconds: raw.duration_seconds,
            region,
            endpoint: raw.endpoint,
        }))
    }

    fn endpoint(&self, ctx: &Context) -> String {
        self.endpoint
            .clone()
            .or_else(|| ctx.env.get(ENDPOINT_VARIABLE))
            .or_else(|| ctx.env.get(idbridge_core::env::AWS_ENDPOINT_URL))
            .map(|s| s.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("https://rolesanywhere.{}.amazonaws.com", self.region))
    }

    async fn create_session(
        &self,
        input: Input<'_>,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let Some(Credential::X509(cert)) = input.credential else {
            return Err(BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                "needs an X.509 certificate and key from the previous hop",
            ));
        };
        let signer = X509Signer::from_pem(&cert.chain_pem, cert.key_pem.expose_secret())
            .map_err(|e| BrokerError::new(ErrorKind::InvalidConfiguration, HOP, format!("{e}")))?;
        let base = self.endpoint(ctx);
        let mut url = url::Url::parse(&format!("{base}/sessions")).map_err(|_| {
            BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                format!("{base:?} is not a URL"),
            )
        })?;
        url.query_pairs_mut()
            .append_pair("profileArn", &self.profile_arn)
            .append_pair("roleArn", self.role_arn.as_str())
            .append_pair("trustAnchorArn", &self.trust_anchor_arn);
        let mut body = serde_json::Map::new();
        if let Some(d) = self.duration_seconds {
            body.insert("durationSeconds".into(), d.into());
        }
        if let Some(n) = &self.session_name {
            body.insert("roleSessionName".into(), n.as_str().into());
        }
        let body = serde_json::Value::Object(body).to_string().into_bytes();
        let mut request = http::Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|_| BrokerError::new(ErrorKind::InvalidConfiguration, HOP, "bad request"))?;
        signer
            .sign(&mut request, &self.region, ctx.clock.now())
            .map_err(|e| BrokerError::new(ErrorKind::InvalidConfiguration, HOP, e.to_string()))?;
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let mut builder = ctx.http.post(url.as_str()).body(body);
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        let endpoint = format!("{base}/sessions");
        let response = builder
            .send()
            .await
            .map_err(|e| BrokerError::from_http(HOP, &endpoint, &e))?;
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_owned());
        let text = read_bounded(response)
            .await
            .map_err(|e| BrokerError::from_http(HOP, &endpoint, &e))?;
        if !(200..300).contains(&status) {
            return Err(refusal(status, error_type, &text, &endpoint));
        }
        let answer: Answer = serde_json::from_slice(&text).map_err(|e| {
            BrokerError::unparsable(
                HOP,
                format!(
                    "unparsable CreateSession answer from {endpoint}: {}",
                    crate::token::json_error_message(&e)
                ),
            )
        })?;
        let mut set = answer.credential_set.into_iter().next().ok_or_else(|| {
            BrokerError::unparsable(HOP, "the CreateSession answer has no credentialSet")
        })?;
        let expiration = time::OffsetDateTime::parse(
            &set.credentials.expiration,
            &time::format_description::well_known::Rfc3339,
        )
        .ok();
        let arn = set.assumed_role_user.map(|u| u.arn);
        hops.push(HopReport::new(
            HOP,
            endpoint,
            format!(
                "AWS session: {} (certificate {})",
                arn.as_deref().unwrap_or(self.role_arn.as_str()),
                cert.subject
            ),
            expiration,
            started,
        ));
        let c = &mut set.credentials;
        Ok(Credential::Aws(AwsCredentials {
            access_key_id: std::mem::take(&mut c.access_key_id),
            secret_access_key: std::mem::take(&mut c.secret_access_key).into(),
            session_token: Some(std::mem::take(&mut c.session_token).into()),
            expiration,
            account_id: Some(self.role_arn.account().to_owned()),
            arn,
        }))
    }
}

/// Roles Anywhere's refusal: its error type as the code, its `message` (never the whole body).
fn refusal(status: u16, error_type: Option<String>, body: &[u8], endpoint: &str) -> BrokerError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        });
    match (error_type, message) {
        (Some(code), message) => BrokerError::from_status(
            HOP,
            status,
            Some(code),
            message.unwrap_or_else(|| "no message".to_owned()),
        ),
        (None, _) => BrokerError::from_status(
            HOP,
            status,
            None,
            format!("no Roles Anywhere error document from {endpoint}"),
        ),
    }
}

/// The body, at most [`MAX_ANSWER_BYTES`] (the rest is dropped: the parse then fails).
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_ANSWER_BYTES {
            out.truncate(MAX_ANSWER_BYTES);
            break;
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    credential_set: Vec<CredentialSet>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialSet {
    credentials: SessionCredentials,
    #[serde(default)]
    assumed_role_user: Option<AssumedRoleUser>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

impl Drop for SessionCredentials {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.secret_access_key.zeroize();
        self.session_token.zeroize();
    }
}

#[derive(Deserialize)]
struct AssumedRoleUser {
    arn: String,
}

impl Step for RolesAnywhere {
    fn kind(&self) -> &'static str {
        "roles-anywhere"
    }

    fn takes(&self) -> &'static [Yields] {
        &[Yields::X509]
    }

    fn yields(&self) -> Yields {
        Yields::AwsCredentials
    }

    fn describe(&self) -> String {
        format!(
            "role {} through Roles Anywhere profile {}",
            self.role_arn, self.profile_arn
        )
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            aws_role: Some(AwsRole {
                arn: &self.role_arn,
                session_name: self.session_name.as_deref(),
                duration_seconds: self.duration_seconds,
                region: Some(&self.region),
            }),
            region: Some(&self.region),
            roles_anywhere: Some(RolesAnywhereFacts {
                trust_anchor_arn: &self.trust_anchor_arn,
                profile_arn: &self.profile_arn,
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
        Some(&self.region)
    }

    fn run<'a>(
        &'a self,
        input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(self.create_session(input, ctx, hops))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(exchange: &str) -> Result<(), String> {
        let text = format!(
            "[[route]]\nname = \"r\"\nsource = {{ kind = \"x509-file\", certificate = \"c.pem\", private_key = \"k.pem\" }}\nexchange = [{exchange}]\n"
        );
        Config::parse(&text, "c.toml", None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    const OK: &str = r#"{ kind = "roles-anywhere", trust_anchor_arn = "arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/a", profile_arn = "arn:aws:rolesanywhere:us-east-1:111122223333:profile/p", role_arn = "arn:aws:iam::111122223333:role/r" }"#;

    #[test]
    fn reads_and_checks_its_fields() {
        parse(OK).unwrap();
        let e = parse(&OK.replace("trust-anchor/a", "profile/a")).unwrap_err();
        assert!(e.contains("`trust_anchor_arn`"), "{e}");
        let e = parse(&OK.replace(" }", ", duration_seconds = 60 }")).unwrap_err();
        assert!(e.contains("`duration_seconds`"), "{e}");
    }

    #[test]
    fn needs_a_certificate() {
        let text = format!(
            "[[route]]\nname = \"r\"\nsource = {{ kind = \"gce-metadata\", audience = \"a\" }}\nexchange = [{OK}]\n"
        );
        let e = Config::parse(&text, "c.toml", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("roles-anywhere needs an X.509 certificate and key"),
            "{e}"
        );
    }
}
