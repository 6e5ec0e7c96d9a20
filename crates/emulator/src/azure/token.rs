//! Entra ID's token endpoint: `client_credentials` with a federated client assertion.
//!
//! `POST /{tenant}/oauth2/v2.0/token` (`scope`) and the v1 `POST /{tenant}/oauth2/token`
//! (`resource`), form bodies ([`idbridge_wire::entra::TokenRequestForm`]). Checked in this
//! order; the first failure answers with Entra's error body and its AADSTS code:
//!
//! | step | failure | HTTP | `error` | AADSTS |
//! |---|---|---|---|---|
//! | tenant (id or domain) exists | unknown tenant | 400 | `invalid_request` | 90002 |
//! | `grant_type`, `client_id`, `scope` (v1: `resource`) present | missing | 400 | `invalid_request` | 900144 |
//! | `grant_type` is `client_credentials` | other grant | 400 | `unsupported_grant_type` | 70003 |
//! | `scope` is one `<resource>/.default` (MSAL's `openid offline_access profile` ignored) | several / none | 400 | `invalid_scope` | 70011 |
//! |  | no `/.default` | 400 | `invalid_scope` | 1002012 |
//! | the client is an app or user-assigned managed identity of the tenant | unknown | 400 | `unauthorized_client` | 700016 |
//! | a `client_secret` was sent (federated principals have none) | — | 401 | `invalid_client` | 7000215 |
//! | `client_assertion` with the jwt-bearer `client_assertion_type` | missing | 401 | `invalid_client` | 7000218 |
//! | the assertion is a JWT with an accepted `alg` (RS256/384/512, ES256/384; never `none` or HMAC, refused before any key is used) | malformed, `alg` | 400 | `invalid_request` | 50027 |
//! | a federated credential of the client names the assertion's `iss` | none | 401 | `invalid_client` | 700211 |
//! | the issuer's discovery document and JWKS can be fetched: it is one of the emulator's issuers (Google, `[[oidc_issuer]]`s, SPIFFE, Kubernetes, AWS outbound, Entra itself) | any other issuer ("Request to External OIDC endpoint failed.") | 400 | `invalid_request` | 50166 |
//! | the issuer's keys verify the signature, by `kid` | bad signature, unknown `kid` | 401 | `invalid_client` | 700027 |
//! | `exp`/`nbf`/`iat` (five minutes of skew) | outside | 401 | `invalid_client` | 700024 |
//! | a credential with that issuer has exactly the assertion's `sub` (case-sensitive) | none | 401 | `invalid_client` | 700213 |
//! | …and its audience is among the assertion's `aud` | none | 401 | `invalid_client` | 700212 |
//! | the resource is an app of the tenant (identifier URI, `api://{appId}`, appId) or a Microsoft API | unknown | 400 | `invalid_resource` | 500011 |
//!
//! The assertion's checks (algorithm through audience) are `idbridge_policy::azure::federate`'s
//! decision, which `idbridge explain --entra` prints too; this module verifies the signature
//! with the issuer's keys and passes the outcome in.
//!
//! The answer is an Entra-shaped access token (`issue_access_token`), v1 or v2 as the
//! resource app's `access_token_version` says. Calls are counted as `azure.entra.token`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use idbridge_policy::azure;
use idbridge_wire::entra::{
    ErrorBody, JWT_BEARER_ASSERTION_TYPE, ScopeError, TokenRequestForm, TokenResponse,
    resource_of_scope,
};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Principal, Resource, op, v1_issuer, v2_issuer};
use crate::token_verify::{self, TokenError, VerifyOptions};
use crate::{Emulator, short};

/// Largest form body read.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Client-chosen text is quoted in messages up to this many characters.
const MAX_QUOTED: usize = 256;

/// The router of both token endpoint versions.
pub fn router(state: Arc<Emulator>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
        .route("/{tenant}/oauth2/token", post(token_v1))
        .with_state(state)
}

/// An Entra refusal: status, OAuth error, AADSTS code, message.
#[derive(Debug)]
pub(crate) struct EntraError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    message: String,
}

impl EntraError {
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        message: impl Into<String>,
    ) -> Self {
        EntraError {
            status,
            error,
            code,
            message: message.into(),
        }
    }

    fn bad(error: &'static str, code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, code, message)
    }

    fn client(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
    }

    fn missing(name: &str) -> Self {
        Self::bad(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    /// The response, with Entra's body.
    pub(crate) fn respond(&self, now: OffsetDateTime, correlation_id: &str) -> Response {
        let body = ErrorBody::new(
            self.error,
            self.code,
            &self.message,
            &entra_timestamp(now),
            &uuid::Uuid::new_v4().to_string(),
            correlation_id,
        );
        (
            self.status,
            [(http::header::CACHE_CONTROL, "no-store, no-cache")],
            axum::Json(body),
        )
            .into_response()
    }
}

/// `YYYY-MM-DD HH:MM:SSZ`, Entra's `timestamp`.
fn entra_timestamp(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    t.format(&f).unwrap_or_default()
}

/// The client's request id (`client-request-id`, which MSAL sends), or a fresh one.
pub(crate) fn correlation_id(headers: &HeaderMap) -> String {
    ["client-request-id", "x-ms-client-request-id"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .find_map(|v| uuid::Uuid::parse_str(v).ok())
        .unwrap_or_else(uuid::Uuid::new_v4)
        .to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

async fn token_v2(
    State(state): State<Arc<Emulator>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&state, &tenant, &headers, &body, Version::V2)
}

async fn token_v1(
    State(state): State<Arc<Emulator>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&state, &tenant, &headers, &body, Version::V1)
}

fn handle(
    state: &Emulator,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
    version: Version,
) -> Response {
    state.bump(&op("entra.token"));
    let correlation = correlation_id(headers);
    let now = state.clock.now();
    match exchange(state, tenant, body, version, now) {
        Ok(response) => response,
        Err(e) => {
            tracing::info!(tenant = %short(tenant, 64), code = e.code, "entra token: refused");
            e.respond(now, &correlation)
        }
    }
}

fn exchange(
    state: &Emulator,
    tenant: &str,
    body: &[u8],
    version: Version,
    now: OffsetDateTime,
) -> Result<Response, EntraError> {
    let world = &state.world;
    let Some(tenant) = world.entra_tenant(tenant) else {
        return Err(EntraError::bad(
            "invalid_request",
            90002,
            format!(
                "Tenant '{}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
                short(tenant, 64)
            ),
        ));
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(EntraError::bad(
            "invalid_request",
            900144,
            "The request body is too large.",
        ));
    }
    let form: TokenRequestForm = serde_urlencoded::from_bytes(body).map_err(|_| {
        EntraError::bad(
            "invalid_request",
            900144,
            "The request body must be a form with each parameter at most once.",
        )
    })?;
    let nonempty = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let grant_type = nonempty(&form.grant_type).ok_or_else(|| EntraError::missing("grant_type"))?;
    let client_id = nonempty(&form.client_id).ok_or_else(|| EntraError::missing("client_id"))?;
    let (resource_name, scope_text) = match version {
        Version::V2 => {
            let scope = nonempty(&form.scope).ok_or_else(|| EntraError::missing("scope"))?;
            let resource = resource_of_scope(&scope).map_err(|e| match e {
                ScopeError::NotDefault => EntraError::bad(
                    "invalid_scope",
                    1002012,
                    format!(
                        "The provided value for scope {} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
                        short(&scope, MAX_QUOTED)
                    ),
                ),
                ScopeError::Empty | ScopeError::Several => EntraError::bad(
                    "invalid_scope",
                    70011,
                    format!(
                        "The provided value for the input parameter 'scope' isn't valid. The scope {} is not valid.",
                        short(&scope, MAX_QUOTED)
                    ),
                ),
            })?;
            (resource.to_owned(), Some(scope.clone()))
        }
        Version::V1 => (
            nonempty(&form.resource).ok_or_else(|| EntraError::missing("resource"))?,
            None,
        ),
    };
    if grant_type != "client_credentials" {
        return Err(EntraError::bad(
            "unsupported_grant_type",
            70003,
            format!(
                "The app requested an unsupported grant type '{}'.",
                short(&grant_type, 64)
            ),
        ));
    }
    let Some(principal) = world.entra_principal(&tenant.id, &client_id) else {
        return Err(EntraError::bad(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                short(&client_id, 64),
                tenant.domain.as_deref().unwrap_or(&tenant.id)
            ),
        ));
    };
    if form.client_secret.is_some() {
        return Err(EntraError::client(
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                principal.client_id()
            ),
        ));
    }
    let (Some(assertion), Some(JWT_BEARER_ASSERTION_TYPE)) = (
        nonempty(&form.client_assertion),
        form.client_assertion_type.as_deref(),
    ) else {
        return Err(EntraError::client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    };
    verify_assertion(state, principal, &assertion, now)?;

    let Some(resource) = world.entra_resource(&tenant.id, &resource_name) else {
        return Err(EntraError::bad(
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                short(&resource_name, MAX_QUOTED),
                tenant.domain.as_deref().unwrap_or(&tenant.id)
            ),
        ));
    };
    let cp1 = form
        .claims
        .as_deref()
        .is_some_and(|c| c.contains("\"CP1\"") || c.contains("\"cp1\""));
    let issued =
        issue_access_token(state, principal, &resource_name, resource, cp1, now).map_err(|_| {
            EntraError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                90033,
                "A transient error has occurred. Please try again.",
            )
        })?;
    tracing::info!(
        tenant = %tenant.id,
        client_id = %principal.client_id(),
        resource = %short(&resource_name, 128),
        scope = scope_text.as_deref().map(|s| short(s, 128)).unwrap_or_default(),
        "entra token: issued"
    );
    let lifetime = issued.expires_at - now.unix_timestamp();
    let body = match version {
        Version::V2 => serde_json::to_value(TokenResponse {
            token_type: "Bearer".to_owned(),
            expires_in: lifetime,
            ext_expires_in: lifetime,
            expires_on: None,
            resource: None,
            access_token: issued.token,
        })
        .unwrap_or(Value::Null),
        Version::V1 => json!({
            "token_type": "Bearer",
            "expires_in": lifetime.to_string(),
            "ext_expires_in": lifetime.to_string(),
            "expires_on": issued.expires_at.to_string(),
            "not_before": issued.not_before.to_string(),
            "resource": resource_name,
            "access_token": issued.token,
        }),
    };
    Ok((
        StatusCode::OK,
        [(http::header::CACHE_CONTROL, "no-store, no-cache")],
        axum::Json(body),
    )
        .into_response())
}

/// Entra's checks of a federated assertion for `principal` (see the module documentation):
/// the signature here, with the emulator's issuer keys; the decision is
/// [`idbridge_policy::azure::federate`]'s.
pub(crate) fn verify_assertion(
    state: &Emulator,
    principal: Principal<'_>,
    assertion: &str,
    now: OffsetDateTime,
) -> Result<(), EntraError> {
    let malformed = |why: &str| {
        let r = azure::Rejection::Malformed(why.to_owned());
        EntraError::bad(r.error(), r.code(), r.message())
    };
    let unverified = idbridge_core::jwt::UnverifiedJwt::parse(assertion.trim())
        .map_err(|_| malformed("the client assertion is not a JWT"))?;
    let alg = unverified
        .header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let opts = VerifyOptions {
        algorithms: azure::ACCEPTED_ALGORITHMS
            .iter()
            .filter_map(|a| a.parse::<Algorithm>().ok())
            .collect(),
        leeway_secs: azure::CLOCK_SKEW_SECS,
        max_lifetime_secs: None,
        required_claims: Vec::new(),
    };
    // The signature only: the time claims are the decision's (a token whose time is off
    // had its signature verified first).
    let signature = match token_verify::verify_jwt(state, assertion, now.unix_timestamp(), &opts) {
        Ok(_)
        | Err(
            TokenError::Expired { .. }
            | TokenError::NotYetValid { .. }
            | TokenError::IssuedInFuture { .. }
            | TokenError::NonIntegerTimestamp(_)
            | TokenError::MissingExpiry
            | TokenError::MissingIssuer
            | TokenError::UnsupportedAlgorithm(_),
        ) => azure::Signature::Valid,
        Err(TokenError::UnknownIssuer(_)) => azure::Signature::KeysUnavailable,
        Err(TokenError::MissingKid | TokenError::UnknownKid | TokenError::BadSignature) => {
            azure::Signature::Invalid
        }
        Err(other) => azure::Signature::Unreadable(other.to_string()),
    };
    let trace = azure::federate(
        principal.federated_credentials(),
        alg,
        &unverified.claims,
        signature,
        now.unix_timestamp(),
    );
    match trace.rejection {
        None => Ok(()),
        Some(r) => Err(EntraError::new(
            StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST),
            r.error(),
            r.code(),
            r.message(),
        )),
    }
}

/// An access token Entra issued.
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) expires_at: i64,
    pub(crate) not_before: i64,
}

/// Signs an Entra access token for `principal` and `resource` (asked for as `resource_name`).
///
/// v1 (Microsoft APIs, and apps with `access_token_version = 1`): `iss`
/// `https://sts.windows.net/{tid}/`, `aud` the resource as asked, `appid`, `appidacr`,
/// `ver` `1.0`, `kid` and `x5t` in the header. v2: `iss`
/// `https://login.microsoftonline.com/{tid}/v2.0`, `aud` the resource app's client id, `azp`,
/// `azpacr`, `ver` `2.0`. Both: `iat`, `nbf`, `exp`, `tid`, `oid`, `sub` (= `oid`), `idtyp`
/// `app`, `roles` (when granted), `aio`, `rh`, `uti`, `xms_cc` (when CP1 was asked).
pub(crate) fn issue_access_token(
    state: &Emulator,
    principal: Principal<'_>,
    resource_name: &str,
    resource: Resource<'_>,
    cp1: bool,
    now: OffsetDateTime,
) -> Result<Issued, crate::keys::KeyError> {
    let Some(azure) = &state.azure else {
        return Err(crate::keys::KeyError::new("no Entra key".to_owned()));
    };
    let tid = principal.tenant();
    let iat = now.unix_timestamp();
    let exp = iat + state.world.lifetimes.access_token_seconds;
    let nbf = iat - 300;
    let v2 = matches!(resource, Resource::App(app) if app.access_token_version == 2);
    let opaque = |n: usize| {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            rand::random::<[u8; 32]>().get(..n).unwrap_or_default(),
        )
    };
    let mut claims = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        claims.insert(k.to_owned(), v);
    };
    if v2 {
        let aud = match resource {
            Resource::App(app) => app.client_id.clone(),
            Resource::Microsoft(r) => r.to_owned(),
        };
        put("aud", json!(aud));
        put("iss", json!(v2_issuer(tid)));
    } else {
        put("aud", json!(resource_name));
        put("iss", json!(v1_issuer(tid)));
    }
    put("iat", json!(iat));
    put("nbf", json!(nbf));
    put("exp", json!(exp));
    put("aio", json!(opaque(24)));
    if v2 {
        put("azp", json!(principal.client_id()));
        put("azpacr", json!("2"));
    } else {
        put("appid", json!(principal.client_id()));
        put("appidacr", json!("2"));
        put("idp", json!(v1_issuer(tid)));
    }
    put("idtyp", json!("app"));
    put("oid", json!(principal.object_id()));
    put("rh", json!(format!("0.{}.", opaque(30))));
    let roles = state.world.entra_roles(principal, resource);
    if !roles.is_empty() {
        put("roles", json!(roles));
    }
    put("sub", json!(principal.object_id()));
    put("tid", json!(tid));
    put("uti", json!(opaque(16)));
    put("ver", json!(if v2 { "2.0" } else { "1.0" }));
    if cp1 {
        put("xms_cc", json!(["cp1"]));
    }
    let token = if v2 {
        azure.key.sign(&claims)?
    } else {
        azure.key.sign_with_x5t(&claims)?
    };
    Ok(Issued {
        token,
        expires_at: exp,
        not_before: nbf,
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt;
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;
    use crate::World;

    const TENANT: &str = "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
    const CALLER: &str = "c1111111-0000-4000-8000-000000000011";
    const K8S: &str = "https://kubernetes.idbridge.test";

    fn emulator() -> Arc<Emulator> {
        Emulator::new(World::builtin().unwrap(), idbridge_core::clock::system()).unwrap()
    }

    fn k8s_token(state: &Emulator, claims: Value) -> String {
        let now = state.clock.unix();
        let mut base = json!({"iss": K8S, "sub": "system:serviceaccount:default:my-app",
            "aud": "api://AzureADTokenExchange", "iat": now, "exp": now + 600});
        if let (Some(b), Some(extra)) = (base.as_object_mut(), claims.as_object()) {
            b.extend(extra.clone());
        }
        state.issuer_keys[K8S].sign(&base).unwrap()
    }

    async fn post(state: &Arc<Emulator>, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let body = serde_urlencoded::to_string(form).unwrap();
        let req = Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        let resp = router(state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn form<'a>(assertion: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", CALLER),
            ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
            ("client_assertion", assertion),
            ("scope", scope),
        ]
    }

    #[tokio::test]
    async fn issues_v1_and_v2_tokens_with_roles() {
        let state = emulator();
        let t = k8s_token(&state, json!({}));
        let path = format!("/{TENANT}/oauth2/v2.0/token");
        let (status, body) = post(
            &state,
            &path,
            &form(
                &t,
                "api://idbridge-billing/.default openid profile offline_access",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let claims =
            idbridge_core::jwt::UnverifiedJwt::parse(body["access_token"].as_str().unwrap())
                .unwrap()
                .claims;
        assert_eq!(claims["iss"], format!("https://sts.windows.net/{TENANT}/"));
        assert_eq!(claims["aud"], "api://idbridge-billing");
        assert_eq!(claims["appid"], CALLER);
        assert_eq!(claims["roles"], json!(["Billing.Read"]));
        assert!(body["expires_in"].is_i64(), "{body}");

        let (_, body) = post(&state, &path, &form(&t, "api://idbridge-reports/.default")).await;
        let claims =
            idbridge_core::jwt::UnverifiedJwt::parse(body["access_token"].as_str().unwrap())
                .unwrap()
                .claims;
        assert_eq!(claims["ver"], "2.0");
        assert_eq!(claims["aud"], "b2222222-0000-4000-8000-000000000002");
        assert_eq!(claims["azp"], CALLER);

        // v1 endpoint: `resource`, string numbers.
        let mut v1 = form(&t, "");
        v1.retain(|(k, _)| *k != "scope");
        v1.push(("resource", "https://management.azure.com/"));
        let (status, body) = post(&state, &format!("/{TENANT}/oauth2/token"), &v1).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body["expires_in"].is_string() && body["expires_on"].is_string(),
            "{body}"
        );
        assert_eq!(body["resource"], "https://management.azure.com/");
    }

    #[tokio::test]
    async fn each_refusal_has_its_code() {
        let state = emulator();
        let now = state.clock.unix();
        let path = format!("/{TENANT}/oauth2/v2.0/token");
        let scope = "api://idbridge-billing/.default";
        let good = k8s_token(&state, json!({}));
        let none = format!(
            "{}.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                br#"{"alg":"none"}"#
            ),
            good.split('.').nth(1).unwrap()
        );
        let cases: Vec<(String, String, StatusCode, u32)> = vec![
            (
                k8s_token(&state, json!({"sub": "system:serviceaccount:x:y"})),
                scope.into(),
                StatusCode::UNAUTHORIZED,
                700213,
            ),
            (
                k8s_token(&state, json!({"aud": "api://else"})),
                scope.into(),
                StatusCode::UNAUTHORIZED,
                700212,
            ),
            (
                k8s_token(&state, json!({"iat": now - 7200, "exp": now - 3600})),
                scope.into(),
                StatusCode::UNAUTHORIZED,
                700024,
            ),
            (
                k8s_token(&state, json!({"iss": "https://spire.idbridge.test"})),
                scope.into(),
                StatusCode::UNAUTHORIZED,
                700211,
            ),
            (none, scope.into(), StatusCode::BAD_REQUEST, 50027),
            (
                format!("{}x", &good[..good.len() - 1]),
                scope.into(),
                StatusCode::UNAUTHORIZED,
                700027,
            ),
            (
                good.clone(),
                "api://idbridge-billing/read".into(),
                StatusCode::BAD_REQUEST,
                1002012,
            ),
            (
                good.clone(),
                "openid".into(),
                StatusCode::BAD_REQUEST,
                70011,
            ),
            (
                good.clone(),
                "api://nobody/.default".into(),
                StatusCode::BAD_REQUEST,
                500011,
            ),
        ];
        for (assertion, scope, status, code) in cases {
            let (got, body) = post(&state, &path, &form(&assertion, &scope)).await;
            assert_eq!(
                (got, body["error_codes"][0].as_u64()),
                (status, Some(u64::from(code))),
                "{body}"
            );
            let description = body["error_description"].as_str().unwrap();
            assert!(
                description.starts_with(&format!("AADSTS{code}: ")),
                "{body}"
            );
            assert!(
                !description.contains(&assertion),
                "the assertion is quoted: {body}"
            );
        }
        let (status, body) = post(
            &state,
            "/00000000-0000-4000-8000-000000000000/oauth2/v2.0/token",
            &form(&good, scope),
        )
        .await;
        assert_eq!(
            (status, body["error_codes"][0].as_u64()),
            (StatusCode::BAD_REQUEST, Some(90002))
        );
        let mut unknown = form(&good, scope);
        unknown[1].1 = "00000000-0000-4000-8000-000000000001";
        let (_, body) = post(&state, &path, &unknown).await;
        assert_eq!(body["error"], "unauthorized_client");
        assert_eq!(body["error_codes"][0], 700016);
        let mut missing = form(&good, scope);
        missing.remove(3);
        let (status, body) = post(&state, &path, &missing).await;
        assert_eq!(
            (status, body["error_codes"][0].as_u64()),
            (StatusCode::UNAUTHORIZED, Some(7000218))
        );
    }

    #[tokio::test]
    async fn an_issuer_out_of_reach_is_50166() {
        let mut world = World::builtin().unwrap();
        let caller = world
            .entra_apps
            .iter_mut()
            .find(|a| a.client_id == CALLER)
            .unwrap();
        caller
            .federated_credentials
            .push(azure::FederatedCredential {
                name: "offline-issuer".into(),
                issuer: "https://oidc.unreachable.example".into(),
                subject: "workload".into(),
                audiences: vec!["api://AzureADTokenExchange".into()],
            });
        let state = Emulator::new(world, idbridge_core::clock::system()).unwrap();
        let assertion = k8s_token(
            &state,
            json!({"iss": "https://oidc.unreachable.example", "sub": "workload"}),
        );
        let path = format!("/{TENANT}/oauth2/v2.0/token");
        let (status, body) = post(
            &state,
            &path,
            &form(&assertion, "api://idbridge-billing/.default"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(body["error_codes"], json!([50166]));
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS50166: Request to External OIDC endpoint failed.\r\n"),
            "{body}"
        );
    }
}
