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
//!   the region), `placement/region`, `instance-id`, and directory listings.
//! * Data is `text/plain` as EC2 serves it, with `Server: EC2ws`.
//!
//! A caller not allowed to use the route gets 403 `{"Code":"AccessDenied","Message"}` naming its
//! uid and the route. A route failing transiently is 503; a permanent failure is EC2's own form,
//! HTTP 200 with `{"Code":"<error code>","Message","LastUpdated"}` and no keys.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use idbridge_core::Credential;
use idbridge_core::timefmt::rfc3339_seconds;
use serde::Serialize;

use crate::Frontend;
use crate::broker::{Broker, CredentialKey, Refusal};
use crate::caller::Peer;
use crate::config::ImdsConfig;
use crate::imds_tokens::TokenStore;

/// Path of the session-token endpoint.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// Request header carrying a session token.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// Request header with the wanted token lifetime; echoed on the response.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// Longest token lifetime EC2 grants (six hours).
pub const MAX_TOKEN_TTL: u64 = 21_600;
/// Live session tokens kept at most (and per caller: [`crate::imds_tokens`]).
pub use crate::imds_tokens::{MAX_LIVE_TOKENS, MAX_TOKENS_PER_CALLER};

const CREDENTIALS_PREFIX: &str = "/latest/meta-data/iam/security-credentials/";

#[derive(Debug)]
struct ImdsState {
    broker: Arc<Broker>,
    config: ImdsConfig,
    /// The live session tokens, with a budget per caller.
    tokens: TokenStore,
}

/// The IMDSv2 router for `config`, backed by `broker`.
pub fn router(broker: Arc<Broker>, config: ImdsConfig) -> Router {
    let state = Arc::new(ImdsState {
        broker: Arc::clone(&broker),
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
        let ttl = headers
            .get(TTL_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 5 && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ttl| (1..=MAX_TOKEN_TTL).contains(ttl));
        let Some(ttl) = ttl else {
            return status_only(StatusCode::BAD_REQUEST);
        };
        let token = self.tokens.issue(owner, Duration::from_secs(ttl));
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
    if path == TOKEN_PATH {
        return if parts.method == Method::PUT {
            s.put_token(
                &parts.headers,
                Peer::of(&parts.extensions).and_then(Peer::uid),
            )
        } else {
            status_only(StatusCode::METHOD_NOT_ALLOWED)
        };
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return status_only(StatusCode::METHOD_NOT_ALLOWED);
    }
    let authorized = match parts.headers.get(TOKEN_HEADER) {
        Some(token) => s.token_is_live(token),
        None => !s.config.require_token,
    };
    if !authorized {
        return status_only(StatusCode::UNAUTHORIZED);
    }
    let c = &s.config;
    // Directories answer with or without their trailing slash; values only without.
    let (p, slash) = match path.strip_suffix('/') {
        Some(p) => (p, true),
        None => (path, false),
    };
    let value = |v: &str| {
        if slash {
            status_only(StatusCode::NOT_FOUND)
        } else {
            plain(StatusCode::OK, v)
        }
    };
    match p {
        "" => plain(StatusCode::OK, "latest"),
        "/latest" => plain(StatusCode::OK, "meta-data/"),
        "/latest/meta-data" => plain(StatusCode::OK, "iam/\ninstance-id\nplacement/"),
        "/latest/meta-data/instance-id" => value(&c.instance_id),
        "/latest/meta-data/placement" => plain(StatusCode::OK, "availability-zone\nregion"),
        "/latest/meta-data/placement/availability-zone" => value(&c.availability_zone),
        "/latest/meta-data/placement/region" => value(&c.region),
        "/latest/meta-data/iam" => plain(StatusCode::OK, "security-credentials/"),
        "/latest/meta-data/iam/security-credentials" => plain(StatusCode::OK, c.role_name.clone()),
        _ => match path.strip_prefix(CREDENTIALS_PREFIX) {
            Some(role) if role == c.role_name => {
                let peer = Peer::of(&parts.extensions);
                credentials(&s, peer).await
            }
            _ => status_only(StatusCode::NOT_FOUND),
        },
    }
}

/// The role document; borrows the secrets so they are copied only into the response.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials<'a> {
    code: &'static str,
    last_updated: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    expiration: String,
}

/// EC2's failure form of the role document (HTTP 200, no keys).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RoleFailure<'a> {
    code: &'a str,
    message: String,
    last_updated: String,
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
            match serde_json::to_string_pretty(&doc) {
                Ok(body) => plain(StatusCode::OK, body),
                Err(_) => status_only(StatusCode::INTERNAL_SERVER_ERROR),
            }
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
            plain(
                StatusCode::OK,
                serde_json::to_string_pretty(&doc).unwrap_or_default(),
            )
        }
    }
}
