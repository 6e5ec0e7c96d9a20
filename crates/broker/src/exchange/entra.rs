//! Exchange `entra`: Microsoft Entra ID workload identity federation.
//!
//! `POST {authority}/{tenant}/oauth2/v2.0/token`, form-encoded: `grant_type=client_credentials`,
//! `client_id`, `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`,
//! `client_assertion` = the JWT the route holds (a Google ID token, a JWT-SVID, a Kubernetes or
//! any OIDC token), `scope` = `<resource>/.default`. Entra checks the assertion against the app's
//! (or managed identity's) federated identity credentials — issuer, subject and audience, by
//! default `api://AzureADTokenExchange` — and answers with an access token for the resource.
//!
//! The authority is the exchange's `authority`, then `AZURE_AUTHORITY_HOST` (the variable the
//! Azure SDKs read), then `https://login.microsoftonline.com`. An `https://` authority is
//! checked against the platform's trust store, which honours `SSL_CERT_FILE` (so a private CA,
//! such as the emulator's, is trusted by pointing that variable at a bundle that holds it).
//!
//! A refusal carries Entra's AADSTS code (`AADSTS700212`) and the first line of its
//! `error_description` (never the trace lines, never an unrecognised body).

use idbridge_core::{AzureAccessToken, Credential, IdToken, SecretString};
use idbridge_wire::entra::{ErrorBody, JWT_BEARER_ASSERTION_TYPE, resource_of_scope};
use serde::Deserialize;
use tokio::time::Instant;

use crate::step::{EntraFederation, Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport, Overrides};

/// The hop.
pub const HOP: Hop = Hop::new(
    "entra",
    "AZURE_AUTHORITY_HOST (or the exchange's `authority`)",
);
/// The environment variable naming the Entra authority host (read by the Azure SDKs too).
pub const AZURE_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
/// The public cloud's authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";

/// `exchange = [{ kind = "entra", … }]`: `tenant` (id or domain), `client_id` (the app
/// registration's or user-assigned managed identity's), `scope` (`<resource>/.default`),
/// `authority` (default `AZURE_AUTHORITY_HOST`, then the public cloud).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entra {
    tenant: String,
    client_id: String,
    scope: String,
    authority: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    tenant: String,
    client_id: String,
    scope: String,
    #[serde(default)]
    authority: Option<String>,
}

/// Whether `s` is one URL path segment (a tenant id or domain): non-empty, no `/`, `?`, `#`,
/// whitespace.
fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

impl Entra {
    /// Reads `{ kind = "entra", … }` in `exchange`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Raw = p.table(table)?;
        if !is_segment(&raw.tenant) {
            return Err(p.invalid(
                "tenant",
                format!("{:?} is not a tenant id or domain", raw.tenant),
            ));
        }
        if !is_segment(&raw.client_id) {
            return Err(p.invalid(
                "client_id",
                format!("{:?} is not a client id", raw.client_id),
            ));
        }
        if resource_of_scope(&raw.scope).is_err() {
            return Err(p.invalid(
                "scope",
                format!(
                    "{:?} must name one resource as `<resource>/.default`",
                    raw.scope
                ),
            ));
        }
        if let Some(a) = &raw.authority
            && !(a.starts_with("https://") || a.starts_with("http://"))
        {
            return Err(p.invalid("authority", format!("{a:?} is not an http(s) URL")));
        }
        Ok(Box::new(Entra {
            tenant: raw.tenant,
            client_id: raw.client_id,
            scope: raw.scope,
            authority: raw.authority,
        }))
    }

    /// The token endpoint.
    fn token_url(&self, ctx: &Context) -> String {
        let authority = self
            .authority
            .clone()
            .or_else(|| ctx.env.get(AZURE_AUTHORITY_HOST))
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned());
        format!(
            "{}/{}/oauth2/v2.0/token",
            authority.trim_end_matches('/'),
            self.tenant
        )
    }

    async fn exchange(
        &self,
        input: Input<'_>,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let Some(Credential::IdToken(IdToken { token, .. })) = input.credential else {
            return Err(BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                "needs a JWT (an ID token) from the previous hop",
            ));
        };
        let started = Instant::now();
        let url = self.token_url(ctx);
        let body = crate::upstream::send(
            ctx,
            HOP,
            &url,
            ctx.http.post(&url).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
                ("client_assertion", token.expose_secret()),
                ("scope", self.scope.as_str()),
            ]),
            entra_error,
        )
        .await?;
        #[derive(Deserialize)]
        struct Resp {
            access_token: SecretString,
            expires_in: i64,
        }
        let parsed: Resp = serde_json::from_str(&body).map_err(|_| {
            BrokerError::unparsable(HOP, format!("unparsable token response from {url}"))
        })?;
        let expires_at = ctx.clock.now() + time::Duration::seconds(parsed.expires_in);
        hops.push(HopReport::new(
            HOP,
            url,
            format!(
                "Azure access token of {} in tenant {} for {}",
                self.client_id, self.tenant, self.scope
            ),
            Some(expires_at),
            started,
        ));
        Ok(Credential::AzureAccessToken(AzureAccessToken {
            token: parsed.access_token,
            expires_at,
            tenant: self.tenant.clone(),
            client_id: self.client_id.clone(),
            scope: self.scope.clone(),
        }))
    }
}

/// Reads Entra's error body: the code as `AADSTS<n>` and the first line of the description
/// without its `AADSTS<n>: ` prefix (the trace, correlation and timestamp lines dropped); an
/// unrecognised body is never repeated.
pub fn entra_error(body: &str) -> (Option<String>, String) {
    let Ok(e) = serde_json::from_str::<ErrorBody>(body) else {
        return (None, "unrecognised error body".to_owned());
    };
    let first = e.error_description.lines().next().unwrap_or_default();
    let message = match first.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("AADSTS") => rest,
        _ => first,
    };
    let code = e
        .code()
        .map_or_else(|| e.error.clone(), |c| format!("AADSTS{c}"));
    (Some(code), format!("{} ({})", message.trim(), e.error))
}

impl Step for Entra {
    fn kind(&self) -> &'static str {
        "entra"
    }

    fn takes(&self) -> &'static [Yields] {
        &[Yields::IdToken]
    }

    fn refuses(&self, got: Yields) -> String {
        format!(
            "entra needs a JWT (an ID token: set an audience), but the previous hop yields {}",
            got.described()
        )
    }

    fn yields(&self) -> Yields {
        Yields::AzureAccessToken
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            entra: Some(EntraFederation {
                tenant: &self.tenant,
                client_id: &self.client_id,
                scope: &self.scope,
            }),
            ..Facts::default()
        }
    }

    fn describe(&self) -> String {
        format!(
            "Entra app {} in tenant {} for {}",
            self.client_id, self.tenant, self.scope
        )
    }

    /// Another resource's token: one `<resource>/.default` scope (an audience is refused: Entra
    /// access tokens are asked for by scope).
    fn with_overrides(&self, overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        if overrides.audience.is_some() {
            return Some(Err(
                "its last hop (entra) yields an Azure access token: ask for a scope, not an audience"
                    .to_owned(),
            ));
        }
        let Some(scopes) = &overrides.scopes else {
            return Some(Ok(Box::new(self.clone())));
        };
        let scope = scopes.join(" ");
        Some(match resource_of_scope(&scope) {
            Ok(resource) => Ok(Box::new(Entra {
                scope: format!("{resource}/.default"),
                ..self.clone()
            })),
            Err(_) => Err(format!(
                "its last hop (entra) takes one `<resource>/.default` scope, not {scope:?}"
            )),
        })
    }

    fn run<'a>(
        &'a self,
        input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(self.exchange(input, ctx, hops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_ask_for_one_other_scope() {
        let e = Entra {
            tenant: "t".into(),
            client_id: "c".into(),
            scope: "api://a/.default".into(),
            authority: None,
        };
        let scopes = |s: &[&str]| Overrides {
            audience: None,
            scopes: Some(s.iter().map(|s| (*s).to_owned()).collect()),
        };
        let other = e
            .with_overrides(&scopes(&["api://b/.default", "openid"]))
            .unwrap()
            .unwrap();
        assert!(
            other.describe().ends_with("for api://b/.default"),
            "{}",
            other.describe()
        );
        for bad in [
            scopes(&["api://b/.default", "api://c/.default"]),
            scopes(&["api://b"]),
        ] {
            assert!(e.with_overrides(&bad).unwrap().is_err(), "{bad:?}");
        }
        let aud = Overrides {
            audience: Some("x".into()),
            scopes: None,
        };
        assert!(
            e.with_overrides(&aud)
                .unwrap()
                .unwrap_err()
                .contains("scope")
        );
    }

    #[test]
    fn errors_keep_the_code_and_first_line_only() {
        let b = ErrorBody::new(
            "invalid_client",
            700212,
            "No matching federated identity record found for presented assertion audience 'x'.",
            "2026-01-01 00:00:00Z",
            "trace-1",
            "corr-1",
        );
        let (code, message) = entra_error(&serde_json::to_string(&b).unwrap());
        assert_eq!(code.as_deref(), Some("AADSTS700212"));
        assert!(message.starts_with("No matching federated identity record"));
        assert!(message.ends_with("(invalid_client)"), "{message}");
        assert!(!message.contains("trace-1") && !message.contains("AADSTS"));
        assert_eq!(
            entra_error("<html>eyJsecret</html>"),
            (None, "unrecognised error body".to_owned())
        );
    }

    #[test]
    fn segments() {
        assert!(is_segment("contoso.onmicrosoft.com"));
        assert!(is_segment("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(!is_segment("a/b"));
        assert!(!is_segment(""));
        assert!(!is_segment("a b"));
    }
}
