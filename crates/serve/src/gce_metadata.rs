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
use crate::config::GceMetadataConfig;

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
    let status = match r {
        Refusal::Denied { .. } => StatusCode::FORBIDDEN,
        _ if r.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(status, format!("idbridge: {}\n", r.message()))
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
