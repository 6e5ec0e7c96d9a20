//! Source `azure-managed-identity`: a Microsoft Entra ID token of an Azure managed identity, the
//! OIDC subject of an `aws-sts` (`AssumeRoleWithWebIdentity`) or `google-sts` exchange.
//!
//! Two protocols, as the Azure SDKs speak them:
//!
//! * **Azure IMDS** (a VM, a scale set): `GET {host}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…`
//!   with `Metadata: true`. The host is the source's `endpoint`, then
//!   `AZURE_POD_IDENTITY_AUTHORITY_HOST` (the variable azure-identity and MSAL read), then
//!   `http://169.254.169.254`.
//! * **App Service** (also Functions, Container Apps): `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…`
//!   with `X-IDENTITY-HEADER: {IDENTITY_HEADER}`. The endpoint and secret are the source's
//!   `endpoint` and `identity_header`, else the environment's `IDENTITY_ENDPOINT` and
//!   `IDENTITY_HEADER`.
//!
//! Without `protocol`, the source picks as azure-identity does: App Service when both
//! `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set (or `identity_header` is configured),
//! IMDS otherwise. One of `client_id`, `object_id`, `msi_res_id` names a user-assigned
//! identity (App Service's name for the last is `mi_res_id`); none asks for the system-assigned
//! one.
//!
//! The access token is a JWT whose `iss` is the tenant's (`https://sts.windows.net/{tid}/` for
//! v1 tokens, `https://login.microsoftonline.com/{tid}/v2.0` for v2), `aud` the resource and
//! `sub` the identity's object id: the route carries it on as an ID token. The
//! `identity_header` secret and the token are [`SecretString`]s; a refusal's message is the
//! endpoint's own `error_description` (or `message`), never the request's header.

use idbridge_core::{Credential, SecretString};
use idbridge_wire::entra::resource_of_scope;
use serde::Deserialize;
use tokio::time::Instant;

use crate::step::{CredentialSource, Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::token::id_token_hop;
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport, Overrides};

/// The hop.
pub const HOP: Hop = Hop::new(
    "azure-managed-identity",
    "IDENTITY_ENDPOINT + IDENTITY_HEADER (App Service), AZURE_POD_IDENTITY_AUTHORITY_HOST (IMDS), or the source's `endpoint`",
);

/// App Service's endpoint variable.
pub const IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
/// App Service's secret variable.
pub const IDENTITY_HEADER: &str = "IDENTITY_HEADER";
/// The IMDS host override azure-identity and MSAL Python read.
pub const AZURE_POD_IDENTITY_AUTHORITY_HOST: &str = "AZURE_POD_IDENTITY_AUTHORITY_HOST";
/// Azure IMDS's address.
pub const DEFAULT_IMDS: &str = "http://169.254.169.254";
/// IMDS's token path.
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
/// The IMDS identity API version the SDKs send.
const IMDS_API_VERSION: &str = "2018-02-01";
/// The App Service protocol version.
const APP_SERVICE_API_VERSION: &str = "2019-08-01";
/// Longest error message repeated from the endpoint.
const MAX_MESSAGE: usize = 300;

/// Which protocol the source speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Protocol {
    /// Azure IMDS.
    Imds,
    /// App Service / Functions / Container Apps.
    AppService,
}

/// Which identity to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    /// The system-assigned identity (or the only user-assigned one).
    Default,
    /// A user-assigned identity's client id.
    ClientId(String),
    /// A user-assigned identity's object (principal) id.
    ObjectId(String),
    /// A user-assigned identity's ARM resource id.
    ResourceId(String),
}

impl Selector {
    /// The query parameter for `protocol`.
    fn param(&self, protocol: Protocol) -> Option<(&'static str, &str)> {
        match self {
            Selector::Default => None,
            Selector::ClientId(v) => Some(("client_id", v)),
            Selector::ObjectId(v) => Some(("object_id", v)),
            Selector::ResourceId(v) => Some((
                match protocol {
                    Protocol::Imds => "msi_res_id",
                    Protocol::AppService => "mi_res_id",
                },
                v,
            )),
        }
    }
}

/// `source = { kind = "azure-managed-identity", … }`: `resource` (the App ID URI the token is
/// for; a trailing `/.default` is dropped, as the SDKs do), at most one of `client_id`,
/// `object_id`, `msi_res_id`, and optionally `protocol` (`imds` | `app-service`), `endpoint`
/// (the IMDS host, or the App Service `IDENTITY_ENDPOINT`) and `identity_header` (App
/// Service's secret). `Debug` redacts the secret.
#[derive(Debug, Clone)]
pub struct AzureManagedIdentity {
    resource: String,
    selector: Selector,
    protocol: Option<Protocol>,
    endpoint: Option<String>,
    identity_header: Option<SecretString>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    resource: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    object_id: Option<String>,
    #[serde(default)]
    msi_res_id: Option<String>,
    #[serde(default)]
    protocol: Option<Protocol>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    identity_header: Option<SecretString>,
}

/// Where and how one request goes.
struct Target {
    protocol: Protocol,
    url: String,
    secret: Option<SecretString>,
}

impl AzureManagedIdentity {
    /// Reads `source = { kind = "azure-managed-identity", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Raw = p.table(table)?;
        let resource = raw
            .resource
            .strip_suffix("/.default")
            .unwrap_or(&raw.resource)
            .to_owned();
        if resource.is_empty() || resource.chars().any(char::is_whitespace) {
            return Err(p.invalid("resource", "must be one resource URI (an App ID URI)"));
        }
        let selectors = [
            ("client_id", raw.client_id.map(Selector::ClientId)),
            ("object_id", raw.object_id.map(Selector::ObjectId)),
            ("msi_res_id", raw.msi_res_id.map(Selector::ResourceId)),
        ];
        let given: Vec<_> = selectors
            .into_iter()
            .filter_map(|(name, s)| s.map(|s| (name, s)))
            .collect();
        let selector = match given.as_slice() {
            [] => Selector::Default,
            [(name, s)] => {
                let empty = match s {
                    Selector::ClientId(v) | Selector::ObjectId(v) | Selector::ResourceId(v) => {
                        v.is_empty()
                    }
                    Selector::Default => false,
                };
                if empty {
                    return Err(p.invalid(name, "must not be empty"));
                }
                s.clone()
            }
            [(a, _), (b, _), ..] => {
                return Err(p.invalid(
                    b,
                    format!("names an identity, as `{}` already does: give one of client_id, object_id, msi_res_id", p.field(a)),
                ));
            }
        };
        if let Some(e) = &raw.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(p.invalid("endpoint", format!("{e:?} is not an http(s) URL")));
        }
        if raw.identity_header.is_some() && raw.protocol == Some(Protocol::Imds) {
            return Err(p.invalid(
                "identity_header",
                "is App Service's secret; IMDS takes none (protocol = \"imds\")",
            ));
        }
        Ok(Box::new(AzureManagedIdentity {
            resource,
            selector,
            protocol: raw.protocol,
            endpoint: raw.endpoint,
            identity_header: raw.identity_header,
        }))
    }

    /// The protocol, URL and secret of a request, from the config and then the environment.
    fn target(&self, ctx: &Context) -> Result<Target, BrokerError> {
        let env = |k: &str| ctx.env.get(k).filter(|v| !v.is_empty());
        let app_service = match self.protocol {
            Some(p) => p == Protocol::AppService,
            None => {
                self.identity_header.is_some()
                    || (env(IDENTITY_ENDPOINT).is_some() && env(IDENTITY_HEADER).is_some())
            }
        };
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if app_service {
            let endpoint = self.endpoint.clone().or_else(|| env(IDENTITY_ENDPOINT)).ok_or_else(|| {
                BrokerError::new(
                    ErrorKind::NotConfigured,
                    HOP,
                    "App Service managed identity: neither the source's `endpoint` nor IDENTITY_ENDPOINT is set",
                )
            })?;
            let secret = self
                .identity_header
                .clone()
                .or_else(|| env(IDENTITY_HEADER).map(SecretString::new))
                .ok_or_else(|| {
                    BrokerError::new(
                        ErrorKind::NotConfigured,
                        HOP,
                        "App Service managed identity: neither the source's `identity_header` nor IDENTITY_HEADER is set",
                    )
                })?;
            query.append_pair("api-version", APP_SERVICE_API_VERSION);
            query.append_pair("resource", &self.resource);
            if let Some((k, v)) = self.selector.param(Protocol::AppService) {
                query.append_pair(k, v);
            }
            let sep = if endpoint.contains('?') { '&' } else { '?' };
            Ok(Target {
                protocol: Protocol::AppService,
                url: format!("{endpoint}{sep}{}", query.finish()),
                secret: Some(secret),
            })
        } else {
            let host = self
                .endpoint
                .clone()
                .or_else(|| env(AZURE_POD_IDENTITY_AUTHORITY_HOST))
                .unwrap_or_else(|| DEFAULT_IMDS.to_owned());
            Ok(Target {
                protocol: Protocol::Imds,
                url: imds_url(&host, &self.resource, &self.selector),
                secret: None,
            })
        }
    }

    /// Asks the endpoint for a token.
    async fn fetch(
        &self,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let target = self.target(ctx)?;
        let started = Instant::now();
        let shown = target.url.split('?').next().unwrap_or_default().to_owned();
        let mut req = ctx.http.get(&target.url);
        req = match (&target.protocol, &target.secret) {
            (Protocol::AppService, Some(secret)) => {
                let mut value =
                    http::HeaderValue::from_str(secret.expose_secret()).map_err(|_| {
                        BrokerError::new(
                            ErrorKind::InvalidConfiguration,
                            HOP,
                            "the App Service identity header is not a legal header value",
                        )
                    })?;
                value.set_sensitive(true);
                req.header("X-IDENTITY-HEADER", value)
            }
            _ => req.header("Metadata", "true"),
        };
        let secret = target.secret.clone();
        let body = crate::upstream::send(ctx, HOP, &shown, req, |body| {
            refusal(body, secret.as_ref().map(SecretString::expose_secret))
        })
        .await?;
        #[derive(Deserialize)]
        struct TokenBody {
            access_token: SecretString,
        }
        let parsed: TokenBody = serde_json::from_str(&body).map_err(|_| {
            BrokerError::unparsable(HOP, format!("unparsable token response from {shown}"))
        })?;
        let protocol = match target.protocol {
            Protocol::Imds => "IMDS",
            Protocol::AppService => "App Service",
        };
        id_token_hop(
            HOP,
            parsed.access_token.expose_secret(),
            shown,
            |claims| {
                let issuer = claims.str_claim("iss").unwrap_or("?");
                format!("Entra token ({protocol}) of {issuer}")
            },
            started,
            hops,
        )
    }
}

/// The IMDS token URL on `host` for `resource` and `selector`.
fn imds_url(host: &str, resource: &str, selector: &Selector) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("api-version", IMDS_API_VERSION);
    query.append_pair("resource", resource);
    if let Some((k, v)) = selector.param(Protocol::Imds) {
        query.append_pair(k, v);
    }
    format!(
        "{}{IMDS_PATH}?{}",
        host.trim_end_matches('/'),
        query.finish()
    )
}

/// The code and message of a refusal: IMDS's `{"error", "error_description"}` or App Service's
/// `{"statusCode", "message"}`; an unrecognised body, or one that repeats the secret, is never
/// repeated.
fn refusal(body: &str, secret: Option<&str>) -> (Option<String>, String) {
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        error_description: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    let Ok(b) = serde_json::from_str::<Body>(body) else {
        return (
            None,
            "the managed identity endpoint refused (unrecognised error body)".to_owned(),
        );
    };
    let message = b
        .error_description
        .or(b.message)
        .map(|m| {
            let line = m.lines().next().unwrap_or_default();
            line.chars().take(MAX_MESSAGE).collect::<String>()
        })
        .filter(|m| secret.is_none_or(|s| s.is_empty() || !m.contains(s)))
        .unwrap_or_else(|| "the managed identity endpoint refused".to_owned());
    (b.error, message)
}

impl Step for AzureManagedIdentity {
    fn kind(&self) -> &'static str {
        "azure-managed-identity"
    }

    fn yields(&self) -> Yields {
        Yields::IdToken
    }

    fn describe(&self) -> String {
        let who = match &self.selector {
            Selector::Default => "the system-assigned identity".to_owned(),
            Selector::ClientId(v) => format!("managed identity client_id {v}"),
            Selector::ObjectId(v) => format!("managed identity object_id {v}"),
            Selector::ResourceId(v) => format!("managed identity {v}"),
        };
        format!("Entra token of {who} for {}", self.resource)
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            audience: Some(&self.resource),
            ..Facts::default()
        }
    }

    /// A token for another resource: the audience (the resource URI), or one
    /// `<resource>/.default` scope.
    fn with_overrides(&self, overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        let resource = match (&overrides.audience, &overrides.scopes) {
            (Some(a), None) => Ok(a.strip_suffix("/.default").unwrap_or(a).to_owned()),
            (None, Some(scopes)) => resource_of_scope(&scopes.join(" "))
                .map(str::to_owned)
                .map_err(|_| {
                    format!(
                        "its source (azure-managed-identity) takes one `<resource>/.default` scope, not {:?}",
                        scopes.join(" ")
                    )
                }),
            (None, None) => Ok(self.resource.clone()),
            (Some(_), Some(_)) => {
                Err("give an audience or a scope, not both".to_owned())
            }
        };
        Some(resource.and_then(|resource| {
            if resource.is_empty() || resource.chars().any(char::is_whitespace) {
                return Err(format!("{resource:?} is not a resource URI"));
            }
            Ok(Box::new(AzureManagedIdentity {
                resource,
                ..self.clone()
            }) as Box<dyn Step>)
        }))
    }

    /// Google's URL-sourced credential for Azure: the IMDS URL with `Metadata: True` and the
    /// token in `access_token` (App Service's secret is never written to a file).
    fn credential_source(&self, _imds: &str) -> Option<CredentialSource> {
        if self.protocol == Some(Protocol::AppService) || self.identity_header.is_some() {
            return None;
        }
        let host = self.endpoint.as_deref().unwrap_or(DEFAULT_IMDS);
        Some(CredentialSource {
            credential_source: serde_json::json!({
                "url": imds_url(host, &self.resource, &self.selector),
                "headers": {"Metadata": "True"},
                "format": {"type": "json", "subject_token_field_name": "access_token"},
            }),
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

#[cfg(test)]
mod tests {
    use crate::Overrides;
    use crate::config::Config;

    fn parse(source: &str) -> Result<String, String> {
        let text = format!(
            "[[route]]\nname = \"r\"\nsource = {source}\nexchange = [{{ kind = \"aws-sts\", role_arn = \"arn:aws:iam::111122223333:role/r\" }}]\n"
        );
        Config::parse(&text, "c.toml", None)
            .map(|c| format!("{:?}", c.routes[0].source))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn overrides_name_another_resource() {
        let cfg = Config::parse(
            "[[route]]\nname = \"r\"\nsource = { kind = \"azure-managed-identity\", resource = \"api://a\" }\n",
            "r.toml",
            None,
        )
        .unwrap();
        let source = &cfg.routes[0].source;
        let by = |audience: Option<&str>, scopes: Option<&[&str]>| {
            source.with_overrides(&Overrides {
                audience: audience.map(str::to_owned),
                scopes: scopes.map(|s| s.iter().map(|s| (*s).to_owned()).collect()),
            })
        };
        let d = by(Some("api://b"), None).unwrap().unwrap().describe();
        assert!(d.ends_with("for api://b"), "{d}");
        let d = by(None, Some(&["api://c/.default"]))
            .unwrap()
            .unwrap()
            .describe();
        assert!(d.ends_with("for api://c"), "{d}");
        assert!(by(None, Some(&["api://c"])).unwrap().is_err());
        assert!(by(Some("a b"), None).unwrap().is_err());
    }

    #[test]
    fn reads_and_checks_its_fields() {
        let d =
            parse(r#"{ kind = "azure-managed-identity", resource = "api://x/.default" }"#).unwrap();
        assert!(d.contains("resource: \"api://x\""), "{d}");
        let d = parse(r#"{ kind = "azure-managed-identity", resource = "api://x", protocol = "app-service", identity_header = "s3cret-value", endpoint = "http://127.0.0.1:1/msi/token" }"#).unwrap();
        assert!(!d.contains("s3cret-value"), "the secret leaked: {d}");
        let e = parse(r#"{ kind = "azure-managed-identity", resource = "api://x", client_id = "a", msi_res_id = "b" }"#).unwrap_err();
        assert!(
            e.contains("c.toml") && e.contains("`source.msi_res_id`"),
            "{e}"
        );
        let e =
            parse(r#"{ kind = "azure-managed-identity", resource = "api://x", protocol = "arc" }"#)
                .unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        let e = parse(r#"{ kind = "azure-managed-identity", resource = "" }"#).unwrap_err();
        assert!(e.contains("`source.resource`"), "{e}");
        let e = parse(r#"{ kind = "azure-managed-identity", resource = "api://x", protocol = "imds", identity_header = "s" }"#).unwrap_err();
        assert!(
            e.contains("`source.identity_header`") && !e.contains("\"s\""),
            "{e}"
        );
        let e = parse(r#"{ kind = "azure-managed-identity", resource = "api://x", endpoint = "169.254.169.254" }"#).unwrap_err();
        assert!(e.contains("`source.endpoint`"), "{e}");
    }

    #[test]
    fn urls_and_refusals() {
        use super::*;
        assert_eq!(
            imds_url(
                "http://h/",
                "api://x",
                &Selector::ResourceId("/subscriptions/s".into())
            ),
            "http://h/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api%3A%2F%2Fx&msi_res_id=%2Fsubscriptions%2Fs"
        );
        let (code, msg) = refusal(
            r#"{"error":"invalid_resource","error_description":"AADSTS500011: The resource principal named api://x was not found\nTrace ID: 1"}"#,
            None,
        );
        assert_eq!(code.as_deref(), Some("invalid_resource"));
        assert!(
            msg.starts_with("AADSTS500011") && !msg.contains("Trace"),
            "{msg}"
        );
        let (_, msg) = refusal(
            r#"{"statusCode":401,"message":"bad header topsecret"}"#,
            Some("topsecret"),
        );
        assert!(!msg.contains("topsecret"), "{msg}");
        let (code, msg) = refusal("<html>nope</html>", None);
        assert!(code.is_none() && !msg.contains("nope"), "{msg}");
    }
}
