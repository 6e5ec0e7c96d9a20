//! Reading what upstreams hand back: JWTs (unverified, for expiry and reports), token bodies
//! of files and URLs, and serde_json errors that must not quote their input.

use crate::{BrokerError, Hop};

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
    hop: Hop,
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

/// The ID token `jwt` an upstream at `endpoint` handed back, as the hop's credential: read as
/// [`id_token_from_jwt`] does, its hop reported as `LABEL: CLAIMS` (the label from `label`,
/// given the token's claims; the claims as [`describe_claims`] has them).
pub(crate) fn id_token_hop(
    hop: Hop,
    jwt: &str,
    endpoint: impl Into<String>,
    label: impl FnOnce(&idbridge_core::jwt::UnverifiedJwt) -> String,
    started: tokio::time::Instant,
    hops: &mut Vec<crate::HopReport>,
) -> Result<idbridge_core::Credential, BrokerError> {
    let (token, claims) = id_token_from_jwt(hop, jwt)?;
    hops.push(crate::HopReport::new(
        hop,
        endpoint,
        format!("{}: {}", label(&claims), describe_claims(&claims)),
        Some(token.expires_at),
        started,
    ));
    Ok(idbridge_core::Credential::IdToken(token))
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
    hop: Hop,
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
