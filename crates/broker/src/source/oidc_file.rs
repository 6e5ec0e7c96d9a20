//! Source `oidc-file`: an OIDC token in a file, such as a Kubernetes projected service-account
//! token (`/var/run/secrets/…/token`). The file is re-read on every fetch, because the kubelet
//! rotates it in place.

use std::path::Path;

use idbridge_core::Credential;
use tokio::time::Instant;

use crate::{BrokerError, Context, ErrorKind, HopReport};

const HOP: &str = "oidc-file";

/// Reads the token file.
pub async fn fetch(
    _ctx: &Context,
    path: &Path,
    json_field: Option<&str>,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        BrokerError::new(
            ErrorKind::Io,
            HOP,
            format!("cannot read token file {}: {e}", path.display()),
        )
    })?;
    let text = zeroize::Zeroizing::new(text);
    let token = zeroize::Zeroizing::new(super::token_from_body(
        HOP,
        &path.display().to_string(),
        &text,
        json_field,
    )?);
    let (tok, parsed) = super::id_token_from_jwt(HOP, &token).map_err(|e| {
        BrokerError::new(
            ErrorKind::InvalidConfiguration,
            HOP,
            format!("{}: {}", path.display(), e.message),
        )
    })?;
    let iss = parsed.str_claim("iss").unwrap_or("?").to_owned();
    hops.push(HopReport::new(
        HOP,
        path.display().to_string(),
        format!("token from {iss}: {}", super::describe_claims(&parsed)),
        Some(tok.expires_at),
        started,
    ));
    Ok(Credential::IdToken(tok))
}
