//! Source `impersonate`: IAM Credentials `generateIdToken` / `generateAccessToken`.
//!
//! `POST {iamcredentials}/v1/projects/-/serviceAccounts/{sa}:generateIdToken` with
//! `Authorization: Bearer <caller access token>` and `{"audience","delegates","includeEmail"}`;
//! or `:generateAccessToken` with `{"scope":[…],"lifetime":"3600s","delegates"}`. The caller
//! needs `roles/iam.serviceAccountTokenCreator` on the target (and on each delegate in turn).
//! The base URL comes from `endpoints.google_iamcredentials`, then
//! `IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL`, then `https://iamcredentials.googleapis.com`.

use idbridge_core::{Credential, GoogleAccessToken, SecretString};
use idbridge_wire::google::{
    GenerateAccessTokenRequest, GenerateAccessTokenResponse, GenerateIdTokenRequest,
    GenerateIdTokenResponse,
};
use tokio::time::Instant;

use super::gce_metadata::urlencode;
use crate::{BrokerError, Context, ErrorKind, HopReport};

const HOP: &str = "impersonate";
/// The scope a caller needs to call IAM Credentials.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// What to ask for.
#[derive(Debug)]
pub struct Request<'a> {
    /// Target account.
    pub service_account: &'a str,
    /// ID-token audience.
    pub audience: Option<&'a str>,
    /// Access-token scopes.
    pub scopes: Option<&'a [String]>,
    /// Delegation chain (emails).
    pub delegates: &'a [String],
    /// `includeEmail`.
    pub include_email: bool,
    /// Access-token lifetime.
    pub lifetime_seconds: Option<u32>,
}

/// Calls IAM Credentials as `caller`.
pub async fn fetch(
    ctx: &Context,
    caller: &GoogleAccessToken,
    req: &Request<'_>,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    let delegates: Option<Vec<String>> = (!req.delegates.is_empty()).then(|| {
        req.delegates
            .iter()
            .map(|d| format!("projects/-/serviceAccounts/{d}"))
            .collect()
    });
    let method = if req.audience.is_some() {
        "generateIdToken"
    } else {
        "generateAccessToken"
    };
    let url = format!(
        "{}/v1/projects/-/serviceAccounts/{}:{method}",
        ctx.endpoints.google_iamcredentials,
        urlencode(req.service_account)
    );
    let body = match req.audience {
        Some(aud) => serde_json::to_value(GenerateIdTokenRequest {
            audience: aud.to_owned(),
            delegates,
            include_email: Some(req.include_email),
            use_email_azp: None,
        }),
        None => serde_json::to_value(GenerateAccessTokenRequest {
            delegates,
            scope: req.scopes.unwrap_or_default().to_vec(),
            lifetime: req.lifetime_seconds.map(|s| format!("{s}s")),
        }),
    }
    .map_err(|e| BrokerError::new(ErrorKind::InvalidConfiguration, HOP, e.to_string()))?;
    let who = caller.principal.as_deref().unwrap_or("the caller");
    let text = super::send_google(
        ctx,
        HOP,
        &url,
        ctx.http
            .post(&url)
            .bearer_auth(caller.token.expose_secret())
            .json(&body),
    )
    .await
    .map_err(|mut e| {
        if e.kind == ErrorKind::Rejected {
            e.message = format!("{} (as {who} on {})", e.message, req.service_account);
        }
        e
    })?;
    if req.audience.is_some() {
        let parsed: GenerateIdTokenResponse = serde_json::from_str(&text).map_err(|_| {
            BrokerError::unparsable(
                HOP,
                format!("unparsable generateIdToken response from {url}"),
            )
        })?;
        let jwt = zeroize::Zeroizing::new(parsed.token);
        let (tok, claims) = super::id_token_from_jwt(HOP, &jwt)?;
        hops.push(HopReport::new(
            HOP,
            url,
            format!("ID token: {}", super::describe_claims(&claims)),
            Some(tok.expires_at),
            started,
        ));
        return Ok(Credential::IdToken(tok));
    }
    let parsed: GenerateAccessTokenResponse = serde_json::from_str(&text).map_err(|_| {
        BrokerError::unparsable(
            HOP,
            format!("unparsable generateAccessToken response from {url}"),
        )
    })?;
    let expires_at = idbridge_core::timefmt::parse_rfc3339(&parsed.expire_time)
        .ok_or_else(|| BrokerError::unparsable(HOP, "unparsable expireTime"))?;
    hops.push(HopReport::new(
        HOP,
        url,
        format!("access token: {}", req.service_account),
        Some(expires_at),
        started,
    ));
    Ok(Credential::GoogleAccessToken(GoogleAccessToken {
        token: SecretString::new(parsed.access_token),
        expires_at,
        principal: Some(req.service_account.to_owned()),
        scopes: req.scopes.unwrap_or_default().to_vec(),
    }))
}

/// Asks Google's `tokeninfo` endpoint what `token` is (a proof that it is live, and whose):
/// `POST {oauth2 base}/tokeninfo` with the token in the form body, never in the URL. The base is
/// the OAuth2 token URL without its `/token` path.
pub async fn tokeninfo(ctx: &Context, token: &GoogleAccessToken) -> Result<HopReport, BrokerError> {
    const TI: &str = "google tokeninfo";
    let started = Instant::now();
    let token_url = ctx
        .endpoints
        .google_oauth2
        .clone()
        .unwrap_or_else(|| idbridge_core::env::DEFAULT_GOOGLE_OAUTH2_URL.to_owned());
    let url = format!("{}/tokeninfo", token_url.trim_end_matches("/token"));
    let text = super::send_google(
        ctx,
        TI,
        &url,
        ctx.http
            .post(&url)
            .form(&[("access_token", token.token.expose_secret())]),
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| BrokerError::unparsable(TI, "unparsable tokeninfo"))?;
    let who = v
        .get("email")
        .or_else(|| v.get("sub"))
        .and_then(|s| s.as_str())
        .unwrap_or("?")
        .to_owned();
    Ok(HopReport::new(
        TI,
        url,
        format!("token of {who}"),
        Some(token.expires_at),
        started,
    ))
}
