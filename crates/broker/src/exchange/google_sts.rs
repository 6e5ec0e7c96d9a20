//! Exchange `google-sts`: Google STS token exchange (workload identity federation).
//!
//! `POST https://sts.googleapis.com/v1/token` (or `IDBRIDGE_GOOGLE_STS_URL`), form-encoded:
//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`, `audience` = the provider's
//! resource name, `scope`, `requested_token_type=urn:ietf:params:oauth:token-type:access_token`,
//! `subject_token`, `subject_token_type`. The answer is a federated access token, typically used
//! to impersonate a service account next (`impersonate` exchange).
//!
//! **AWS subject token**, built the way Google documents it: a `POST
//! https://sts.<region>.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15` with an
//! empty body, SigV4-signed (aws-sigv4) over `host`, `x-amz-date`, `x-amz-security-token` and
//! `x-goog-cloud-target-resource` (= the audience; Google recommends signing it), serialized as
//! `{"url","method","headers":[{"key","value"}…]}` and percent-encoded. Google replays it to AWS
//! to learn the caller's ARN; the request is never sent to AWS by idbridge.

use std::time::SystemTime;

use idbridge_core::{AwsCredentials, Credential, GoogleAccessToken, SecretString};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::sigv4::{UnsignedRequest, sign_request};
use crate::step::{
    Facts, GoogleSts as StsFacts, Input, KindError, Parse, Step, StepFuture, Yields,
};
use crate::values::WorkloadProvider;
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport, Overrides};

/// The hop.
pub const HOP: Hop = Hop::new(
    "google-sts",
    "IDBRIDGE_GOOGLE_STS_URL (or the exchange's `token_url`)",
);
/// Token-exchange grant.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Requested token type.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Subject token type of a serialized signed GetCallerIdentity request.
pub const AWS4_REQUEST_TYPE: &str = "urn:ietf:params:aws:token-type:aws4_request";
/// Subject token type of an OIDC JWT.
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Default scope.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// `exchange = [{ kind = "google-sts", … }]`: `audience` (the workload identity provider),
/// `scopes` (default cloud-platform), `token_url`, `subject_token_type` (for OIDC subjects),
/// `region` (for AWS subjects; default the AWS source's, then `us-east-1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleSts {
    provider: WorkloadProvider,
    scopes: Vec<String>,
    token_url: Option<String>,
    subject_token_type: Option<String>,
    region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    audience: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    subject_token_type: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

/// The subject token types of an OIDC subject.
const JWT_TYPES: [&str; 2] = [JWT_TYPE, "urn:ietf:params:oauth:token-type:id_token"];

impl GoogleSts {
    /// Reads `{ kind = "google-sts", … }` in `exchange`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Raw = p.table(table)?;
        let provider = WorkloadProvider::parse(&raw.audience)
            .map_err(|m| KindError::Invalid(format!("field `{}`: {m}", p.field("audience"))))?;
        if let Some(t) = &raw.subject_token_type
            && !JWT_TYPES.contains(&t.as_str())
        {
            return Err(KindError::Invalid(format!(
                "field `{}`: {t:?} is not a JWT token type",
                p.field("subject_token_type")
            )));
        }
        if raw.scopes.as_ref().is_some_and(Vec::is_empty) {
            return Err(p.invalid("scopes", "is empty"));
        }
        Ok(Box::new(GoogleSts {
            provider,
            scopes: raw
                .scopes
                .unwrap_or_else(|| vec![CLOUD_PLATFORM.to_owned()]),
            token_url: raw.token_url,
            subject_token_type: raw.subject_token_type,
            region: raw.region,
        }))
    }
}

impl Step for GoogleSts {
    fn kind(&self) -> &'static str {
        "google-sts"
    }

    fn takes(&self) -> &'static [Yields] {
        &[Yields::IdToken, Yields::AwsCredentials]
    }

    fn refuses(&self, _got: Yields) -> String {
        "google-sts needs AWS credentials or an OIDC token, but the previous hop yields a Google access token".to_owned()
    }

    fn yields(&self) -> Yields {
        Yields::AccessToken
    }

    fn describe(&self) -> String {
        format!("provider {}", self.provider)
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            scopes: Some(&self.scopes),
            google_sts: Some(StsFacts {
                provider: &self.provider,
                token_url: self.token_url.as_deref(),
                subject_token_type: self.subject_token_type.as_deref(),
            }),
            ..Facts::default()
        }
    }

    fn with_overrides(&self, overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        Some(match (&overrides.audience, &overrides.scopes) {
            (None, Some(s)) => Ok(Box::new(GoogleSts {
                scopes: s.clone(),
                ..self.clone()
            })),
            _ => Err(
                "its last hop (google-sts) yields access tokens, not ID tokens for an audience"
                    .to_owned(),
            ),
        })
    }

    fn run<'a>(
        &'a self,
        input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(async move {
            let Some(subject) = input.credential else {
                return Err(BrokerError::new(
                    ErrorKind::InvalidConfiguration,
                    HOP,
                    "needs a credential from the previous hop",
                ));
            };
            exchange(
                ctx,
                subject,
                self,
                self.region.as_deref().or(input.region),
                hops,
            )
            .await
        })
    }
}

#[derive(Serialize)]
struct Header<'a> {
    key: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct SubjectToken<'a> {
    headers: Vec<Header<'a>>,
    method: &'a str,
    url: &'a str,
}

/// Builds the serialized, signed GetCallerIdentity request Google STS accepts as an AWS subject
/// token (already percent-encoded, as the `subject_token` value).
pub fn aws_subject_token(
    creds: &AwsCredentials,
    audience: &str,
    region: &str,
    now: SystemTime,
) -> Result<SecretString, BrokerError> {
    let host = format!("sts.{region}.amazonaws.com");
    let url = format!("https://{host}?Action=GetCallerIdentity&Version=2011-06-15");
    let unsigned = UnsignedRequest {
        method: "POST",
        url: &url,
        headers: vec![
            ("host".to_owned(), host),
            (
                "x-goog-cloud-target-resource".to_owned(),
                audience.to_owned(),
            ),
        ],
        body: b"",
    };
    let signed = sign_request(creds, &unsigned, "sts", region, now)?;
    // The signed headers carry the session token and the signature: zeroized on drop.
    let mut headers: zeroize::Zeroizing<Vec<(String, String)>> =
        zeroize::Zeroizing::new(unsigned.headers);
    headers.extend(signed);
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let doc = SubjectToken {
        headers: headers
            .iter()
            .map(|(k, v)| Header { key: k, value: v })
            .collect(),
        method: "POST",
        url: &url,
    };
    let json = zeroize::Zeroizing::new(serde_json::to_string(&doc).map_err(|e| {
        BrokerError::new(
            ErrorKind::Protocol,
            HOP,
            format!("cannot serialize subject token: {e}"),
        )
    })?);
    Ok(SecretString::new(
        percent_encoding::utf8_percent_encode(&json, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    ))
}

/// Exchanges `subject` (AWS credentials or a JWT) for a federated access token.
async fn exchange(
    ctx: &Context,
    subject: &Credential,
    req: &GoogleSts,
    region: Option<&str>,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    let (token, token_type, what) = match subject {
        Credential::Aws(c) => {
            #[expect(
                clippy::disallowed_methods,
                reason = "SigV4 signs with wall-clock time; the verifier allows 15 minutes of skew"
            )]
            let now = SystemTime::now();
            let region = region.unwrap_or("us-east-1");
            (
                aws_subject_token(c, &req.provider, region, now)?,
                AWS4_REQUEST_TYPE,
                format!("signed GetCallerIdentity of {}", c.access_key_id),
            )
        }
        Credential::IdToken(t) => (
            t.token.clone(),
            req.subject_token_type.as_deref().unwrap_or(JWT_TYPE),
            "OIDC token".to_owned(),
        ),
        other => {
            return Err(BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                format!(
                    "cannot exchange a {} credential at Google STS",
                    other.kind()
                ),
            ));
        }
    };
    let url = req
        .token_url
        .clone()
        .or_else(|| ctx.env.get(idbridge_core::env::IDBRIDGE_GOOGLE_STS_URL))
        .unwrap_or_else(|| idbridge_core::env::DEFAULT_GOOGLE_STS_URL.to_owned());
    let scope = req.scopes.join(" ");
    let body = crate::google::send_google(
        ctx,
        HOP,
        &url,
        ctx.http.post(&url).form(&[
            ("grant_type", GRANT_TYPE),
            ("audience", req.provider.as_str()),
            ("scope", &scope),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", token.expose_secret()),
            ("subject_token_type", token_type),
        ]),
    )
    .await?;
    #[derive(serde::Deserialize)]
    struct Resp {
        access_token: SecretString,
        #[serde(default)]
        expires_in: Option<serde_json::Value>,
    }
    let parsed: Resp = serde_json::from_str(&body).map_err(|_| {
        BrokerError::unparsable(HOP, format!("unparsable token response from {url}"))
    })?;
    let secs = match parsed.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(3600);
    let expires_at = ctx.clock.now() + time::Duration::seconds(secs);
    hops.push(HopReport::new(
        HOP,
        url,
        format!("federated access token for {what}"),
        Some(expires_at),
        started,
    ));
    Ok(Credential::GoogleAccessToken(GoogleAccessToken {
        token: parsed.access_token,
        expires_at,
        principal: Some(format!("federated via {}", req.provider)),
        scopes: req.scopes.clone(),
    }))
}
