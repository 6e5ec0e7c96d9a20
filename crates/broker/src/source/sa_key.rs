//! Source `service-account-key`: a Google service-account JSON key (seed 004).
//!
//! 1. Sign a short-lived assertion with the key (RS256, `kid` = `private_key_id`):
//!    `{"iss": client_email, "aud": "https://oauth2.googleapis.com/token", "iat", "exp": iat+3600,
//!    "target_audience": …}` for an ID token, or `"scope": "a b"` for an access token.
//! 2. `POST` it to the OAuth2 token endpoint with
//!    `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`.
//! 3. Google answers `{"id_token"}` (a Google-signed JWT whose `azp`/`sub` are the account's
//!    numeric id) or `{"access_token","expires_in"}`.
//!
//! Token endpoint precedence: `endpoints.google_oauth2`, `IDBRIDGE_GOOGLE_OAUTH2_URL`, the key
//! file's `token_uri`, `https://oauth2.googleapis.com/token`. The assertion's `aud` is always
//! Google's canonical token URL, as Google's own libraries send it.

use std::path::Path;

use idbridge_core::{Credential, GoogleAccessToken, SecretString};
use idbridge_wire::google::{
    JWT_BEARER_GRANT, OAUTH2_TOKEN_AUDIENCE, OAuth2TokenResponse, ServiceAccountAssertion,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use tokio::time::Instant;

use crate::step::{Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::token::{id_token_hop, json_error_message};
use crate::values::Mint;
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport, Overrides};

/// The hop.
pub const HOP: Hop = Hop::new(
    "service-account-key",
    "IDBRIDGE_GOOGLE_OAUTH2_URL (or [endpoints] google_oauth2)",
);

/// `source = { kind = "service-account-key", … }`: `key_file` (Google JSON key, relative to
/// the config file), `target_audience` (ID token) or `scopes` (access token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountKey {
    key_file: std::path::PathBuf,
    mint: Mint,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    key_file: std::path::PathBuf,
    #[serde(default)]
    target_audience: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

impl ServiceAccountKey {
    /// Reads `source = { kind = "service-account-key", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Raw = p.table(table)?;
        let mint = Mint::exactly_one(
            raw.target_audience,
            raw.scopes,
            &p.field("target_audience"),
            &p.field("scopes"),
        )
        .map_err(KindError::Invalid)?;
        Ok(Box::new(ServiceAccountKey {
            key_file: p.path(raw.key_file),
            mint,
        }))
    }

    async fn fetch(
        &self,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        fetch(
            ctx,
            &self.key_file,
            self.mint.audience(),
            self.mint.scopes(),
            hops,
        )
        .await
    }
}

impl Step for ServiceAccountKey {
    fn kind(&self) -> &'static str {
        "service-account-key"
    }

    fn yields(&self) -> Yields {
        self.mint.yields()
    }

    fn describe(&self) -> String {
        match &self.mint {
            Mint::IdToken(a) => format!("ID token for {a} with key {}", self.key_file.display()),
            Mint::AccessToken(_) => format!("access token with key {}", self.key_file.display()),
        }
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            audience: self.mint.audience(),
            scopes: self.mint.scopes(),
            google_id_token: true,
            ..Facts::default()
        }
    }

    fn with_overrides(&self, overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        let mint = Mint::overridden(overrides)?;
        Some(Ok(Box::new(ServiceAccountKey {
            mint,
            ..self.clone()
        })))
    }

    fn run<'a>(
        &'a self,
        _input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(self.fetch(ctx, hops))
    }
}
/// Google caps assertion lifetime at one hour.
const ASSERTION_LIFETIME_SECS: i64 = 3600;

/// The fields of a Google JSON key that idbridge uses.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    private_key_id: String,
    private_key: SecretString,
    client_email: String,
    #[serde(default)]
    token_uri: Option<String>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

async fn read_key(path: &Path) -> Result<KeyFile, BrokerError> {
    let text = tokio::fs::read(path)
        .await
        .map(zeroize::Zeroizing::new)
        .map_err(|e| {
            BrokerError::new(
                ErrorKind::Io,
                HOP,
                format!("cannot read key file {}: {e}", path.display()),
            )
        })?;
    let key: KeyFile = serde_json::from_slice(&text).map_err(|e| {
        // serde_json's own message may quote a value (the private key): see json_error_message.
        BrokerError::new(
            ErrorKind::InvalidConfiguration,
            HOP,
            format!(
                "key file {}: not a service-account key: {}",
                path.display(),
                json_error_message(&e)
            ),
        )
    })?;
    if key.kind != "service_account" {
        return Err(BrokerError::new(
            ErrorKind::InvalidConfiguration,
            HOP,
            format!(
                "key file {}: field `type` is {:?}, expected \"service_account\"",
                path.display(),
                key.kind
            ),
        ));
    }
    Ok(key)
}

/// Exchanges a signed assertion for an ID token or access token.
async fn fetch(
    ctx: &Context,
    key_file: &Path,
    target_audience: Option<&str>,
    scopes: Option<&[String]>,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    let key = read_key(key_file).await?;
    let encoding =
        EncodingKey::from_rsa_pem(key.private_key.expose_secret().as_bytes()).map_err(|_| {
            BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                format!(
                    "key file {}: field `private_key` is not an RSA private key in PEM form",
                    key_file.display()
                ),
            )
        })?;
    let now = ctx.clock.unix();
    let claims = ServiceAccountAssertion {
        iss: key.client_email.clone(),
        aud: OAUTH2_TOKEN_AUDIENCE.to_owned(),
        iat: now,
        exp: now + ASSERTION_LIFETIME_SECS,
        target_audience: target_audience.map(str::to_owned),
        scope: scopes.map(|s| s.join(" ")),
        sub: None,
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.private_key_id.clone());
    let assertion = SecretString::new(jsonwebtoken::encode(&header, &claims, &encoding).map_err(
        |e| {
            BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                format!("cannot sign assertion: {e}"),
            )
        },
    )?);
    let url = ctx
        .endpoints
        .google_oauth2
        .clone()
        .or(key.token_uri.clone())
        .unwrap_or_else(|| idbridge_core::env::DEFAULT_GOOGLE_OAUTH2_URL.to_owned());
    let body = crate::google::send_google(
        ctx,
        HOP,
        &url,
        ctx.http.post(&url).form(&[
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", assertion.expose_secret()),
        ]),
    )
    .await?;
    let parsed: OAuth2TokenResponse = serde_json::from_str(&body).map_err(|_| {
        BrokerError::unparsable(HOP, format!("unparsable token response from {url}"))
    })?;
    if target_audience.is_some() {
        let jwt = parsed
            .id_token
            .map(zeroize::Zeroizing::new)
            .ok_or_else(|| {
                BrokerError::unparsable(HOP, format!("no id_token in the response from {url}"))
            })?;
        return id_token_hop(HOP, &jwt, url, |_| "ID token".to_owned(), started, hops);
    }
    let (Some(token), Some(expires_in)) = (parsed.access_token, parsed.expires_in) else {
        return Err(BrokerError::unparsable(
            HOP,
            format!("no access_token/expires_in in the response from {url}"),
        ));
    };
    let expires_at = ctx.clock.now() + time::Duration::seconds(expires_in);
    hops.push(HopReport::new(
        HOP,
        url,
        format!("access token: {}", key.client_email),
        Some(expires_at),
        started,
    ));
    Ok(Credential::GoogleAccessToken(GoogleAccessToken {
        token: SecretString::new(token),
        expires_at,
        principal: Some(key.client_email),
        scopes: scopes.unwrap_or_default().to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_file_error_never_quotes_the_key() {
        let dir = tempfile::tempdir().unwrap();
        // A key file that is a JSON string instead of an object: serde's own message would
        // repeat the whole string.
        let path = dir.path().join("key.json");
        std::fs::write(
            &path,
            "\"-----BEGIN PRIVATE KEY-----\\nMIIEvQ-private-key-material\\n-----END PRIVATE KEY-----\\n\"",
        )
        .unwrap();
        let err = read_key(&path).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidConfiguration);
        let line = err.to_string();
        assert!(!line.contains("private-key-material"), "{line}");
        assert!(line.contains("not a service-account key"), "{line}");
        assert!(line.contains("line 1"), "{line}");
        // Missing fields are still named.
        std::fs::write(&path, r#"{"type":"service_account"}"#).unwrap();
        let line = read_key(&path).await.unwrap_err().to_string();
        assert!(line.contains("missing field"), "{line}");
    }
}
