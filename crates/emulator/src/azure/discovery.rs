//! Entra ID's discovery documents: OpenID configuration (v2 and v1), the signing keys and
//! MSAL's instance discovery.
//!
//! * `GET /{tenant}/v2.0/.well-known/openid-configuration`: `issuer`
//!   `<scheme>://<host>/{tid}/v2.0`, with this listener's scheme and the request's `Host`
//!   (MSAL checks that the issuer's host is the authority's host), `token_endpoint`,
//!   `authorization_endpoint`, `jwks_uri` (`/{tid}/discovery/v2.0/keys`) and the fields a real
//!   tenant lists. An unknown tenant is 400 with AADSTS90002.
//! * `GET /{tenant}/.well-known/openid-configuration`: the v1 form, `issuer`
//!   `https://sts.windows.net/{tid}/` and `jwks_uri` `/common/discovery/keys`.
//! * `GET /{tenant}/discovery/v2.0/keys`, `/{tenant}/discovery/keys` (`common` included): the
//!   JWK set of the Entra key (`kid`, `x5t`, `x5c`, `n`, `e`).
//! * `GET /common/discovery/instance?api-version=…&authorization_endpoint=<url>`: the
//!   `tenant_discovery_endpoint` of that authority on this host and `metadata` naming this host
//!   as its own alias (MSAL otherwise asks the public cloud about an unknown host). Without
//!   `authorization_endpoint` it is 400 `invalid_instance`.
//!
//! The tokens themselves carry the real issuer strings (`https://sts.windows.net/{tid}/`,
//! `https://login.microsoftonline.com/{tid}/v2.0`), so trust configured against them in AWS or
//! Google reads as in production.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::token::{EntraError, correlation_id};
use super::{EntraTenant, op, v1_issuer};
use crate::Emulator;

/// The router of the discovery documents; `https` is this listener's scheme.
pub fn router(state: Arc<Emulator>, https: bool) -> Router {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_v2),
        )
        .route("/{tenant}/.well-known/openid-configuration", get(openid_v1))
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .route("/{tenant}/discovery/keys", get(keys))
        .route("/common/discovery/instance", get(instance))
        .with_state((state, https))
}

type St = State<(Arc<Emulator>, bool)>;

/// `<scheme>://<host>` of this request.
fn base(headers: &HeaderMap, https: bool) -> String {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("{}://{host}", if https { "https" } else { "http" })
}

fn tenant_or_error<'a>(
    state: &'a Emulator,
    tenant: &str,
    headers: &HeaderMap,
) -> Result<&'a EntraTenant, Box<Response>> {
    state.world.entra_tenant(tenant).ok_or_else(|| {
        Box::new(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            format!(
                "Tenant '{}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
                crate::short(tenant, 64)
            ),
        )
        .respond(state.clock.now(), &correlation_id(headers)))
    })
}

async fn openid_v2(
    State((state, https)): St,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    state.bump(&op("entra.openid_configuration"));
    let t = match tenant_or_error(&state, &tenant, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let b = base(&headers, https);
    let tid = &t.id;
    axum::Json(json!({
        "token_endpoint": format!("{b}/{tid}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{b}/{tid}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{b}/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{b}/{tid}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{b}/{tid}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{b}/{tid}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "tenant_region_scope": Value::Null,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }))
    .into_response()
}

async fn openid_v1(
    State((state, https)): St,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    state.bump(&op("entra.openid_configuration"));
    let t = match tenant_or_error(&state, &tenant, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let b = base(&headers, https);
    let tid = &t.id;
    axum::Json(json!({
        "token_endpoint": format!("{b}/{tid}/oauth2/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{b}/common/discovery/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "scopes_supported": ["openid"],
        "issuer": v1_issuer(tid),
        "microsoft_multi_refresh_token": true,
        "authorization_endpoint": format!("{b}/{tid}/oauth2/authorize"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{b}/{tid}/oauth2/logout"),
        "tenant_region_scope": Value::Null,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }))
    .into_response()
}

async fn keys(State((state, _)): St, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    state.bump(&op("entra.keys"));
    if tenant != "common"
        && let Err(r) = tenant_or_error(&state, &tenant, &headers)
    {
        return *r;
    }
    axum::Json(jwks(&state)).into_response()
}

/// The JWK set of Entra's signing key, with `x5t` and `x5c` as Entra publishes them.
pub fn jwks(state: &Emulator) -> Value {
    let Some(azure) = &state.azure else {
        return json!({"keys": []});
    };
    let mut jwk = serde_json::to_value(&azure.key.jwk).unwrap_or(Value::Null);
    let der_b64: String = azure
        .key
        .cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    if let Some(obj) = jwk.as_object_mut() {
        obj.insert("x5t".to_owned(), json!(azure.key.kid));
        obj.insert("x5c".to_owned(), json!([der_b64]));
    }
    json!({ "keys": [jwk] })
}

#[derive(Debug, serde::Deserialize)]
struct InstanceQuery {
    authorization_endpoint: Option<String>,
}

async fn instance(
    State((state, https)): St,
    Query(q): Query<InstanceQuery>,
    headers: HeaderMap,
) -> Response {
    state.bump(&op("entra.instance_discovery"));
    let b = base(&headers, https);
    let host = b.split("://").nth(1).unwrap_or_default().to_owned();
    let tenant = q
        .authorization_endpoint
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.path_segments()?.next().map(str::to_owned))
        .filter(|t| !t.is_empty());
    let Some(tenant) = tenant else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "error": "invalid_instance",
                "error_description": "AADSTS50049: Unknown or invalid instance.",
                "error_codes": [50049],
            })),
        )
            .into_response();
    };
    axum::Json(json!({
        "tenant_discovery_endpoint": format!("{b}/{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": "1.1",
        "metadata": [{
            "preferred_network": host,
            "preferred_cache": host,
            "aliases": [host],
        }],
    }))
    .into_response()
}
