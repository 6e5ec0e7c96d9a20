//! Proofs that a route's credential works, and whose it is: AWS `GetCallerIdentity` (signed by
//! the SDK with the credentials), Google's `tokeninfo` (the access token in a form body) and an
//! Entra access token's signature checked against the keys its tenant publishes.
//! `doctor`, `demo` and the tests call them after a route has run; routes never do.

use idbridge_core::{AwsCredentials, AzureAccessToken, GoogleAccessToken};
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

/// The hop of [`entra_token`].
pub const ENTRA_KEYS: Hop = Hop::new(
    "entra keys",
    "AZURE_AUTHORITY_HOST (the tenant's OpenID configuration and keys)",
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

/// Checks an Entra access token as a resource API would: its signature against the keys of its
/// tenant (`{authority}/{tenant}/v2.0/.well-known/openid-configuration` → `jwks_uri`), its
/// `iss` the tenant's v1 or v2 issuer, its `tid` the tenant and its `appid`/`azp` the client.
/// The authority is `AZURE_AUTHORITY_HOST`, else the public cloud.
pub async fn entra_token(
    ctx: &Context,
    token: &AzureAccessToken,
) -> Result<HopReport, BrokerError> {
    use crate::exchange::entra::{AZURE_AUTHORITY_HOST, DEFAULT_AUTHORITY};
    let started = Instant::now();
    let authority = ctx
        .env
        .get(AZURE_AUTHORITY_HOST)
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned());
    let discovery = format!(
        "{}/{}/v2.0/.well-known/openid-configuration",
        authority.trim_end_matches('/'),
        token.tenant
    );
    let get = |url: String| async move {
        let resp = ctx
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status().as_u16()));
        }
        resp.text()
            .await
            .map_err(|e| format!("GET {url}: {}", e.without_url()))
    };
    let keys = idbridge_core::jwks::fetch_jwks(&discovery, get)
        .await
        .map_err(|e| BrokerError::new(crate::ErrorKind::Transient, ENTRA_KEYS, e))?;
    let claims = idbridge_core::jwks::verify_signature(
        token.token.expose_secret(),
        &keys,
        &[jsonwebtoken::Algorithm::RS256],
    )
    .map_err(|e| {
        BrokerError::new(
            crate::ErrorKind::Rejected,
            ENTRA_KEYS,
            format!("the Entra token does not verify against the tenant's keys: {e}"),
        )
    })?;
    let claim = |k: &str| claims.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let tid = claim("tid");
    let issuers = [
        format!("https://sts.windows.net/{tid}/"),
        format!("https://login.microsoftonline.com/{tid}/v2.0"),
    ];
    let client = if claim("azp").is_empty() {
        claim("appid")
    } else {
        claim("azp")
    };
    let problem = if !tid.eq_ignore_ascii_case(&token.tenant) && !token.tenant.contains('.') {
        Some(format!("its tid is {tid:?}, not {:?}", token.tenant))
    } else if !issuers.iter().any(|i| i == claim("iss")) {
        Some(format!("its iss {:?} is not the tenant's", claim("iss")))
    } else if !client.eq_ignore_ascii_case(&token.client_id) {
        Some(format!("it is {client:?}'s, not {:?}'s", token.client_id))
    } else {
        None
    };
    if let Some(p) = problem {
        return Err(BrokerError::new(
            crate::ErrorKind::Rejected,
            ENTRA_KEYS,
            format!("the Entra token is not what was asked for: {p}"),
        ));
    }
    let roles = claims
        .get("roles")
        .and_then(|r| r.as_array())
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    Ok(HopReport::new(
        ENTRA_KEYS,
        discovery,
        format!(
            "verified: {} of {client} for {}{}",
            claim("iss"),
            claim("aud"),
            if roles.is_empty() {
                String::new()
            } else {
                format!(", roles {roles}")
            }
        ),
        Some(token.expires_at),
        started,
    ))
}
