//! Source `oidc-url`: a token served over HTTP (Google's URL-sourced credentials, e.g. a local
//! token server or Azure IMDS), fetched on every refresh.

use idbridge_core::Credential;
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::RequestHeaders;
use crate::step::{CredentialSource, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::token::{id_token_hop, token_from_body};
use crate::{BrokerError, Context, Hop, HopReport};

/// The hop.
pub const HOP: Hop = Hop::named("oidc-url");

/// `source = { kind = "oidc-url", … }`: `url`, `headers`, `json_field`: a token served over
/// HTTP. `Debug` shows header names only (a value may be a credential).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcUrl {
    url: String,
    #[serde(default)]
    headers: RequestHeaders,
    #[serde(default)]
    json_field: Option<String>,
}

impl OidcUrl {
    /// Reads `source = { kind = "oidc-url", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: OidcUrl = p.table(table)?;
        if !raw.url.starts_with("http://") && !raw.url.starts_with("https://") {
            return Err(p.invalid("url", "must be an http(s) URL"));
        }
        Ok(Box::new(raw))
    }

    /// The extra request headers.
    pub fn headers(&self) -> &RequestHeaders {
        &self.headers
    }

    /// GETs the token.
    async fn fetch(
        &self,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let url = self.url.as_str();
        let headers = &self.headers;
        let json_field = self.json_field.as_deref();
        let started = Instant::now();
        let mut req = ctx.http.get(url);
        for (k, v) in headers.iter() {
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
        let token = zeroize::Zeroizing::new(token_from_body(HOP, url, &body, json_field)?);
        id_token_hop(HOP, &token, url, |_| "token".to_owned(), started, hops)
    }
}

impl Step for OidcUrl {
    fn kind(&self) -> &'static str {
        "oidc-url"
    }

    fn yields(&self) -> Yields {
        Yields::IdToken
    }

    fn describe(&self) -> String {
        format!("token URL {}", self.url)
    }

    fn credential_source(&self, _imds: &str) -> Option<CredentialSource> {
        let mut src = serde_json::json!({"url": self.url});
        if !self.headers.is_empty() {
            src["headers"] = serde_json::json!(self.headers);
        }
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
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(self.fetch(ctx, hops))
    }
}
