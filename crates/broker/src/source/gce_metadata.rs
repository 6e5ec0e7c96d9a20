//! Source `gce-metadata`: the GCE metadata server.
//!
//! * ID token: `GET http://$GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/{sa}/identity?audience=…&format=full`
//!   (plain-text JWT).
//! * Access token: `GET …/{sa}/token?scopes=a,b` (JSON `access_token`, `expires_in`).
//!
//! Every request carries `Metadata-Flavor: Google`. The host comes from the config's
//! `endpoints.gce_metadata_host`, then `GCE_METADATA_HOST`, then `metadata.google.internal`.

use idbridge_core::{Credential, GoogleAccessToken};
use tokio::time::Instant;

use crate::{BrokerError, Context, HopReport};

const HOP: &str = "gce-metadata";

/// GETs a metadata path; the body (which may be a token) is zeroized on drop.
async fn get(
    ctx: &Context,
    path_and_query: &str,
) -> Result<(zeroize::Zeroizing<String>, String), BrokerError> {
    let url = format!(
        "http://{}/computeMetadata/v1/{path_and_query}",
        ctx.endpoints.gce_metadata_host
    );
    let shown = url.split('?').next().unwrap_or_default().to_owned();
    let req = ctx.http.get(&url).header("Metadata-Flavor", "Google");
    // The body is never repeated: whatever answered may reflect the request or a token.
    let body = crate::upstream::send(ctx, HOP, &shown, req, |_| {
        (
            None,
            format!("metadata server refused the request ({shown})"),
        )
    })
    .await?;
    Ok((body, shown))
}

/// Fetches an ID token (`audience`) or access token (`scopes`).
pub async fn fetch(
    ctx: &Context,
    service_account: &str,
    audience: Option<&str>,
    scopes: Option<&[String]>,
    format: Option<&str>,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    let sa = urlencode(service_account);
    if let Some(aud) = audience {
        let q = format!(
            "instance/service-accounts/{sa}/identity?audience={}&format={}",
            urlencode(aud),
            format.unwrap_or("full")
        );
        let (jwt, shown) = get(ctx, &q).await?;
        let (tok, parsed) = super::id_token_from_jwt(HOP, &jwt)?;
        hops.push(HopReport::new(
            HOP,
            shown,
            format!("ID token: {}", super::describe_claims(&parsed)),
            Some(tok.expires_at),
            started,
        ));
        return Ok(Credential::IdToken(tok));
    }
    let scopes = scopes.unwrap_or_default();
    let mut q = format!("instance/service-accounts/{sa}/token");
    if !scopes.is_empty() {
        q.push_str(&format!("?scopes={}", urlencode(&scopes.join(","))));
    }
    let (body, shown) = get(ctx, &q).await?;
    let parsed: idbridge_wire::gce_metadata::TokenResponse =
        serde_json::from_str(&body).map_err(|_| {
            BrokerError::unparsable(HOP, format!("unparsable token response from {shown}"))
        })?;
    if parsed.access_token.is_empty() || parsed.expires_in <= 0 {
        return Err(BrokerError::unparsable(
            HOP,
            format!("incomplete token received from {shown}"),
        ));
    }
    let email = get(ctx, &format!("instance/service-accounts/{sa}/email"))
        .await
        .map(|(e, _)| e.trim().to_owned())
        .ok();
    let expires_at = ctx.clock.now() + time::Duration::seconds(parsed.expires_in);
    hops.push(HopReport::new(
        HOP,
        shown,
        format!(
            "access token: {}",
            email.as_deref().unwrap_or(service_account)
        ),
        Some(expires_at),
        started,
    ));
    Ok(Credential::GoogleAccessToken(GoogleAccessToken {
        token: parsed.access_token.into(),
        expires_at,
        principal: email,
        scopes: scopes.to_vec(),
    }))
}

pub(crate) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
