//! The Azure App Service / Functions / Container Apps managed-identity frontend: route Entra
//! access tokens at `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…` with
//! `X-IDENTITY-HEADER: {IDENTITY_HEADER}`.
//!
//! Point azure-identity (Python, JavaScript, Go) and MSAL at it with
//! `IDENTITY_ENDPOINT=http://127.0.0.1:PORT/msi/token` and `IDENTITY_HEADER` (both written by
//! `--env-file`). The SDKs prefer these variables over IMDS. Wire behaviour (the rules are
//! [`idbridge_wire::azure_imds::admit_app_service`], shared with the emulator):
//!
//! * only `GET` at the configured `path` (any other path is 404); `X-IDENTITY-HEADER` must equal
//!   the endpoint's secret, compared in constant time and checked first (absent: 400, wrong:
//!   401); `api-version` must be `2019-08-01`; `resource` is required; at most one of
//!   `client_id`, `object_id` (`principal_id`), `mi_res_id`;
//! * the resource and selector choose a `[[serve.azure_app_service.resource]]` entry
//!   ([`crate::azure`]);
//! * the answer is `{"access_token","expires_on","resource","token_type","client_id"}`, with
//!   `expires_on` a string epoch and no `expires_in`;
//! * a caller not allowed the route gets 403; a failing route 503 (transient) or 500. Every
//!   error is `{"statusCode","message","correlationId"}`.
//!
//! ```toml
//! [serve.azure_app_service]
//! port = 0
//! path = "/msi/token"                  # default
//! identity_header_file = "id.secret"   # or identity_header = "…"; neither: generated
//! [[serve.azure_app_service.resource]]
//! resource = "https://vault.azure.net"
//! route = "gcp-to-azure"
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idbridge_broker::ConfigError;
use idbridge_core::SecretString;
use idbridge_wire::azure_imds::{self as wire, AppServiceToken, Refused};
use serde::Deserialize;
use toml::Spanned;

use crate::Frontend;
use crate::azure::{RawResource, Resource};
use crate::broker::Broker;
use crate::caller::Peer;
use crate::config::Listen;
use crate::frontend::{Configured, Kind, Section};

/// The variable naming the endpoint's URL.
pub const IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
/// The variable naming the endpoint's secret.
pub const IDENTITY_HEADER: &str = "IDENTITY_HEADER";
/// The path served when none is configured (the App Service sample's).
pub const DEFAULT_PATH: &str = "/msi/token";

/// The kind, registered in [`crate::frontend::KINDS`].
pub static KIND: AzureAppService = AzureAppService;

/// `[serve.azure_app_service]`.
#[derive(Debug)]
pub struct AzureAppService;

const SECTION: &str = "[serve.azure_app_service]";
const TABLE: &str = "[[serve.azure_app_service.resource]]";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    port: Option<Spanned<u16>>,
    #[serde(default)]
    socket: Option<Spanned<PathBuf>>,
    #[serde(default)]
    path: Option<Spanned<String>>,
    /// Held as a secret from the moment it is read: this struct derives `Debug`.
    #[serde(default)]
    identity_header: Option<Spanned<SecretString>>,
    #[serde(default)]
    identity_header_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    resource: Vec<Spanned<RawResource>>,
}

/// Where the endpoint's secret came from.
#[derive(Debug, Clone)]
pub enum IdentityHeader {
    /// `identity_header = "…"`.
    Inline(SecretString),
    /// `identity_header_file = "…"`, read at load (a final newline dropped).
    File(PathBuf, SecretString),
    /// Generated at load; handed to clients through `--env-file`.
    Generated(SecretString),
}

impl IdentityHeader {
    /// The secret.
    pub fn secret(&self) -> &SecretString {
        match self {
            IdentityHeader::Inline(s)
            | IdentityHeader::File(_, s)
            | IdentityHeader::Generated(s) => s,
        }
    }
}

/// A validated `[serve.azure_app_service]`.
#[derive(Debug, Clone)]
pub struct AzureAppServiceConfig {
    /// Where it listens.
    pub listen: Listen,
    /// The request path.
    pub path: String,
    /// The `X-IDENTITY-HEADER` value clients must send.
    pub identity_header: IdentityHeader,
    /// Resources and their routes.
    pub resources: Vec<Resource>,
}

fn printable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

impl Kind for AzureAppService {
    fn name(&self) -> &'static str {
        "azure_app_service"
    }

    fn section(&self) -> &'static str {
        SECTION
    }

    fn title(&self) -> &'static str {
        "Azure App Service"
    }

    fn parse(&self, s: Section<'_, '_>) -> Result<Arc<dyn Configured>, ConfigError> {
        let raw = s.deserialize::<Raw>()?;
        let span = raw.span();
        let raw = raw.into_inner();
        let listen = s.listen(raw.port, raw.socket)?;
        let path = match &raw.path {
            None => DEFAULT_PATH.to_owned(),
            Some(p) => {
                let v = p.get_ref();
                if !v.starts_with('/') || v.contains(['?', '#', ' ']) {
                    return Err(s.err(
                        p.span(),
                        format!("{SECTION} field `path`: {v:?} must be a URL path starting with /"),
                    ));
                }
                v.clone()
            }
        };
        let bad = |field: &str| {
            format!(
                "{SECTION} field `{field}`: the secret must be non-empty printable ASCII without \
                 spaces (it is sent verbatim as the X-IDENTITY-HEADER header)"
            )
        };
        let identity_header = match (raw.identity_header, raw.identity_header_file) {
            (Some(_), Some(f)) => {
                return Err(s.err(
                    f.span(),
                    format!(
                        "{SECTION}: set only one of `identity_header` and `identity_header_file`"
                    ),
                ));
            }
            (Some(t), None) => {
                if !printable(t.get_ref().expose_secret()) {
                    return Err(s.err(t.span(), bad("identity_header")));
                }
                IdentityHeader::Inline(t.into_inner())
            }
            (None, Some(f)) => {
                let file = s.absolute(f.get_ref());
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    s.err(
                        f.span(),
                        format!(
                            "{SECTION} field `identity_header_file`: cannot read {}: {e}",
                            file.display()
                        ),
                    )
                })?;
                let text = zeroize::Zeroizing::new(text);
                let secret = text.strip_suffix('\n').unwrap_or(&text);
                let secret = secret.strip_suffix('\r').unwrap_or(secret);
                if !printable(secret) {
                    return Err(s.err(f.span(), bad("identity_header_file")));
                }
                IdentityHeader::File(file, SecretString::new(secret))
            }
            (None, None) => IdentityHeader::Generated(SecretString::new(
                URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
            )),
        };
        let resources = crate::azure::resources(&s, SECTION, TABLE, span, raw.resource)?;
        Ok(Arc::new(AzureAppServiceConfig {
            listen,
            path,
            identity_header,
            resources,
        }))
    }
}

impl Configured for AzureAppServiceConfig {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }

    fn listen(&self) -> &Listen {
        &self.listen
    }

    fn routes(&self) -> Vec<String> {
        self.resources.iter().map(|r| r.route.clone()).collect()
    }

    fn router(&self, broker: Arc<Broker>) -> Router {
        router(broker, self.clone())
    }

    fn env(&self, base: &str) -> Vec<(&'static str, SecretString)> {
        vec![
            (
                IDENTITY_ENDPOINT,
                SecretString::new(format!("{base}{}", self.path)),
            ),
            (IDENTITY_HEADER, self.identity_header.secret().clone()),
        ]
    }

    fn needs_env_file(&self) -> Option<String> {
        matches!(self.identity_header, IdentityHeader::Generated(_)).then(|| {
            "the Azure App Service frontend's identity header is generated and no --env-file \
             was given: no client can learn it"
                .to_owned()
        })
    }
}

#[derive(Debug)]
struct AppServiceState {
    broker: Arc<Broker>,
    path: String,
    secret: SecretString,
    resources: Vec<Resource>,
}

/// The App Service identity router for `config`, backed by `broker`.
pub fn router(broker: Arc<Broker>, config: AzureAppServiceConfig) -> Router {
    let state = Arc::new(AppServiceState {
        broker: Arc::clone(&broker),
        path: config.path,
        secret: config.identity_header.secret().clone(),
        resources: config.resources,
    });
    let r = Router::new()
        .fallback(handle)
        .with_state(state)
        .layer(middleware::from_fn(crate::http::limit_headers));
    crate::http::observe(r, Frontend::Registered(KIND.name()), broker)
}

fn json(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn refused(r: &Refused) -> Response {
    tracing::info!(status = %r.status, "azure app service identity: refused");
    let body = r.app_service_body(&crate::frontend::correlation_id());
    json(r.status, serde_json::to_string(&body).unwrap_or_default())
}

async fn handle(State(s): State<Arc<AppServiceState>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    // The secret first: an unauthenticated client learns nothing about the paths.
    let admitted = wire::admit_app_service(
        &parts.method,
        &parts.headers,
        parts.uri.query(),
        s.secret.expose_secret(),
    );
    if let Err(r) = &admitted
        && (r.status == StatusCode::UNAUTHORIZED
            || !parts.headers.contains_key(wire::IDENTITY_HEADER))
    {
        return refused(r);
    }
    if parts.uri.path() != s.path {
        return refused(&Refused {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            message: "No identity endpoint at this path".to_owned(),
        });
    }
    let request = match admitted {
        Ok(r) => r,
        Err(r) => return refused(&r),
    };
    let peer = Peer::of(&parts.extensions);
    match crate::azure::token(&s.broker, peer, &s.resources, &request).await {
        Ok(t) => {
            let doc = AppServiceToken {
                access_token: t.token.expose_secret().to_owned(),
                expires_on: t.expires_at.unix_timestamp().to_string(),
                resource: request.resource,
                token_type: "Bearer".to_owned(),
                client_id: t.client_id.clone(),
            };
            match serde_json::to_string(&doc) {
                Ok(body) => json(StatusCode::OK, body),
                Err(_) => refused(&Refused {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    error: "unknown",
                    message: "cannot encode the token".to_owned(),
                }),
            }
        }
        Err(r) => refused(&r),
    }
}
