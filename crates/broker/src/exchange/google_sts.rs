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
use serde::Serialize;
use tokio::time::Instant;

use crate::sigv4::{UnsignedRequest, sign_request};
use crate::{BrokerError, Context, ErrorKind, HopReport};

const HOP: &str = "google-sts";
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

/// Parameters of one exchange.
#[derive(Debug)]
pub struct Request<'a> {
    /// Provider resource name.
    pub audience: &'a str,
    /// Scopes.
    pub scopes: &'a [String],
    /// Token URL override.
    pub token_url: Option<&'a str>,
    /// Subject token type for JWTs.
    pub subject_token_type: Option<&'a str>,
    /// Region for an AWS subject token.
    pub region: Option<&'a str>,
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
pub async fn exchange(
    ctx: &Context,
    subject: &Credential,
    req: &Request<'_>,
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
            let region = req.region.unwrap_or("us-east-1");
            (
                aws_subject_token(c, req.audience, region, now)?,
                AWS4_REQUEST_TYPE,
                format!("signed GetCallerIdentity of {}", c.access_key_id),
            )
        }
        Credential::IdToken(t) => (
            t.token.clone(),
            req.subject_token_type.unwrap_or(JWT_TYPE),
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
        .map(str::to_owned)
        .or_else(|| ctx.env.get(idbridge_core::env::IDBRIDGE_GOOGLE_STS_URL))
        .unwrap_or_else(|| idbridge_core::env::DEFAULT_GOOGLE_STS_URL.to_owned());
    let scope = req.scopes.join(" ");
    let body = crate::source::send_google(
        ctx,
        HOP,
        &url,
        ctx.http.post(&url).form(&[
            ("grant_type", GRANT_TYPE),
            ("audience", req.audience),
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
        principal: Some(format!("federated via {}", req.audience)),
        scopes: req.scopes.to_vec(),
    }))
}
