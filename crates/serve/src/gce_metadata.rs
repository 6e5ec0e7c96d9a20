//! The GCE metadata server frontend: route credentials for unmodified Google clients.
//!
//! Point google-auth at it with `GCE_METADATA_HOST=127.0.0.1:PORT` **and**
//! `GCE_METADATA_IP=127.0.0.1:PORT` (its detection ping goes to the IP variable), Go's
//! `cloud.google.com/go/compute/metadata` with `GCE_METADATA_HOST`, curl with
//! `-H 'Metadata-Flavor: Google'`. Wire behaviour, as those clients rely on it:
//!
//! * `GET /` answers 200 with `Metadata-Flavor: Google` whether or not the request carries the
//!   header (google-auth's ping checks the response header; Go's probe sends none).
//! * Any other request carrying `X-Forwarded-For` is 403 (it was proxied), then any request
//!   without `Metadata-Flavor: Google` is 403. Only `GET` and `HEAD`: others are 405.
//! * Every response carries `Metadata-Flavor: Google` and a `Content-Type` (google-auth indexes
//!   it unconditionally and parses JSON only when it says `application/json`).
//! * Under `/computeMetadata/v1/`:
//!
//! | path | answer |
//! |---|---|
//! | `instance/service-accounts/` | `default/` and `EMAIL/`, one per line |
//! | `instance/service-accounts/{default,EMAIL}/` `?recursive=true` | `{"aliases","email","scopes"}` (google-auth reads it before every refresh) |
//! | `…/token[?scopes=a,b]` | `{"access_token","expires_in","token_type":"Bearer"}` from `token_route`; `expires_in` is the seconds left, at least 1 |
//! | `…/identity?audience=A[&format=standard\|full]` | an ID token from `identity_route` with the client's audience on its last hop, as text; a missing, empty, over-long (2 KiB), non-UTF-8 or control-character audience is 400 ([`crate::audience`]) |
//! | `…/email`, `…/scopes`, `…/aliases` | text (scopes one per line) |
//! | `instance/id`, `name`, `hostname` | text, from the config or its defaults |
//! | `instance/zone` | `projects/NUMERIC_PROJECT_ID/zones/ZONE` (`0` without a numeric project id) |
//! | `instance/attributes/`, `…/KEY` | the configured attributes (none by default) |
//! | `project/project-id`, `project/numeric-project-id` | text, from the config (404 when unset) |
//! | `project/attributes/` | empty |
//! | `universe/universe-domain` | `googleapis.com` unless configured |
//!
//! Directories list their entries (subdirectories with a trailing `/`); `?recursive=true` on a
//! directory answers JSON with GCE's camelCase keys; `?alt=json` renders any node as JSON.
//! `token` and `identity` are leaves that mint: they never appear in recursive JSON.
//!
//! `?wait_for_change=true[&last_etag=E][&timeout_sec=N]` is a hanging GET
//! ([`idbridge_wire::gce_metadata::watch`]): every value carries an `ETag`; the request answers
//! at once unless `last_etag` is the current one, then waits for a change or the timeout (at
//! most five minutes, the default) and answers 200 with the current value. `token` and
//! `identity` carry the `ETag` of the credential handed out, and every credential load (a
//! refresh included) wakes the hanging GETs, so a watcher of `token` learns of each refresh.
//! At most 256 requests hang at once (one more is 503); shutdown releases them.
//!
//! `?scopes=` equal to the configured scopes (any order) is the route's own token; other scopes
//! become the last hop's scopes when that hop takes scopes, and are refused with 400
//! otherwise. `format` is accepted and does not change the token (the route decides its claims).
//! A caller not allowed to use the route gets 403 with a text body naming its uid and the route;
//! a failing route 503 (transient) or 500 with the route's one-line error (never a token).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use idbridge_core::Credential;
use idbridge_wire::gce_metadata::server::{
    self as wire, Early, Entry, JSON, Query, Rendered, TEXT, admit,
};
use idbridge_wire::gce_metadata::watch::{BadTimeout, Busy, Watchers};
use serde::Serialize;
use time::OffsetDateTime;

use crate::Frontend;
use crate::broker::{Broker, CredentialKey, Refusal};
use crate::caller::Peer;
use std::collections::BTreeMap;
use std::path::PathBuf;

use idbridge_broker::config::{RouteConfig, Yields};
use idbridge_broker::{ConfigError, Overrides, Route};
use idbridge_core::SecretString;
use idbridge_core::env;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::ServeConfig;
use crate::config::{CLOUD_PLATFORM, Listen, final_yield};
use crate::frontend::{Configured, Kind, Section, Shutdown};

/// The kind, registered in [`crate::frontend::KINDS`].
pub static KIND: GceMetadata = GceMetadata;

/// `[serve.gce_metadata]`.
#[derive(Debug)]
pub struct GceMetadata;

impl Kind for GceMetadata {
    fn name(&self) -> &'static str {
        "gce_metadata"
    }

    fn section(&self) -> &'static str {
        "[serve.gce_metadata]"
    }

    fn title(&self) -> &'static str {
        "GCE metadata"
    }

    fn frontend(&self) -> Frontend {
        Frontend::GceMetadata
    }

    fn parse(&self, s: Section<'_, '_>) -> Result<Arc<dyn Configured>, ConfigError> {
        let raw = s.deserialize_as_file::<RawGce>()?;
        Ok(Arc::new(parse_gce(&s, raw)?))
    }
}

impl Configured for GceMetadataConfig {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }

    fn listen(&self) -> &Listen {
        &self.listen
    }

    fn routes(&self) -> Vec<String> {
        self.token_route
            .iter()
            .chain(&self.identity_route)
            .cloned()
            .collect()
    }

    fn router(&self, broker: Arc<Broker>) -> Router {
        router(broker, self.clone())
    }

    fn router_until(&self, broker: Arc<Broker>, stop: Shutdown) -> Router {
        router_until(broker, self.clone(), stop)
    }

    fn env(&self, base: &str) -> Vec<(&'static str, SecretString)> {
        let host = base.strip_prefix("http://").unwrap_or(base);
        vec![
            (env::GCE_METADATA_HOST, SecretString::new(host)),
            (env::GCE_METADATA_IP, SecretString::new(host)),
        ]
    }
}

impl ServeConfig {
    /// The GCE metadata frontend, when configured.
    pub fn gce_metadata(&self) -> Option<&GceMetadataConfig> {
        self.frontend()
    }
}

/// `instance/name` of the GCE metadata frontend when none is configured.
pub const DEFAULT_GCE_INSTANCE_NAME: &str = "idbridge";
/// `instance/zone` of the GCE metadata frontend when none is configured.
pub const DEFAULT_GCE_ZONE: &str = "us-central1-a";

/// A validated `[serve.gce_metadata]`.
#[derive(Debug, Clone)]
pub struct GceMetadataConfig {
    /// Where it listens.
    pub listen: Listen,
    /// Route of `…/service-accounts/{default,EMAIL}/token` (must yield an access token).
    pub token_route: Option<String>,
    /// Route of `…/identity?audience=` (its last hop mints ID tokens for any audience).
    pub identity_route: Option<String>,
    /// The account shown at `…/email` and in `service-accounts/`.
    pub service_account_email: String,
    /// `project/project-id` (404 when unset).
    pub project_id: Option<String>,
    /// `project/numeric-project-id` (404 when unset).
    pub numeric_project_id: Option<String>,
    /// `…/scopes`; also the scopes of the token route's own tokens.
    pub scopes: Vec<String>,
    /// `universe/universe-domain`.
    pub universe_domain: String,
    /// Whether `?scopes=` other than [`Self::scopes`] can be honoured (the token route's last
    /// hop takes scopes).
    pub scopes_overridable: bool,
    /// The `instance/` values that are not credentials.
    pub instance: GceInstance,
}

/// The instance a GCE metadata frontend describes (`instance/id`, `name`, `zone`, `hostname`,
/// `attributes/`): clients probe `instance/` to detect GCE and read these for logging and
/// resource labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GceInstance {
    /// `instance/id`: a decimal number.
    pub id: String,
    /// `instance/name`.
    pub name: String,
    /// The zone's name (`us-central1-a`); `instance/zone` is `projects/NUMBER/zones/ZONE`.
    pub zone: String,
    /// `instance/hostname`.
    pub hostname: String,
    /// `instance/attributes/KEY`, in key order.
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGce {
    #[serde(default)]
    port: Option<Spanned<u16>>,
    #[serde(default)]
    socket: Option<Spanned<PathBuf>>,
    #[serde(default)]
    token_route: Option<Spanned<String>>,
    #[serde(default)]
    identity_route: Option<Spanned<String>>,
    #[serde(default)]
    service_account_email: Option<Spanned<String>>,
    #[serde(default)]
    project_id: Option<Spanned<String>>,
    #[serde(default)]
    numeric_project_id: Option<Spanned<String>>,
    #[serde(default)]
    scopes: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    universe_domain: Option<Spanned<String>>,
    #[serde(default)]
    instance_id: Option<Spanned<String>>,
    #[serde(default)]
    instance_name: Option<Spanned<String>>,
    #[serde(default)]
    zone: Option<Spanned<String>>,
    #[serde(default)]
    hostname: Option<Spanned<String>>,
    #[serde(default)]
    attributes: Option<Spanned<BTreeMap<String, String>>>,
}

/// A GCE resource name: 1–63 of `[a-z0-9-]`, starting with a letter, not ending with `-`.
fn is_gce_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The scopes of the access tokens a route mints, when it says.
fn route_scopes(route: &RouteConfig) -> Option<Vec<String>> {
    route.last().facts().scopes.map(<[String]>::to_vec)
}

/// The service account a route's final Google credential belongs to, when the config says.
fn route_service_account(route: &RouteConfig) -> Option<String> {
    route
        .last()
        .facts()
        .service_account
        .filter(|sa| sa.contains('@'))
        .map(str::to_owned)
}

fn parse_gce(s: &Section<'_, '_>, raw: Spanned<RawGce>) -> Result<GceMetadataConfig, ConfigError> {
    const S: &str = "[serve.gce_metadata]";
    let span = raw.span();
    let g = raw.into_inner();
    let listen = s.listen(g.port.clone(), g.socket.clone())?;
    if g.token_route.is_none() && g.identity_route.is_none() {
        return Err(s.err(
            span,
            format!("{S}: set `token_route`, `identity_route` or both"),
        ));
    }
    let token = g
        .token_route
        .as_ref()
        .map(|n| s.route(S, "token_route", n, Yields::AccessToken))
        .transpose()?;
    if let Some(name) = &g.identity_route {
        let route = s
            .routes()
            .route(name.get_ref())
            .map_err(|e| s.err(name.span(), format!("{S} field `identity_route`: {e}")))?;
        let probe = Overrides {
            audience: Some("https://idbridge.invalid/probe".to_owned()),
            scopes: None,
        };
        match Route::new(route.clone()).with_overrides(&probe) {
            Ok(r) if final_yield(&r.config) == Yields::IdToken => {}
            Ok(_) => {
                return Err(s.err(
                    name.span(),
                    format!(
                        "{S} field `identity_route`: route {:?} does not end in ID tokens",
                        route.name
                    ),
                ));
            }
            Err(e) => {
                return Err(s.err(
                    name.span(),
                    format!(
                        "{S} field `identity_route`: cannot mint ID tokens for a client's \
                             audience: {}",
                        e.message
                    ),
                ));
            }
        }
    }
    let service_account_email = match (&g.service_account_email, token) {
        (Some(e), _) => {
            if !e.get_ref().contains('@') {
                return Err(s.err(
                    e.span(),
                    format!(
                        "{S} field `service_account_email`: {:?} is not an email",
                        e.get_ref()
                    ),
                ));
            }
            e.get_ref().clone()
        }
        (None, _) => {
            let from_routes = token.and_then(route_service_account).or_else(|| {
                g.identity_route
                    .as_ref()
                    .and_then(|n| s.routes().route(n.get_ref()).ok())
                    .and_then(route_service_account)
            });
            match from_routes {
                Some(sa) => sa,
                None => {
                    return Err(s.err(
                        span,
                        format!(
                            "{S}: set `service_account_email` (the route does not name its \
                                 service account; google-auth needs the email)"
                        ),
                    ));
                }
            }
        }
    };
    if let Some(n) = &g.numeric_project_id
        && (n.get_ref().is_empty() || !n.get_ref().bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(s.err(
            n.span(),
            format!(
                "{S} field `numeric_project_id`: {:?} is not a number",
                n.get_ref()
            ),
        ));
    }
    if let Some(p) = &g.project_id
        && (p.get_ref().is_empty() || p.get_ref().contains(char::is_whitespace))
    {
        return Err(s.err(
            p.span(),
            format!(
                "{S} field `project_id`: {:?} is not a project id",
                p.get_ref()
            ),
        ));
    }
    let route_default = token.and_then(route_scopes);
    let scopes = match &g.scopes {
        Some(sc) if sc.get_ref().is_empty() || sc.get_ref().iter().any(String::is_empty) => {
            return Err(s.err(sc.span(), format!("{S} field `scopes`: empty scope")));
        }
        Some(sc) => sc.get_ref().clone(),
        None => route_default.unwrap_or_else(|| vec![CLOUD_PLATFORM.to_owned()]),
    };
    let instance = gce_instance(s, &g)?;
    let scopes_overridable = token.is_some_and(|r| {
        let probe = Overrides {
            audience: None,
            scopes: Some(vec![CLOUD_PLATFORM.to_owned()]),
        };
        Route::new(r.clone()).with_overrides(&probe).is_ok()
    });
    Ok(GceMetadataConfig {
        listen,
        token_route: g.token_route.map(Spanned::into_inner),
        identity_route: g.identity_route.map(Spanned::into_inner),
        service_account_email,
        project_id: g.project_id.map(Spanned::into_inner),
        numeric_project_id: g.numeric_project_id.map(Spanned::into_inner),
        scopes,
        universe_domain: g
            .universe_domain
            .map(Spanned::into_inner)
            .unwrap_or_else(|| "googleapis.com".to_owned()),
        scopes_overridable,
        instance,
    })
}

/// The `instance/` values of `[serve.gce_metadata]`, with their defaults: name
/// [`DEFAULT_GCE_INSTANCE_NAME`], zone [`DEFAULT_GCE_ZONE`], hostname
/// `NAME.ZONE.c.PROJECT.internal` (GCE's zonal DNS name; `NAME.internal` without a project
/// id), and an id derived from name, zone and project, stable across restarts.
fn gce_instance(s: &Section<'_, '_>, g: &RawGce) -> Result<GceInstance, ConfigError> {
    const S: &str = "[serve.gce_metadata]";
    let name = match &g.instance_name {
        Some(n) if !is_gce_name(n.get_ref()) => {
            return Err(s.err(
                    n.span(),
                    format!(
                        "{S} field `instance_name`: {:?} must be 1–63 characters of [a-z0-9-],                          starting with a letter and not ending with a dash",
                        n.get_ref()
                    ),
                ));
        }
        Some(n) => n.get_ref().clone(),
        None => DEFAULT_GCE_INSTANCE_NAME.to_owned(),
    };
    let zone = match &g.zone {
        Some(z) if !is_gce_name(z.get_ref()) || !z.get_ref().contains('-') => {
            return Err(s.err(
                z.span(),
                format!(
                    "{S} field `zone`: {:?} is not a zone name like us-central1-a",
                    z.get_ref()
                ),
            ));
        }
        Some(z) => z.get_ref().clone(),
        None => DEFAULT_GCE_ZONE.to_owned(),
    };
    let project = g.project_id.as_ref().map(|p| p.get_ref().as_str());
    let id = match &g.instance_id {
        Some(id) if id.get_ref().parse::<u64>().is_err() || id.get_ref().starts_with('+') => {
            return Err(s.err(
                id.span(),
                format!(
                    "{S} field `instance_id`: {:?} is not a number (GCE instance ids are \
                         unsigned 64-bit integers)",
                    id.get_ref()
                ),
            ));
        }
        Some(id) => id.get_ref().clone(),
        None => {
            let digest = Sha256::digest(
                format!("{name}\n{zone}\n{}", project.unwrap_or_default()).as_bytes(),
            );
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            // Below 2^63, as GCE's ids are, so signed 64-bit readers parse it too.
            (u64::from_be_bytes(first) >> 1).to_string()
        }
    };
    let hostname = match &g.hostname {
        Some(h)
            if h.get_ref().is_empty()
                || h.get_ref().len() > 253
                || !h
                    .get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
        {
            return Err(s.err(
                h.span(),
                format!("{S} field `hostname`: {:?} is not a host name", h.get_ref()),
            ));
        }
        Some(h) => h.get_ref().clone(),
        None => match project {
            Some(p) => format!("{name}.{zone}.c.{p}.internal"),
            None => format!("{name}.internal"),
        },
    };
    let attributes = match &g.attributes {
        None => BTreeMap::new(),
        Some(a) => {
            if let Some(bad) = a.get_ref().keys().find(|k| {
                k.is_empty()
                    || k.len() > 128
                    || !k
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }) {
                return Err(s.err(
                    a.span(),
                    format!(
                        "{S} field `attributes`: key {bad:?} must be 1–128 characters of \
                             [A-Za-z0-9_-]"
                    ),
                ));
            }
            a.get_ref().clone()
        }
    };
    Ok(GceInstance {
        id,
        name,
        zone,
        hostname,
        attributes,
    })
}

/// The leaves of the metadata tree that mint through a route.
#[derive(Debug)]
enum Mint {
    Token,
    Identity,
}

type Node = wire::Node<Mint>;

#[derive(Debug)]
struct GceState {
    broker: Arc<Broker>,
    config: GceMetadataConfig,
    tree: Node,
    watchers: Watchers,
}

fn tree(c: &GceMetadataConfig) -> Node {
    let account = || {
        let mut e = vec![
            Entry::new("aliases", Node::Lines(vec!["default".to_owned()])),
            Entry::new("email", Node::Text(c.service_account_email.clone())),
        ];
        if c.identity_route.is_some() {
            e.push(Entry::new("identity", Node::Mint(Mint::Identity)));
        }
        e.push(Entry::new("scopes", Node::Lines(c.scopes.clone())));
        if c.token_route.is_some() {
            e.push(Entry::new("token", Node::Mint(Mint::Token)));
        }
        Node::Dir(e)
    };
    let accounts = Node::Dir(vec![
        Entry::new("default", account()),
        Entry::verbatim(&c.service_account_email, account()),
    ]);
    let mut project = vec![Entry::new("attributes", Node::Dir(Vec::new()))];
    if let Some(n) = &c.numeric_project_id {
        project.push(Entry::new("numeric-project-id", Node::Number(n.clone())));
    }
    if let Some(p) = &c.project_id {
        project.push(Entry::new("project-id", Node::Text(p.clone())));
    }
    Node::Dir(vec![
        Entry::new("instance", instance(c, accounts)),
        Entry::new("project", Node::Dir(project)),
        Entry::new(
            "universe",
            Node::Dir(vec![Entry::new(
                "universe-domain",
                Node::Text(c.universe_domain.clone()),
            )]),
        ),
    ])
}

/// `instance/`: the configured instance's values and its service accounts.
fn instance(c: &GceMetadataConfig, accounts: Node) -> Node {
    let i = &c.instance;
    let attributes = i
        .attributes
        .iter()
        .map(|(k, v)| Entry::verbatim(k, Node::Text(v.clone())))
        .collect();
    let number = c.numeric_project_id.as_deref().unwrap_or("0");
    Node::Dir(vec![
        Entry::new("attributes", Node::Dir(attributes)),
        Entry::new("hostname", Node::Text(i.hostname.clone())),
        Entry::new("id", Node::Number(i.id.clone())),
        Entry::new("name", Node::Text(i.name.clone())),
        Entry::new("service-accounts", accounts),
        Entry::new(
            "zone",
            Node::Text(format!("projects/{number}/zones/{}", i.zone)),
        ),
    ])
}

/// The metadata server router for `config`, backed by `broker`. Hanging GETs end (with
/// their current value) once `stop` turns true. Needs a tokio runtime.
pub fn router_until(
    broker: Arc<Broker>,
    config: GceMetadataConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Router {
    let watchers = Watchers::default();
    watchers.close_on(stop);
    router_with(broker, config, watchers)
}

/// The metadata server router for `config`, backed by `broker`. Needs a tokio runtime.
pub fn router(broker: Arc<Broker>, config: GceMetadataConfig) -> Router {
    router_with(broker, config, Watchers::default())
}

fn router_with(broker: Arc<Broker>, config: GceMetadataConfig, watchers: Watchers) -> Router {
    // A loaded credential may change a `token` or `identity` leaf.
    watchers.follow(broker.loads());
    let state = Arc::new(GceState {
        broker: Arc::clone(&broker),
        tree: tree(&config),
        config,
        watchers,
    });
    let r = Router::new()
        .fallback(handle)
        .with_state(state)
        .layer(middleware::from_fn(crate::http::limit_headers))
        .layer(middleware::map_response(decorate));
    crate::http::observe(r, Frontend::GceMetadata, broker)
}

/// `Metadata-Flavor`, `Server` and a `Content-Type` on every response, errors included.
async fn decorate(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    wire::stamp(h);
    if !h.contains_key(header::CONTENT_TYPE) {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    }
    resp
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut resp = (status, body.into()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    resp
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "Not Found\n")
}

/// A metadata value, with an `ETag` (a digest of the body) as GCE sends.
fn data(content_type: &'static str, body: String) -> Response {
    let etag = wire::etag(&body);
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

async fn handle(State(s): State<Arc<GceState>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let segments = match admit(&parts.method, parts.uri.path(), &parts.headers) {
        Ok(segments) => segments,
        Err(early) => return early_answer(early),
    };
    let Some(node) = s.tree.find(&segments) else {
        return not_found();
    };
    let raw_query = parts.uri.query();
    let q = Query::parse(raw_query);
    let peer = Peer::of(&parts.extensions);
    let wait = match q.wait() {
        Ok(Some(wait)) => wait,
        Ok(None) => return answer(&s, node, peer, &q, raw_query).await.1,
        Err(BadTimeout) => {
            return text(
                StatusCode::BAD_REQUEST,
                "timeout_sec must be a non-negative integer\n",
            );
        }
    };
    match s
        .watchers
        .hang(&wait, || answer(&s, node, peer, &q, raw_query))
        .await
    {
        Ok(resp) => resp,
        Err(Busy) => {
            tracing::warn!("refused a hanging metadata request: too many are waiting");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "idbridge: too many requests are waiting for changes; retry later\n",
            )
        }
    }
}

/// The answer to a request for `node`, with its `ETag` when it is a value.
async fn answer(
    s: &GceState,
    node: &Node,
    peer: Option<&Peer>,
    q: &Query,
    raw_query: Option<&str>,
) -> (Option<String>, Response) {
    let resp = match node.render(q) {
        Rendered::Data { content_type, body } => data(content_type, body),
        Rendered::Mint(Mint::Token) => token(s, peer, q).await,
        Rendered::Mint(Mint::Identity) => identity(s, peer, q, raw_query).await,
    };
    let etag = (resp.status() == StatusCode::OK)
        .then(|| resp.headers().get(header::ETAG))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (etag, resp)
}

/// A minted answer's `ETag`: a digest of the credential and its expiry (not of the body,
/// whose `expires_in` counts down), so it moves exactly when the credential is replaced.
fn with_credential_etag(mut resp: Response, secret: &str, expires_at: OffsetDateTime) -> Response {
    let etag = wire::etag(&format!("{secret}\n{}", expires_at.unix_timestamp()));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// The answer to a request refused or answered by the request rules.
fn early_answer(early: Early) -> Response {
    match early {
        Early::MethodNotAllowed => text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n"),
        // Detection probes: no request-header requirement.
        Early::Ping => text(StatusCode::OK, "computeMetadata/\n"),
        Early::Proxied => {
            tracing::info!("refused: metadata request carrying X-Forwarded-For");
            text(
                StatusCode::FORBIDDEN,
                "Forbidden: the metadata server does not answer proxied requests (X-Forwarded-For).\n",
            )
        }
        Early::NoFlavor => text(
            StatusCode::FORBIDDEN,
            "Forbidden: metadata requests must carry the header \"Metadata-Flavor: Google\".\n",
        ),
        Early::Versions => text(StatusCode::OK, "v1/\n"),
        Early::NotFound => not_found(),
    }
}

fn refused(r: &Refusal) -> Response {
    text(r.status(), format!("idbridge: {}\n", r.message()))
}

/// The token body; borrows the secret so that it is copied only into the response.
#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    expires_in: i64,
    token_type: &'static str,
}

async fn token(s: &GceState, peer: Option<&Peer>, q: &Query) -> Response {
    let Some(route) = &s.config.token_route else {
        return not_found();
    };
    let requested = q.scope_list();
    let same = |a: &[String], b: &[String]| {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort();
        a.dedup();
        b.sort();
        b.dedup();
        a == b
    };
    let key = if requested.is_empty() || same(&requested, &s.config.scopes) {
        CredentialKey::route(route)
    } else if s.config.scopes_overridable {
        CredentialKey::scopes(route, requested)
    } else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "idbridge: route {route:?} mints tokens for {} only; it cannot honour other scopes\n",
                s.config.scopes.join(",")
            ),
        );
    };
    match s.broker.credential(peer, &key).await {
        Ok(Credential::GoogleAccessToken(t)) => {
            let expires_in = (t.expires_at - s.broker.clock().now())
                .whole_seconds()
                .max(1);
            let body = TokenBody {
                access_token: t.token.expose_secret(),
                expires_in,
                token_type: "Bearer",
            };
            match serde_json::to_string(&body) {
                Ok(b) => {
                    let mut resp = (StatusCode::OK, b).into_response();
                    resp.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
                    with_credential_etag(resp, t.token.expose_secret(), t.expires_at)
                }
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n"),
            }
        }
        Ok(other) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "idbridge: route {route:?} yields a {} credential, not an access token\n",
                other.kind()
            ),
        ),
        Err(r) => refused(&r),
    }
}

async fn identity(
    s: &GceState,
    peer: Option<&Peer>,
    q: &Query,
    raw_query: Option<&str>,
) -> Response {
    let Some(route) = &s.config.identity_route else {
        return not_found();
    };
    // From the raw query: the parsed one has turned invalid UTF-8 into replacement characters.
    let audience = match crate::audience::from_query(raw_query) {
        Ok(a) => a,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    if !matches!(q.format.as_deref(), None | Some("standard" | "full")) {
        return text(
            StatusCode::BAD_REQUEST,
            "format parameter must be \"standard\" or \"full\"\n",
        );
    }
    match s
        .broker
        .credential(peer, &CredentialKey::audience(route, &audience))
        .await
    {
        Ok(Credential::IdToken(t)) => {
            let mut resp = (StatusCode::OK, t.token.expose_secret().to_owned()).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
            with_credential_etag(resp, t.token.expose_secret(), t.expires_at)
        }
        Ok(other) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "idbridge: route {route:?} yields a {} credential, not an ID token\n",
                other.kind()
            ),
        ),
        Err(r) => refused(&r),
    }
}
