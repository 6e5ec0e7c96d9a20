//! The EC2 instance metadata (IMDSv2) frontend: one route's AWS credentials as an instance role.
//!
//! Point botocore, the AWS CLI and the other SDKs at it with
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:PORT/`; google-auth's AWS source with
//! `credential_source.url`/`region_url`/`imdsv2_session_token_url`. Wire behaviour:
//!
//! * `PUT /latest/api/token` with `x-aws-ec2-metadata-token-ttl-seconds: 1..=21600` answers a
//!   session token and **echoes the TTL header** (aws-config fails without it). A missing or
//!   invalid TTL is 400; a PUT carrying `X-Forwarded-For` is 403 (tokens are not handed through
//!   proxies); other methods are 405.
//! * With `require_token = true` (the default: IMDSv2 only) every `GET` needs a live
//!   `x-aws-ec2-metadata-token`; missing, unknown or expired is 401 (clients then fetch a new
//!   token). With `require_token = false` a GET without the header is served (IMDSv1), but a
//!   header that is present must still be live.
//! * `/latest/meta-data/iam/security-credentials/` (with or without the slash) lists the role
//!   name, with no trailing newline (google-auth uses the body verbatim);
//!   `…/security-credentials/ROLE` answers `{"Code":"Success","LastUpdated","Type":"AWS-HMAC",
//!   "AccessKeyId","SecretAccessKey","Token","Expiration"}` with `YYYY-MM-DDTHH:MM:SSZ` times;
//!   another role is 404. `…/security-credentials-extended/` is 404 so newer SDKs fall back.
//! * `placement/availability-zone` (no trailing newline: clients cut the last character to get
//!   the region), `placement/region`, `instance-id`, `instance-type`, `ami-id`, `hostname`,
//!   `local-ipv4`, `iam/info` (the instance profile named after the role), `services/`,
//!   `/latest/dynamic/instance-identity/document` (region, zone, instance and account ids:
//!   aws-sdk-go v1 and v2 read the region only from it), and directory listings. The tree, the
//!   request rules and the documents are [`idbridge_wire::aws_imds`]'s, shared with the
//!   emulator's instance.
//! * Data is `text/plain` as EC2 serves it, with `Server: EC2ws`.
//!
//! A caller not allowed to use the route gets 403 `{"Code":"AccessDenied","Message"}` naming its
//! uid and the route. A route failing transiently is 503; a permanent failure is EC2's own form,
//! HTTP 200 with `{"Code":"<error code>","Message","LastUpdated"}` and no keys.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use idbridge_core::Credential;
use idbridge_core::timefmt::rfc3339_seconds;
use idbridge_wire::aws_imds::{
    self as imds_wire, Admitted, Found, IamInfo, Instance, Refused, RoleCredentials, RoleFailure,
};
use sha2::{Digest, Sha256};

use crate::Frontend;
use crate::broker::{Broker, CredentialKey, Refusal};
use crate::caller::Peer;
use crate::config::ImdsConfig;
use crate::imds_tokens::TokenStore;

/// Live session tokens kept at most (and per caller: [`crate::imds_tokens`]).
pub use crate::imds_tokens::{MAX_LIVE_TOKENS, MAX_TOKENS_PER_CALLER};
pub use idbridge_wire::aws_imds::{MAX_TOKEN_TTL, TOKEN_HEADER, TOKEN_PATH, TTL_HEADER};

#[derive(Debug)]
struct ImdsState {
    broker: Arc<Broker>,
    config: ImdsConfig,
    /// The instance the tree describes (its launch time is the daemon's start).
    instance: Instance,
    /// The live session tokens, with a budget per caller.
    tokens: TokenStore,
}

/// The IMDSv2 router for `config`, backed by `broker`.
pub fn router(broker: Arc<Broker>, config: ImdsConfig) -> Router {
    let instance = instance(&config, broker.clock().now());
    let state = Arc::new(ImdsState {
        broker: Arc::clone(&broker),
        instance,
        config,
        tokens: TokenStore::default(),
    });
    let r = Router::new()
        .fallback(handle)
        .with_state(state)
        .layer(middleware::from_fn(crate::http::limit_headers))
        .layer(middleware::map_response(decorate));
    crate::http::observe(r, Frontend::AwsImds, broker)
}

/// The instance of `config`, launched at `started`.
fn instance(c: &ImdsConfig, started: time::OffsetDateTime) -> Instance {
    Instance {
        instance_id: c.instance_id.clone(),
        account_id: c.account_id.clone(),
        availability_zone: c.availability_zone.clone(),
        region: c.region.clone(),
        instance_type: c.instance_type.clone(),
        image_id: c.image_id.clone(),
        private_ip: c.private_ip.clone(),
        hostname: c.hostname.clone(),
        architecture: c.architecture.clone(),
        pending_time: rfc3339_seconds(started),
        role_name: c.role_name.clone(),
    }
}

/// `iam/info`: the instance profile named after the role, with an id derived from its ARN.
fn iam_info(s: &ImdsState) -> String {
    let arn = format!(
        "arn:aws:iam::{}:instance-profile/{}",
        s.instance.account_id, s.instance.role_name
    );
    let digest = Sha256::digest(arn.as_bytes());
    let id: String = digest
        .iter()
        .take(17)
        .map(|b| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[usize::from(b % 32)]))
        .collect();
    imds_wire::pretty(&IamInfo {
        code: "Success".to_owned(),
        last_updated: s.instance.pending_time.clone(),
        instance_profile_arn: arn,
        instance_profile_id: format!("AIPA{id}"),
    })
}

/// The role's credentials leaf.
#[derive(Debug)]
struct RoleLeaf;

async fn decorate(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("EC2ws"));
    resp
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    let mut resp = (status, body.into()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn status_only(status: StatusCode) -> Response {
    plain(
        status,
        format!(
            "{} - {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        ),
    )
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl ImdsState {
    fn put_token(&self, headers: &HeaderMap, owner: Option<u32>) -> Response {
        if headers.contains_key("x-forwarded-for") {
            tracing::info!("refused: IMDS token request carrying X-Forwarded-For");
            return status_only(StatusCode::FORBIDDEN);
        }
        let Some(ttl) = imds_wire::token_ttl(headers) else {
            return status_only(StatusCode::BAD_REQUEST);
        };
        let token = self
            .tokens
            .issue(owner, Duration::from_secs(u64::from(ttl)));
        let mut resp = plain(StatusCode::OK, token);
        resp.headers_mut()
            .insert(TTL_HEADER, HeaderValue::from(ttl));
        resp
    }

    fn token_is_live(&self, token: &HeaderValue) -> bool {
        self.tokens.is_live(token.as_bytes())
    }
}

async fn handle(State(s): State<Arc<ImdsState>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let path = parts.uri.path();
    match imds_wire::admit(&parts.method, path, &parts.headers) {
        Ok(Admitted::Read) => {}
        // The token rules (X-Forwarded-For, TTL) are applied again by put_token.
        Ok(Admitted::TokenPut(_)) | Err(Refused::Proxied | Refused::BadTtl) => {
            return s.put_token(
                &parts.headers,
                Peer::of(&parts.extensions).and_then(Peer::uid),
            );
        }
        Err(Refused::MethodNotAllowed) => return status_only(StatusCode::METHOD_NOT_ALLOWED),
    }
    let authorized = match parts.headers.get(TOKEN_HEADER) {
        Some(token) => s.token_is_live(token),
        None => !s.config.require_token,
    };
    if !authorized {
        return status_only(StatusCode::UNAUTHORIZED);
    }
    let tree = s.instance.tree(iam_info(&s), RoleLeaf);
    match tree.lookup(path) {
        Some(Found::Text(body)) => plain(StatusCode::OK, body),
        Some(Found::Own(RoleLeaf)) => {
            let peer = Peer::of(&parts.extensions);
            credentials(&s, peer).await
        }
        None => status_only(StatusCode::NOT_FOUND),
    }
}

async fn credentials(s: &ImdsState, peer: Option<&Peer>) -> Response {
    let route = &s.config.route;
    let now = s.broker.clock().now();
    match s
        .broker
        .credential(peer, &CredentialKey::route(route))
        .await
    {
        Ok(Credential::Aws(c)) => {
            // Credentials without an expiry (static keys) still need one on this wire: an
            // hour, after which the client simply asks again.
            let expiration = c.expiration.unwrap_or(now + time::Duration::hours(1));
            let doc = RoleCredentials {
                code: "Success",
                last_updated: rfc3339_seconds(now),
                kind: "AWS-HMAC",
                access_key_id: &c.access_key_id,
                secret_access_key: c.secret_access_key.expose_secret(),
                token: c.session_token.as_ref().map(|t| t.expose_secret()),
                expiration: rfc3339_seconds(expiration),
            };
            plain(StatusCode::OK, imds_wire::pretty(&doc))
        }
        Ok(other) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "route {route:?} yields a {} credential, not AWS credentials\n",
                other.kind()
            ),
        ),
        Err(r @ Refusal::Denied { .. }) => json_response(
            StatusCode::FORBIDDEN,
            serde_json::json!({ "Code": "AccessDenied", "Message": r.message() }).to_string(),
        ),
        Err(r) if r.is_transient() => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", r.message()),
        ),
        Err(r) => {
            let code = match &r {
                Refusal::Failed { error, .. } => error.code.clone(),
                Refusal::Denied { .. } => None,
            };
            let doc = RoleFailure {
                code: code.as_deref().unwrap_or("Failure"),
                message: r.message(),
                last_updated: rfc3339_seconds(now),
            };
            plain(StatusCode::OK, imds_wire::pretty(&doc))
        }
    }
}
