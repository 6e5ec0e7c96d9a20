//! Source `gce-metadata`: the GCE metadata server.
//!
//! * ID token: `GET http://$GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/{sa}/identity?audience=…&format=full`
//!   (plain-text JWT).
//! * Access token: `GET …/{sa}/token?scopes=a,b` (JSON `access_token`, `expires_in`).
//!
//! Every request carries `Metadata-Flavor: Google`. The host comes from the config's
//! `endpoints.gce_metadata_host`, then `GCE_METADATA_HOST`, then `metadata.google.internal`.

use idbridge_core::{Credential, GoogleAccessToken};
use serde::Deserialize;
use tokio::time::Instant;

use crate::step::{Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::token::id_token_hop;
use crate::values::Mint;
use crate::{BrokerError, Context, Hop, HopReport, Overrides};

/// The hop.
pub const HOP: Hop = Hop::new(
    "gce-metadata",
    "GCE_METADATA_HOST (or [endpoints] gce_metadata_host)",
);

/// `source = { kind = "gce-metadata", … }`: `audience` (ID token) or `scopes` (access token);
/// `service_account` (default `default`); `format` `full`|`standard` for ID tokens (default
/// `full`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GceMetadata {
    service_account: String,
    mint: Mint,
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_sa")]
    service_account: String,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    format: Option<String>,
}

fn default_sa() -> String {
    "default".to_owned()
}

impl GceMetadata {
    /// Reads `source = { kind = "gce-metadata", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Raw = p.table(table)?;
        let mint = Mint::exactly_one(
            raw.audience,
            raw.scopes,
            &p.field("audience"),
            &p.field("scopes"),
        )
        .map_err(KindError::Invalid)?;
        if let Some(f) = &raw.format
            && f != "full"
            && f != "standard"
        {
            return Err(p.invalid(
                "format",
                format!("must be \"full\" or \"standard\", not {f:?}"),
            ));
        }
        Ok(Box::new(GceMetadata {
            service_account: raw.service_account,
            mint,
            format: raw.format,
        }))
    }

    /// The VM's default account with the scope that may call IAM Credentials: the caller of an
    /// `impersonate` source that names none.
    pub fn default_caller() -> Self {
        GceMetadata {
            service_account: "default".to_owned(),
            mint: Mint::AccessToken(vec![super::impersonate::CLOUD_PLATFORM.to_owned()]),
            format: None,
        }
    }

    /// Fetches an ID token (`audience`) or access token (`scopes`).
    async fn fetch(
        &self,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let started = Instant::now();
        let service_account = self.service_account.as_str();
        let audience = self.mint.audience();
        let scopes = self.mint.scopes();
        let format = self.format.as_deref();
        let sa = urlencode(service_account);
        if let Some(aud) = audience {
            let q = format!(
                "instance/service-accounts/{sa}/identity?audience={}&format={}",
                urlencode(aud),
                format.unwrap_or("full")
            );
            let (jwt, shown) = get(ctx, &q).await?;
            return id_token_hop(HOP, &jwt, shown, |_| "ID token".to_owned(), started, hops);
        }
        let scopes = scopes.unwrap_or_default();
        let mut q = format!("instance/service-accounts/{sa}/token");
        if !scopes.is_empty() {
            q.push_str(&format!("?scopes={}", urlencode(&scopes.join(","))));
        }
        let (body, shown) = get(ctx, &q).await?;
        let parsed: idbridge_wire::gce_metadata::TokenResponse = serde_json::from_str(&body)
            .map_err(|_| {
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
}

impl Step for GceMetadata {
    fn kind(&self) -> &'static str {
        "gce-metadata"
    }

    fn yields(&self) -> Yields {
        self.mint.yields()
    }

    fn describe(&self) -> String {
        match &self.mint {
            Mint::IdToken(a) => format!("ID token of {} for {a}", self.service_account),
            Mint::AccessToken(_) => format!("access token of {}", self.service_account),
        }
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            audience: self.mint.audience(),
            scopes: self.mint.scopes(),
            service_account: Some(&self.service_account),
            google_id_token: true,
            ..Facts::default()
        }
    }

    fn with_overrides(&self, overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        let mint = Mint::overridden(overrides)?;
        Some(Ok(Box::new(GceMetadata {
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

pub(crate) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
