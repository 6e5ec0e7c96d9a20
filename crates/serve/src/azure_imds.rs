//! The Azure IMDS frontend: route Entra access tokens at
//! `GET /metadata/identity/oauth2/token?api-version=…&resource=…` with `Metadata: true`, as an
//! Azure VM's instance metadata service answers them.
//!
//! Point azure-identity (Python and JavaScript) and MSAL at it with
//! `AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:PORT` (they append the token path; with
//! the variable set azure-identity skips its availability probe). The Go SDK has no override
//! of the IMDS address; use [`crate::azure_app_service`] there. Wire behaviour (the rules are
//! [`idbridge_wire::azure_imds::admit_imds`], shared with the emulator's Azure VM):
//!
//! * only `GET` (405); a request carrying `X-Forwarded-For` is 400; `Metadata: true` is required
//!   (400 "Required metadata header not specified"); `api-version` and `resource` are required;
//!   at most one of `client_id`, `object_id`, `msi_res_id`;
//! * the resource and selector choose a `[[serve.azure_imds.resource]]` entry
//!   ([`crate::azure`]): none for the resource is 400 `invalid_resource`, none for the identity
//!   400 "Identity not found";
//! * the answer is IMDS's document, every number a string: `access_token`, `client_id`,
//!   `expires_in`, `expires_on`, `ext_expires_in`, `not_before`, `resource`, `token_type`;
//! * a caller not allowed the route gets 403 `access_denied` naming its uid and the route; a
//!   failing route 503 (transient) or 500 `unknown`. Every error is `{"error",
//!   "error_description"}`; any other path is 404.
//!
//! ```toml
//! [serve.azure_imds]
//! port = 0                      # or socket = "…"
//! [[serve.azure_imds.resource]]
//! resource = "api://my-api"     # or a scope: "api://my-api/.default"
//! route = "gcp-to-azure"        # must yield an Entra access token (exchange `entra`)
//! client_id = "…"               # optional selectors: client_id, object_id, resource_id
//! ```

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use idbridge_broker::ConfigError;
use idbridge_core::SecretString;
use idbridge_wire::azure_imds::{self as wire, ImdsToken, Refused};
use serde::Deserialize;
use toml::Spanned;

use crate::Frontend;
use crate::azure::{RawResource, Resource};
use crate::broker::Broker;
use crate::caller::Peer;
use crate::config::Listen;
use crate::frontend::{Configured, Kind, Section};

/// The variable azure-identity and MSAL read for the IMDS address.
pub const AZURE_POD_IDENTITY_AUTHORITY_HOST: &str = "AZURE_POD_IDENTITY_AUTHORITY_HOST";

/// The kind, registered in [`crate::frontend::KINDS`].
pub static KIND: AzureImds = AzureImds;

/// `[serve.azure_imds]`.
#[derive(Debug)]
pub struct AzureImds;

const SECTION: &str = "[serve.azure_imds]";
const TABLE: &str = "[[serve.azure_imds.resource]]";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    port: Option<Spanned<u16>>,
    #[serde(default)]
    socket: Option<Spanned<std::path::PathBuf>>,
    #[serde(default)]
    resource: Vec<Spanned<RawResource>>,
}

/// A validated `[serve.azure_imds]`.
#[derive(Debug, Clone)]
pub struct AzureImdsConfig {
    /// Where it listens.
    pub listen: Listen,
    /// Resources and their routes.
    pub resources: Vec<Resource>,
}

impl Kind for AzureImds {
    fn name(&self) -> &'static str {
        "azure_imds"
    }

    fn section(&self) -> &'static str {
        SECTION
    }

    fn title(&self) -> &'static str {
        "Azure IMDS"
    }

    fn parse(&self, s: Section<'_, '_>) -> Result<Arc<dyn Configured>, ConfigError> {
        let raw = s.deserialize::<Raw>()?;
        let span = raw.span();
        let raw = raw.into_inner();
        let listen = s.listen(raw.port, raw.socket)?;
        let resources = crate::azure::resources(&s, SECTION, TABLE, span, raw.resource)?;
        Ok(Arc::new(AzureImdsConfig { listen, resources }))
    }
}

impl Configured for AzureImdsConfig {
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
        vec![(AZURE_POD_IDENTITY_AUTHORITY_HOST, SecretString::new(base))]
    }
}

#[derive(Debug)]
struct ImdsState {
    broker: Arc<Broker>,
    resources: Vec<Resource>,
}

/// The IMDS router for `config`, backed by `broker`.
pub fn router(broker: Arc<Broker>, config: AzureImdsConfig) -> Router {
    let state = Arc::new(ImdsState {
        broker: Arc::clone(&broker),
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
    tracing::info!(status = %r.status, error = r.error, "azure imds: refused");
    json(
        r.status,
        serde_json::to_string(&r.imds_body()).unwrap_or_default(),
    )
}

async fn handle(State(s): State<Arc<ImdsState>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let path = parts.uri.path();
    if path != wire::IMDS_TOKEN_PATH && path != format!("{}/", wire::IMDS_TOKEN_PATH) {
        return refused(&Refused {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            message: "The requested path is not found".to_owned(),
        });
    }
    let request = match wire::admit_imds(&parts.method, &parts.headers, parts.uri.query()) {
        Ok(r) => r,
        Err(r) => return refused(&r),
    };
    let peer = Peer::of(&parts.extensions);
    match crate::azure::token(&s.broker, peer, &s.resources, &request).await {
        Ok(t) => {
            let now = s.broker.clock().now().unix_timestamp();
            let expires_on = t.expires_at.unix_timestamp();
            let lifetime = (expires_on - now).max(0).to_string();
            let doc = ImdsToken {
                access_token: t.token.expose_secret().to_owned(),
                client_id: t.client_id.clone(),
                expires_in: lifetime.clone(),
                expires_on: expires_on.to_string(),
                ext_expires_in: lifetime,
                not_before: now.to_string(),
                resource: request.resource,
                token_type: "Bearer".to_owned(),
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
