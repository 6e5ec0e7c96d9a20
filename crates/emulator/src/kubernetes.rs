//! The small part of a Kubernetes API server a node agent uses to tell which pod is asking and
//! to speak for it: pods (list, get, watch, by field and label selector), namespaces and
//! service accounts, the TokenRequest subresource, and the OIDC discovery of the cluster's
//! service-account issuer.
//!
//! The world's `[kubernetes]` section declares the cluster: its issuer (an `[[oidc_issuer]]` with
//! `generate_key = true`, whose emulator-held key signs the service-account tokens, so the
//! emulated AWS and Google STS trust them like any OIDC token), namespaces, service accounts,
//! pods (name, namespace, service account, pod IP, node, labels, annotations), API users with
//! static bearer tokens, and RBAC-like grants.
//!
//! | request | verb checked | answer |
//! |---|---|---|
//! | `GET /api/v1/pods`, `GET /api/v1/namespaces/{ns}/pods` | `list` (`watch` with `?watch=true`) `pods` | `PodList`; `fieldSelector` on `metadata.name`, `metadata.namespace`, `spec.nodeName`, `spec.serviceAccountName`, `spec.hostNetwork`, `status.phase`, `status.podIP` (`=`, `==`, `!=`; another field → 400 `field label not supported: …`), equality `labelSelector` |
//! | the same with `?watch=true` | `watch` `pods` | newline-delimited `{"type","object"}` events: `ADDED`/`MODIFIED`/`DELETED` after `resourceVersion` (absent or `0`: an `ADDED` per current pod first), a pod leaving the selector as `DELETED`; a version older than the kept history → an `ERROR` event with a 410 `Expired` Status; ends after `timeoutSeconds` |
//! | `GET /api/v1/namespaces/{ns}/pods/{name}` | `get` `pods` | `Pod`, or 404 `pods "x" not found` |
//! | `GET /api/v1/namespaces[/{ns}]`, `…/{ns}/serviceaccounts[/{name}]` | `list`/`get` | `NamespaceList`, `Namespace`, `ServiceAccountList`, `ServiceAccount` |
//! | `POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token` | `create` `serviceaccounts/token` | 201 `TokenRequest` with `status.token` and `status.expirationTimestamp` |
//! | `GET /.well-known/openid-configuration`, `GET /openid/v1/jwks` | none | the issuer's discovery document and keys |
//!
//! **Authentication.** Every `/api` request needs `Authorization: Bearer …`: a world user's
//! static token (compared in constant time), or a service-account token this cluster issued
//! (signature, `exp`, an audience of the API server's, and its service account — and bound pod
//! or node — still there with the same UID). Anything else is 401 `Unauthorized`.
//! **Authorization** is the union of the world's grants: a grant gives a user, a service account
//! (`system:serviceaccount:NS:NAME`) or a group (`system:serviceaccounts`,
//! `system:serviceaccounts:NS`, `system:authenticated`, or a user's own) verbs on resources
//! (`pods`, `serviceaccounts/token`, `*`), cluster-wide or in listed namespaces. A refusal is the
//! API server's 403: `pods is forbidden: User "u" cannot list resource "pods" in API group ""
//! at the cluster scope`.
//!
//! **TokenRequest**, in the API server's order: `metadata.name`/`namespace` must match the URL
//! (422); the service account must exist (404); empty `audiences` become the API server's
//! audiences; `expirationSeconds` defaults to 3600 and must be at least 600 and at most 2^32
//! (422 `Invalid`, `spec.expirationSeconds: Invalid value: 60: may not specify a duration less
//! than 10 minutes`); a `boundObjectRef` of kind `Pod` must name a pod of the namespace (404)
//! running as that service account (400 `cannot bind token for serviceaccount "sa" to pod
//! running with different serviceaccount name.`), `Node` a node of some pod, any other kind is
//! 400 `cannot bind token to object of type /v1, Kind=X`; a `uid` that differs from the
//! object's is 409 `Conflict`. The token (RS256, `kid`) carries `iss`, `sub` =
//! `system:serviceaccount:NS:SA`, `aud` (an array), `iat`, `nbf` = `iat`, `exp`, `jti`, and
//! `kubernetes.io` with `namespace`, `serviceaccount{name,uid}`, and for a pod-bound token
//! `pod{name,uid}` plus its `node{name,uid}`.
//!
//! Errors are `Status` objects (`{"kind":"Status","apiVersion":"v1","metadata":{},
//! "status":"Failure","message","reason","details","code"}`). Pods can be added, changed and
//! removed at run time through `PUT`/`DELETE /_emulator/kubernetes/namespaces/{ns}/pods/{name}`
//! on this listener (the body is a world pod entry as JSON), which is what watches see. Calls
//! are counted as `kubernetes.<operation>`.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use idbridge_core::SecretString;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use crate::Emulator;
use crate::token_verify::{self, VerifyOptions};
use crate::world::World;

/// `expirationSeconds` of a TokenRequest that does not set it (the API server's default).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// The shortest token lifetime the API server accepts (ten minutes).
const MIN_TOKEN_SECONDS: i64 = 600;
/// The longest token lifetime the API server's validation accepts.
const MAX_TOKEN_SECONDS: i64 = 1 << 32;
/// Pod changes kept for watches that resume from a `resourceVersion`; an older version gets
/// 410 `Expired`, and the client lists again. Bounded so run-time changes cannot grow it.
const MAX_EVENTS: usize = 1024;
/// Pods the cluster holds at most (world and run-time changes together).
const MAX_PODS: usize = 10_000;
/// Open watches at most; one more gets 429, as an overloaded API server answers.
const MAX_WATCHES: usize = 256;
/// How long a watch without `timeoutSeconds` stays open (the API server picks 30–60 minutes),
/// and the most any watch may ask for.
const DEFAULT_WATCH_SECONDS: u64 = 1800;
const MAX_WATCH_SECONDS: u64 = 3600;
/// Longest request body read (a TokenRequest, or a pod entry on the control path).
const MAX_BODY: usize = 64 * 1024;
/// Longest client-supplied text quoted back in a message.
const MAX_QUOTED: usize = 128;

// ---------------------------------------------------------------------------------------------
// World section
// ---------------------------------------------------------------------------------------------

/// `[kubernetes]`: the emulated cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The service-account issuer (`--service-account-issuer`): an `[[oidc_issuer]]` with
    /// `generate_key = true`.
    pub issuer: String,
    /// The API server's audiences (`--api-audiences`): tokens for them authenticate API calls,
    /// and a TokenRequest without audiences gets them. Default: the issuer.
    #[serde(default)]
    pub api_audiences: Vec<String>,
    /// `[[kubernetes.namespace]]`.
    #[serde(default, rename = "namespace")]
    pub namespaces: Vec<NamespaceEntry>,
    /// `[[kubernetes.service_account]]` (every namespace also has `default`).
    #[serde(default, rename = "service_account")]
    pub service_accounts: Vec<ServiceAccountEntry>,
    /// `[[kubernetes.pod]]`.
    #[serde(default, rename = "pod")]
    pub pods: Vec<PodEntry>,
    /// `[[kubernetes.user]]`: API callers with static bearer tokens.
    #[serde(default, rename = "user")]
    pub users: Vec<UserEntry>,
    /// `[[kubernetes.grant]]`: what users, service accounts and groups may do.
    #[serde(default, rename = "grant")]
    pub grants: Vec<Grant>,
}

impl KubernetesConfig {
    /// The API server's audiences, defaulted.
    pub fn audiences(&self) -> Vec<String> {
        if self.api_audiences.is_empty() {
            vec![self.issuer.clone()]
        } else {
            self.api_audiences.clone()
        }
    }
}

/// `[[kubernetes.namespace]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceEntry {
    /// Name (a DNS label).
    pub name: String,
}

/// `[[kubernetes.service_account]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountEntry {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (default: derived from namespace and name).
    #[serde(default)]
    pub uid: Option<String>,
}

/// `[[kubernetes.pod]]`, and the JSON body of `PUT /_emulator/kubernetes/…/pods/{name}` (where
/// `namespace` and `name` come from the path).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PodEntry {
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `spec.serviceAccountName` (default `default`).
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// `status.podIP` (none: not yet scheduled, or host network without an IP given).
    #[serde(default)]
    pub pod_ip: Option<String>,
    /// `spec.nodeName`.
    #[serde(default)]
    pub node: Option<String>,
    /// `spec.hostNetwork`.
    #[serde(default)]
    pub host_network: bool,
    /// `status.phase` (default `Running`).
    #[serde(default = "default_phase")]
    pub phase: String,
    /// `metadata.labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `metadata.uid` (default: derived from namespace and name for world pods, random for
    /// pods added at run time).
    #[serde(default)]
    pub uid: Option<String>,
}

fn default_service_account() -> String {
    "default".to_owned()
}

fn default_phase() -> String {
    "Running".to_owned()
}

/// `[[kubernetes.user]]`: an API caller with a static token (`--token-auth-file`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// User name.
    pub name: String,
    /// Bearer token.
    pub token: SecretString,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl std::fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEntry")
            .field("name", &self.name)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// `[[kubernetes.grant]]`: a role and its binding in one (set exactly one of `user`, `group`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// A user name, or a service account as `system:serviceaccount:NS:NAME`.
    #[serde(default)]
    pub user: Option<String>,
    /// A group.
    #[serde(default)]
    pub group: Option<String>,
    /// `get`, `list`, `watch`, `create`, or `*`.
    pub verbs: Vec<String>,
    /// `pods`, `serviceaccounts`, `serviceaccounts/token`, `namespaces`, or `*`.
    pub resources: Vec<String>,
    /// Namespaces the grant holds in; empty: every namespace and the cluster scope.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

const VERBS: &[&str] = &["get", "list", "watch", "create", "*"];
const RESOURCES: &[&str] = &[
    "pods",
    "serviceaccounts",
    "serviceaccounts/token",
    "namespaces",
    "*",
];

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Checks the `[kubernetes]` section; the message names the entry and field.
pub(crate) fn validate_world(world: &World) -> Result<(), String> {
    let Some(cfg) = &world.kubernetes else {
        return Ok(());
    };
    if !world
        .oidc_issuers
        .iter()
        .any(|i| i.issuer == cfg.issuer && i.generate_key)
    {
        return Err(format!(
            "kubernetes: field `issuer`: {:?} must be an oidc_issuer with generate_key = true",
            cfg.issuer
        ));
    }
    for (i, ns) in cfg.namespaces.iter().enumerate() {
        if !is_dns_label(&ns.name) {
            return Err(format!(
                "kubernetes.namespace[{i}]: field `name`: {:?} is not a DNS label",
                ns.name
            ));
        }
        if cfg.namespaces[..i].iter().any(|o| o.name == ns.name) {
            return Err(format!(
                "kubernetes.namespace[{i}]: field `name`: {:?} is declared twice",
                ns.name
            ));
        }
    }
    let has_ns = |n: &str| cfg.namespaces.iter().any(|ns| ns.name == n);
    for (i, sa) in cfg.service_accounts.iter().enumerate() {
        if !has_ns(&sa.namespace) {
            return Err(format!(
                "kubernetes.service_account[{i}]: field `namespace`: unknown namespace {:?}",
                sa.namespace
            ));
        }
        if !is_dns_subdomain(&sa.name) {
            return Err(format!(
                "kubernetes.service_account[{i}]: field `name`: {:?} is not a DNS subdomain name",
                sa.name
            ));
        }
        if sa.name == "default"
            || cfg.service_accounts[..i]
                .iter()
                .any(|o| o.namespace == sa.namespace && o.name == sa.name)
        {
            return Err(format!(
                "kubernetes.service_account[{i}]: field `name`: {}/{} is declared twice (every namespace has `default`)",
                sa.namespace, sa.name
            ));
        }
    }
    let has_sa = |ns: &str, n: &str| {
        n == "default"
            || cfg
                .service_accounts
                .iter()
                .any(|s| s.namespace == ns && s.name == n)
    };
    for (i, pod) in cfg.pods.iter().enumerate() {
        let at = format!("kubernetes.pod[{i}]");
        check_pod(pod, &at)?;
        if !has_ns(&pod.namespace) {
            return Err(format!(
                "{at}: field `namespace`: unknown namespace {:?}",
                pod.namespace
            ));
        }
        if !has_sa(&pod.namespace, &pod.service_account) {
            return Err(format!(
                "{at}: field `service_account`: no service account {:?} in namespace {:?}",
                pod.service_account, pod.namespace
            ));
        }
        if cfg.pods[..i]
            .iter()
            .any(|o| o.namespace == pod.namespace && o.name == pod.name)
        {
            return Err(format!(
                "{at}: field `name`: {}/{} is declared twice",
                pod.namespace, pod.name
            ));
        }
        if let (Some(ip), false) = (&pod.pod_ip, pod.host_network)
            && cfg
                .pods
                .iter()
                .take(i)
                .any(|o| !o.host_network && o.pod_ip.as_ref() == Some(ip))
        {
            return Err(format!(
                "{at}: field `pod_ip`: {ip} is already another pod's IP"
            ));
        }
    }
    if cfg.pods.len() > MAX_PODS {
        return Err(format!("kubernetes: at most {MAX_PODS} pods"));
    }
    for (i, u) in cfg.users.iter().enumerate() {
        let token = u.token.expose_secret();
        if u.name.is_empty() {
            return Err(format!(
                "kubernetes.user[{i}]: field `name` must be non-empty"
            ));
        }
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "kubernetes.user[{i}] ({}): field `token` must be non-empty printable ASCII without spaces",
                u.name
            ));
        }
    }
    for (i, g) in cfg.grants.iter().enumerate() {
        if g.user.is_some() == g.group.is_some() {
            return Err(format!(
                "kubernetes.grant[{i}]: set exactly one of `user`, `group`"
            ));
        }
        if let Some(v) = g.verbs.iter().find(|v| !VERBS.contains(&v.as_str())) {
            return Err(format!(
                "kubernetes.grant[{i}]: field `verbs`: {v:?} is not one of {VERBS:?}"
            ));
        }
        if let Some(r) = g
            .resources
            .iter()
            .find(|r| !RESOURCES.contains(&r.as_str()))
        {
            return Err(format!(
                "kubernetes.grant[{i}]: field `resources`: {r:?} is not one of {RESOURCES:?}"
            ));
        }
    }
    Ok(())
}

/// The checks a pod entry passes wherever it comes from (world or control path).
fn check_pod(pod: &PodEntry, at: &str) -> Result<(), String> {
    if !is_dns_subdomain(&pod.name) {
        return Err(format!(
            "{at}: field `name`: {:?} is not a DNS subdomain name",
            crate::short(&pod.name, MAX_QUOTED)
        ));
    }
    if let Some(ip) = &pod.pod_ip
        && ip.parse::<IpAddr>().is_err()
    {
        return Err(format!(
            "{at}: field `pod_ip`: {:?} is not an IP address",
            crate::short(ip, MAX_QUOTED)
        ));
    }
    if let Some(node) = &pod.node
        && !is_dns_subdomain(node)
    {
        return Err(format!(
            "{at}: field `node`: {:?} is not a DNS subdomain name",
            crate::short(node, MAX_QUOTED)
        ));
    }
    if !matches!(
        pod.phase.as_str(),
        "Pending" | "Running" | "Succeeded" | "Failed" | "Unknown"
    ) {
        return Err(format!(
            "{at}: field `phase`: {:?} is not a pod phase",
            crate::short(&pod.phase, MAX_QUOTED)
        ));
    }
    Ok(())
}

/// A UID derived from what an object is, so a world's objects keep their UIDs across runs.
fn derived_uid(kind: &str, namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{kind}/{namespace}/{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Cluster state
// ---------------------------------------------------------------------------------------------

/// A stored pod.
#[derive(Debug, Clone)]
struct Pod {
    entry: PodEntry,
    uid: String,
    resource_version: u64,
    created: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Modified,
    Deleted,
}

/// One pod change, as watches replay it.
#[derive(Debug, Clone)]
struct Event {
    resource_version: u64,
    change: Change,
    /// The pod before the change (modified, deleted).
    old: Option<Pod>,
    /// The pod after it (added, modified); for a deletion, the last state at the new version.
    new: Pod,
}

#[derive(Debug, Default)]
struct ClusterState {
    resource_version: u64,
    pods: BTreeMap<(String, String), Pod>,
    events: VecDeque<Event>,
}

/// The emulated cluster's mutable state: pods (changed at run time through the control path),
/// their change history for watches, and the watches' wake-up and shutdown signals.
#[derive(Debug)]
pub struct Cluster {
    state: Mutex<ClusterState>,
    changed: watch::Sender<u64>,
    closing: watch::Sender<bool>,
    watches: AtomicUsize,
    created: OffsetDateTime,
}

impl Cluster {
    /// The cluster of `world` (empty without a `[kubernetes]` section) at `now`.
    pub fn new(world: &World, now: OffsetDateTime) -> Self {
        let mut state = ClusterState {
            resource_version: 1,
            ..Default::default()
        };
        if let Some(cfg) = &world.kubernetes {
            for entry in &cfg.pods {
                state.resource_version += 1;
                let uid = entry
                    .uid
                    .clone()
                    .unwrap_or_else(|| derived_uid("pod", &entry.namespace, &entry.name));
                state.pods.insert(
                    (entry.namespace.clone(), entry.name.clone()),
                    Pod {
                        entry: entry.clone(),
                        uid,
                        resource_version: state.resource_version,
                        created: now,
                    },
                );
            }
        }
        let rv = state.resource_version;
        Self {
            state: Mutex::new(state),
            changed: watch::channel(rv).0,
            closing: watch::channel(false).0,
            watches: AtomicUsize::new(0),
            created: now,
        }
    }

    /// Ends every open watch (at shutdown, so a graceful stop does not wait for them).
    pub fn close_watches(&self) {
        let _ = self.closing.send(true);
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        let state = self.state.lock().ok()?;
        state
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Adds or replaces a pod; `None` when the cluster is full.
    fn put_pod(&self, entry: PodEntry, now: OffsetDateTime) -> Option<(Change, u64)> {
        let mut state = self.state.lock().ok()?;
        let key = (entry.namespace.clone(), entry.name.clone());
        let mut before = state.pods.get(&key).cloned();
        if before.is_none() && state.pods.len() >= MAX_PODS {
            return None;
        }
        let uid = entry
            .uid
            .clone()
            .or_else(|| before.as_ref().map(|o| o.uid.clone()))
            .unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().to_string());
        // A new UID under the same name is a new pod: the old one is deleted first.
        if let Some(old) = before.take_if(|o| o.uid != uid) {
            state.resource_version += 1;
            let mut gone = old.clone();
            gone.resource_version = state.resource_version;
            push_event(&mut state, Change::Deleted, Some(old), gone);
        }
        state.resource_version += 1;
        let rv = state.resource_version;
        let pod = Pod {
            entry,
            uid,
            resource_version: rv,
            created: before.as_ref().map_or(now, |o| o.created),
        };
        let change = if before.is_some() {
            Change::Modified
        } else {
            Change::Added
        };
        state.pods.insert(key, pod.clone());
        push_event(&mut state, change, before, pod);
        drop(state);
        let _ = self.changed.send(rv);
        Some((change, rv))
    }

    fn delete_pod(&self, namespace: &str, name: &str) -> Option<u64> {
        let mut state = self.state.lock().ok()?;
        let old = state
            .pods
            .remove(&(namespace.to_owned(), name.to_owned()))?;
        state.resource_version += 1;
        let rv = state.resource_version;
        let mut gone = old.clone();
        gone.resource_version = rv;
        push_event(&mut state, Change::Deleted, Some(old), gone);
        drop(state);
        let _ = self.changed.send(rv);
        Some(rv)
    }
}

fn push_event(state: &mut ClusterState, change: Change, old: Option<Pod>, new: Pod) {
    if state.events.len() >= MAX_EVENTS {
        state.events.pop_front();
    }
    state.events.push_back(Event {
        resource_version: new.resource_version,
        change,
        old,
        new,
    });
}

// ---------------------------------------------------------------------------------------------
// Status objects
// ---------------------------------------------------------------------------------------------

/// A Kubernetes `Status` error response.
fn status(code: StatusCode, reason: &str, message: String, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    json_response(code, &body)
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn not_found(resource: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "{resource} \"{}\" not found",
            crate::short(name, MAX_QUOTED)
        ),
        Some(json!({"name": crate::short(name, MAX_QUOTED), "kind": resource})),
    )
}

fn bad_request(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

fn unauthorized() -> Response {
    status(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Unauthorized".to_owned(),
        None,
    )
}

/// 422 for one invalid field of a TokenRequest.
fn invalid_token_request(name: &str, field: &str, detail: String) -> Response {
    let mut details = json!({
        "group": "authentication.k8s.io",
        "kind": "TokenRequest",
        "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
    });
    if !name.is_empty() {
        details["name"] = Value::from(name);
    }
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("TokenRequest.authentication.k8s.io \"{name}\" is invalid: {field}: {detail}"),
        Some(details),
    )
}

async fn not_found_path() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource".to_owned(),
        Some(json!({})),
    )
}

async fn method_not_allowed() -> Response {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource".to_owned(),
        Some(json!({})),
    )
}

// ---------------------------------------------------------------------------------------------
// Authentication and authorization
// ---------------------------------------------------------------------------------------------

/// A refusal: the `Status` response, boxed (it is large beside the `Ok` values).
type Refusal = Box<Response>;

/// An authenticated API caller.
#[derive(Debug, Clone)]
struct Caller {
    name: String,
    groups: Vec<String>,
}

/// Who the bearer token says the caller is, or 401.
fn authenticate(
    state: &Emulator,
    cfg: &KubernetesConfig,
    headers: &HeaderMap,
) -> Result<Caller, Refusal> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Err(Box::new(unauthorized()));
    };
    let digest = Sha256::digest(token.as_bytes());
    for u in &cfg.users {
        let want = Sha256::digest(u.token.expose_secret().as_bytes());
        if aws_lc_rs::constant_time::verify_slices_are_equal(&digest, &want).is_ok() {
            let mut groups = u.groups.clone();
            groups.push("system:authenticated".to_owned());
            return Ok(Caller {
                name: u.name.clone(),
                groups,
            });
        }
    }
    if token.matches('.').count() == 2 {
        return authenticate_service_account(state, cfg, token);
    }
    tracing::info!("kubernetes: bearer token not recognised");
    Err(Box::new(unauthorized()))
}

/// A service-account token of this cluster: signature, expiry, an API audience, and the objects
/// it names still there.
fn authenticate_service_account(
    state: &Emulator,
    cfg: &KubernetesConfig,
    token: &str,
) -> Result<Caller, Refusal> {
    let Some(jwks) = state.issuer_jwks.get(&cfg.issuer) else {
        return Err(Box::new(unauthorized()));
    };
    let opts = VerifyOptions {
        algorithms: vec![Algorithm::RS256],
        leeway_secs: 0,
        max_lifetime_secs: None,
        required_claims: vec!["sub", "aud"],
    };
    let verified = token_verify::verify_jwt_with_jwks(
        token,
        &cfg.issuer,
        jwks,
        state.clock.now().unix_timestamp(),
        &opts,
    )
    .map_err(|e| {
        tracing::info!(error = %e, "kubernetes: service-account token refused");
        Box::new(unauthorized())
    })?;
    let audiences = cfg.audiences();
    if !verified.audiences.iter().any(|a| audiences.contains(a)) {
        tracing::info!("kubernetes: service-account token not for this API server");
        return Err(Box::new(unauthorized()));
    }
    let private = verified.claims.get("kubernetes.io");
    let text = |path: &[&str]| -> Option<String> {
        let mut v = private?;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_str().map(str::to_owned)
    };
    let (Some(ns), Some(sa), Some(sa_uid)) = (
        text(&["namespace"]),
        text(&["serviceaccount", "name"]),
        text(&["serviceaccount", "uid"]),
    ) else {
        return Err(Box::new(unauthorized()));
    };
    if verified.subject != format!("system:serviceaccount:{ns}:{sa}")
        || service_account_uid(cfg, &ns, &sa).as_deref() != Some(sa_uid.as_str())
    {
        tracing::info!("kubernetes: the token's service account is gone");
        return Err(Box::new(unauthorized()));
    }
    if let (Some(pod), Some(pod_uid)) = (text(&["pod", "name"]), text(&["pod", "uid"]))
        && state.kubernetes.pod(&ns, &pod).map(|p| p.uid) != Some(pod_uid)
    {
        tracing::info!("kubernetes: the token's pod is gone");
        return Err(Box::new(unauthorized()));
    }
    Ok(Caller {
        name: verified.subject,
        groups: vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".to_owned(),
        ],
    })
}

/// What a request asks to do, as the authorizer sees it.
struct Attributes<'a> {
    verb: &'a str,
    resource: &'a str,
    subresource: Option<&'a str>,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

/// `Ok` when a grant allows the request, else the API server's 403.
fn authorize(cfg: &KubernetesConfig, caller: &Caller, a: &Attributes<'_>) -> Result<(), Refusal> {
    let full = match a.subresource {
        Some(sub) => format!("{}/{sub}", a.resource),
        None => a.resource.to_owned(),
    };
    let allowed = cfg.grants.iter().any(|g| {
        let subject = match (&g.user, &g.group) {
            (Some(u), _) => *u == caller.name,
            (None, Some(grp)) => caller.groups.contains(grp),
            (None, None) => false,
        };
        subject
            && g.verbs.iter().any(|v| v == "*" || v == a.verb)
            && g.resources.iter().any(|r| r == "*" || *r == full)
            && (g.namespaces.is_empty()
                || a.namespace
                    .is_some_and(|ns| g.namespaces.iter().any(|n| n == ns)))
    });
    if allowed {
        return Ok(());
    }
    let scope = match a.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    let why = format!(
        "User \"{}\" cannot {} resource \"{full}\" in API group \"\" {scope}",
        caller.name, a.verb
    );
    tracing::info!(user = %caller.name, verb = a.verb, resource = %full, "kubernetes: forbidden");
    let (message, details) = match a.name {
        Some(n) => (
            format!("{} \"{n}\" is forbidden: {why}", a.resource),
            json!({"name": n, "kind": a.resource}),
        ),
        None => (
            format!("{} is forbidden: {why}", a.resource),
            json!({"kind": a.resource}),
        ),
    };
    Err(Box::new(status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        message,
        Some(details),
    )))
}

/// The cluster config, or the API's 404 when the world has none.
fn config(state: &Emulator) -> Result<&KubernetesConfig, Refusal> {
    state.world.kubernetes.as_ref().ok_or_else(|| {
        Box::new(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".to_owned(),
            Some(json!({})),
        ))
    })
}

/// Authenticates, then authorizes `a`.
fn admit<'s>(
    state: &'s Emulator,
    headers: &HeaderMap,
    a: &Attributes<'_>,
) -> Result<&'s KubernetesConfig, Refusal> {
    let cfg = config(state)?;
    let caller = authenticate(state, cfg, headers)?;
    authorize(cfg, &caller, a)?;
    Ok(cfg)
}

fn has_namespace(cfg: &KubernetesConfig, ns: &str) -> bool {
    cfg.namespaces.iter().any(|n| n.name == ns)
}

fn service_account_uid(cfg: &KubernetesConfig, ns: &str, name: &str) -> Option<String> {
    if !has_namespace(cfg, ns) {
        return None;
    }
    if name == "default" {
        return Some(derived_uid("serviceaccount", ns, name));
    }
    cfg.service_accounts
        .iter()
        .find(|s| s.namespace == ns && s.name == name)
        .map(|s| {
            s.uid
                .clone()
                .unwrap_or_else(|| derived_uid("serviceaccount", ns, name))
        })
}

/// Every service account of `ns` (`default` first).
fn service_accounts_of(cfg: &KubernetesConfig, ns: &str) -> Vec<String> {
    std::iter::once("default".to_owned())
        .chain(
            cfg.service_accounts
                .iter()
                .filter(|s| s.namespace == ns)
                .map(|s| s.name.clone()),
        )
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Objects as JSON
// ---------------------------------------------------------------------------------------------

fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// A pod as the API serves it; `typed` adds `kind`/`apiVersion` (single objects and watch
/// events; list items carry neither).
fn pod_json(p: &Pod, typed: bool) -> Value {
    let e = &p.entry;
    let mut spec = json!({
        "serviceAccountName": e.service_account,
        "serviceAccount": e.service_account,
        "containers": [{"name": "main", "image": "registry.idbridge.test/workload:latest"}],
        "restartPolicy": "Always",
    });
    if let Some(node) = &e.node {
        spec["nodeName"] = Value::from(node.clone());
    }
    if e.host_network {
        spec["hostNetwork"] = Value::Bool(true);
    }
    let mut status = json!({ "phase": e.phase });
    if let Some(ip) = &e.pod_ip {
        status["podIP"] = Value::from(ip.clone());
        status["podIPs"] = json!([{ "ip": ip }]);
        if e.host_network {
            status["hostIP"] = Value::from(ip.clone());
        }
    }
    let mut metadata = json!({
        "name": e.name,
        "namespace": e.namespace,
        "uid": p.uid,
        "resourceVersion": p.resource_version.to_string(),
        "creationTimestamp": rfc3339(p.created),
    });
    if !e.labels.is_empty() {
        metadata["labels"] = json!(e.labels);
    }
    if !e.annotations.is_empty() {
        metadata["annotations"] = json!(e.annotations);
    }
    let mut pod = Map::new();
    if typed {
        pod.insert("kind".into(), "Pod".into());
        pod.insert("apiVersion".into(), "v1".into());
    }
    pod.insert("metadata".into(), metadata);
    pod.insert("spec".into(), spec);
    pod.insert("status".into(), status);
    Value::Object(pod)
}

fn namespace_json(cluster: &Cluster, name: &str, typed: bool) -> Value {
    let mut ns = json!({
        "metadata": {
            "name": name,
            "uid": derived_uid("namespace", "", name),
            "resourceVersion": "1",
            "creationTimestamp": rfc3339(cluster.created),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    });
    if typed {
        ns["kind"] = "Namespace".into();
        ns["apiVersion"] = "v1".into();
    }
    ns
}

fn service_account_json(
    cluster: &Cluster,
    cfg: &KubernetesConfig,
    ns: &str,
    name: &str,
    typed: bool,
) -> Value {
    let mut sa = json!({
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": service_account_uid(cfg, ns, name),
            "resourceVersion": "1",
            "creationTimestamp": rfc3339(cluster.created),
        },
    });
    if typed {
        sa["kind"] = "ServiceAccount".into();
        sa["apiVersion"] = "v1".into();
    }
    sa
}

fn list_json(kind: &str, rv: u64, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": "v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

// ---------------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// `fieldSelector` and `labelSelector` of a pod request, plus the path's namespace.
#[derive(Debug, Clone, Default)]
struct Selector {
    namespace: Option<String>,
    fields: Vec<Term>,
    labels: Vec<Term>,
}

const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
];

/// Splits a selector on unescaped commas and undoes `\,` `\=` `\\`.
fn split_terms(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next()
                    && let Some(last) = out.last_mut()
                {
                    last.push(n);
                }
            }
            ',' => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out.into_iter().filter(|t| !t.trim().is_empty()).collect()
}

fn parse_field_selector(s: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    for t in split_terms(s) {
        let term = if let Some((k, v)) = t.split_once("!=") {
            Term::NotEquals(k.trim().to_owned(), v.to_owned())
        } else if let Some((k, v)) = t.split_once("==") {
            Term::Equals(k.trim().to_owned(), v.to_owned())
        } else if let Some((k, v)) = t.split_once('=') {
            Term::Equals(k.trim().to_owned(), v.to_owned())
        } else {
            let t = crate::short(&t, MAX_QUOTED);
            return Err(format!("invalid selector: '{t}'; can't understand '{t}'"));
        };
        let (Term::Equals(k, _) | Term::NotEquals(k, _)) = &term else {
            continue;
        };
        if !POD_FIELDS.contains(&k.as_str()) {
            return Err(format!(
                "field label not supported: {}",
                crate::short(k, MAX_QUOTED)
            ));
        }
        terms.push(term);
    }
    Ok(terms)
}

fn parse_label_selector(s: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    for t in split_terms(s) {
        let t = t.trim();
        let term = if let Some((k, v)) = t.split_once("!=") {
            Term::NotEquals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = t.split_once("==") {
            Term::Equals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = t.split_once('=') {
            Term::Equals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some(k) = t.strip_prefix('!') {
            Term::Absent(k.trim().to_owned())
        } else if !t.contains(' ') && !t.contains('(') {
            Term::Exists(t.to_owned())
        } else {
            // Set-based requirements (`in`, `notin`) are not emulated.
            return Err(format!(
                "unable to parse requirement: {}",
                crate::short(t, MAX_QUOTED)
            ));
        };
        terms.push(term);
    }
    Ok(terms)
}

fn pod_field(p: &PodEntry, field: &str) -> String {
    match field {
        "metadata.name" => p.name.clone(),
        "metadata.namespace" => p.namespace.clone(),
        "spec.nodeName" => p.node.clone().unwrap_or_default(),
        "spec.serviceAccountName" => p.service_account.clone(),
        "spec.hostNetwork" => p.host_network.to_string(),
        "status.phase" => p.phase.clone(),
        "status.podIP" => p.pod_ip.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

impl Selector {
    fn matches(&self, p: &PodEntry) -> bool {
        if self.namespace.as_ref().is_some_and(|ns| *ns != p.namespace) {
            return false;
        }
        let fields = self.fields.iter().all(|t| match t {
            Term::Equals(k, v) => pod_field(p, k) == *v,
            Term::NotEquals(k, v) => pod_field(p, k) != *v,
            Term::Exists(_) | Term::Absent(_) => true,
        });
        fields
            && self.labels.iter().all(|t| match t {
                Term::Equals(k, v) => p.labels.get(k) == Some(v),
                Term::NotEquals(k, v) => p.labels.get(k) != Some(v),
                Term::Exists(k) => p.labels.contains_key(k),
                Term::Absent(k) => !p.labels.contains_key(k),
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

/// The query of a list or watch.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    #[serde(default)]
    field_selector: Option<String>,
    #[serde(default)]
    label_selector: Option<String>,
    #[serde(default)]
    watch: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
    #[serde(flatten)]
    _rest: BTreeMap<String, String>,
}

/// The Kubernetes API listener's router.
pub fn router(state: Arc<Emulator>) -> Router {
    Router::new()
        .route("/api/v1/pods", get(pods_all))
        .route("/api/v1/namespaces", get(namespaces))
        .route("/api/v1/namespaces/{ns}", get(namespace))
        .route("/api/v1/namespaces/{ns}/pods", get(pods_in))
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(pod))
        .route(
            "/api/v1/namespaces/{ns}/serviceaccounts",
            get(service_accounts),
        )
        .route(
            "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
            get(service_account),
        )
        .route(
            "/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
            post(token_request),
        )
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/openid/v1/jwks", get(jwks))
        .route(
            "/_emulator/kubernetes/namespaces/{ns}/pods/{name}",
            put(control_put_pod).delete(control_delete_pod),
        )
        .fallback(not_found_path)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn pods_all(
    State(state): State<Arc<Emulator>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    list_or_watch_pods(state, headers, None, q).await
}

async fn pods_in(
    State(state): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(ns): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    list_or_watch_pods(state, headers, Some(ns), q).await
}

/// A boolean query parameter as the API server parses it (Go's `strconv.ParseBool`: the
/// Python client sends `watch=True`).
fn is_true(v: &Option<String>) -> bool {
    matches!(
        v.as_deref(),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

async fn list_or_watch_pods(
    state: Arc<Emulator>,
    headers: HeaderMap,
    namespace: Option<String>,
    q: ListQuery,
) -> Response {
    let watching = is_true(&q.watch);
    let verb = if watching { "watch" } else { "list" };
    state.bump(&format!("kubernetes.{verb}_pods"));
    if let Err(r) = admit(
        &state,
        &headers,
        &Attributes {
            verb,
            resource: "pods",
            subresource: None,
            namespace: namespace.as_deref(),
            name: None,
        },
    ) {
        return *r;
    }
    let mut selector = Selector {
        namespace,
        ..Default::default()
    };
    if let Some(f) = &q.field_selector {
        match parse_field_selector(f) {
            Ok(t) => selector.fields = t,
            Err(m) => return bad_request(m),
        }
    }
    if let Some(l) = &q.label_selector {
        match parse_label_selector(l) {
            Ok(t) => selector.labels = t,
            Err(m) => return bad_request(m),
        }
    }
    if watching {
        return watch_pods(state, selector, &q);
    }
    let Ok(cluster) = state.kubernetes.state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let items = cluster
        .pods
        .values()
        .filter(|p| selector.matches(&p.entry))
        .map(|p| pod_json(p, false))
        .collect();
    json_response(
        StatusCode::OK,
        &list_json("PodList", cluster.resource_version, items),
    )
}

/// Releases a watch slot when the watch ends.
struct WatchSlot(Arc<Emulator>);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.0.kubernetes.watches.fetch_sub(1, Ordering::SeqCst);
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// What a watch with `selector` sees of `e`: the API server's cacher turns a pod that enters or
/// leaves the selector into `ADDED` / `DELETED`.
fn visible(selector: &Selector, e: &Event) -> Option<(&'static str, Value)> {
    let old = e.old.as_ref().is_some_and(|o| selector.matches(&o.entry));
    let new = selector.matches(&e.new.entry);
    let kind = match (e.change, old, new) {
        (Change::Added, _, true) => "ADDED",
        (Change::Modified, true, true) => "MODIFIED",
        (Change::Modified, false, true) => "ADDED",
        (Change::Modified, true, false) => "DELETED",
        (Change::Deleted, true, _) => "DELETED",
        _ => return None,
    };
    Some((kind, pod_json(&e.new, true)))
}

fn watch_pods(state: Arc<Emulator>, selector: Selector, q: &ListQuery) -> Response {
    let cluster = &state.kubernetes;
    if cluster.watches.fetch_add(1, Ordering::SeqCst) >= MAX_WATCHES {
        cluster.watches.fetch_sub(1, Ordering::SeqCst);
        return status(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests, please try again later.".to_owned(),
            Some(json!({"retryAfterSeconds": 1})),
        );
    }
    let slot = WatchSlot(state.clone());
    let since = match q.resource_version.as_deref() {
        None | Some("" | "0") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return bad_request(format!(
                    "invalid resource version: {}",
                    crate::short(v, MAX_QUOTED)
                ));
            }
        },
    };
    let timeout = Duration::from_secs(
        q.timeout_seconds
            .unwrap_or(DEFAULT_WATCH_SECONDS)
            .min(MAX_WATCH_SECONDS),
    );
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut changed = cluster.changed.subscribe();
    let mut closing = cluster.closing.subscribe();
    tokio::spawn(async move {
        let state = &slot.0;
        // The starting point, and the first lines: synthetic ADDED events, or a 410.
        let (mut last, first): (u64, Vec<Bytes>) = {
            let Ok(cluster) = state.kubernetes.state.lock() else {
                return;
            };
            match since {
                None => (
                    cluster.resource_version,
                    cluster
                        .pods
                        .values()
                        .filter(|p| selector.matches(&p.entry))
                        .map(|p| event_line("ADDED", &pod_json(p, true)))
                        .collect(),
                ),
                Some(n) => {
                    let oldest = cluster
                        .events
                        .front()
                        .map_or(cluster.resource_version + 1, |e| e.resource_version);
                    if n + 1 < oldest && n < cluster.resource_version {
                        let gone = json!({
                            "kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure",
                            "message": format!("too old resource version: {n} ({})", oldest - 1),
                            "reason": "Expired", "code": 410,
                        });
                        (u64::MAX, vec![event_line("ERROR", &gone)])
                    } else {
                        (n, Vec::new())
                    }
                }
            }
        };
        for line in first {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if last == u64::MAX {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let lines: Vec<Bytes> = {
                let Ok(cluster) = state.kubernetes.state.lock() else {
                    return;
                };
                let lines = cluster
                    .events
                    .iter()
                    .filter(|e| e.resource_version > last)
                    .filter_map(|e| visible(&selector, e))
                    .map(|(kind, obj)| event_line(kind, &obj))
                    .collect();
                last = last.max(cluster.resource_version);
                lines
            };
            for line in lines {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = closing.wait_for(|c| *c) => return,
                () = &mut deadline => return,
                () = tx.closed() => return,
            }
        }
    });
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn pod(
    State(state): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    state.bump("kubernetes.get_pod");
    if let Err(r) = admit(
        &state,
        &headers,
        &Attributes {
            verb: "get",
            resource: "pods",
            subresource: None,
            namespace: Some(&ns),
            name: Some(&name),
        },
    ) {
        return *r;
    }
    match state.kubernetes.pod(&ns, &name) {
        Some(p) => json_response(StatusCode::OK, &pod_json(&p, true)),
        None => not_found("pods", &name),
    }
}

async fn namespaces(State(state): State<Arc<Emulator>>, headers: HeaderMap) -> Response {
    state.bump("kubernetes.list_namespaces");
    let cfg = match admit(
        &state,
        &headers,
        &Attributes {
            verb: "list",
            resource: "namespaces",
            subresource: None,
            namespace: None,
            name: None,
        },
    ) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let items = cfg
        .namespaces
        .iter()
        .map(|n| namespace_json(&state.kubernetes, &n.name, false))
        .collect();
    json_response(StatusCode::OK, &list_json("NamespaceList", 1, items))
}

async fn namespace(
    State(state): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(ns): Path<String>,
) -> Response {
    state.bump("kubernetes.get_namespace");
    let cfg = match admit(
        &state,
        &headers,
        &Attributes {
            verb: "get",
            resource: "namespaces",
            subresource: None,
            namespace: None,
            name: Some(&ns),
        },
    ) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if has_namespace(cfg, &ns) {
        json_response(
            StatusCode::OK,
            &namespace_json(&state.kubernetes, &ns, true),
        )
    } else {
        not_found("namespaces", &ns)
    }
}

async fn service_accounts(
    State(state): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(ns): Path<String>,
) -> Response {
    state.bump("kubernetes.list_serviceaccounts");
    let cfg = match admit(
        &state,
        &headers,
        &Attributes {
            verb: "list",
            resource: "serviceaccounts",
            subresource: None,
            namespace: Some(&ns),
            name: None,
        },
    ) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let items = if has_namespace(cfg, &ns) {
        service_accounts_of(cfg, &ns)
            .iter()
            .map(|n| service_account_json(&state.kubernetes, cfg, &ns, n, false))
            .collect()
    } else {
        Vec::new()
    };
    json_response(StatusCode::OK, &list_json("ServiceAccountList", 1, items))
}

async fn service_account(
    State(state): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    state.bump("kubernetes.get_serviceaccount");
    let cfg = match admit(
        &state,
        &headers,
        &Attributes {
            verb: "get",
            resource: "serviceaccounts",
            subresource: None,
            namespace: Some(&ns),
            name: Some(&name),
        },
    ) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if service_account_uid(cfg, &ns, &name).is_some() {
        json_response(
            StatusCode::OK,
            &service_account_json(&state.kubernetes, cfg, &ns, &name, true),
        )
    } else {
        not_found("serviceaccounts", &name)
    }
}

/// The body of a TokenRequest, as far as the emulator reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequestBody {
    #[serde(default)]
    metadata: TokenRequestMeta,
    #[serde(default)]
    spec: TokenRequestSpec,
}

#[derive(Debug, Default, Deserialize)]
struct TokenRequestMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequestSpec {
    #[serde(default)]
    audiences: Option<Vec<String>>,
    #[serde(default)]
    expiration_seconds: Option<i64>,
    #[serde(default)]
    bound_object_ref: Option<BoundObjectRef>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BoundObjectRef {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
}

async fn token_request(
    State(state): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    state.bump("kubernetes.TokenRequest");
    let cfg = match admit(
        &state,
        &headers,
        &Attributes {
            verb: "create",
            resource: "serviceaccounts",
            subresource: Some("token"),
            namespace: Some(&ns),
            name: Some(&name),
        },
    ) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if body.len() > MAX_BODY {
        return status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "the request body is too large".to_owned(),
            None,
        );
    }
    let req: TokenRequestBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(format!(
                "the request body is not a TokenRequest: {}",
                crate::short(&e.to_string(), MAX_QUOTED)
            ));
        }
    };
    if let Some(n) = req.metadata.name.as_deref().filter(|n| !n.is_empty())
        && n != name
    {
        return invalid_token_request(
            &name,
            "metadata.name",
            format!(
                "Invalid value: \"{}\": must match the service account name if specified",
                crate::short(n, MAX_QUOTED)
            ),
        );
    }
    if let Some(n) = req.metadata.namespace.as_deref().filter(|n| !n.is_empty())
        && n != ns
    {
        return invalid_token_request(
            &name,
            "metadata.namespace",
            format!(
                "Invalid value: \"{}\": must match the service account namespace if specified",
                crate::short(n, MAX_QUOTED)
            ),
        );
    }
    let Some(sa_uid) = service_account_uid(cfg, &ns, &name) else {
        return not_found("serviceaccounts", &name);
    };
    let audiences = match req.spec.audiences {
        Some(a) if !a.is_empty() => a,
        _ => cfg.audiences(),
    };
    let expiration = req.spec.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS);
    if expiration < MIN_TOKEN_SECONDS {
        return invalid_token_request(
            "",
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        );
    }
    if expiration > MAX_TOKEN_SECONDS {
        return invalid_token_request(
            "",
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            ),
        );
    }
    let mut private = json!({
        "namespace": ns,
        "serviceaccount": {"name": name, "uid": sa_uid},
    });
    let bound = req.spec.bound_object_ref.clone();
    if let Some(r) = &bound {
        let (group, version) = match r.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", r.api_version.as_str()),
        };
        let uid = match (group, r.kind.as_str()) {
            ("", "Pod") => {
                let Some(pod) = state.kubernetes.pod(&ns, &r.name) else {
                    return not_found("pods", &r.name);
                };
                if pod.entry.service_account != name {
                    return bad_request(format!(
                        "cannot bind token for serviceaccount \"{name}\" to pod running with different serviceaccount name."
                    ));
                }
                private["pod"] = json!({"name": pod.entry.name, "uid": pod.uid});
                if let Some(node) = &pod.entry.node {
                    private["node"] = json!({"name": node, "uid": derived_uid("node", "", node)});
                }
                pod.uid
            }
            ("", "Node") => {
                let known = state
                    .kubernetes
                    .state
                    .lock()
                    .map(|s| {
                        s.pods
                            .values()
                            .any(|p| p.entry.node.as_deref() == Some(&r.name))
                    })
                    .unwrap_or(false);
                if !known {
                    return not_found("nodes", &r.name);
                }
                let uid = derived_uid("node", "", &r.name);
                private["node"] = json!({"name": r.name, "uid": uid});
                uid
            }
            ("", "Secret") => return not_found("secrets", &r.name),
            (g, k) => {
                return bad_request(format!(
                    "cannot bind token to object of type {}/{}, Kind={}",
                    crate::short(g, MAX_QUOTED),
                    crate::short(version, MAX_QUOTED),
                    crate::short(k, MAX_QUOTED)
                ));
            }
        };
        if !r.uid.is_empty() && r.uid != uid {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                    r.kind,
                    crate::short(&r.name, MAX_QUOTED),
                    crate::short(&r.uid, MAX_QUOTED)
                ),
                Some(json!({"name": r.name, "kind": r.kind})),
            );
        }
    }
    let Some(key) = state.issuer_keys.get(&cfg.issuer) else {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the service-account issuer has no signing key".to_owned(),
            None,
        );
    };
    let now = state.clock.now();
    let iat = now.unix_timestamp();
    let claims = json!({
        "iss": cfg.issuer,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "aud": audiences,
        "iat": iat,
        "nbf": iat,
        "exp": iat + expiration,
        "jti": uuid::Uuid::new_v4().hyphenated().to_string(),
        "kubernetes.io": private,
    });
    let Ok(token) = key.sign(&claims) else {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "signing the token failed".to_owned(),
            None,
        );
    };
    tracing::info!(namespace = %ns, service_account = %name, ?audiences, "kubernetes: TokenRequest issued a token");
    let mut spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    if let Some(r) = bound {
        spec["boundObjectRef"] = json!({
            "kind": r.kind, "apiVersion": r.api_version, "name": r.name, "uid": r.uid,
        });
    }
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": rfc3339(now)},
            "spec": spec,
            "status": {
                "token": token,
                "expirationTimestamp": rfc3339(now + time::Duration::seconds(expiration)),
            },
        }),
    )
}

async fn discovery(State(state): State<Arc<Emulator>>, headers: HeaderMap) -> Response {
    let cfg = match config(&state) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    state.bump("kubernetes.discovery");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": cfg.issuer,
            "jwks_uri": format!("http://{host}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }),
    )
}

async fn jwks(State(state): State<Arc<Emulator>>) -> Response {
    let cfg = match config(&state) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    state.bump("kubernetes.jwks");
    match state.issuer_jwks.get(&cfg.issuer) {
        Some(set) => match serde_json::to_value(set) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        None => not_found_path().await,
    }
}

/// `PUT /_emulator/kubernetes/namespaces/{ns}/pods/{name}`: add or replace a pod.
async fn control_put_pod(
    State(state): State<Arc<Emulator>>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let cfg = match config(&state) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if body.len() > MAX_BODY {
        return bad_request("the pod entry is too large".to_owned());
    }
    let mut entry: PodEntry = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return bad_request(format!(
                "the body is not a pod entry: {}",
                crate::short(&e.to_string(), MAX_QUOTED)
            ));
        }
    };
    if (!entry.namespace.is_empty() && entry.namespace != ns)
        || (!entry.name.is_empty() && entry.name != name)
    {
        return bad_request("the body's namespace and name must match the path".to_owned());
    }
    entry.namespace = ns;
    entry.name = name;
    if let Err(m) = check_pod(&entry, "pod") {
        return bad_request(m);
    }
    if !has_namespace(cfg, &entry.namespace) {
        return not_found("namespaces", &entry.namespace);
    }
    if service_account_uid(cfg, &entry.namespace, &entry.service_account).is_none() {
        return not_found("serviceaccounts", &entry.service_account);
    }
    match state.kubernetes.put_pod(entry, state.clock.now()) {
        Some((change, rv)) => json_response(
            if change == Change::Added {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &json!({"resourceVersion": rv.to_string()}),
        ),
        None => status(
            StatusCode::INSUFFICIENT_STORAGE,
            "InternalError",
            format!("the cluster holds at most {MAX_PODS} pods"),
            None,
        ),
    }
}

/// `DELETE /_emulator/kubernetes/namespaces/{ns}/pods/{name}`.
async fn control_delete_pod(
    State(state): State<Arc<Emulator>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match state.kubernetes.delete_pod(&ns, &name) {
        Some(rv) => json_response(StatusCode::OK, &json!({"resourceVersion": rv.to_string()})),
        None => not_found("pods", &name),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use http_body_util::BodyExt;
    use idbridge_core::clock::ManualClock;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{DecodingKey, Validation};
    use tower::ServiceExt;

    use super::*;

    const TOKEN: &str = "emulator-kubernetes-token";

    fn emulator() -> Arc<Emulator> {
        let clock = ManualClock::at(1_800_000_000);
        Emulator::new(World::builtin().unwrap(), Arc::new(clock)).unwrap()
    }

    async fn call(
        emu: &Arc<Emulator>,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let resp = router(emu.clone()).oneshot(req).await.unwrap();
        let code = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (code, v)
    }

    fn token_body(expiration: Option<i64>, pod: Option<(&str, &str)>) -> Value {
        let mut spec = json!({"audiences": ["sts.amazonaws.com"]});
        if let Some(e) = expiration {
            spec["expirationSeconds"] = e.into();
        }
        if let Some((name, uid)) = pod {
            spec["boundObjectRef"] =
                json!({"kind": "Pod", "apiVersion": "v1", "name": name, "uid": uid});
        }
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
    }

    #[tokio::test]
    async fn list_by_pod_ip_and_node() {
        let emu = emulator();
        let (code, v) = call(
            &emu,
            "GET",
            "/api/v1/pods?fieldSelector=status.podIP%3D10.88.0.10",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert_eq!(v["kind"], "PodList");
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{v}");
        assert_eq!(items[0]["metadata"]["name"], "my-app-0");
        assert_eq!(items[0]["spec"]["serviceAccountName"], "my-app");
        assert!(items[0].get("kind").is_none(), "list items carry no kind");
        let (_, v) = call(
            &emu,
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1,status.phase%3DRunning",
            Some(TOKEN),
            None,
        )
        .await;
        assert!(v["items"].as_array().unwrap().len() >= 2, "{v}");
        let (code, v) = call(
            &emu,
            "GET",
            "/api/v1/pods?fieldSelector=spec.foo%3Dx",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(v["message"], "field label not supported: spec.foo");
        assert_eq!(v["kind"], "Status");
    }

    #[tokio::test]
    async fn unauthenticated_and_forbidden_callers_get_status_objects() {
        let emu = emulator();
        let (code, v) = call(&emu, "GET", "/api/v1/pods", None, None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert_eq!(v["reason"], "Unauthorized");
        let (code, _) = call(&emu, "GET", "/api/v1/pods", Some("wrong"), None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        // my-app's own token authenticates, but the service account may not list pods.
        let (_, t) = call(
            &emu,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/my-app/token",
            Some(TOKEN),
            Some(json!({"spec": {"audiences": ["https://kubernetes.idbridge.test"]}})),
        )
        .await;
        let own = t["status"]["token"].as_str().unwrap().to_owned();
        let (code, v) = call(&emu, "GET", "/api/v1/pods", Some(&own), None).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(
            v["message"],
            "pods is forbidden: User \"system:serviceaccount:default:my-app\" cannot list resource \"pods\" in API group \"\" at the cluster scope"
        );
        let (code, v) = call(
            &emu,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/my-app/token",
            Some(&own),
            Some(token_body(None, None)),
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert_eq!(
            v["details"],
            json!({"name": "my-app", "kind": "serviceaccounts"})
        );
        assert!(v["message"].as_str().unwrap().ends_with("cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\""), "{v}");
        // A token for another audience does not authenticate.
        let (_, t) = call(
            &emu,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/my-app/token",
            Some(TOKEN),
            Some(token_body(None, None)),
        )
        .await;
        let sts = t["status"]["token"].as_str().unwrap().to_owned();
        let (code, _) = call(&emu, "GET", "/api/v1/pods", Some(&sts), None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn token_request_binds_to_the_pod() {
        let emu = emulator();
        let (_, pod) = call(
            &emu,
            "GET",
            "/api/v1/namespaces/default/pods/my-app-0",
            Some(TOKEN),
            None,
        )
        .await;
        let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
        let (code, v) = call(
            &emu,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/my-app/token",
            Some(TOKEN),
            Some(token_body(None, Some(("my-app-0", &uid)))),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
        assert_eq!(v["spec"]["expirationSeconds"], 3600);
        let token = v["status"]["token"].as_str().unwrap();
        let set: JwkSet =
            serde_json::from_value(call(&emu, "GET", "/openid/v1/jwks", None, None).await.1)
                .unwrap();
        let mut val = Validation::new(Algorithm::RS256);
        val.set_audience(&["sts.amazonaws.com"]);
        val.validate_exp = false; // the emulator's clock is a manual one
        let claims = jsonwebtoken::decode::<Value>(
            token,
            &DecodingKey::from_jwk(&set.keys[0]).unwrap(),
            &val,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], "system:serviceaccount:default:my-app");
        assert_eq!(claims["iss"], "https://kubernetes.idbridge.test");
        assert_eq!(claims["aud"], json!(["sts.amazonaws.com"]));
        assert_eq!(claims["nbf"], claims["iat"]);
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );
        let k = &claims["kubernetes.io"];
        assert_eq!(k["namespace"], "default");
        assert_eq!(k["serviceaccount"]["name"], "my-app");
        assert_eq!(k["pod"], json!({"name": "my-app-0", "uid": uid}));
        assert_eq!(k["node"]["name"], "node-1");
    }

    #[tokio::test]
    async fn token_request_errors_are_the_api_servers() {
        let emu = emulator();
        let sa = "/api/v1/namespaces/default/serviceaccounts/my-app/token";
        let (code, v) = call(
            &emu,
            "POST",
            sa,
            Some(TOKEN),
            Some(token_body(Some(60), None)),
        )
        .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(v["reason"], "Invalid");
        assert_eq!(
            v["message"],
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
        );
        assert_eq!(v["details"]["causes"][0]["field"], "spec.expirationSeconds");
        let (code, v) = call(
            &emu,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/nobody/token",
            Some(TOKEN),
            Some(token_body(None, None)),
        )
        .await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(v["message"], "serviceaccounts \"nobody\" not found");
        let (code, v) = call(
            &emu,
            "POST",
            sa,
            Some(TOKEN),
            Some(token_body(None, Some(("web-0", "")))),
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(
            v["message"],
            "cannot bind token for serviceaccount \"my-app\" to pod running with different serviceaccount name."
        );
        let (code, v) = call(
            &emu,
            "POST",
            sa,
            Some(TOKEN),
            Some(token_body(None, Some(("my-app-0", "not-the-uid")))),
        )
        .await;
        assert_eq!(code, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["reason"], "Conflict");
        let (code, v) = call(
            &emu,
            "POST",
            sa,
            Some(TOKEN),
            Some(token_body(None, Some(("gone", "")))),
        )
        .await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(v["message"], "pods \"gone\" not found");
        let mut body = token_body(None, None);
        body["spec"]["boundObjectRef"] =
            json!({"kind": "ConfigMap", "apiVersion": "v1", "name": "x"});
        let (code, v) = call(&emu, "POST", sa, Some(TOKEN), Some(body)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(
            v["message"],
            "cannot bind token to object of type /v1, Kind=ConfigMap"
        );
        let (code, v) = call(
            &emu,
            "POST",
            sa,
            Some(TOKEN),
            Some(json!({"metadata": {"name": "other"}, "spec": {}})),
        )
        .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(v["details"]["causes"][0]["field"], "metadata.name");
    }

    #[tokio::test]
    async fn a_deleted_pod_invalidates_its_bound_token() {
        let emu = emulator();
        let (code, _) = call(
            &emu,
            "PUT",
            "/_emulator/kubernetes/namespaces/default/pods/my-app-1",
            None,
            Some(json!({"service_account": "my-app", "pod_ip": "10.88.0.99", "node": "node-1"})),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED);
        let (_, v) = call(&emu, "POST", "/api/v1/namespaces/default/serviceaccounts/my-app/token", Some(TOKEN),
            Some(json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "my-app-1"}}}))).await;
        assert_eq!(
            v["spec"]["audiences"],
            json!(["https://kubernetes.idbridge.test"]),
            "{v}"
        );
        let bound = v["status"]["token"].as_str().unwrap().to_owned();
        // Authenticates (then is refused by RBAC) while the pod lives; 401 once it is gone.
        assert_eq!(
            call(&emu, "GET", "/api/v1/pods", Some(&bound), None)
                .await
                .0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(
                &emu,
                "DELETE",
                "/_emulator/kubernetes/namespaces/default/pods/my-app-1",
                None,
                None
            )
            .await
            .0,
            StatusCode::OK
        );
        assert_eq!(
            call(&emu, "GET", "/api/v1/pods", Some(&bound), None)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }

    async fn read_lines(body: Body, n: usize) -> Vec<Value> {
        let mut stream = body.into_data_stream();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while out.len() < n {
            let Some(Ok(chunk)) = stream.next().await else {
                break;
            };
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                out.push(serde_json::from_slice(&line).unwrap());
            }
        }
        out
    }

    #[tokio::test]
    async fn watch_replays_changes_through_the_selector() {
        let emu = emulator();
        let (_, list) = call(
            &emu,
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-2",
            Some(TOKEN),
            None,
        )
        .await;
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        let req = Request::get(format!("/api/v1/pods?watch=True&fieldSelector=spec.nodeName%3Dnode-2&resourceVersion={rv}&timeoutSeconds=5"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let resp = router(emu.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let put = |name: &'static str, node: &'static str| {
            let emu = emu.clone();
            async move {
                call(
                    &emu,
                    "PUT",
                    &format!("/_emulator/kubernetes/namespaces/default/pods/{name}"),
                    None,
                    Some(json!({"pod_ip": "10.88.1.5", "node": node})),
                )
                .await
                .0
            }
        };
        assert_eq!(put("batch-0", "node-2").await, StatusCode::CREATED);
        assert_eq!(put("batch-0", "node-1").await, StatusCode::OK); // leaves the selector
        assert_eq!(put("other", "node-1").await, StatusCode::CREATED); // never in it
        assert_eq!(put("batch-1", "node-2").await, StatusCode::CREATED);
        let events = read_lines(resp.into_body(), 3).await;
        let seen: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["object"]["metadata"]["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("ADDED".into(), "batch-0".into()),
                ("DELETED".into(), "batch-0".into()),
                ("ADDED".into(), "batch-1".into())
            ]
        );
        assert_eq!(events[0]["object"]["kind"], "Pod");
        assert!(
            events[2]["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > rv.parse::<u64>().unwrap()
        );
    }

    #[tokio::test]
    async fn watch_from_a_forgotten_version_is_expired() {
        let emu = emulator();
        for i in 0..(MAX_EVENTS + 2) {
            let ip = format!("10.77.{}.{}", i / 250, i % 250 + 1);
            call(
                &emu,
                "PUT",
                "/_emulator/kubernetes/namespaces/default/pods/churn",
                None,
                Some(json!({"pod_ip": ip})),
            )
            .await;
        }
        let req = Request::get("/api/v1/pods?watch=true&resourceVersion=1")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let resp = router(emu.clone()).oneshot(req).await.unwrap();
        let events = read_lines(resp.into_body(), 1).await;
        assert_eq!(events[0]["type"], "ERROR");
        assert_eq!(events[0]["object"]["code"], 410);
        assert_eq!(events[0]["object"]["reason"], "Expired");
    }

    #[test]
    fn world_errors_name_the_field() {
        let base = "[[oidc_issuer]]\nissuer = \"https://k8s.test\"\ngenerate_key = true\n[kubernetes]\nissuer = \"https://k8s.test\"\n[[kubernetes.namespace]]\nname = \"default\"\n";
        let err = |extra: &str| {
            World::from_str_at(&format!("{base}{extra}"), "w.toml", None)
                .unwrap_err()
                .to_string()
        };
        assert!(
            err("[[kubernetes.pod]]\nnamespace = \"nope\"\nname = \"p\"\n")
                .contains("kubernetes.pod[0]: field `namespace`")
        );
        assert!(err("[[kubernetes.pod]]\nnamespace = \"default\"\nname = \"p\"\nservice_account = \"x\"\n").contains("field `service_account`"));
        assert!(
            err("[[kubernetes.pod]]\nnamespace = \"default\"\nname = \"p\"\npod_ip = \"10.1\"\n")
                .contains("field `pod_ip`")
        );
        assert!(
            err(
                "[[kubernetes.grant]]\nuser = \"u\"\nverbs = [\"delete\"]\nresources = [\"pods\"]\n"
            )
            .contains("field `verbs`")
        );
        assert!(
            err("[[kubernetes.pod]]\nnamespace = \"default\"\nname = \"p\"\ncolour = \"red\"\n")
                .contains("colour")
        );
        let no_key = World::from_str_at(
            "[kubernetes]\nissuer = \"https://k8s.test\"\n",
            "w.toml",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(no_key.contains("field `issuer`"), "{no_key}");
    }

    #[test]
    fn debug_shows_no_user_token() {
        let w = World::builtin().unwrap();
        let printed = format!("{:?}", w.kubernetes);
        assert!(!printed.contains(TOKEN), "{printed}");
    }
}
