//! Source `oidc-file`: an OIDC token in a file, such as a Kubernetes projected service-account
//! token (`/var/run/secrets/…/token`). The file is re-read on every fetch, because the kubelet
//! rotates it in place.

use std::path::PathBuf;

use idbridge_core::Credential;
use serde::Deserialize;
use tokio::time::Instant;

use crate::step::{CredentialSource, Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::token::{describe_claims, id_token_from_jwt, token_from_body};
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport};

/// The hop.
pub const HOP: Hop = Hop::named("oidc-file");

/// `source = { kind = "oidc-file", … }`: `path` of a token file (relative to the config file),
/// re-read on every refresh; `json_field` when the file is JSON.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    path: PathBuf,
    #[serde(default)]
    json_field: Option<String>,
}

impl OidcFile {
    /// Reads `source = { kind = "oidc-file", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: OidcFile = p.table(table)?;
        Ok(Box::new(OidcFile {
            path: p.path(raw.path),
            ..raw
        }))
    }

    /// Reads the token file.
    async fn fetch(&self, hops: &mut Vec<HopReport>) -> Result<Credential, BrokerError> {
        let path = &self.path;
        let json_field = self.json_field.as_deref();
        let started = Instant::now();
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
            BrokerError::new(
                ErrorKind::Io,
                HOP,
                format!("cannot read token file {}: {e}", path.display()),
            )
        })?;
        let text = zeroize::Zeroizing::new(text);
        let token = zeroize::Zeroizing::new(token_from_body(
            HOP,
            &path.display().to_string(),
            &text,
            json_field,
        )?);
        let (tok, parsed) = id_token_from_jwt(HOP, &token).map_err(|e| {
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
            format!("token from {iss}: {}", describe_claims(&parsed)),
            Some(tok.expires_at),
            started,
        ));
        Ok(Credential::IdToken(tok))
    }
}

impl Step for OidcFile {
    fn kind(&self) -> &'static str {
        "oidc-file"
    }

    fn yields(&self) -> Yields {
        Yields::IdToken
    }

    fn describe(&self) -> String {
        format!("token file {}", self.path.display())
    }

    fn facts(&self) -> Facts<'_> {
        Facts::default()
    }

    fn credential_source(&self, _imds: &str) -> Option<CredentialSource> {
        let mut src = serde_json::json!({"file": self.path.display().to_string()});
        if let Some(f) = &self.json_field {
            src["format"] = serde_json::json!({"type": "json", "subject_token_field_name": f});
        }
        Some(CredentialSource {
            credential_source: src,
            aws: false,
            note: None,
        })
    }

    fn run<'a>(
        &'a self,
        _input: Input<'a>,
        _ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(self.fetch(hops))
    }
}
