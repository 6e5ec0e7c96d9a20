//! The ECS container-credentials frontend: routes' AWS credentials at several paths.
//!
//! Point botocore, the AWS CLI and the other SDKs at it with
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:PORT/PATH` and
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN` (or `…_TOKEN_FILE`; botocore rejects a file ending in a
//! newline). `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` cannot be used: it is hard-wired to
//! `169.254.170.2`. Wire behaviour:
//!
//! * `Authorization` must equal the configured token exactly (compared in constant time);
//!   missing or different is 401 `{"code":"AccessDenied","message"}`. It is checked before the
//!   path, so an unauthenticated client learns nothing about the roles.
//! * `GET <role path>` answers `{"RoleArn","AccessKeyId","SecretAccessKey","Token","Expiration",
//!   "AccountId"}` (`RoleArn` and `AccountId` when the route ends in `aws-sts`); any other path
//!   is 404 `{"code":"NotFound","message"}`; methods other than GET/HEAD are 405.
//! * A caller not allowed to use the route gets 403 `{"code":"AccessDenied","message"}` naming
//!   its uid and the route; a failing route 503 (transient) or 500, with `{"code","message"}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use idbridge_core::Credential;
use idbridge_core::timefmt::rfc3339_seconds;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::Frontend;
use crate::broker::{Broker, CredentialKey, Refusal};
use crate::caller::Peer;
use crate::config::{EcsConfig, EcsRole};

#[derive(Debug)]
struct EcsState {
    broker: Arc<Broker>,
    roles: Vec<EcsRole>,
    /// SHA-256 of the token, compared in constant time with the digest of the header.
    token_digest: [u8; 32],
}

/// The container-credentials router for `config`, backed by `broker`.
pub fn router(broker: Arc<Broker>, config: EcsConfig) -> Router {
    let state = Arc::new(EcsState {
        broker: Arc::clone(&broker),
        token_digest: Sha256::digest(config.token.secret().expose_secret().as_bytes()).into(),
        roles: config.roles,
    });
    let r = Router::new()
        .fallback(handle)
        .with_state(state)
        .layer(middleware::from_fn(crate::http::limit_headers));
    crate::http::observe(r, Frontend::AwsEcs, broker)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json(
        status,
        serde_json::json!({ "code": code, "message": message }).to_string(),
    )
}

fn json(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The credentials document; borrows the secrets so they are copied only into the response.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerCredentials<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role_arn: Option<&'a str>,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    expiration: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

async fn handle(State(s): State<Arc<EcsState>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let given: [u8; 32] = match parts.headers.get(header::AUTHORIZATION) {
        Some(v) => Sha256::digest(v.as_bytes()).into(),
        None => [0; 32],
    };
    let authorized = parts.headers.contains_key(header::AUTHORIZATION)
        && aws_lc_rs::constant_time::verify_slices_are_equal(&given, &s.token_digest).is_ok();
    if !authorized {
        tracing::info!(
            path = parts.uri.path(),
            "refused: missing or wrong ECS authorization token"
        );
        return error(
            StatusCode::UNAUTHORIZED,
            "AccessDenied",
            "The Authorization header is missing or does not carry this endpoint's token",
        );
    }
    let Some(role) = s.roles.iter().find(|r| r.path == parts.uri.path()) else {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "No credentials endpoint at this path",
        );
    };
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Only GET is supported",
        );
    }
    let peer = Peer::of(&parts.extensions);
    match s
        .broker
        .credential(peer, &CredentialKey::route(&role.route))
        .await
    {
        Ok(Credential::Aws(c)) => {
            let now = s.broker.clock().now();
            let account_from_arn = role
                .role_arn
                .as_deref()
                .and_then(|a| a.split(':').nth(4))
                .filter(|a| !a.is_empty());
            let doc = ContainerCredentials {
                role_arn: role.role_arn.as_deref(),
                access_key_id: &c.access_key_id,
                secret_access_key: c.secret_access_key.expose_secret(),
                token: c.session_token.as_ref().map(|t| t.expose_secret()),
                expiration: rfc3339_seconds(c.expiration.unwrap_or(now + time::Duration::hours(1))),
                account_id: c.account_id.as_deref().or(account_from_arn),
            };
            match serde_json::to_string(&doc) {
                Ok(body) => json(StatusCode::OK, body),
                Err(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "cannot encode credentials",
                ),
            }
        }
        Ok(other) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!(
                "route {:?} yields a {} credential, not AWS credentials",
                role.route,
                other.kind()
            ),
        ),
        Err(r @ Refusal::Denied { .. }) => {
            error(StatusCode::FORBIDDEN, "AccessDenied", &r.message())
        }
        Err(r) if r.is_transient() => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            &r.message(),
        ),
        Err(r) => {
            let code = match &r {
                Refusal::Failed { error, .. } => error.code.clone(),
                Refusal::Denied { .. } => None,
            };
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                code.as_deref().unwrap_or("InternalError"),
                &r.message(),
            )
        }
    }
}
