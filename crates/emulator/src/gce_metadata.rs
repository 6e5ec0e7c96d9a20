//! The emulated GCE metadata server of the world's VM.
//!
//! Faithful to what google-auth (`default()`, compute and ID-token credentials), Go's
//! `cloud.google.com/go/compute/metadata` and curl rely on:
//!
//! * `GET /` answers 200 with `Metadata-Flavor: Google` even without the request header
//!   (google-auth's and Go's detection probes).
//! * Every other request is refused with 403 if it carries `X-Forwarded-For` (checked first) or
//!   lacks `Metadata-Flavor: Google`; only `GET` (and `HEAD`) is allowed.
//! * Every response carries `Metadata-Flavor: Google`, `Server: Metadata Server for VM` and a
//!   `Content-Type` (`application/json` or `application/text`; google-auth reads it
//!   unconditionally).
//! * Directories list their entries one per line (subdirectories with a trailing `/`);
//!   `?recursive=true` returns a JSON tree with camelCase keys as GCE does (`projectId`,
//!   `serviceAccounts`, …); `?alt=json` renders a leaf or a listing as JSON.
//! * `instance/service-accounts/{default|email}/token[?scopes=a,b]` issues an access token;
//!   `…/identity?audience=A[&format=standard|full]` a Google-signed ID token (`email` and the
//!   `google.compute_engine` block only with `format=full`).
//!
//! * `?wait_for_change=true[&last_etag=E][&timeout_sec=N]` is a hanging GET, GCE's rules in
//!   [`idbridge_wire::gce_metadata::watch`]: values carry an `ETag`; the request answers at
//!   once unless `last_etag` is current, then waits until the value changes (instance
//!   attributes, set through `/_emulator/metadata/instance/attributes/{key}` on the Google
//!   listener) or the timeout, and answers 200 with the current value.
//!
//! Without a VM in the world every data path is 404.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use idbridge_wire::gce_metadata::TokenResponse;
use idbridge_wire::gce_metadata::server::{
    self as wire, Early, Entry, JSON, Query, Rendered, TEXT, admit, number_json,
};
use idbridge_wire::gce_metadata::watch::{BadTimeout, Busy, Watchers};
use serde_json::json;

use crate::Emulator;
use crate::google::sign_google_id_token;
use crate::state::GooglePrincipal;
use crate::world::{ServiceAccount, Vm};

/// The universe every emulated VM lives in.
const UNIVERSE_DOMAIN: &str = "googleapis.com";
/// `instance_creation_timestamp` of the emulated VM (the world does not say; 2023-11-14T22:13:20Z).
const VM_CREATION_TIMESTAMP: i64 = 1_700_000_000;

/// The metadata server router for the world's VM.
pub fn router(state: Arc<Emulator>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(
    State(state): State<Arc<Emulator>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let segments = match admit(&method, uri.path(), &headers) {
        Ok(segments) => segments,
        Err(early) => return early_answer(early),
    };
    let Some(vm) = &state.world.vm else {
        return not_found();
    };
    let tree = tree(&state, vm);
    let Some(node) = tree.find(&segments) else {
        return not_found();
    };
    let query = Query::parse(uri.query());
    let wait = match query.wait() {
        Ok(Some(wait)) => wait,
        Ok(None) => return answer(&state, vm, node, &query).1,
        Err(BadTimeout) => {
            return text(
                StatusCode::BAD_REQUEST,
                "timeout_sec must be a non-negative integer\n",
            );
        }
    };
    drop(tree);
    // Each wake-up re-renders the path from the current world: the node may have changed
    // or gone (a removed attribute answers 404 at once).
    let render = || {
        let tree = self::tree(&state, vm);
        let out = match tree.find(&segments) {
            Some(node) => answer(&state, vm, node, &query),
            None => (None, not_found()),
        };
        std::future::ready(out)
    };
    match state.vm_metadata.watchers.hang(&wait, render).await {
        Ok(resp) => resp,
        Err(Busy) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many concurrent hanging requests\n",
        ),
    }
}

/// The answer for `node`, with its `ETag` when it is a value (minting leaves answer at once:
/// each call mints anew).
fn answer(state: &Emulator, vm: &Vm, node: &Node, query: &Query) -> (Option<String>, Response) {
    match node.render(query) {
        Rendered::Data { content_type, body } => {
            (Some(wire::etag(&body)), data(content_type, body))
        }
        Rendered::Mint(Mint::Token(email)) => (None, token(state, vm, email, query)),
        Rendered::Mint(Mint::Identity(email)) => (None, identity(state, vm, email, query)),
    }
}

/// The VM's mutable metadata: instance attributes, and the hanging GETs that watch it.
#[derive(Debug, Default)]
pub struct VmMetadata {
    attributes: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    /// The metadata server's hanging GETs.
    pub watchers: Watchers,
}

impl VmMetadata {
    fn attributes(&self) -> std::collections::BTreeMap<String, String> {
        self.attributes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sets (`Some`) or removes (`None`) an attribute and wakes the watchers; whether the key
    /// existed before. Refused (`Err`) when the attributes would pass GCE's limit on an
    /// instance's metadata, [`MAX_METADATA_BYTES`] of keys and values in all.
    pub fn set_attribute(&self, key: &str, value: Option<String>) -> Result<bool, TooLarge> {
        let existed = {
            let mut a = self
                .attributes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match value {
                Some(v) => {
                    let others: usize = a
                        .iter()
                        .filter(|(k, _)| k.as_str() != key)
                        .map(|(k, v)| k.len() + v.len())
                        .sum();
                    if others + key.len() + v.len() > MAX_METADATA_BYTES {
                        return Err(TooLarge);
                    }
                    a.insert(key.to_owned(), v).is_some()
                }
                None => a.remove(key).is_some(),
            }
        };
        self.watchers.changed();
        Ok(existed)
    }
}

/// GCE's limit on an instance's custom metadata: 512 KiB of keys and values in all.
pub const MAX_METADATA_BYTES: usize = 512 * 1024;

/// The attributes would pass [`MAX_METADATA_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

fn attribute_key_ok(key: &str) -> bool {
    (1..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `PUT /_emulator/metadata/instance/attributes/{key}` (on the Google listener): sets an
/// instance attribute of the VM to the body.
pub(crate) async fn set_attribute(
    State(state): State<Arc<Emulator>>,
    Path(key): Path<String>,
    body: String,
) -> Response {
    if state.world.vm.is_none() {
        return not_found();
    }
    if !attribute_key_ok(&key) {
        return text(
            StatusCode::BAD_REQUEST,
            "attribute keys are 1-128 of [A-Za-z0-9_-]\n",
        );
    }
    match state.vm_metadata.set_attribute(&key, Some(body)) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(TooLarge) => text(
            StatusCode::BAD_REQUEST,
            "the instance's metadata would exceed 512 KiB of keys and values\n",
        ),
    }
}

/// `DELETE /_emulator/metadata/instance/attributes/{key}`: removes an instance attribute.
pub(crate) async fn delete_attribute(
    State(state): State<Arc<Emulator>>,
    Path(key): Path<String>,
) -> Response {
    if state.world.vm.is_none() || state.vm_metadata.set_attribute(&key, None) != Ok(true) {
        return not_found();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The answer to a request refused or answered by the request rules, worded as GCE words it.
fn early_answer(early: Early) -> Response {
    match early {
        Early::MethodNotAllowed => text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n"),
        // Detection probes: no request-header requirement.
        Early::Ping => text(StatusCode::OK, "computeMetadata/\n"),
        Early::Proxied => text(
            StatusCode::FORBIDDEN,
            "Forbidden: requests carrying X-Forwarded-For are refused by the metadata server.\n",
        ),
        Early::NoFlavor => text(
            StatusCode::FORBIDDEN,
            "Missing required header \"Metadata-Flavor\": \"Google\"",
        ),
        Early::Versions => text(StatusCode::OK, "v1/\n"),
        Early::NotFound => not_found(),
    }
}

/// The leaves of the metadata tree that mint, with the account they mint for.
#[derive(Debug)]
enum Mint {
    /// `…/token`: issues an access token for the account.
    Token(String),
    /// `…/identity`: signs an ID token for the account.
    Identity(String),
}

type Node = wire::Node<Mint>;

fn project_number(state: &Emulator, vm: &Vm) -> String {
    state
        .world
        .project(&vm.project)
        .map(|p| p.number.clone())
        .unwrap_or_default()
}

fn service_account_dir(vm: &Vm, sa: &str) -> Node {
    Node::Dir(vec![
        Entry::new("aliases", Node::Lines(vec!["default".to_owned()])),
        Entry::new("email", Node::Text(sa.to_owned())),
        Entry::new("identity", Node::Mint(Mint::Identity(sa.to_owned()))),
        Entry::new("scopes", Node::Lines(vm.scopes.clone())),
        Entry::new("token", Node::Mint(Mint::Token(sa.to_owned()))),
    ])
}

/// The VM's metadata as a tree rooted at `/computeMetadata/v1/`.
fn tree(state: &Emulator, vm: &Vm) -> Node {
    let number = project_number(state, vm);
    let sa = &vm.service_account;
    let accounts = Node::Dir(vec![
        Entry::verbatim("default", service_account_dir(vm, sa)),
        Entry::verbatim(sa, service_account_dir(vm, sa)),
    ]);
    let attributes = state
        .vm_metadata
        .attributes()
        .into_iter()
        .map(|(k, v)| Entry::verbatim(&k, Node::Text(v)))
        .collect();
    let instance = Node::Dir(vec![
        Entry::new("attributes", Node::Dir(attributes)),
        Entry::new(
            "hostname",
            Node::Text(format!(
                "{}.{}.c.{}.internal",
                vm.instance_name, vm.zone, vm.project
            )),
        ),
        Entry::new("id", Node::Number(vm.instance_id.clone())),
        Entry::new("name", Node::Text(vm.instance_name.clone())),
        Entry::new("service-accounts", accounts),
        Entry::new(
            "zone",
            Node::Text(format!("projects/{number}/zones/{}", vm.zone)),
        ),
    ]);
    let project = Node::Dir(vec![
        Entry::new("attributes", Node::Dir(Vec::new())),
        Entry::new("numeric-project-id", Node::Number(number)),
        Entry::new("project-id", Node::Text(vm.project.clone())),
    ]);
    let universe = Node::Dir(vec![Entry::new(
        "universe-domain",
        Node::Text(UNIVERSE_DOMAIN.to_owned()),
    )]);
    Node::Dir(vec![
        Entry::new("instance", instance),
        Entry::new("project", project),
        Entry::new("universe", universe),
    ])
}

fn token(state: &Emulator, vm: &Vm, email: &str, q: &Query) -> Response {
    state.bump("metadata.token");
    let requested = q.scope_list();
    let scopes = if requested.is_empty() {
        vm.scopes.clone()
    } else {
        requested
    };
    let lifetime = state.world.lifetimes.access_token_seconds;
    let (access_token, expires_at) = state.issue_google_token(
        GooglePrincipal::ServiceAccount(email.to_owned()),
        scopes,
        lifetime,
    );
    let expires_in = (expires_at - state.clock.now()).whole_seconds().max(1);
    match serde_json::to_vec(&TokenResponse {
        access_token,
        expires_in,
        token_type: "Bearer".to_owned(),
    }) {
        Ok(body) => with_headers(StatusCode::OK, JSON, body),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n"),
    }
}

fn identity(state: &Emulator, vm: &Vm, email: &str, q: &Query) -> Response {
    state.bump("metadata.identity");
    let Some(audience) = q.audience.as_deref().filter(|a| !a.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "non-empty audience parameter required\n",
        );
    };
    let full = match q.format.as_deref() {
        None | Some("standard") => false,
        Some("full") => true,
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "format parameter must be \"standard\" or \"full\"\n",
            );
        }
    };
    let Some(sa): Option<&ServiceAccount> = state.world.service_account(email) else {
        return not_found();
    };
    let google = full.then(|| {
        let mut ce = json!({
            "instance_creation_timestamp": VM_CREATION_TIMESTAMP,
            "instance_id": vm.instance_id,
            "instance_name": vm.instance_name,
            "project_id": vm.project,
            "project_number": number_json(&project_number(state, vm)),
            "zone": vm.zone,
        });
        if q.licenses {
            ce["license_id"] = json!([]);
        }
        json!({ "compute_engine": ce })
    });
    match sign_google_id_token(state, sa, audience, full, google) {
        Ok(jwt) => with_headers(StatusCode::OK, TEXT, jwt.into_bytes()),
        Err(e) => {
            tracing::error!(error = %e, "metadata server could not sign an identity token");
            text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
        }
    }
}

fn with_headers(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    wire::stamp(h);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("x-xss-protection", HeaderValue::from_static("0"));
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    resp
}

/// A plain-text answer (errors, the ping).
fn text(status: StatusCode, body: &str) -> Response {
    with_headers(status, TEXT, body.as_bytes().to_vec())
}

/// A 200 metadata value, with an `ETag` (a digest of the body) as GCE sends for values.
fn data(content_type: &'static str, body: String) -> Response {
    let etag = wire::etag(&body);
    let mut resp = with_headers(StatusCode::OK, content_type, body.into_bytes());
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "Not Found\n")
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use idbridge_core::jwt::UnverifiedJwt;
    use jsonwebtoken::{Algorithm, Validation};
    use serde_json::Value;

    use super::*;
    use crate::World;
    use crate::google::test_support::{T0, emulator, emulator_with, send};

    const SA: &str = "psoxy-tenant@saas-tenant.iam.gserviceaccount.com";
    const SA_ID: &str = "112233445566778899001";
    const CP: &str = "https://www.googleapis.com/auth/cloud-platform";

    fn md(path: &str) -> Request<Body> {
        Request::get(path)
            .header("metadata-flavor", "Google")
            .body(Body::empty())
            .unwrap()
    }

    async fn ok_text(r: &Router, path: &str) -> (String, String) {
        let (resp, body) = send(r, md(path)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}: {body}");
        assert_eq!(resp.headers()["metadata-flavor"], "Google");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        (ct, body)
    }

    #[tokio::test]
    async fn ping_needs_no_header() {
        let (emu, _) = emulator();
        let r = router(emu);
        let (resp, _) = send(&r, Request::get("/").body(Body::empty()).unwrap()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["metadata-flavor"], "Google");
        assert!(resp.headers().contains_key("content-type"));
    }

    #[tokio::test]
    async fn header_rules() {
        let (emu, _) = emulator();
        let r = router(emu);
        let path = "/computeMetadata/v1/project/project-id";
        let (resp, body) = send(&r, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            "Missing required header \"Metadata-Flavor\": \"Google\""
        );
        assert_eq!(resp.headers()["metadata-flavor"], "Google");

        let req = Request::get(path)
            .header("Metadata-Flavor", "google")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&r, req).await.0.status(), StatusCode::FORBIDDEN);

        let req = Request::get(path)
            .header("Metadata-Flavor", "Google")
            .header("X-Forwarded-For", "10.0.0.1")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&r, req).await.0.status(), StatusCode::FORBIDDEN);

        let req = Request::post(path)
            .header("Metadata-Flavor", "Google")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            send(&r, req).await.0.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );

        // Header names are case-insensitive.
        let req = Request::get(path)
            .header("METADATA-FLAVOR", "Google")
            .body(Body::empty())
            .unwrap();
        let (resp, body) = send(&r, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body, "saas-tenant");
        assert_eq!(resp.headers()["server"], "Metadata Server for VM");
    }

    #[tokio::test]
    async fn token_for_default_and_by_email() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        for sa in ["default", SA] {
            let (ct, body) = ok_text(
                &r,
                &format!("/computeMetadata/v1/instance/service-accounts/{sa}/token"),
            )
            .await;
            assert_eq!(ct, "application/json");
            let t: TokenResponse = serde_json::from_str(&body).unwrap();
            assert_eq!(t.token_type, "Bearer");
            assert_eq!(t.expires_in, 3600);
            let issued = emu.google_token(&t.access_token).unwrap();
            assert_eq!(
                issued.principal,
                GooglePrincipal::ServiceAccount(SA.to_owned())
            );
            assert_eq!(issued.scopes, vec![CP.to_owned()]);
        }
        let (_, body) = ok_text(
            &r,
            "/computeMetadata/v1/instance/service-accounts/default/token?scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fa,b",
        )
        .await;
        let t: TokenResponse = serde_json::from_str(&body).unwrap();
        assert_eq!(
            emu.google_token(&t.access_token).unwrap().scopes,
            vec![
                "https://www.googleapis.com/auth/a".to_owned(),
                "b".to_owned()
            ]
        );
        assert_eq!(emu.count("metadata.token"), 3);
    }

    #[tokio::test]
    async fn identity_standard_and_full() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["https://my-audience.example"]);
        v.set_issuer(&["https://accounts.google.com"]);
        v.validate_exp = false;

        let (ct, jwt) = ok_text(
            &r,
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https%3A%2F%2Fmy-audience.example",
        )
        .await;
        assert_eq!(ct, "application/text");
        let c = jsonwebtoken::decode::<Value>(&jwt, emu.google_key.decoding_key(), &v)
            .unwrap()
            .claims;
        assert_eq!(c["sub"], SA_ID);
        assert_eq!(c["azp"], SA_ID);
        assert_eq!(c["iat"], T0);
        assert_eq!(c["exp"], T0 + 3600);
        assert!(c.get("email").is_none());
        assert!(c.get("google").is_none());

        let (_, jwt) = ok_text(
            &r,
            &format!(
                "/computeMetadata/v1/instance/service-accounts/{SA}/identity?audience=https%3A%2F%2Fmy-audience.example&format=full&licenses=TRUE"
            ),
        )
        .await;
        let c = jsonwebtoken::decode::<Value>(&jwt, emu.google_key.decoding_key(), &v)
            .unwrap()
            .claims;
        assert_eq!(c["email"], SA);
        assert_eq!(c["email_verified"], true);
        let ce = &c["google"]["compute_engine"];
        assert_eq!(ce["instance_id"], "4520031799277581759");
        assert_eq!(ce["instance_name"], "tenant-worker-1");
        assert_eq!(ce["project_id"], "saas-tenant");
        assert_eq!(ce["project_number"], 314_159_265_358u64);
        assert_eq!(ce["zone"], "us-central1-b");
        assert!(ce["instance_creation_timestamp"].is_number());
        assert_eq!(emu.count("metadata.identity"), 2);

        for bad in [
            "/computeMetadata/v1/instance/service-accounts/default/identity",
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience=",
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience=a&format=weird",
        ] {
            let (resp, body) = send(&r, md(bad)).await;
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
            assert!(resp.headers().contains_key("content-type"));
            if !bad.contains("format") {
                assert!(body.contains("non-empty audience parameter required"));
            }
        }
        // Expiry is readable without verification, as google-auth does.
        assert!(UnverifiedJwt::parse(&jwt).unwrap().exp().is_some());
    }

    #[tokio::test]
    async fn service_account_info_and_leaves() {
        let (emu, _) = emulator();
        let r = router(emu);
        let (ct, body) = ok_text(
            &r,
            "/computeMetadata/v1/instance/service-accounts/default/?recursive=true",
        )
        .await;
        assert_eq!(ct, "application/json");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({"aliases": ["default"], "email": SA, "scopes": [CP]})
        );
        let _: idbridge_wire::gce_metadata::ServiceAccountInfo = serde_json::from_value(v).unwrap();

        let (ct, body) =
            ok_text(&r, "/computeMetadata/v1/instance/service-accounts/default/").await;
        assert_eq!(ct, "application/text");
        assert_eq!(body, "aliases\nemail\nidentity\nscopes\ntoken\n");

        let (_, body) = ok_text(&r, "/computeMetadata/v1/instance/service-accounts/").await;
        assert_eq!(body, format!("default/\n{SA}/\n"));
        let (_, body) = ok_text(
            &r,
            "/computeMetadata/v1/instance/service-accounts/?recursive=true",
        )
        .await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["default"]["email"], SA);
        assert_eq!(v[SA]["email"], SA);

        assert_eq!(
            ok_text(
                &r,
                "/computeMetadata/v1/instance/service-accounts/default/email"
            )
            .await
            .1,
            SA
        );
        assert_eq!(
            ok_text(
                &r,
                "/computeMetadata/v1/instance/service-accounts/default/scopes"
            )
            .await
            .1,
            format!("{CP}\n")
        );
        assert_eq!(
            ok_text(
                &r,
                "/computeMetadata/v1/instance/service-accounts/default/aliases"
            )
            .await
            .1,
            "default\n"
        );
        let email_path = "/computeMetadata/v1/instance/service-accounts/psoxy-tenant%40saas-tenant.iam.gserviceaccount.com/email";
        assert_eq!(ok_text(&r, email_path).await.1, SA);
        let (ct, body) = ok_text(
            &r,
            "/computeMetadata/v1/instance/service-accounts/default/scopes?alt=json",
        )
        .await;
        assert_eq!(ct, "application/json");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!([CP]));
    }

    #[tokio::test]
    async fn project_instance_and_trees() {
        let (emu, _) = emulator();
        let r = router(emu);
        assert_eq!(
            ok_text(&r, "/computeMetadata/v1/project/project-id")
                .await
                .1,
            "saas-tenant"
        );
        assert_eq!(
            ok_text(&r, "/computeMetadata/v1/project/numeric-project-id")
                .await
                .1,
            "314159265358"
        );
        assert_eq!(
            ok_text(&r, "/computeMetadata/v1/instance/id").await.1,
            "4520031799277581759"
        );
        assert_eq!(
            ok_text(&r, "/computeMetadata/v1/instance/name").await.1,
            "tenant-worker-1"
        );
        assert_eq!(
            ok_text(&r, "/computeMetadata/v1/instance/zone").await.1,
            "projects/314159265358/zones/us-central1-b"
        );
        assert_eq!(
            ok_text(&r, "/computeMetadata/v1/instance/hostname").await.1,
            "tenant-worker-1.us-central1-b.c.saas-tenant.internal"
        );
        assert_eq!(
            ok_text(&r, "/computeMetadata/v1/universe/universe-domain")
                .await
                .1,
            "googleapis.com"
        );
        assert_eq!(
            ok_text(&r, "/computeMetadata/v1/").await.1,
            "instance/\nproject/\nuniverse/\n"
        );

        let (ct, body) = ok_text(&r, "/computeMetadata/v1/?recursive=true").await;
        assert_eq!(ct, "application/json");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["project"]["projectId"], "saas-tenant");
        assert_eq!(v["project"]["numericProjectId"], 314_159_265_358u64);
        assert_eq!(v["instance"]["serviceAccounts"]["default"]["email"], SA);
        assert_eq!(v["instance"]["id"], 4_520_031_799_277_581_759u64);
        assert_eq!(v["universe"]["universeDomain"], "googleapis.com");
        assert!(
            v["instance"]["serviceAccounts"]["default"]
                .get("token")
                .is_none()
        );

        let (_, body) = ok_text(&r, "/computeMetadata/v1/instance/?recursive=true").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["zone"], "projects/314159265358/zones/us-central1-b");
        let (_, body) = ok_text(&r, "/computeMetadata/v1/project/?recursive=true").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({"attributes": {}, "numericProjectId": 314_159_265_358u64, "projectId": "saas-tenant"})
        );
    }

    #[tokio::test]
    async fn not_found_paths() {
        let (emu, _) = emulator();
        let r = router(emu);
        for path in [
            "/computeMetadata/v1/instance/service-accounts/nobody@x.iam.gserviceaccount.com/token",
            "/computeMetadata/v1/instance/service-accounts/myapp@gcp-project.iam.gserviceaccount.com/email",
            "/computeMetadata/v1/instance/nothing",
            "/computeMetadata/v1/project/project-id/deeper",
            "/computeMetadata/v2/",
            "/latest/meta-data/",
        ] {
            let (resp, body) = send(&r, md(path)).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(!body.contains('<'), "{path}: {body}");
            assert!(resp.headers().contains_key("content-type"));
            assert_eq!(resp.headers()["metadata-flavor"], "Google");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_gets_wake_on_attribute_changes() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        let dir = "/computeMetadata/v1/instance/attributes/?recursive=true";
        let (resp, body) = send(&r, md(dir)).await;
        assert_eq!(body, "{}");
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        let watch = tokio::spawn({
            let r = r.clone();
            let path = format!("{dir}&wait_for_change=true&last_etag={etag}");
            async move { send(&r, md(&path)).await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        assert!(!watch.is_finished());
        assert_eq!(
            emu.vm_metadata
                .set_attribute("role", Some("web".to_owned())),
            Ok(false)
        );
        let (resp, body) = watch.await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body, r#"{"role":"web"}"#);
        assert_ne!(resp.headers()["etag"], etag.as_str());

        // A leaf: a timeout answers the same value; removal answers 404 (Go's Subscribe stops).
        let leaf = "/computeMetadata/v1/instance/attributes/role";
        let (resp, _) = send(&r, md(leaf)).await;
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        let start = tokio::time::Instant::now();
        let (resp, body) = send(
            &r,
            md(&format!(
                "{leaf}?wait_for_change=true&last_etag={etag}&timeout_sec=3"
            )),
        )
        .await;
        assert_eq!((resp.status(), body.as_str()), (StatusCode::OK, "web"));
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(3));
        let watch = tokio::spawn({
            let r = r.clone();
            let path = format!("{leaf}?wait_for_change=true&last_etag={etag}");
            async move { send(&r, md(&path)).await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert_eq!(emu.vm_metadata.set_attribute("role", None), Ok(true));
        assert_eq!(watch.await.unwrap().0.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn attributes_stay_within_the_metadata_limit() {
        let (emu, _) = emulator();
        let big = "x".repeat(MAX_METADATA_BYTES / 2);
        assert_eq!(
            emu.vm_metadata.set_attribute("a", Some(big.clone())),
            Ok(false)
        );
        assert_eq!(
            emu.vm_metadata.set_attribute("a", Some(big.clone())),
            Ok(true)
        );
        assert_eq!(emu.vm_metadata.set_attribute("b", Some(big)), Err(TooLarge));
        assert_eq!(
            emu.vm_metadata.set_attribute("b", Some("small".into())),
            Ok(false)
        );
    }

    #[tokio::test]
    async fn attributes_are_set_through_the_control_endpoint() {
        let (emu, _) = emulator();
        let google = crate::google::router(emu.clone());
        let path = "/_emulator/metadata/instance/attributes/env";
        let put = Request::put(path).body(Body::from("dev")).unwrap();
        assert_eq!(send(&google, put).await.0.status(), StatusCode::NO_CONTENT);
        let r = router(emu);
        assert_eq!(
            ok_text(&r, "/computeMetadata/v1/instance/attributes/env")
                .await
                .1,
            "dev"
        );
        let bad = Request::put("/_emulator/metadata/instance/attributes/a%20b")
            .body(Body::from("x"))
            .unwrap();
        assert_eq!(send(&google, bad).await.0.status(), StatusCode::BAD_REQUEST);
        let del = || Request::delete(path).body(Body::empty()).unwrap();
        assert_eq!(
            send(&google, del()).await.0.status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(send(&google, del()).await.0.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn no_vm_means_no_data() {
        let world = World::from_str_at(
            "[[project]]\nid = \"p\"\nnumber = \"1\"\n",
            "novm.toml",
            None,
        )
        .unwrap();
        let (emu, _) = emulator_with(world);
        let r = router(emu);
        assert_eq!(
            send(&r, Request::get("/").body(Body::empty()).unwrap())
                .await
                .0
                .status(),
            StatusCode::OK
        );
        for path in [
            "/computeMetadata/v1/",
            "/computeMetadata/v1/project/project-id",
            "/computeMetadata/v1/instance/service-accounts/default/token",
        ] {
            assert_eq!(
                send(&r, md(path)).await.0.status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }
}
