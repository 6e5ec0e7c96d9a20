//! Source `oidc-url`: a token served over HTTP (Google's URL-sourced credentials, e.g. a local
//! token server or Azure IMDS), fetched on every refresh.

use std::collections::BTreeMap;

use idbridge_core::Credential;
use tokio::time::Instant;

use crate::{BrokerError, Context, HopReport};

const HOP: &str = "oidc-url";

/// GETs the token.
pub async fn fetch(
    ctx: &Context,
    url: &str,
    headers: &BTreeMap<String, String>,
    json_field: Option<&str>,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    let mut req = ctx.http.get(url);
    for (k, v) in headers {
        // A configured value may be a credential: keep it out of any `Debug` of the request.
        req = match http::HeaderValue::from_str(v) {
            Ok(mut value) => {
                value.set_sensitive(true);
                req.header(k.as_str(), value)
            }
            // Not a legal value: reqwest reports the builder error when sending, as before.
            Err(_) => req.header(k.as_str(), v.as_str()),
        };
    }
    let body = crate::upstream::send(ctx, HOP, url, req, |_| {
        (None, format!("token URL {url} refused"))
    })
    .await?;
    let token = zeroize::Zeroizing::new(super::token_from_body(HOP, url, &body, json_field)?);
    let (tok, parsed) = super::id_token_from_jwt(HOP, &token)?;
    hops.push(HopReport::new(
        HOP,
        url,
        format!("token: {}", super::describe_claims(&parsed)),
        Some(tok.expires_at),
        started,
    ));
    Ok(Credential::IdToken(tok))
}
