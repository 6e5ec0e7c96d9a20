//! The emulated SPIFFE Workload API (a SPIRE agent's JWT and X.509 profiles) on a unix socket, and the OIDC
//! discovery document of its JWT issuer.
//!
//! The world's `[spiffe]` section names the trust domain, the JWT issuer (an `[[oidc_issuer]]`
//! with `generate_key = true`, whose emulator-held key signs the JWT-SVIDs, so the emulated AWS
//! and Google STS trust them like any OIDC token) and the workloads with their selectors.
//!
//! gRPC service `SpiffeWorkloadAPI` (no proto package), served with tonic's server primitives
//! over a unix socket ([`serve_unix`]):
//!
//! | method | kind | behaviour |
//! |---|---|---|
//! | `FetchJWTSVID` | unary | `audience` required (else `InvalidArgument`); `spiffe_id` empty → every identity the caller may have, named but not the caller's → `PermissionDenied`; RS256 JWT-SVIDs with header `kid` and `typ: JWT`, claims `iss`, `sub`, `aud`, `iat`, `exp = iat + svid_ttl_seconds` |
//! | `FetchJWTBundles` | server streaming | one message `{"spiffe://<trust domain>": JWKS}` (keys with `"use": "jwt-svid"` and `kid`), then the stream stays open until the client leaves or the emulator shuts down |
//! | `ValidateJWTSVID` | unary | both fields required; signature against the issuer key, `exp` against the emulator clock (no leeway), `aud` must contain the audience, `sub` must be in the trust domain → `spiffe_id` + `claims` (`google.protobuf.Struct`); anything wrong → `InvalidArgument` |
//! | `FetchX509SVID` | server streaming | the caller's X.509-SVIDs (ECDSA P-256, signed by the trust domain's CA, [`x509`]), again every half lifetime (`x509_svid_ttl_seconds`); none → `PermissionDenied` |
//! | `FetchX509Bundles` | server streaming | one message `{"spiffe://<trust domain>": CA DER}`, then held open |
//! | any other | — | `Unimplemented` |
//!
//! Every request must carry the metadata `workload.spiffe.io: true` exactly, else
//! `InvalidArgument` ("security header missing from request"), as the SPIFFE Workload Endpoint
//! specification requires. Callers are attested by the uid of the peer process
//! (`SO_PEERCRED`, read from the accepted `UnixStream` and handed to the handlers as tonic's
//! [`UdsConnectInfo`] request extension) against each workload's optional `uid` selector.
//! Calls are counted as `spiffe.<Method>`.
//!
//! Clients that send the socket path as HTTP/2 `:authority` (grpcio, hence py-spiffe; grpc-java)
//! are refused by hyper's HTTP/2 layer; each connection therefore goes through a small shim that
//! rewrites such an authority to `localhost` before the server sees it (see `h2_authority`).
//!
//! [`oidc_router`] serves `GET /.well-known/openid-configuration` and `GET /keys` for the JWT
//! issuer, as SPIRE's OIDC discovery provider does.

mod h2_authority;
pub mod proto;
pub mod x509;

use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::server::{Grpc, NamedService};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};
use tonic_prost::ProstCodec;

use self::proto::{
    JwtBundlesRequest, JwtBundlesResponse, JwtSvid, JwtSvidRequest, JwtSvidResponse,
    ValidateJwtSvidRequest, ValidateJwtSvidResponse,
};
use crate::Emulator;
use crate::token_verify::{self, VerifyOptions};
use crate::world::World;

/// The metadata key every Workload API request must carry with the value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
/// File name of the socket in the emulator's default socket directory.
pub const SOCKET_FILE_NAME: &str = "spire-agent.sock";
/// How long a shut-down server waits for open streams before it drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// World section
// ---------------------------------------------------------------------------------------------

/// `[spiffe]`: the emulated SPIRE agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpiffeConfig {
    /// Trust domain name, e.g. `example.org`.
    pub trust_domain: String,
    /// Issuer URL of the JWT-SVIDs: an `[[oidc_issuer]]` with `generate_key = true`.
    pub jwt_issuer: String,
    /// Lifetime of issued JWT-SVIDs.
    #[serde(default = "default_svid_ttl")]
    pub svid_ttl_seconds: i64,
    /// Lifetime of issued X.509-SVIDs (rotated at half of it).
    #[serde(default = "default_x509_svid_ttl")]
    pub x509_svid_ttl_seconds: i64,
    /// `[[spiffe.workload]]`: identities and who may have them.
    #[serde(default, rename = "workload")]
    pub workloads: Vec<SpiffeWorkload>,
}

fn default_svid_ttl() -> i64 {
    300
}

fn default_x509_svid_ttl() -> i64 {
    3600
}

/// `[[spiffe.workload]]`: one registration entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpiffeWorkload {
    /// `spiffe://<trust domain>/<path>`.
    pub spiffe_id: String,
    /// Selector: the caller's uid (`SO_PEERCRED`); absent = any caller.
    #[serde(default)]
    pub uid: Option<u32>,
}

impl SpiffeConfig {
    /// `spiffe://<trust domain>`, the key of its bundle.
    pub fn trust_domain_id(&self) -> String {
        format!("spiffe://{}", self.trust_domain)
    }

    /// The workloads a caller with `uid` (unknown = `None`) is entitled to, in world order.
    pub fn workloads_for(&self, uid: Option<u32>) -> impl Iterator<Item = &SpiffeWorkload> {
        self.workloads
            .iter()
            .filter(move |w| w.uid.is_none_or(|want| Some(want) == uid))
    }
}

/// Checks the `[spiffe]` section; the message names the field.
pub(crate) fn validate_world(world: &World) -> Result<(), String> {
    let Some(cfg) = &world.spiffe else {
        return Ok(());
    };
    let td = &cfg.trust_domain;
    if td.is_empty()
        || !td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
    {
        return Err(format!(
            "spiffe: field `trust_domain`: {td:?} is not a trust domain name (lower-case letters, digits, '.', '-', '_')"
        ));
    }
    if !world
        .oidc_issuers
        .iter()
        .any(|i| i.issuer == cfg.jwt_issuer && i.generate_key)
    {
        return Err(format!(
            "spiffe: field `jwt_issuer`: {:?} must be an oidc_issuer with generate_key = true",
            cfg.jwt_issuer
        ));
    }
    if !(1..=86_400).contains(&cfg.svid_ttl_seconds) {
        return Err("spiffe: field `svid_ttl_seconds` must be 1..=86400".to_owned());
    }
    if !(2..=86_400).contains(&cfg.x509_svid_ttl_seconds) {
        return Err("spiffe: field `x509_svid_ttl_seconds` must be 2..=86400".to_owned());
    }
    let prefix = format!("{}/", cfg.trust_domain_id());
    for (i, w) in cfg.workloads.iter().enumerate() {
        let path = w.spiffe_id.strip_prefix(&prefix).unwrap_or_default();
        if path.is_empty() || path.split('/').any(str::is_empty) {
            return Err(format!(
                "spiffe.workload[{i}]: field `spiffe_id`: {:?} is not a SPIFFE ID of {}",
                w.spiffe_id,
                cfg.trust_domain_id()
            ));
        }
        if cfg.workloads[..i]
            .iter()
            .any(|o| o.spiffe_id == w.spiffe_id)
        {
            return Err(format!(
                "spiffe.workload[{i}]: field `spiffe_id`: {:?} is declared twice",
                w.spiffe_id
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The gRPC service
// ---------------------------------------------------------------------------------------------

/// The `SpiffeWorkloadAPI` gRPC service, routing on `/SpiffeWorkloadAPI/<Method>` as generated
/// tonic code would. Add it to a `tonic::transport::Server` or use [`serve_unix`].
#[derive(Debug, Clone)]
pub struct WorkloadApi {
    state: Arc<Emulator>,
    shutdown: watch::Receiver<bool>,
}

impl NamedService for WorkloadApi {
    const NAME: &'static str = proto::SERVICE;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type BundleStream = ReceiverStream<Result<JwtBundlesResponse, Status>>;

impl tower::Service<http::Request<tonic::body::Body>> for WorkloadApi {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let api = self.clone();
        let method = req
            .uri()
            .path()
            .strip_prefix("/SpiffeWorkloadAPI/")
            .unwrap_or_default()
            .to_owned();
        Box::pin(async move {
            let response = match method.as_str() {
                "FetchJWTSVID" => {
                    let svc = tower::service_fn(move |r| {
                        std::future::ready(api.fetch_jwt_svid(r).map(tonic::Response::new))
                    });
                    Grpc::new(ProstCodec::default()).unary(svc, req).await
                }
                "FetchJWTBundles" => {
                    let svc = tower::service_fn(move |r| {
                        std::future::ready(api.fetch_jwt_bundles(r).map(tonic::Response::new))
                    });
                    Grpc::new(ProstCodec::default())
                        .server_streaming(svc, req)
                        .await
                }
                "FetchX509SVID" => {
                    let svc = tower::service_fn(move |r| {
                        std::future::ready(api.fetch_x509_svid(r).map(tonic::Response::new))
                    });
                    Grpc::new(ProstCodec::default())
                        .server_streaming(svc, req)
                        .await
                }
                "FetchX509Bundles" => {
                    let svc = tower::service_fn(move |r| {
                        std::future::ready(api.fetch_x509_bundles(r).map(tonic::Response::new))
                    });
                    Grpc::new(ProstCodec::default())
                        .server_streaming(svc, req)
                        .await
                }
                "ValidateJWTSVID" => {
                    let svc = tower::service_fn(move |r| {
                        std::future::ready(api.validate_jwt_svid(r).map(tonic::Response::new))
                    });
                    Grpc::new(ProstCodec::default()).unary(svc, req).await
                }
                other => {
                    if !other.is_empty() {
                        api.state.bump(&format!("spiffe.{other}"));
                    }
                    Status::unimplemented(format!(
                        "the emulated Workload API does not implement {other:?}"
                    ))
                    .into_http()
                }
            };
            Ok(response)
        })
    }
}

impl WorkloadApi {
    /// The service for `state`; open bundle streams end when `shutdown` turns true.
    pub fn new(state: Arc<Emulator>, shutdown: watch::Receiver<bool>) -> Self {
        Self { state, shutdown }
    }

    fn config(&self) -> Result<&SpiffeConfig, Status> {
        self.state
            .world
            .spiffe
            .as_ref()
            .ok_or_else(|| Status::permission_denied("no identity issued"))
    }

    fn fetch_jwt_svid(&self, req: Request<JwtSvidRequest>) -> Result<JwtSvidResponse, Status> {
        self.state.bump("spiffe.FetchJWTSVID");
        check_security_header(&req)?;
        let uid = caller_uid(&req);
        let req = req.into_inner();
        if req.audience.is_empty() || req.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let cfg = self.config()?;
        let allowed: Vec<&SpiffeWorkload> = cfg.workloads_for(uid).collect();
        let chosen: Vec<&SpiffeWorkload> = if req.spiffe_id.is_empty() {
            allowed
        } else {
            if !req.spiffe_id.starts_with("spiffe://") {
                return Err(Status::invalid_argument(format!(
                    "spiffe_id {:?} is not a SPIFFE ID",
                    short(&req.spiffe_id)
                )));
            }
            allowed
                .into_iter()
                .filter(|w| w.spiffe_id == req.spiffe_id)
                .collect()
        };
        if chosen.is_empty() {
            tracing::info!(?uid, spiffe_id = %short(&req.spiffe_id), "FetchJWTSVID: no identity for the caller");
            return Err(Status::permission_denied("no identity issued"));
        }
        let key = self
            .state
            .issuer_keys
            .get(&cfg.jwt_issuer)
            .ok_or_else(|| Status::unavailable("the JWT issuer has no signing key"))?;
        let iat = self.state.clock.now().unix_timestamp();
        let svids = chosen
            .into_iter()
            .map(|w| {
                let claims = json!({
                    "iss": cfg.jwt_issuer,
                    "sub": w.spiffe_id,
                    "aud": req.audience,
                    "iat": iat,
                    "exp": iat + cfg.svid_ttl_seconds,
                });
                let svid = key
                    .sign(&claims)
                    .map_err(|_| Status::internal("signing the JWT-SVID failed"))?;
                tracing::info!(spiffe_id = %w.spiffe_id, ?uid, "FetchJWTSVID: issued JWT-SVID");
                Ok(JwtSvid {
                    spiffe_id: w.spiffe_id.clone(),
                    svid,
                    hint: String::new(),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(JwtSvidResponse { svids })
    }

    fn fetch_jwt_bundles(&self, req: Request<JwtBundlesRequest>) -> Result<BundleStream, Status> {
        self.state.bump("spiffe.FetchJWTBundles");
        check_security_header(&req)?;
        let cfg = self.config()?;
        let message = JwtBundlesResponse {
            bundles: [(cfg.trust_domain_id(), jwt_bundle(&self.state, cfg)?)]
                .into_iter()
                .collect(),
        };
        let (tx, rx) = mpsc::channel(1);
        let mut stop = self.shutdown.clone();
        tokio::spawn(async move {
            if tx.send(Ok(message)).await.is_err() {
                return;
            }
            // The bundle never changes: hold the stream open until the client goes away or the
            // emulator stops.
            tokio::select! {
                () = tx.closed() => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    fn validate_jwt_svid(
        &self,
        req: Request<ValidateJwtSvidRequest>,
    ) -> Result<ValidateJwtSvidResponse, Status> {
        self.state.bump("spiffe.ValidateJWTSVID");
        check_security_header(&req)?;
        let req = req.into_inner();
        if req.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if req.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let cfg = self.config()?;
        let (spiffe_id, claims) =
            validate(&self.state, cfg, &req.svid, &req.audience).map_err(|e| {
                tracing::info!(error = %e, "ValidateJWTSVID: rejected");
                Status::invalid_argument(e)
            })?;
        Ok(ValidateJwtSvidResponse {
            spiffe_id,
            claims: Some(to_struct(&claims)),
        })
    }
}

fn check_security_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req.metadata().get(SECURITY_HEADER).map(|v| v.to_str()) {
        Some(Ok("true")) => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

fn caller_uid<T>(req: &Request<T>) -> Option<u32> {
    req.extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map(|cred| cred.uid())
}

/// At most 100 characters of client input, for messages.
fn short(s: &str) -> String {
    s.chars().take(100).collect()
}

/// The trust domain's JWT bundle: the issuer's public keys with `"use": "jwt-svid"`.
fn jwt_bundle(state: &Emulator, cfg: &SpiffeConfig) -> Result<Vec<u8>, Status> {
    let key = state
        .issuer_keys
        .get(&cfg.jwt_issuer)
        .ok_or_else(|| Status::unavailable("the JWT issuer has no signing key"))?;
    let mut jwk = serde_json::to_value(&key.jwk)
        .map_err(|_| Status::internal("serializing the bundle failed"))?;
    if let Some(map) = jwk.as_object_mut() {
        map.insert("use".to_owned(), Value::from("jwt-svid"));
    }
    serde_json::to_vec(&json!({ "keys": [jwk] }))
        .map_err(|_| Status::internal("serializing the bundle failed"))
}

/// Validates a JWT-SVID for `audience`: signature (issuer key), expiry against the emulator
/// clock, audience, and a subject in the trust domain. Returns the SPIFFE ID and the claims.
fn validate(
    state: &Emulator,
    cfg: &SpiffeConfig,
    token: &str,
    audience: &str,
) -> Result<(String, Map<String, Value>), String> {
    let opts = VerifyOptions {
        algorithms: vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        leeway_secs: 0,
        max_lifetime_secs: None,
        required_claims: vec!["sub", "aud"],
    };
    let now = state.clock.now().unix_timestamp();
    let verified = token_verify::verify_jwt(state, token, now, &opts).map_err(|e| e.to_string())?;
    if verified.issuer != cfg.jwt_issuer {
        return Err("the token is not signed by the trust domain's JWT authority".to_owned());
    }
    if !verified.audiences.iter().any(|a| a == audience) {
        return Err(format!(
            "audience mismatch: the token is not for {:?}",
            short(audience)
        ));
    }
    let prefix = format!("{}/", cfg.trust_domain_id());
    if !verified.subject.starts_with(&prefix) {
        return Err("the token's subject is not a SPIFFE ID of the trust domain".to_owned());
    }
    Ok((verified.subject, verified.claims))
}

fn to_struct(map: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), to_proto_value(v)))
            .collect(),
    }
}

fn to_proto_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_proto_value).collect(),
        }),
        Value::Object(m) => Kind::StructValue(to_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Serves the Workload API on a new unix socket at `path` until `shutdown` turns true (or its
/// sender is dropped). A stale socket file at `path` is replaced; the caller removes the file
/// afterwards. Must be called inside a Tokio runtime.
pub fn serve_unix(
    state: Arc<Emulator>,
    path: &Path,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    {
        use std::os::unix::fs::FileTypeExt;
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            std::fs::remove_file(path)?;
        }
    }
    let listener = UnixListener::bind(path)?;
    let incoming =
        UnixListenerStream::new(listener).map(|accepted| accepted.map(h2_authority::wrap));
    let api = WorkloadApi::new(state, shutdown.clone());
    let mut graceful = shutdown.clone();
    let mut hard = shutdown;
    Ok(tokio::spawn(async move {
        let server = tonic::transport::Server::builder()
            .add_service(api)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = graceful.wait_for(|s| *s).await;
            });
        tokio::select! {
            result = server => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "SPIFFE Workload API server failed");
                }
            }
            () = async move {
                let _ = hard.wait_for(|s| *s).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {}
        }
    }))
}

// ---------------------------------------------------------------------------------------------
// OIDC discovery of the JWT issuer
// ---------------------------------------------------------------------------------------------

/// `GET /.well-known/openid-configuration` and `GET /keys` for the `[spiffe]` JWT issuer (404
/// without a `[spiffe]` section). `jwks_uri` points back at this listener.
pub fn oidc_router(state: Arc<Emulator>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/keys", get(keys))
        .with_state(state)
}

async fn discovery(State(state): State<Arc<Emulator>>, headers: HeaderMap) -> Response {
    let Some(cfg) = &state.world.spiffe else {
        return StatusCode::NOT_FOUND.into_response();
    };
    state.bump("spiffe_oidc.discovery");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    Json(json!({
        "issuer": cfg.jwt_issuer,
        "jwks_uri": format!("http://{host}/keys"),
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": [],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn keys(State(state): State<Arc<Emulator>>) -> Response {
    let jwks = state
        .world
        .spiffe
        .as_ref()
        .and_then(|cfg| state.issuer_jwks.get(&cfg.jwt_issuer));
    match jwks {
        Some(set) => {
            state.bump("spiffe_oidc.keys");
            Json(set.clone()).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::str::FromStr;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use idbridge_core::clock::{Clock, ManualClock};
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{DecodingKey, Validation};
    use prost_types::value::Kind;
    use tonic::Code;
    use tonic::transport::Channel;
    use tower::ServiceExt;

    use super::*;

    const BILLING: &str = "spiffe://example.org/ns/prod/sa/billing";
    const REPORTS: &str = "spiffe://example.org/ns/prod/sa/reports";

    fn now() -> i64 {
        idbridge_core::clock::system().now().unix_timestamp()
    }

    /// A Workload API server on a socket in a temp dir.
    struct Agent {
        state: Arc<Emulator>,
        clock: ManualClock,
        path: PathBuf,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    async fn agent_for(world: World) -> Agent {
        let clock = ManualClock::at(now());
        let state = Emulator::new(world, Arc::new(clock.clone())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let (stop, rx) = watch::channel(false);
        let task = serve_unix(state.clone(), &path, rx).unwrap();
        Agent {
            state,
            clock,
            path,
            stop,
            task,
            _dir: dir,
        }
    }

    async fn agent() -> Agent {
        agent_for(World::builtin().unwrap()).await
    }

    /// A plain tonic channel over the unix socket (the URI is ignored by the connector).
    async fn channel(path: &Path) -> Channel {
        let path = path.to_owned();
        tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .unwrap()
    }

    fn request<M>(message: M, header: Option<&'static str>) -> Request<M> {
        let mut req = Request::new(message);
        if let Some(v) = header {
            req.metadata_mut()
                .insert(SECURITY_HEADER, v.parse().unwrap());
        }
        req
    }

    async fn unary<Q, R>(
        ch: &Channel,
        method: &str,
        message: Q,
        header: Option<&'static str>,
    ) -> Result<R, Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(ch.clone());
        grpc.ready().await.unwrap();
        let path =
            http::uri::PathAndQuery::from_str(&format!("/SpiffeWorkloadAPI/{method}")).unwrap();
        grpc.unary(request(message, header), path, ProstCodec::default())
            .await
            .map(tonic::Response::into_inner)
    }

    async fn fetch(
        ch: &Channel,
        audience: &[&str],
        spiffe_id: &str,
    ) -> Result<JwtSvidResponse, Status> {
        let msg = JwtSvidRequest {
            audience: audience.iter().map(|a| (*a).to_owned()).collect(),
            spiffe_id: spiffe_id.to_owned(),
        };
        unary(ch, "FetchJWTSVID", msg, Some("true")).await
    }

    async fn validate_svid(
        ch: &Channel,
        audience: &str,
        svid: &str,
    ) -> Result<ValidateJwtSvidResponse, Status> {
        let msg = ValidateJwtSvidRequest {
            audience: audience.to_owned(),
            svid: svid.to_owned(),
        };
        unary(ch, "ValidateJWTSVID", msg, Some("true")).await
    }

    async fn bundle_stream(
        ch: &Channel,
        header: Option<&'static str>,
    ) -> Result<tonic::Streaming<JwtBundlesResponse>, Status> {
        let mut grpc = tonic::client::Grpc::new(ch.clone());
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchJWTBundles");
        grpc.server_streaming(
            request(JwtBundlesRequest {}, header),
            path,
            ProstCodec::default(),
        )
        .await
        .map(tonic::Response::into_inner)
    }

    #[track_caller]
    fn assert_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code) -> Status {
        let status = r.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        status
    }

    #[tokio::test]
    async fn every_method_needs_the_security_header() {
        let a = agent().await;
        let ch = channel(&a.path).await;
        let msg = JwtSvidRequest {
            audience: vec!["aud-1".into()],
            spiffe_id: String::new(),
        };
        for header in [None, Some("True"), Some("1"), Some("")] {
            let r: Result<JwtSvidResponse, _> =
                unary(&ch, "FetchJWTSVID", msg.clone(), header).await;
            let status = assert_code(r, Code::InvalidArgument);
            assert_eq!(status.message(), "security header missing from request");
        }
        let v = ValidateJwtSvidRequest {
            audience: "a".into(),
            svid: "b".into(),
        };
        let r: Result<ValidateJwtSvidResponse, _> = unary(&ch, "ValidateJWTSVID", v, None).await;
        assert_code(r, Code::InvalidArgument);
        match bundle_stream(&ch, None).await {
            Ok(mut s) => assert_code(s.message().await, Code::InvalidArgument),
            Err(status) => assert_code::<()>(Err(status), Code::InvalidArgument),
        };
        assert_eq!(a.state.count("spiffe.FetchJWTSVID"), 4);
        assert_eq!(a.state.count("spiffe.FetchJWTBundles"), 1);
    }

    #[tokio::test]
    async fn fetched_svid_verifies_against_the_streamed_bundle() {
        let a = agent().await;
        let ch = channel(&a.path).await;
        let resp = fetch(&ch, &["aud-1", "aud-2"], "").await.unwrap();
        // Only billing: reports is for uid 4294967294.
        assert_eq!(resp.svids.len(), 1);
        let svid = &resp.svids[0];
        assert_eq!(svid.spiffe_id, BILLING);
        let header = jsonwebtoken::decode_header(&svid.svid).unwrap();
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let kid = header.kid.unwrap();

        let mut stream = bundle_stream(&ch, Some("true")).await.unwrap();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(
            first.bundles.keys().collect::<Vec<_>>(),
            ["spiffe://example.org"]
        );
        let jwks: Value = serde_json::from_slice(&first.bundles["spiffe://example.org"]).unwrap();
        assert_eq!(jwks["keys"][0]["use"], "jwt-svid");
        assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
        let mut set: JwkSet = serde_json::from_value(jwks).unwrap();
        // jsonwebtoken only knows the "sig"/"enc" uses; the key material is what matters.
        set.keys[0].common.public_key_use = None;
        let key = DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["aud-2"]);
        v.set_issuer(&["https://spire.idbridge.test"]);
        v.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        let claims = jsonwebtoken::decode::<Value>(&svid.svid, &key, &v)
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], BILLING);
        assert_eq!(claims["aud"], json!(["aud-1", "aud-2"]));
        assert_eq!(claims["iat"], now_of(&a));
        assert_eq!(claims["exp"], now_of(&a) + 300);

        // The stream stays open after its one message.
        let next = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
        assert!(next.is_err(), "the bundle stream ended: {next:?}");
        // And ends at shutdown.
        let _ = a.stop.send(true);
        let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream outlived the shutdown");
        assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
        tokio::time::timeout(Duration::from_secs(10), a.task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.state.count("spiffe.FetchJWTSVID"), 1);
    }

    fn now_of(a: &Agent) -> i64 {
        a.clock.now().unix_timestamp()
    }

    #[tokio::test]
    async fn fetch_argument_and_permission_errors() {
        let a = agent().await;
        let ch = channel(&a.path).await;
        assert_code(fetch(&ch, &[], "").await, Code::InvalidArgument);
        assert_code(fetch(&ch, &[""], "").await, Code::InvalidArgument);
        assert_code(fetch(&ch, &["a"], "billing").await, Code::InvalidArgument);
        let named = fetch(&ch, &["a"], BILLING).await.unwrap();
        assert_eq!(named.svids.len(), 1);
        assert_eq!(named.svids[0].spiffe_id, BILLING);
        let denied = assert_code(fetch(&ch, &["a"], REPORTS).await, Code::PermissionDenied);
        assert_eq!(denied.message(), "no identity issued");
        assert_code(
            fetch(&ch, &["a"], "spiffe://example.org/unknown").await,
            Code::PermissionDenied,
        );
        let r: Result<JwtSvidResponse, _> =
            unary(&ch, "FetchWITSVID", JwtBundlesRequest {}, Some("true")).await;
        assert_code(r, Code::Unimplemented);
        assert_eq!(a.state.count("spiffe.FetchWITSVID"), 1);
    }

    async fn x509_stream<Q, R>(ch: &Channel, method: &str, message: Q) -> tonic::Streaming<R>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(ch.clone());
        grpc.ready().await.unwrap();
        let path =
            http::uri::PathAndQuery::from_str(&format!("/SpiffeWorkloadAPI/{method}")).unwrap();
        grpc.server_streaming(request(message, Some("true")), path, ProstCodec::default())
            .await
            .unwrap()
            .into_inner()
    }

    #[tokio::test]
    async fn x509_svids_chain_to_the_streamed_bundle() {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let a = agent().await;
        let ch = channel(&a.path).await;
        let mut svids: tonic::Streaming<proto::X509SvidResponse> =
            x509_stream(&ch, "FetchX509SVID", proto::X509SvidRequest {}).await;
        let first = svids.message().await.unwrap().unwrap();
        // The uid selector leaves out `reports` (nobody runs as its uid).
        assert_eq!(first.svids.len(), 1);
        let svid = &first.svids[0];
        assert_eq!(svid.spiffe_id, BILLING);
        let ca = a.state.spiffe_ca.as_ref().unwrap();
        assert_eq!(svid.bundle, ca.cert_der);
        let (_, leaf) = X509Certificate::from_der(&svid.x509_svid).unwrap();
        let ca_der = rustls_pki_types::CertificateDer::from(ca.cert_der.as_slice());
        let anchor = webpki::anchor_from_trusted_cert(&ca_der).unwrap();
        let leaf_der = rustls_pki_types::CertificateDer::from(svid.x509_svid.as_slice());
        let now = u64::try_from(a.clock.now().unix_timestamp()).unwrap();
        webpki::EndEntityCert::try_from(&leaf_der)
            .unwrap()
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &[anchor],
                &[],
                rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(now)),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        assert!(matches!(san.value.general_names[..], [GeneralName::URI(u)] if u == BILLING));
        let ttl = leaf.validity().not_after.timestamp() - a.clock.now().unix_timestamp();
        assert_eq!(ttl, 3600);
        assert!(!format!("{svid:?}").contains("x509_svid_key:"));

        let mut bundles: tonic::Streaming<proto::X509BundlesResponse> =
            x509_stream(&ch, "FetchX509Bundles", proto::X509BundlesRequest {}).await;
        let b = bundles.message().await.unwrap().unwrap();
        assert_eq!(b.bundles["spiffe://example.org"], ca.cert_der);
        assert_eq!(a.state.count("spiffe.FetchX509SVID"), 1);
        assert_eq!(a.state.count("spiffe.FetchX509Bundles"), 1);
    }

    /// The uid selector, with the uid this test runs as.
    #[tokio::test]
    async fn callers_are_attested_by_uid() {
        use std::os::unix::fs::MetadataExt;
        let probe = tempfile::NamedTempFile::new().unwrap();
        let uid = probe.as_file().metadata().unwrap().uid();
        let toml = format!(
            "[[oidc_issuer]]\nissuer = \"https://spire.test\"\ngenerate_key = true\n\
             [spiffe]\ntrust_domain = \"td.test\"\njwt_issuer = \"https://spire.test\"\n\
             [[spiffe.workload]]\nspiffe_id = \"spiffe://td.test/mine\"\nuid = {uid}\n\
             [[spiffe.workload]]\nspiffe_id = \"spiffe://td.test/theirs\"\nuid = {}\n\
             [[spiffe.workload]]\nspiffe_id = \"spiffe://td.test/anyone\"\n",
            uid.wrapping_add(1)
        );
        let a = agent_for(World::from_str_at(&toml, "w.toml", None).unwrap()).await;
        let ch = channel(&a.path).await;
        let all = fetch(&ch, &["x"], "").await.unwrap();
        let ids: Vec<&str> = all.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
        assert_eq!(ids, ["spiffe://td.test/mine", "spiffe://td.test/anyone"]);
        assert_code(
            fetch(&ch, &["x"], "spiffe://td.test/theirs").await,
            Code::PermissionDenied,
        );
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD_decode(
            all.svids[0].svid.split('.').nth(1).unwrap(),
        ))
        .unwrap();
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            300
        );
    }

    #[allow(non_snake_case, reason = "reads like the engine it calls")]
    fn URL_SAFE_NO_PAD_decode(s: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    }

    #[tokio::test]
    async fn validate_good_bad_expired_and_wrong_audience() {
        let a = agent().await;
        let ch = channel(&a.path).await;
        let token = fetch(&ch, &["aud-1"], "").await.unwrap().svids[0]
            .svid
            .clone();

        let ok = validate_svid(&ch, "aud-1", &token).await.unwrap();
        assert_eq!(ok.spiffe_id, BILLING);
        let claims = ok.claims.unwrap().fields;
        assert!(matches!(&claims["sub"].kind, Some(Kind::StringValue(s)) if s == BILLING));
        assert!(matches!(&claims["exp"].kind, Some(Kind::NumberValue(_))));
        assert!(matches!(&claims["aud"].kind, Some(Kind::ListValue(l)) if l.values.len() == 1));

        for (aud, svid) in [("", token.as_str()), ("aud-1", "")] {
            assert_code(validate_svid(&ch, aud, svid).await, Code::InvalidArgument);
        }
        let wrong = assert_code(
            validate_svid(&ch, "aud-2", &token).await,
            Code::InvalidArgument,
        );
        assert!(wrong.message().contains("audience"), "{wrong:?}");
        // A payload altered after signing.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD_decode(&parts[1])).unwrap();
        claims["sub"] = json!(REPORTS);
        {
            use base64::Engine;
            parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&claims).unwrap());
        }
        assert_code(
            validate_svid(&ch, "aud-1", &parts.join(".")).await,
            Code::InvalidArgument,
        );
        assert_code(
            validate_svid(&ch, "aud-1", "garbage").await,
            Code::InvalidArgument,
        );
        // Signed by another issuer the emulator trusts: not the trust domain's authority.
        let k8s = a.state.issuer_keys["https://kubernetes.idbridge.test"]
            .sign(&json!({
                "iss": "https://kubernetes.idbridge.test", "sub": BILLING, "aud": "aud-1",
                "iat": now_of(&a), "exp": now_of(&a) + 60,
            }))
            .unwrap();
        assert_code(
            validate_svid(&ch, "aud-1", &k8s).await,
            Code::InvalidArgument,
        );
        // Expired, by the emulator's clock.
        a.clock.advance(299);
        validate_svid(&ch, "aud-1", &token).await.unwrap();
        a.clock.advance(1);
        let expired = assert_code(
            validate_svid(&ch, "aud-1", &token).await,
            Code::InvalidArgument,
        );
        assert!(expired.message().contains("expired"), "{expired:?}");
        assert_eq!(a.state.count("spiffe.ValidateJWTSVID"), 9);
    }

    /// The `spiffe` crate (what the broker uses) as a third-party client.
    #[tokio::test]
    async fn spiffe_crate_client() {
        let a = agent().await;
        let client = spiffe::WorkloadApiClient::connect_to(format!("unix://{}", a.path.display()))
            .await
            .unwrap();
        let svid = client.fetch_jwt_svid(["aud-1"], None).await.unwrap();
        assert_eq!(svid.spiffe_id().to_string(), BILLING);
        assert_eq!(svid.audience(), ["aud-1"]);
        let token = client.fetch_jwt_token(["aud-1"], None).await.unwrap();
        let bundles = client.fetch_jwt_bundles().await.unwrap();
        let td = spiffe::TrustDomain::new("example.org").unwrap();
        let bundle = bundles.get(&td).unwrap();
        assert!(bundle.find_jwt_authority(svid.key_id()).is_some());
        let validated = client.validate_jwt_token("aud-1", &token).await.unwrap();
        assert_eq!(validated.spiffe_id().to_string(), BILLING);
        assert!(client.validate_jwt_token("aud-9", &token).await.is_err());
        let reports = spiffe::SpiffeId::new(REPORTS).unwrap();
        assert!(
            client
                .fetch_jwt_svid(["aud-1"], Some(&reports))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn oidc_discovery_of_the_issuer() {
        let state =
            Emulator::new(World::builtin().unwrap(), Arc::new(ManualClock::at(now()))).unwrap();
        let get = |path: &'static str| {
            let router = oidc_router(state.clone());
            async move {
                let req = http::Request::get(path)
                    .header("host", "127.0.0.1:4242")
                    .body(Body::empty())
                    .unwrap();
                let resp = router.oneshot(req).await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                serde_json::from_slice::<Value>(&bytes).unwrap()
            }
        };
        let doc = get("/.well-known/openid-configuration").await;
        assert_eq!(doc["issuer"], "https://spire.idbridge.test");
        assert_eq!(doc["jwks_uri"], "http://127.0.0.1:4242/keys");
        let keys = get("/keys").await;
        let kid = &state.issuer_keys["https://spire.idbridge.test"].kid;
        assert_eq!(keys["keys"][0]["kid"], kid.as_str());
        assert_eq!(keys["keys"][0]["use"], "sig");
    }

    #[tokio::test]
    async fn serve_creates_the_socket_and_removes_it_at_shutdown() {
        let state =
            Emulator::new(World::builtin().unwrap(), Arc::new(ManualClock::at(now()))).unwrap();
        let running = crate::serve(state, [127, 0, 0, 1].into(), crate::Ports::default())
            .await
            .unwrap();
        let env: std::collections::BTreeMap<String, String> =
            running.env_pairs().into_iter().collect();
        let socket = running.spiffe_socket.clone().unwrap();
        assert!(socket.is_absolute() && socket.ends_with(SOCKET_FILE_NAME));
        assert_eq!(
            env["SPIFFE_ENDPOINT_SOCKET"],
            format!("unix://{}", socket.display())
        );
        assert_eq!(
            env["AWS_EC2_METADATA_SERVICE_ENDPOINT"],
            format!("http://{}/", running.imds)
        );
        assert_eq!(
            env["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
            format!("http://{}/v2/credentials/other-app", running.ecs)
        );
        assert_eq!(
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN"],
            "emulator-ecs-token"
        );
        assert_eq!(
            env["IDBRIDGE_EMULATOR_SPIFFE_OIDC_URL"],
            format!("http://{}", running.spiffe_oidc)
        );
        assert!(env.contains_key("AWS_ENDPOINT_URL_STS"));
        let ch = channel(&socket).await;
        assert_eq!(fetch(&ch, &["a"], "").await.unwrap().svids.len(), 1);
        drop(ch);
        let dir = socket.parent().unwrap().to_owned();
        tokio::time::timeout(Duration::from_secs(10), running.shutdown())
            .await
            .unwrap();
        assert!(!socket.exists() && !dir.exists());
    }

    #[test]
    fn world_validation_names_the_field() {
        let issuer = "[[oidc_issuer]]\nissuer = \"https://i.test\"\ngenerate_key = true\n[[oidc_issuer]]\nissuer = \"https://j.test\"\njwks = '{\"keys\":[]}'\n";
        for (spiffe, field) in [
            (
                "[spiffe]\ntrust_domain = \"Example.org\"\njwt_issuer = \"https://i.test\"\n",
                "trust_domain",
            ),
            (
                "[spiffe]\ntrust_domain = \"td\"\njwt_issuer = \"https://j.test\"\n",
                "jwt_issuer",
            ),
            (
                "[spiffe]\ntrust_domain = \"td\"\njwt_issuer = \"https://nope.test\"\n",
                "jwt_issuer",
            ),
            (
                "[spiffe]\ntrust_domain = \"td\"\njwt_issuer = \"https://i.test\"\nsvid_ttl_seconds = 0\n",
                "svid_ttl_seconds",
            ),
            (
                "[spiffe]\ntrust_domain = \"td\"\njwt_issuer = \"https://i.test\"\n[[spiffe.workload]]\nspiffe_id = \"spiffe://other/x\"\n",
                "spiffe_id",
            ),
            (
                "[spiffe]\ntrust_domain = \"td\"\njwt_issuer = \"https://i.test\"\n[[spiffe.workload]]\nspiffe_id = \"spiffe://td/\"\n",
                "spiffe_id",
            ),
            (
                "[spiffe]\ntrust_domain = \"td\"\njwt_issuer = \"https://i.test\"\n[[spiffe.workload]]\nspiffe_id = \"spiffe://td/a\"\nuid = -1\n",
                "uid",
            ),
        ] {
            let err = World::from_str_at(&format!("{issuer}{spiffe}"), "w.toml", None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
