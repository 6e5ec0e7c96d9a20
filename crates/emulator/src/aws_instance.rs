//! The emulated EC2 instance (IMDSv2) and ECS task credential endpoints.
//!
//! Two routers, each on its own listener:
//!
//! * [`imds_router`] — the instance metadata service of the world's `[ec2_instance]`, IMDSv2 only,
//!   faithful to what botocore, aws-config (Rust) and google-auth's AWS credential source need:
//!   The request rules, the tree and the documents are [`idbridge_wire::aws_imds`]'s, shared
//!   with idbridge's own IMDS frontend.
//!   * `PUT /latest/api/token` with `x-aws-ec2-metadata-token-ttl-seconds: 1..=21600` answers the
//!     token as the body **and echoes the TTL header** (aws-config fails without it); a missing
//!     or invalid TTL is 400; a PUT carrying `X-Forwarded-For` is 403 (tokens are not handed to
//!     reverse proxies).
//!   * every `GET` needs a live `x-aws-ec2-metadata-token` (missing, unknown or expired → 401);
//!     there is no IMDSv1.
//!   * `…/iam/security-credentials/` lists the role name (no trailing newline: google-auth uses
//!     the body verbatim); `…/security-credentials/<role>` answers the AWS-HMAC JSON document with
//!     a real session of the emulated STS (session name = the instance id), reused until it is
//!     within five minutes of its one-hour expiry, as EC2 rotates them.
//!     `…/security-credentials-extended/` is 404 so newer SDKs fall back to the legacy path.
//!   * `placement/availability-zone` has no trailing newline (google-auth derives the region by
//!     cutting the last character), `placement/region`, `instance-id`, `instance-type`,
//!     `ami-id`, `hostname`, `local-hostname`, `local-ipv4`, `iam/info`, `services/…`,
//!     directory listings, and `/latest/dynamic/instance-identity/document`.
//!   * responses carry `Server: EC2ws`; data is `text/plain` (JSON documents included, as EC2
//!     serves them); errors are small HTML pages.
//! * [`ecs_router`] — the container credential endpoints of the world's `[[ecs_task]]`s (the
//!   `AWS_CONTAINER_CREDENTIALS_FULL_URI` form): `GET <path>` with `Authorization` equal to the
//!   task's token answers `{"RoleArn","AccessKeyId","SecretAccessKey","Token","Expiration",
//!   "AccountId"}` (session name = a stable task id, `ecs-task-<hex>`); a missing or wrong token
//!   is 401 and an unknown path 404, both with `{"code","message"}` JSON bodies.
//!
//! Counted as `imds.token`, `imds.credentials` and `ecs.credentials`. Secrets never reach a log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idbridge_core::SecretString;
use idbridge_core::timefmt::rfc3339_seconds;
use idbridge_wire::aws_imds::{
    self as imds_wire, Admitted, Found, IamInfo, Refused, RoleCredentials, SERVER, TEXT,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::Emulator;
use crate::state::AwsSession;
use crate::world::World;

pub use idbridge_wire::aws_imds::{MAX_TOKEN_TTL, TOKEN_HEADER, TOKEN_PATH, TTL_HEADER};
/// Lifetime of the instance's and tasks' role sessions.
pub const SESSION_SECONDS: i64 = 3600;
/// A session is replaced once it has less than this left, as EC2 and ECS rotate credentials.
pub const ROTATE_BEFORE_SECONDS: i64 = 300;

const JSON: &str = "application/json";
/// `pendingTime` of the emulated instance (the world does not say; 2023-11-14T22:13:20Z).
const LAUNCH_TIME: i64 = 1_700_000_000;
/// The token-map size above which expired IMDS tokens are dropped.
const TOKEN_PRUNE_AT: usize = 1024;

// ---------------------------------------------------------------------------------------------
// World sections
// ---------------------------------------------------------------------------------------------

/// `[ec2_instance]`: the emulated EC2 instance behind IMDS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Instance {
    /// `i-` followed by 8 or 17 hex digits; the session name of its role credentials.
    pub instance_id: String,
    /// The instance profile's role (an `[[aws_role]]`).
    pub role_arn: String,
    /// E.g. `us-east-1a`; the region is the zone without its last letter.
    pub availability_zone: String,
    /// Instance type.
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    /// Image id.
    #[serde(default = "default_ami_id")]
    pub ami_id: String,
    /// Private IPv4 address.
    #[serde(default = "default_local_ipv4")]
    pub local_ipv4: String,
}

fn default_instance_type() -> String {
    "t3.micro".to_owned()
}
fn default_ami_id() -> String {
    "ami-0c0ffee0c0ffee000".to_owned()
}
fn default_local_ipv4() -> String {
    "172.31.32.10".to_owned()
}

impl Ec2Instance {
    /// The region: the availability zone without its zone letter.
    pub fn region(&self) -> &str {
        let az = self.availability_zone.as_str();
        az.strip_suffix(|c: char| c.is_ascii_lowercase())
            .unwrap_or(az)
    }

    /// The role's name (last segment of its ARN), as IMDS lists it.
    pub fn role_name(&self) -> &str {
        self.role_arn.rsplit('/').next().unwrap_or_default()
    }

    /// The account of the role.
    pub fn account(&self) -> &str {
        self.role_arn.split(':').nth(4).unwrap_or_default()
    }

    /// `ip-a-b-c-d.ec2.internal` (us-east-1) or `ip-a-b-c-d.<region>.compute.internal`.
    pub fn hostname(&self) -> String {
        imds_wire::Instance::default_hostname(&self.local_ipv4, self.region())
    }

    /// The instance as its metadata service describes it.
    pub fn metadata(&self) -> imds_wire::Instance {
        imds_wire::Instance {
            instance_id: self.instance_id.clone(),
            account_id: self.account().to_owned(),
            availability_zone: self.availability_zone.clone(),
            region: self.region().to_owned(),
            instance_type: self.instance_type.clone(),
            image_id: self.ami_id.clone(),
            private_ip: self.local_ipv4.clone(),
            hostname: self.hostname(),
            architecture: "x86_64".to_owned(),
            pending_time: OffsetDateTime::from_unix_timestamp(LAUNCH_TIME)
                .map(rfc3339_seconds)
                .unwrap_or_default(),
            role_name: self.role_name().to_owned(),
        }
    }
}

/// `[[ecs_task]]`: a container credential endpoint served on the ECS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsTask {
    /// Path on the ECS listener, e.g. `/v2/credentials/other-app`.
    pub path: String,
    /// The task role (an `[[aws_role]]`).
    pub role_arn: String,
    /// What `Authorization` must carry (`AWS_CONTAINER_AUTHORIZATION_TOKEN`).
    pub authorization_token: SecretString,
}

impl EcsTask {
    /// The stable task id used as the session name, `ecs-task-<32 hex>`.
    pub fn task_id(&self) -> String {
        let digest = Sha256::digest(self.path.as_bytes());
        format!("ecs-task-{}", hex::encode(&digest[..16]))
    }
}

/// Checks the `[ec2_instance]` and `[[ecs_task]]` sections; the message names object and field.
pub(crate) fn validate_world(world: &World) -> Result<(), String> {
    if let Some(inst) = &world.ec2_instance {
        let id = inst.instance_id.strip_prefix("i-").unwrap_or_default();
        if !(id.len() == 8 || id.len() == 17)
            || !id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "ec2_instance: field `instance_id`: {:?} is not an instance id (i- and 8 or 17 hex digits)",
                inst.instance_id
            ));
        }
        if world.role(&inst.role_arn).is_none() {
            return Err(format!(
                "ec2_instance: field `role_arn`: unknown aws_role {:?}",
                inst.role_arn
            ));
        }
        let region = inst.region();
        if region.len() == inst.availability_zone.len()
            || !region.ends_with(|c: char| c.is_ascii_digit())
            || region.split('-').count() < 3
        {
            return Err(format!(
                "ec2_instance: field `availability_zone`: {:?} is not a zone like us-east-1a",
                inst.availability_zone
            ));
        }
        if inst.local_ipv4.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(format!(
                "ec2_instance: field `local_ipv4`: {:?} is not an IPv4 address",
                inst.local_ipv4
            ));
        }
    }
    for (i, task) in world.ecs_tasks.iter().enumerate() {
        if !task.path.starts_with('/') || task.path.contains(char::is_whitespace) {
            return Err(format!(
                "ecs_task[{i}]: field `path`: {:?} must start with / and contain no spaces",
                task.path
            ));
        }
        if world.ecs_tasks[..i].iter().any(|t| t.path == task.path) {
            return Err(format!(
                "ecs_task[{i}]: field `path`: {:?} is declared twice",
                task.path
            ));
        }
        if world.role(&task.role_arn).is_none() {
            return Err(format!(
                "ecs_task[{i}] ({}): field `role_arn`: unknown aws_role {:?}",
                task.path, task.role_arn
            ));
        }
        let token = task.authorization_token.expose_secret();
        // botocore and aws-config refuse tokens that are not legal header values.
        if token.is_empty() || !token.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return Err(format!(
                "ecs_task[{i}] ({}): field `authorization_token` must be non-empty printable ASCII",
                task.path
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// IMDS tokens and the current role sessions of the instance and the tasks.
#[derive(Default)]
pub struct InstanceState {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// SHA-256 of each issued IMDS token → its expiry (the tokens themselves are not kept).
    tokens: HashMap<[u8; 32], OffsetDateTime>,
    /// Holder (`imds`, `ecs:<path>`) → the session currently handed out.
    sessions: HashMap<String, Issued>,
}

struct Issued {
    access_key_id: String,
    issued_at: OffsetDateTime,
}

impl std::fmt::Debug for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("InstanceState")
            .field("imds_tokens", &inner.tokens.len())
            .field("sessions", &inner.sessions.len())
            .finish()
    }
}

impl InstanceState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn issue_token(&self, now: OffsetDateTime, ttl: u32) -> String {
        let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 42]>());
        let mut inner = self.lock();
        if inner.tokens.len() >= TOKEN_PRUNE_AT {
            inner.tokens.retain(|_, exp| *exp > now);
        }
        inner.tokens.insert(
            Sha256::digest(token.as_bytes()).into(),
            now + Duration::seconds(i64::from(ttl)),
        );
        token
    }

    fn token_is_live(&self, token: &[u8], now: OffsetDateTime) -> bool {
        let key: [u8; 32] = Sha256::digest(token).into();
        self.lock().tokens.get(&key).is_some_and(|exp| *exp > now)
    }
}

/// The session `holder` currently hands out for `role_arn`, or a fresh one (one hour) when there
/// is none or it has less than [`ROTATE_BEFORE_SECONDS`] left. Returns it with its issue time.
fn current_session(
    state: &Emulator,
    holder: &str,
    role_arn: &str,
    session_name: &str,
) -> (AwsSession, OffsetDateTime) {
    let now = state.clock.now();
    let mut inner = state.aws_instance.lock();
    if let Some(issued) = inner.sessions.get(holder)
        && let Some(session) = state.session(&issued.access_key_id)
        && session.role_arn == role_arn
        && session.expires_at - now > Duration::seconds(ROTATE_BEFORE_SECONDS)
    {
        return (session, issued.issued_at);
    }
    let session = crate::aws_sts::issue_session(
        state,
        role_arn,
        session_name,
        now + Duration::seconds(SESSION_SECONDS),
    );
    inner.sessions.insert(
        holder.to_owned(),
        Issued {
            access_key_id: session.access_key_id.clone(),
            issued_at: now,
        },
    );
    tracing::info!(
        holder,
        role = %role_arn,
        session = %session_name,
        access_key_id = %session.access_key_id,
        "issued role session"
    );
    (session, now)
}

// ---------------------------------------------------------------------------------------------
// IMDS
// ---------------------------------------------------------------------------------------------

/// The IMDSv2 router of the world's `[ec2_instance]` (every data path is 404 without one).
pub fn imds_router(state: Arc<Emulator>) -> Router {
    Router::new().fallback(imds).with_state(state)
}

fn imds_response(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::SERVER, HeaderValue::from_static(SERVER));
    response
}

/// EC2's error pages are small XHTML documents.
fn imds_error(status: StatusCode) -> Response {
    let line = format!(
        "{} - {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    imds_response(
        status,
        "text/html",
        format!(
            "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n <head>\n  <title>{line}</title>\n </head>\n <body>\n  <h1>{line}</h1>\n </body>\n</html>\n"
        ),
    )
}

async fn imds(
    State(state): State<Arc<Emulator>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let ttl = match imds_wire::admit(&method, uri.path(), &headers) {
        Ok(Admitted::TokenPut(ttl)) => Some(ttl),
        Ok(Admitted::Read) => None,
        Err(refused) => {
            if refused == Refused::Proxied {
                tracing::info!("IMDS token PUT with X-Forwarded-For refused");
            }
            return imds_error(refused.status());
        }
    };
    if let Some(ttl) = ttl {
        return put_token(&state, ttl);
    }
    // No IMDSv1: every read needs a live token.
    let now = state.clock.now();
    let live = headers
        .get(TOKEN_HEADER)
        .is_some_and(|t| state.aws_instance.token_is_live(t.as_bytes(), now));
    if !live {
        return imds_error(StatusCode::UNAUTHORIZED);
    }
    let Some(inst) = &state.world.ec2_instance else {
        return imds_error(StatusCode::NOT_FOUND);
    };
    let tree = inst
        .metadata()
        .tree(instance_profile_info(&state, inst), RoleLeaf);
    match tree.lookup(uri.path()) {
        Some(Found::Text(body)) => imds_response(StatusCode::OK, TEXT, body),
        Some(Found::Own(RoleLeaf)) => {
            imds_response(StatusCode::OK, TEXT, role_credentials(&state, inst))
        }
        None => imds_error(StatusCode::NOT_FOUND),
    }
}

/// The leaf of the instance role's credentials.
#[derive(Debug)]
struct RoleLeaf;

fn put_token(state: &Emulator, ttl: u32) -> Response {
    let token = state.aws_instance.issue_token(state.clock.now(), ttl);
    state.bump("imds.token");
    let mut response = imds_response(StatusCode::OK, TEXT, token);
    response
        .headers_mut()
        .insert(TTL_HEADER, HeaderValue::from(ttl));
    response
}

fn role_credentials(state: &Emulator, inst: &Ec2Instance) -> String {
    let (session, issued_at) = current_session(state, "imds", &inst.role_arn, &inst.instance_id);
    state.bump("imds.credentials");
    imds_wire::pretty(&RoleCredentials {
        code: "Success",
        last_updated: rfc3339_seconds(issued_at),
        kind: "AWS-HMAC",
        access_key_id: &session.access_key_id,
        secret_access_key: session.secret_access_key.expose_secret(),
        token: Some(session.session_token.expose_secret()),
        expiration: rfc3339_seconds(session.expires_at),
    })
}

fn instance_profile_info(state: &Emulator, inst: &Ec2Instance) -> String {
    let profile_arn = format!(
        "arn:aws:iam::{}:instance-profile/{}",
        inst.account(),
        inst.role_name()
    );
    let profile_id = crate::aws_sts::role_id(&profile_arn).replacen("AROA", "AIPA", 1);
    imds_wire::pretty(&IamInfo {
        code: "Success".to_owned(),
        last_updated: rfc3339_seconds(state.clock.now()),
        instance_profile_arn: profile_arn,
        instance_profile_id: profile_id,
    })
}

// ---------------------------------------------------------------------------------------------
// ECS
// ---------------------------------------------------------------------------------------------

/// The ECS container-credentials router of the world's `[[ecs_task]]`s.
pub fn ecs_router(state: Arc<Emulator>) -> Router {
    Router::new().fallback(ecs).with_state(state)
}

/// The credentials document of a container endpoint.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EcsCredentials<'a> {
    role_arn: &'a str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
    account_id: &'a str,
}

fn ecs_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

async fn ecs(
    State(state): State<Arc<Emulator>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let Some(task) = state
        .world
        .ecs_tasks
        .iter()
        .find(|t| t.path == uri.path() || t.path == path_and_query)
    else {
        return ecs_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "No credentials endpoint at this path",
        );
    };
    if method != Method::GET && method != Method::HEAD {
        return ecs_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Only GET is supported",
        );
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .map(|v| Sha256::digest(v.as_bytes()));
    let expected = Sha256::digest(task.authorization_token.expose_secret().as_bytes());
    if given != Some(expected) {
        tracing::info!(path = %task.path, "ECS credentials: missing or wrong authorization token");
        return ecs_error(
            StatusCode::UNAUTHORIZED,
            "AccessDenied",
            "The Authorization header is missing or does not carry the task's token",
        );
    }
    let holder = format!("ecs:{}", task.path);
    let (session, _) = current_session(&state, &holder, &task.role_arn, &task.task_id());
    state.bump("ecs.credentials");
    let doc = EcsCredentials {
        role_arn: &session.role_arn,
        access_key_id: &session.access_key_id,
        secret_access_key: session.secret_access_key.expose_secret(),
        token: session.session_token.expose_secret(),
        expiration: rfc3339_seconds(session.expires_at),
        account_id: session.account(),
    };
    let mut response = (
        StatusCode::OK,
        serde_json::to_string(&doc).unwrap_or_default(),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use http::Request;
    use idbridge_core::clock::ManualClock;
    use serde_json::Value;

    use super::*;
    use crate::sigv4::testing::Client;
    use crate::test_util::{Reply, send};

    /// 2025-06-15T15:06:40Z.
    const NOW: i64 = 1_750_000_000;
    const INSTANCE_ID: &str = "i-0a1b2c3d4e5f60718";
    const ROLE: &str = "gcp-caller";
    const CREDS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
    const ECS_PATH: &str = "/v2/credentials/other-app";
    const ECS_TOKEN: &str = "emulator-ecs-token";

    fn env_at(now: i64) -> (Arc<Emulator>, ManualClock) {
        let clock = ManualClock::at(now);
        let state = Emulator::new(World::builtin().unwrap(), Arc::new(clock.clone())).unwrap();
        (state, clock)
    }

    /// `body` is a JSON object with exactly `keys`, in that order.
    #[track_caller]
    fn assert_key_order(body: &str, keys: &[&str]) {
        let doc: Value = serde_json::from_str(body).unwrap();
        assert_eq!(doc.as_object().unwrap().len(), keys.len(), "{body}");
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| body.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(positions.is_sorted(), "{body}");
    }

    async fn put_token(state: &Arc<Emulator>, ttl: Option<&str>, xff: bool) -> Reply {
        let mut req = Request::put(TOKEN_PATH);
        if let Some(ttl) = ttl {
            req = req.header(TTL_HEADER, ttl);
        }
        if xff {
            req = req.header("x-forwarded-for", "203.0.113.7");
        }
        send(
            &imds_router(state.clone()),
            req.body(Body::empty()).unwrap(),
        )
        .await
    }

    async fn token(state: &Arc<Emulator>) -> String {
        let r = put_token(state, Some("21600"), false).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    async fn get(state: &Arc<Emulator>, path: &str, token: Option<&str>) -> Reply {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header("X-aws-ec2-metadata-token", t);
        }
        send(
            &imds_router(state.clone()),
            req.body(Body::empty()).unwrap(),
        )
        .await
    }

    #[tokio::test]
    async fn token_put_echoes_the_ttl() {
        let (state, _) = env_at(NOW);
        let r = put_token(&state, Some("21600"), false).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers[TTL_HEADER], "21600");
        assert_eq!(r.headers[header::SERVER], "EC2ws");
        assert_eq!(r.headers[header::CONTENT_TYPE], "text/plain");
        assert!(
            r.body.len() >= 40 && !r.body.contains(char::is_whitespace),
            "{}",
            r.body
        );
        // google-auth asks for 300 s.
        let r = put_token(&state, Some("300"), false).await;
        assert_eq!(
            (r.status, r.headers[TTL_HEADER].to_str().unwrap()),
            (StatusCode::OK, "300")
        );
        assert_eq!(state.count("imds.token"), 2);
    }

    #[tokio::test]
    async fn token_put_rejections() {
        let (state, _) = env_at(NOW);
        for ttl in [
            None,
            Some(""),
            Some("0"),
            Some("21601"),
            Some("abc"),
            Some("+5"),
            Some(" 5"),
            Some("-1"),
        ] {
            let r = put_token(&state, ttl, false).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{ttl:?}");
            assert!(!r.headers.contains_key(TTL_HEADER));
        }
        let r = put_token(&state, Some("21600"), true).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = get(&state, TOKEN_PATH, None).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(state.count("imds.token"), 0);
    }

    #[tokio::test]
    async fn gets_need_a_live_token() {
        let (state, clock) = env_at(NOW);
        let path = "/latest/meta-data/instance-id";
        let r = get(&state, path, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers[header::SERVER], "EC2ws");
        assert_eq!(
            get(&state, path, Some("not-a-token")).await.status,
            StatusCode::UNAUTHORIZED
        );
        let r = put_token(&state, Some("60"), false).await;
        let t = r.body;
        let r = get(&state, path, Some(&t)).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, INSTANCE_ID));
        clock.advance(59);
        assert_eq!(get(&state, path, Some(&t)).await.status, StatusCode::OK);
        clock.advance(1);
        assert_eq!(
            get(&state, path, Some(&t)).await.status,
            StatusCode::UNAUTHORIZED
        );
        // A POST is not a metadata method.
        let req = Request::post(path)
            .header(TOKEN_HEADER, token(&state).await)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            send(&imds_router(state.clone()), req).await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn metadata_values_have_no_trailing_newline() {
        let (state, _) = env_at(NOW);
        let t = token(&state).await;
        for (path, want) in [
            (
                "/latest/meta-data/placement/availability-zone",
                "us-east-1a",
            ),
            ("/latest/meta-data/placement/region", "us-east-1"),
            ("/latest/meta-data/instance-id", INSTANCE_ID),
            ("/latest/meta-data/instance-type", "t3.micro"),
            ("/latest/meta-data/local-ipv4", "172.31.32.10"),
            ("/latest/meta-data/hostname", "ip-172-31-32-10.ec2.internal"),
            ("/latest/meta-data/services/partition", "aws"),
            ("/latest/meta-data/iam/security-credentials/", ROLE),
            ("/latest/meta-data/iam/security-credentials", ROLE),
            ("/latest/meta-data/placement/", "availability-zone\nregion"),
        ] {
            let r = get(&state, path, Some(&t)).await;
            assert_eq!(
                (r.status, r.body.as_str()),
                (StatusCode::OK, want),
                "{path}"
            );
            assert_eq!(r.headers[header::CONTENT_TYPE], "text/plain", "{path}");
        }
        let listing = get(&state, "/latest/meta-data/", Some(&t)).await.body;
        assert!(
            listing.lines().any(|l| l == "iam/") && !listing.ends_with('\n'),
            "{listing}"
        );
        let doc = get(
            &state,
            "/latest/dynamic/instance-identity/document",
            Some(&t),
        )
        .await
        .json();
        assert_eq!(doc["accountId"], "111122223333");
        assert_eq!(doc["region"], "us-east-1");
        assert_eq!(doc["instanceId"], INSTANCE_ID);
        assert_eq!(doc["availabilityZone"], "us-east-1a");
        let info = get(&state, "/latest/meta-data/iam/info", Some(&t))
            .await
            .json();
        assert_eq!(
            info["InstanceProfileArn"],
            "arn:aws:iam::111122223333:instance-profile/gcp-caller"
        );
        for path in [
            "/latest/meta-data/iam/security-credentials-extended/",
            "/latest/meta-data/iam/security-credentials-extended/gcp-caller",
            "/latest/meta-data/iam/security-credentials/other-role",
            "/latest/meta-data/iam/security-credentials/gcp-caller/",
            "/latest/meta-data/instance-id/",
            "/latest/meta-data/nope",
            "/2009-04-04/meta-data/instance-id",
        ] {
            let r = get(&state, path, Some(&t)).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
            assert!(r.body.contains("404 - Not Found"), "{}", r.body);
        }
        assert_eq!(state.count("imds.credentials"), 0);
    }

    #[tokio::test]
    async fn credentials_are_sessions_the_emulated_sts_accepts() {
        let (state, _) = env_at(NOW);
        let t = token(&state).await;
        let r = get(&state, &format!("{CREDS_PATH}{ROLE}"), Some(&t)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.headers[header::CONTENT_TYPE], "text/plain");
        let doc = r.json();
        assert_key_order(
            &r.body,
            &[
                "Code",
                "LastUpdated",
                "Type",
                "AccessKeyId",
                "SecretAccessKey",
                "Token",
                "Expiration",
            ],
        );
        assert_eq!(doc["Code"], "Success");
        assert_eq!(doc["Type"], "AWS-HMAC");
        assert_eq!(doc["LastUpdated"], "2025-06-15T15:06:40Z");
        assert_eq!(doc["Expiration"], "2025-06-15T16:06:40Z");
        let akid = doc["AccessKeyId"].as_str().unwrap();
        assert!(akid.starts_with("ASIA") && akid.len() == 20, "{akid}");
        let session = state.session(akid).unwrap();
        assert_eq!(session.session_name, INSTANCE_ID);
        assert_eq!(
            session.role_arn,
            "arn:aws:iam::111122223333:role/gcp-caller"
        );
        assert_eq!(state.count("imds.credentials"), 1);

        // GetCallerIdentity, signed as botocore signs it.
        let client = Client {
            access_key_id: akid,
            secret: doc["SecretAccessKey"].as_str().unwrap(),
            session_token: Some(doc["Token"].as_str().unwrap()),
            region: "us-east-1",
            service: "sts",
            time: OffsetDateTime::from_unix_timestamp(NOW + 5).unwrap(),
        };
        let mut req = Request::post("/")
            .header("host", "sts.amazonaws.com")
            .header(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(b"Action=GetCallerIdentity&Version=2011-06-15".to_vec())
            .unwrap();
        client.sign(&mut req, None, false);
        let r = send(&crate::aws_sts::router(state.clone()), req.map(Body::from)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(
            r.body.contains(
                "<Arn>arn:aws:sts::111122223333:assumed-role/gcp-caller/i-0a1b2c3d4e5f60718</Arn>"
            ),
            "{}",
            r.body
        );
        let role_id = crate::aws_sts::role_id("arn:aws:iam::111122223333:role/gcp-caller");
        assert!(
            r.body
                .contains(&format!("<UserId>{role_id}:{INSTANCE_ID}</UserId>")),
            "{}",
            r.body
        );
    }

    #[tokio::test]
    async fn credentials_rotate_five_minutes_before_expiry() {
        let (state, clock) = env_at(NOW);
        let t = token(&state).await;
        let path = format!("{CREDS_PATH}{ROLE}");
        let first = get(&state, &path, Some(&t)).await.json();
        clock.advance(3000);
        let same = get(&state, &path, Some(&t)).await.json();
        assert_eq!(first["AccessKeyId"], same["AccessKeyId"]);
        assert_eq!(same["LastUpdated"], "2025-06-15T15:06:40Z");
        clock.advance(301); // 299 s left: rotated.
        let next = get(&state, &path, Some(&t)).await.json();
        assert_ne!(first["AccessKeyId"], next["AccessKeyId"]);
        assert_eq!(next["LastUpdated"], "2025-06-15T16:01:41Z");
        assert_eq!(next["Expiration"], "2025-06-15T17:01:41Z");
        assert_eq!(state.count("imds.credentials"), 3);
    }

    #[tokio::test]
    async fn without_an_instance_every_data_path_is_404() {
        let world = World::from_str_at("", "w.toml", None).unwrap();
        let state = Emulator::new(world, Arc::new(ManualClock::at(NOW))).unwrap();
        let t = token(&state).await;
        assert_eq!(
            get(&state, "/latest/meta-data/instance-id", Some(&t))
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&state, CREDS_PATH, Some(&t)).await.status,
            StatusCode::NOT_FOUND
        );
    }

    /// aws-config's own IMDS client and credentials provider (the broker's `imds` provider).
    #[tokio::test]
    async fn aws_config_imds_provider_against_the_listener() {
        use aws_credential_types::provider::ProvideCredentials;
        let now = idbridge_core::clock::system().now().unix_timestamp();
        let (state, _) = env_at(now);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, imds_router(state.clone())).await;
        });
        let client = aws_config::imds::Client::builder()
            .endpoint(format!("http://{addr}/"))
            .unwrap()
            .build();
        let az = client
            .get("/latest/meta-data/placement/availability-zone")
            .await
            .unwrap();
        assert_eq!(az.as_ref(), "us-east-1a");
        let provider = aws_config::imds::credentials::ImdsCredentialsProvider::builder()
            .imds_client(client)
            .build();
        let creds = provider.provide_credentials().await.unwrap();
        assert!(creds.access_key_id().starts_with("ASIA"));
        assert!(creds.session_token().is_some());
        server.abort();
    }

    // ----- ECS ---------------------------------------------------------------------------------

    async fn ecs_get(state: &Arc<Emulator>, path: &str, auth: Option<&str>) -> Reply {
        let mut req = Request::get(path).header("accept", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        send(&ecs_router(state.clone()), req.body(Body::empty()).unwrap()).await
    }

    #[tokio::test]
    async fn ecs_credentials_with_the_task_token() {
        let (state, clock) = env_at(NOW);
        let r = ecs_get(&state, ECS_PATH, Some(ECS_TOKEN)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
        let doc = r.json();
        assert_key_order(
            &r.body,
            &[
                "RoleArn",
                "AccessKeyId",
                "SecretAccessKey",
                "Token",
                "Expiration",
                "AccountId",
            ],
        );
        assert_eq!(doc["RoleArn"], "arn:aws:iam::111122223333:role/other-app");
        assert_eq!(doc["AccountId"], "111122223333");
        assert_eq!(doc["Expiration"], "2025-06-15T16:06:40Z");
        let session = state.session(doc["AccessKeyId"].as_str().unwrap()).unwrap();
        assert!(
            session.session_name.starts_with("ecs-task-"),
            "{}",
            session.session_name
        );
        assert!(
            session
                .assumed_role_arn()
                .starts_with("arn:aws:sts::111122223333:assumed-role/other-app/ecs-task-")
        );
        // A query string (sent by newer SDKs as part of the URI) does not matter.
        let again = ecs_get(&state, &format!("{ECS_PATH}?x=1"), Some(ECS_TOKEN))
            .await
            .json();
        assert_eq!(again["AccessKeyId"], doc["AccessKeyId"]);
        clock.advance(3400);
        let rotated = ecs_get(&state, ECS_PATH, Some(ECS_TOKEN)).await.json();
        assert_ne!(rotated["AccessKeyId"], doc["AccessKeyId"]);
        assert_eq!(
            state
                .session(rotated["AccessKeyId"].as_str().unwrap())
                .unwrap()
                .session_name,
            session.session_name
        );
        assert_eq!(state.count("ecs.credentials"), 3);
    }

    #[tokio::test]
    async fn ecs_rejections() {
        let (state, _) = env_at(NOW);
        for auth in [
            None,
            Some("wrong"),
            Some("emulator-ecs-token "),
            Some("Bearer emulator-ecs-token"),
        ] {
            let r = ecs_get(&state, ECS_PATH, auth).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
            let doc = r.json();
            assert!(
                doc["code"].is_string() && doc["message"].is_string(),
                "{doc}"
            );
            assert!(!r.body.contains(ECS_TOKEN));
        }
        let r = ecs_get(&state, "/v2/credentials/nope", Some(ECS_TOKEN)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.json()["code"].is_string());
        assert_eq!(state.count("ecs.credentials"), 0);
    }

    #[test]
    fn world_validation_names_the_field() {
        let role = "[[aws_role]]\narn = \"arn:aws:iam::1:role/r\"\ntrust_policy = '{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"Service\":\"ec2.amazonaws.com\"},\"Action\":\"sts:AssumeRole\"}]}'\n";
        let cases = [
            (
                "[ec2_instance]\ninstance_id = \"i-0a1b2c3d4e5f60718\"\nrole_arn = \"arn:aws:iam::1:role/other\"\navailability_zone = \"us-east-1a\"\n",
                "role_arn",
            ),
            (
                "[ec2_instance]\ninstance_id = \"x-1\"\nrole_arn = \"arn:aws:iam::1:role/r\"\navailability_zone = \"us-east-1a\"\n",
                "instance_id",
            ),
            (
                "[ec2_instance]\ninstance_id = \"i-0a1b2c3d\"\nrole_arn = \"arn:aws:iam::1:role/r\"\navailability_zone = \"us-east-1\"\n",
                "availability_zone",
            ),
            (
                "[[ecs_task]]\npath = \"creds\"\nrole_arn = \"arn:aws:iam::1:role/r\"\nauthorization_token = \"t\"\n",
                "path",
            ),
            (
                "[[ecs_task]]\npath = \"/c\"\nrole_arn = \"arn:aws:iam::1:role/r\"\nauthorization_token = \"t\\n\"\n",
                "authorization_token",
            ),
        ];
        for (section, field) in cases {
            let err = World::from_str_at(&format!("{role}{section}"), "w.toml", None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{err}");
            assert!(!err.contains("\\n\""), "{err}");
        }
        let ok = format!(
            "{role}[ec2_instance]\ninstance_id = \"i-0a1b2c3d\"\nrole_arn = \"arn:aws:iam::1:role/r\"\navailability_zone = \"eu-west-3c\"\n"
        );
        let w = World::from_str_at(&ok, "w.toml", None).unwrap();
        let inst = w.ec2_instance.unwrap();
        assert_eq!(inst.region(), "eu-west-3");
        assert_eq!(
            inst.hostname(),
            "ip-172-31-32-10.eu-west-3.compute.internal"
        );
    }
}
