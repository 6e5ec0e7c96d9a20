//! Sources: where a route's first identity comes from.
//!
//! Each source yields either an OIDC ID token or a Google access token
//! ([`crate::config::Yields`]), and records one [`HopReport`] per network hop.

pub mod aws;
pub mod executable;
pub mod gce_metadata;
pub mod impersonate;
pub mod oidc_file;
pub mod oidc_url;
pub mod sa_key;
pub mod spiffe;

use std::future::Future;
use std::pin::Pin;

use idbridge_core::Credential;

use crate::config::SourceConfig;
use crate::{BrokerError, Context, HopReport};

/// Fetches the source's credential, appending hop reports.
pub fn fetch<'a>(
    cfg: &'a SourceConfig,
    ctx: &'a Context,
    hops: &'a mut Vec<HopReport>,
) -> Pin<Box<dyn Future<Output = Result<Credential, BrokerError>> + Send + 'a>> {
    Box::pin(async move {
        match cfg {
            SourceConfig::GceMetadata {
                service_account,
                audience,
                scopes,
                format,
            } => {
                gce_metadata::fetch(
                    ctx,
                    service_account,
                    audience.as_deref(),
                    scopes.as_deref(),
                    format.as_deref(),
                    hops,
                )
                .await
            }
            SourceConfig::ServiceAccountKey {
                key_file,
                target_audience,
                scopes,
            } => {
                sa_key::fetch(
                    ctx,
                    key_file,
                    target_audience.as_deref(),
                    scopes.as_deref(),
                    hops,
                )
                .await
            }
            SourceConfig::Impersonate {
                service_account,
                audience,
                scopes,
                delegates,
                include_email,
                lifetime_seconds,
                caller,
            } => {
                let caller_token = match caller {
                    Some(c) => fetch(c, ctx, hops).await?,
                    None => {
                        let scopes = [impersonate::CLOUD_PLATFORM.to_owned()];
                        gce_metadata::fetch(ctx, "default", None, Some(&scopes), None, hops).await?
                    }
                };
                let Credential::GoogleAccessToken(caller_token) = caller_token else {
                    return Err(BrokerError::new(
                        crate::ErrorKind::InvalidConfiguration,
                        "impersonate",
                        "the caller source must yield a Google access token",
                    ));
                };
                let req = impersonate::Request {
                    service_account,
                    audience: audience.as_deref(),
                    scopes: scopes.as_deref(),
                    delegates,
                    include_email: *include_email,
                    lifetime_seconds: *lifetime_seconds,
                };
                impersonate::fetch(ctx, &caller_token, &req, hops).await
            }
            SourceConfig::OidcFile { path, json_field } => {
                oidc_file::fetch(ctx, path, json_field.as_deref(), hops).await
            }
            SourceConfig::OidcUrl {
                url,
                headers,
                json_field,
            } => oidc_url::fetch(ctx, url, headers, json_field.as_deref(), hops).await,
            SourceConfig::Executable {
                command,
                timeout_millis,
                output_file,
                audience,
                token_type,
            } => {
                let req = executable::Request {
                    command,
                    timeout_millis: *timeout_millis,
                    output_file: output_file.as_deref(),
                    audience: audience.as_deref(),
                    token_type: token_type.as_deref(),
                };
                executable::fetch(ctx, &req, hops).await
            }
            SourceConfig::Aws {
                provider,
                profile,
                region,
                imds_endpoint,
            } => {
                aws::fetch(
                    ctx,
                    provider.as_deref(),
                    profile.as_deref(),
                    region.as_deref(),
                    imds_endpoint.as_deref(),
                    hops,
                )
                .await
            }
            SourceConfig::Spiffe {
                audience,
                spiffe_id,
                socket,
            } => spiffe::fetch(ctx, audience, spiffe_id.as_deref(), socket.as_deref(), hops).await,
        }
    })
}

/// Sends a request to a Google API and returns the 200 body (zeroized on drop: it holds a
/// token); a non-200 answer becomes an error carrying Google's code and message, classified by
/// its status ([`crate::upstream`]).
pub(crate) async fn send_google(
    ctx: &Context,
    hop: &str,
    url: &str,
    req: reqwest::RequestBuilder,
) -> Result<zeroize::Zeroizing<String>, BrokerError> {
    crate::upstream::send(ctx, hop, url, req, google_error).await
}

/// Reads an error body from a Google API: `google.rpc.Status` or OAuth `{"error",…}`; returns
/// (code, message) without ever echoing unknown bodies (they may hold tokens).
pub(crate) fn google_error(body: &str) -> (Option<String>, String) {
    if let Ok(e) = serde_json::from_str::<idbridge_wire::google::RpcError>(body) {
        return (Some(e.error.status), e.error.message);
    }
    if let Ok(e) = serde_json::from_str::<idbridge_wire::google::OAuthError>(body) {
        return (Some(e.error), e.error_description.unwrap_or_default());
    }
    (None, "unrecognised error body".to_owned())
}

/// A serde_json error as a message that cannot quote the input. serde's type errors repeat the
/// value they met (`invalid type: string "-----BEGIN PRIVATE KEY…", expected …`), and the
/// input here is a key file or a token body; messages about fields (which name only the field)
/// and syntax errors (which name only the position) are kept as they are.
pub(crate) fn json_error_message(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let names_fields_only = ["missing field", "unknown field", "duplicate field"]
        .iter()
        .any(|p| message.starts_with(p));
    match e.classify() {
        serde_json::error::Category::Data if !names_fields_only => format!(
            "a value has the wrong type or form at line {} column {}",
            e.line(),
            e.column()
        ),
        _ => message,
    }
}

/// Builds an [`idbridge_core::IdToken`] from a JWT string, reading `exp` (unverified: the
/// consumer of the token verifies it; we only schedule refreshes from it).
pub(crate) fn id_token_from_jwt(
    hop: &str,
    jwt: &str,
) -> Result<(idbridge_core::IdToken, idbridge_core::jwt::UnverifiedJwt), BrokerError> {
    // Garbage where a token should be is retried like any unparsable answer.
    let parsed = idbridge_core::jwt::UnverifiedJwt::parse(jwt).map_err(|e| {
        BrokerError::unparsable(hop, format!("the ID token received is unreadable: {e}"))
    })?;
    let exp = parsed
        .exp()
        .and_then(|e| time::OffsetDateTime::from_unix_timestamp(e).ok())
        .ok_or_else(|| {
            BrokerError::unparsable(hop, "the ID token received has no integer `exp`")
        })?;
    Ok((
        idbridge_core::IdToken {
            token: jwt.trim().into(),
            expires_at: exp,
        },
        parsed,
    ))
}

/// A short description of an ID token's identity for reports: `sub` (and email, aud).
pub(crate) fn describe_claims(jwt: &idbridge_core::jwt::UnverifiedJwt) -> String {
    let mut parts = Vec::new();
    if let Some(e) = jwt.str_claim("email") {
        parts.push(e.to_owned());
    }
    if let Some(s) = jwt.str_claim("sub") {
        parts.push(format!("sub={s}"));
    }
    match jwt.claims.get("aud") {
        Some(serde_json::Value::String(a)) => parts.push(format!("aud={a}")),
        Some(serde_json::Value::Array(a)) => parts.push(format!(
            "aud={}",
            a.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(",")
        )),
        _ => {}
    }
    parts.join(" ")
}

/// Extracts the token from a file/URL body: the whole trimmed text, or a JSON field.
pub(crate) fn token_from_body(
    hop: &str,
    what: &str,
    body: &str,
    json_field: Option<&str>,
) -> Result<String, BrokerError> {
    match json_field {
        None => Ok(body.trim().to_owned()),
        Some(field) => {
            let v: serde_json::Value = serde_json::from_str(body)
                .map_err(|_| BrokerError::unparsable(hop, format!("{what} is not JSON")))?;
            v.get(field)
                .and_then(|t| t.as_str())
                .map(str::to_owned)
                .ok_or_else(|| {
                    BrokerError::unparsable(hop, format!("{what} has no string field {field:?}"))
                })
        }
    }
}
