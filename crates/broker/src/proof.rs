//! Proofs that a route's credential works, and whose it is: AWS `GetCallerIdentity` (signed by
//! the SDK with the credentials) and Google's `tokeninfo` (the access token in a form body).
//! `doctor`, `demo` and the tests call them after a route has run; routes never do.

use idbridge_core::{AwsCredentials, GoogleAccessToken};
use tokio::time::Instant;

use crate::exchange::aws_sts;
use crate::{BrokerError, Context, Hop, HopReport};

/// The hop of [`get_caller_identity`].
pub const GET_CALLER_IDENTITY: Hop = Hop::new(
    "aws-sts GetCallerIdentity",
    "AWS_ENDPOINT_URL_STS (or AWS_ENDPOINT_URL, or [endpoints] aws_sts in the config)",
);
/// The hop of [`tokeninfo`].
pub const TOKENINFO: Hop = Hop::new(
    "google tokeninfo",
    "IDBRIDGE_GOOGLE_OAUTH2_URL (tokeninfo is next to the token URL)",
);

/// The caller identity of `creds` (`GetCallerIdentity`, SigV4-signed by the SDK): proves the
/// credentials work and shows whose they are.
pub async fn get_caller_identity(
    ctx: &Context,
    creds: &AwsCredentials,
    region: Option<&str>,
) -> Result<HopReport, BrokerError> {
    let started = Instant::now();
    let (client, endpoint) =
        aws_sts::sts_client(ctx, region.unwrap_or(aws_sts::DEFAULT_REGION), Some(creds));
    let out = client.get_caller_identity().send().await.map_err(|e| {
        let mut b = aws_sts::map_sdk_error(ctx, &endpoint, e);
        b.hop = GET_CALLER_IDENTITY;
        b
    })?;
    Ok(HopReport::new(
        GET_CALLER_IDENTITY,
        endpoint,
        format!("caller: {}", out.arn().unwrap_or("?")),
        creds.expiration,
        started,
    ))
}

/// Asks Google's `tokeninfo` endpoint what `token` is (a proof that it is live, and whose):
/// `POST {oauth2 base}/tokeninfo` with the token in the form body, never in the URL. The base is
/// the OAuth2 token URL without its `/token` path.
pub async fn tokeninfo(ctx: &Context, token: &GoogleAccessToken) -> Result<HopReport, BrokerError> {
    let started = Instant::now();
    let token_url = ctx
        .endpoints
        .google_oauth2
        .clone()
        .unwrap_or_else(|| idbridge_core::env::DEFAULT_GOOGLE_OAUTH2_URL.to_owned());
    let url = format!("{}/tokeninfo", token_url.trim_end_matches("/token"));
    let text = crate::google::send_google(
        ctx,
        TOKENINFO,
        &url,
        ctx.http
            .post(&url)
            .form(&[("access_token", token.token.expose_secret())]),
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| BrokerError::unparsable(TOKENINFO, "unparsable tokeninfo"))?;
    let who = v
        .get("email")
        .or_else(|| v.get("sub"))
        .and_then(|s| s.as_str())
        .unwrap_or("?")
        .to_owned();
    Ok(HopReport::new(
        TOKENINFO,
        url,
        format!("token of {who}"),
        Some(token.expires_at),
        started,
    ))
}
