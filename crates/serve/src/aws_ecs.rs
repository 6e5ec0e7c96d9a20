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

use std::ops::Range;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idbridge_broker::ConfigError;
use idbridge_broker::config::Yields;
use idbridge_core::SecretString;
use serde::Deserialize;
use toml::Spanned;

use crate::Frontend;
use crate::broker::{Broker, CredentialKey};
use crate::caller::Peer;
use crate::config::Listen;
use crate::frontend::{Configured, Kind, Section};

/// The container-credentials URL variable of the AWS SDKs.
pub const AWS_CONTAINER_CREDENTIALS_FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
/// The container-credentials token variable of the AWS SDKs.
pub const AWS_CONTAINER_AUTHORIZATION_TOKEN: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN";
/// The container-credentials token-file variable of the AWS SDKs (wins over the token).
pub const AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";

/// The ECS endpoint's authorization token and where it came from.
#[derive(Debug, Clone)]
pub enum EcsToken {
    /// `authorization_token = "…"`.
    Inline(SecretString),
    /// `authorization_token_file = "…"` (absolute path), read at load.
    File(PathBuf, SecretString),
    /// Generated at load; handed to clients through `--env-file`.
    Generated(SecretString),
}

impl EcsToken {
    /// The token.
    pub fn secret(&self) -> &SecretString {
        match self {
            EcsToken::Inline(s) | EcsToken::File(_, s) | EcsToken::Generated(s) => s,
        }
    }
}

/// One `[[serve.aws_ecs.role]]`.
#[derive(Debug, Clone)]
pub struct EcsRole {
    /// Request path, e.g. `/role/tenant`.
    pub path: String,
    /// The route (must yield AWS credentials).
    pub route: String,
    /// `RoleArn` of the answer: the route's `aws-sts` role, when it has one.
    pub role_arn: Option<String>,
}

/// `[serve.aws_ecs]`.
#[derive(Debug, Clone)]
pub struct EcsConfig {
    /// Where it listens.
    pub listen: Listen,
    /// The `Authorization` header value clients must send.
    pub token: EcsToken,
    /// Roles by path.
    pub roles: Vec<EcsRole>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEcs {
    #[serde(default)]
    port: Option<Spanned<u16>>,
    #[serde(default)]
    socket: Option<Spanned<PathBuf>>,
    /// Held as a secret from the moment it is read: this struct derives `Debug`.
    #[serde(default)]
    authorization_token: Option<Spanned<SecretString>>,
    #[serde(default)]
    authorization_token_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    role: Vec<Spanned<RawEcsRole>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEcsRole {
    path: Spanned<String>,
    route: Spanned<String>,
}

/// The kind, registered in [`crate::frontend::KINDS`].
pub static KIND: AwsEcs = AwsEcs;

/// `[serve.aws_ecs]`.
#[derive(Debug)]
pub struct AwsEcs;

const SECTION: &str = "[serve.aws_ecs]";

impl crate::ServeConfig {
    /// The ECS container-credentials frontend, when configured.
    pub fn aws_ecs(&self) -> Option<&EcsConfig> {
        self.frontend()
    }
}

impl Kind for AwsEcs {
    fn name(&self) -> &'static str {
        "aws_ecs"
    }

    fn section(&self) -> &'static str {
        SECTION
    }

    fn title(&self) -> &'static str {
        "ECS credentials"
    }

    fn parse(&self, s: Section<'_, '_>) -> Result<Arc<dyn Configured>, ConfigError> {
        let raw = s.deserialize::<RawEcs>()?;
        let span = raw.span();
        let e = raw.into_inner();
        let listen = s.listen(e.port, e.socket)?;
        let check_token = |value: &str, at: Range<usize>, field: &str| {
            if value.is_empty() || !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                Err(s.err(
                    at,
                    format!(
                        "{SECTION} field `{field}`: the token must be non-empty printable ASCII without \
                         spaces (it is sent verbatim as the Authorization header)"
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let token = match (e.authorization_token, e.authorization_token_file) {
            (Some(_), Some(f)) => {
                return Err(s.err(
                    f.span(),
                    format!(
                        "{SECTION}: set only one of `authorization_token` and `authorization_token_file`"
                    ),
                ));
            }
            (Some(t), None) => {
                check_token(t.get_ref().expose_secret(), t.span(), "authorization_token")?;
                EcsToken::Inline(t.into_inner())
            }
            (None, Some(f)) => {
                let path = s.absolute(f.get_ref());
                let text = std::fs::read_to_string(&path).map_err(|err| {
                    s.err(
                        f.span(),
                        format!(
                            "{SECTION} field `authorization_token_file`: cannot read {}: {err}",
                            path.display()
                        ),
                    )
                })?;
                let text = zeroize::Zeroizing::new(text);
                // Editors add a final newline; botocore would send it and fail, so it is not
                // part of the token.
                let token = text.strip_suffix('\n').unwrap_or(&text);
                let token = token.strip_suffix('\r').unwrap_or(token);
                check_token(token, f.span(), "authorization_token_file")?;
                EcsToken::File(path, SecretString::new(token))
            }
            (None, None) => EcsToken::Generated(SecretString::new(
                URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
            )),
        };
        if e.role.is_empty() {
            return Err(s.err(
                span,
                format!(
                    "{SECTION}: add at least one [[serve.aws_ecs.role]] with `path` and `route`"
                ),
            ));
        }
        let mut roles: Vec<EcsRole> = Vec::new();
        for role in e.role {
            let role = role.into_inner();
            let path = role.path.get_ref();
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                return Err(s.err(
                    role.path.span(),
                    format!(
                        "[[serve.aws_ecs.role]] field `path`: {path:?} must be a URL path \
                         starting with /"
                    ),
                ));
            }
            if roles.iter().any(|r| r.path == *path) {
                return Err(s.err(
                    role.path.span(),
                    format!("[[serve.aws_ecs.role]] field `path`: duplicate path {path:?}"),
                ));
            }
            let route = s.route(
                "[[serve.aws_ecs.role]]",
                "route",
                &role.route,
                Yields::AwsCredentials,
            )?;
            let role_arn = crate::config::route_role(route).map(|role| role.arn.to_string());
            roles.push(EcsRole {
                path: path.clone(),
                route: route.name.clone(),
                role_arn,
            });
        }
        Ok(Arc::new(EcsConfig {
            listen,
            token,
            roles,
        }))
    }
}

impl Configured for EcsConfig {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }

    fn listen(&self) -> &Listen {
        &self.listen
    }

    fn routes(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.route.clone()).collect()
    }

    fn router(&self, broker: Arc<Broker>) -> Router {
        router(broker, self.clone())
    }

    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` (the first role) and
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`, or `…_TOKEN_FILE` when the token comes from a file.
    fn env(&self, base: &str) -> Vec<(&'static str, SecretString)> {
        let mut out = Vec::new();
        if let Some(role) = self.roles.first() {
            out.push((
                AWS_CONTAINER_CREDENTIALS_FULL_URI,
                SecretString::new(format!("{base}{}", role.path)),
            ));
        }
        match &self.token {
            EcsToken::File(path, _) => out.push((
                AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE,
                SecretString::new(path.display().to_string()),
            )),
            EcsToken::Inline(t) | EcsToken::Generated(t) => {
                out.push((AWS_CONTAINER_AUTHORIZATION_TOKEN, t.clone()));
            }
        }
        out
    }

    fn needs_env_file(&self) -> Option<String> {
        matches!(self.token, EcsToken::Generated(_)).then(|| {
            "the ECS frontend's token is generated and no --env-file was given: no client can \
             learn it"
                .to_owned()
        })
    }
}

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
    crate::http::observe(r, Frontend::Registered(KIND.name()), broker)
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
        Err(r) => {
            let code = match r.status() {
                StatusCode::FORBIDDEN => "AccessDenied",
                StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
                _ => r.failure_code().unwrap_or("InternalError"),
            };
            error(r.status(), code, &r.message())
        }
    }
}
