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
//! | `…/identity?audience=A[&format=standard\|full]` | an ID token from `identity_route` with the client's audience on its last hop, as text; a missing or empty audience is 400 |
//! | `…/email`, `…/scopes`, `…/aliases` | text (scopes one per line) |
//! | `project/project-id`, `project/numeric-project-id` | text, from the config (404 when unset) |
//! | `universe/universe-domain` | `googleapis.com` unless configured |
//!
//! Directories list their entries (subdirectories with a trailing `/`); `?recursive=true` on a
//! directory answers JSON with GCE's camelCase keys; `?alt=json` renders any node as JSON.
//! `token` and `identity` are leaves that mint: they never appear in recursive JSON.
//!
//! `?scopes=` equal to the configured scopes (any order) is the route's own token; other scopes
//! become the last hop's scopes when that hop takes scopes, and are refused with 400
//! otherwise. `format` is accepted and does not change the token (the route decides its claims).
//! A caller not allowed to use the route gets 403 with a text body naming its uid and the route;
//! a failing route 503 (transient) or 500 with the route's one-line error (never a token).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use idbridge_core::Credential;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::Frontend;
use crate::broker::{Broker, CredentialKey, Refusal};
use crate::caller::Peer;
use crate::config::GceMetadataConfig;

const FLAVOR: &str = "metadata-flavor";
const TEXT: &str = "application/text";
const JSON: &str = "application/json";

/// A node of the metadata tree.
#[derive(Debug)]
enum Node {
    /// Entries: (path name, JSON key, node).
    Dir(Vec<(String, String, Node)>),
    Text(String),
    Number(String),
    Lines(Vec<String>),
    Token,
    Identity,
}

#[derive(Debug)]
struct GceState {
    broker: Arc<Broker>,
    config: GceMetadataConfig,
    tree: Node,
}

/// `numeric-project-id` → `numericProjectId`.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        match (c, upper) {
            ('-', _) => upper = true,
            (c, true) => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            (c, false) => out.push(c),
        }
    }
    out
}

fn entry(name: &str, node: Node) -> (String, String, Node) {
    (name.to_owned(), camel(name), node)
}

fn tree(c: &GceMetadataConfig) -> Node {
    let account = || {
        let mut e = vec![
            entry("aliases", Node::Lines(vec!["default".to_owned()])),
            entry("email", Node::Text(c.service_account_email.clone())),
        ];
        if c.identity_route.is_some() {
            e.push(entry("identity", Node::Identity));
        }
        e.push(entry("scopes", Node::Lines(c.scopes.clone())));
        if c.token_route.is_some() {
            e.push(entry("token", Node::Token));
        }
        Node::Dir(e)
    };
    let email = c.service_account_email.clone();
    let accounts = Node::Dir(vec![
        entry("default", account()),
        (email.clone(), email, account()),
    ]);
    let mut project = Vec::new();
    if let Some(n) = &c.numeric_project_id {
        project.push(entry("numeric-project-id", Node::Number(n.clone())));
    }
    if let Some(p) = &c.project_id {
        project.push(entry("project-id", Node::Text(p.clone())));
    }
    Node::Dir(vec![
        entry(
            "instance",
            Node::Dir(vec![entry("service-accounts", accounts)]),
        ),
        entry("project", Node::Dir(project)),
        entry(
            "universe",
            Node::Dir(vec![entry(
                "universe-domain",
                Node::Text(c.universe_domain.clone()),
            )]),
        ),
    ])
}

/// The metadata server router for `config`, backed by `broker`.
pub fn router(broker: Arc<Broker>, config: GceMetadataConfig) -> Router {
    let state = Arc::new(GceState {
        broker: Arc::clone(&broker),
        tree: tree(&config),
        config,
    });
    let r = Router::new()
        .fallback(handle)
        .with_state(state)
        .layer(middleware::from_fn(crate::http::limit_headers))
        .layer(middleware::map_response(decorate));
    crate::http::observe(r, Frontend::GceMetadata, broker)
}

/// `Metadata-Flavor` and a `Content-Type` on every response, errors included.
async fn decorate(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(FLAVOR, HeaderValue::from_static("Google"));
    h.insert(
        header::SERVER,
        HeaderValue::from_static("Metadata Server for VM"),
    );
    if !h.contains_key(header::CONTENT_TYPE) {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    }
    resp
}

/// Query parameters the metadata server reads.
#[derive(Debug, Default)]
struct Query {
    recursive: bool,
    alt_json: bool,
    audience: Option<String>,
    format: Option<String>,
    scopes: Option<String>,
}

impl Query {
    fn parse(q: Option<&str>) -> Self {
        let mut out = Query::default();
        for (k, v) in url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
            match &*k {
                "recursive" => out.recursive = v.eq_ignore_ascii_case("true"),
                "alt" => out.alt_json = v == "json",
                "audience" => out.audience = Some(v.into_owned()),
                "format" => out.format = Some(v.into_owned()),
                "scopes" => out.scopes = Some(v.into_owned()),
                _ => {}
            }
        }
        out
    }
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
    let digest = Sha256::digest(body.as_bytes());
    let etag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
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
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    }
    let path = parts.uri.path();
    if path == "/" {
        // Detection probes: no request-header requirement.
        return text(StatusCode::OK, "computeMetadata/\n");
    }
    if let Some(refused) = check_headers(&parts.headers) {
        return refused;
    }
    if path == "/computeMetadata" || path == "/computeMetadata/" {
        return text(StatusCode::OK, "v1/\n");
    }
    let Some(rest) = path
        .strip_prefix("/computeMetadata/v1")
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return not_found();
    };
    let mut node = &s.tree;
    for raw in rest.split('/').filter(|seg| !seg.is_empty()) {
        let Ok(seg) = percent_encoding::percent_decode_str(raw).decode_utf8() else {
            return not_found();
        };
        let Node::Dir(entries) = node else {
            return not_found();
        };
        match entries.iter().find(|(name, _, _)| *name == seg) {
            Some((_, _, next)) => node = next,
            None => return not_found(),
        }
    }
    let q = Query::parse(parts.uri.query());
    let peer = Peer::of(&parts.extensions);
    match node {
        Node::Token => token(&s, peer, &q).await,
        Node::Identity => identity(&s, peer, &q).await,
        Node::Dir(_) if q.recursive => json_data(&to_json(node)),
        Node::Dir(entries) if q.alt_json => json_data(&Value::from(
            entries.iter().map(listing_name).collect::<Vec<_>>(),
        )),
        Node::Dir(entries) => data(
            TEXT,
            entries
                .iter()
                .map(|e| format!("{}\n", listing_name(e)))
                .collect(),
        ),
        leaf if q.alt_json => json_data(&to_json(leaf)),
        Node::Text(v) | Node::Number(v) => data(TEXT, v.clone()),
        Node::Lines(lines) => data(TEXT, lines.iter().map(|l| format!("{l}\n")).collect()),
    }
}

/// `X-Forwarded-For` (a proxied request) and a missing `Metadata-Flavor: Google` are 403.
fn check_headers(headers: &HeaderMap) -> Option<Response> {
    if headers.contains_key("x-forwarded-for") {
        tracing::info!("refused: metadata request carrying X-Forwarded-For");
        return Some(text(
            StatusCode::FORBIDDEN,
            "Forbidden: the metadata server does not answer proxied requests (X-Forwarded-For).\n",
        ));
    }
    if headers.get(FLAVOR).and_then(|v| v.to_str().ok()) != Some("Google") {
        return Some(text(
            StatusCode::FORBIDDEN,
            "Forbidden: metadata requests must carry the header \"Metadata-Flavor: Google\".\n",
        ));
    }
    None
}

fn listing_name(e: &(String, String, Node)) -> String {
    match e.2 {
        Node::Dir(_) => format!("{}/", e.0),
        _ => e.0.clone(),
    }
}

fn json_data(v: &Value) -> Response {
    data(JSON, v.to_string())
}

fn to_json(node: &Node) -> Value {
    match node {
        Node::Dir(entries) => {
            let mut map = Map::new();
            for (_, key, child) in entries {
                if !matches!(child, Node::Token | Node::Identity) {
                    map.insert(key.clone(), to_json(child));
                }
            }
            Value::Object(map)
        }
        Node::Text(s) => Value::String(s.clone()),
        Node::Number(n) => n
            .parse::<u64>()
            .map_or_else(|_| Value::String(n.clone()), Value::from),
        Node::Lines(lines) => json!(lines),
        Node::Token | Node::Identity => Value::Null,
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

fn split_scopes(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn token(s: &GceState, peer: Option<&Peer>, q: &Query) -> Response {
    let Some(route) = &s.config.token_route else {
        return not_found();
    };
    let requested = split_scopes(q.scopes.as_deref().unwrap_or_default());
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
                    resp
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

async fn identity(s: &GceState, peer: Option<&Peer>, q: &Query) -> Response {
    let Some(route) = &s.config.identity_route else {
        return not_found();
    };
    let Some(audience) = q.audience.as_deref().filter(|a| !a.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "non-empty audience parameter required\n",
        );
    };
    if !matches!(q.format.as_deref(), None | Some("standard" | "full")) {
        return text(
            StatusCode::BAD_REQUEST,
            "format parameter must be \"standard\" or \"full\"\n",
        );
    }
    match s
        .broker
        .credential(peer, &CredentialKey::audience(route, audience))
        .await
    {
        Ok(Credential::IdToken(t)) => {
            let mut resp = (StatusCode::OK, t.token.expose_secret().to_owned()).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
            resp
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

#[cfg(test)]
mod tests {
    use super::camel;

    #[test]
    fn camel_case_keys() {
        assert_eq!(camel("numeric-project-id"), "numericProjectId");
        assert_eq!(camel("service-accounts"), "serviceAccounts");
        assert_eq!(camel("email"), "email");
    }
}
