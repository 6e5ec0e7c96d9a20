//! The emulated Google APIs listener.
//!
//! One axum router serves what `oauth2.googleapis.com`, `iamcredentials.googleapis.com`,
//! `sts.googleapis.com` and `www.googleapis.com` serve for workload identity, validating like
//! Google does:
//!
//! | route | what |
//! |---|---|
//! | `POST /token`, `POST /oauth2/v4/token` | OAuth2 jwt-bearer grant with a service-account key assertion (below) |
//! | `POST /v1/token` | STS token exchange: AWS or OIDC credential → federated access token ([`sts`]) |
//! | `POST /v1/projects/-/serviceAccounts/{sa}:generateIdToken` | IAM Credentials ID token |
//! | `POST /v1/projects/-/serviceAccounts/{sa}:generateAccessToken` | IAM Credentials access token |
//! | `GET /oauth2/v3/certs` | JWK set of Google's ID-token signing key |
//! | `GET /oauth2/v1/certs` | `{kid: X.509 PEM}` of the same key |
//! | `GET /.well-known/openid-configuration` | Google-shaped OIDC discovery document |
//! | `GET /service_accounts/v1/metadata/x509/{email}` (also `/robot/v1/…`) | `{kid: PEM}` of a service account's user-managed keys |
//! | `GET /service_accounts/v1/metadata/jwk/{email}` | JWK set of those keys |
//!
//! # OAuth2 token endpoint
//!
//! The assertion must be RS256 with a `kid` naming a user-managed key of the account in `iss`,
//! `aud` one of Google's two token URLs (google-auth sends `https://oauth2.googleapis.com/token`
//! even when its `token_uri` points at this emulator), `exp - iat` at most 3600 s, `iat` at most
//! 300 s ahead of the clock and `exp` not passed. A `target_audience` claim yields
//! `{"id_token"}`, a `scope` claim `{"access_token","expires_in","token_type"}`. Errors are
//! `{"error","error_description"}` with status 400, worded as Google words them.
//!
//! # IAM Credentials
//!
//! The caller is the `Authorization: Bearer` access token (one this emulator issued, alive).
//! A service-account caller needs `serviceAccount:<caller>` among the next account's
//! `token_creators` (or `workload_identity_users`); a federated caller (a token from
//! `POST /v1/token`) needs a matching `principal://` / `principalSet://` member among its
//! `workload_identity_users` (`roles/iam.workloadIdentityUser`), matched with
//! [`idbridge_policy::gcp::member_matches`]. With `delegates`
//! (`projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}` each, else 400), the caller needs
//! `token_creators` membership (`iam.serviceAccounts.implicitDelegation`) on the first delegate,
//! each delegate on the next, and the last one the grant above on the target; a missing link is
//! the method's 403. Errors are `google.rpc.Status` bodies.
//!
//! # Emulator control (not a Google API)
//!
//! | route | what |
//! |---|---|
//! | `POST /_emulator/mint` | Mints a JWT with an emulator-held key. Body: `{"issuer", "sub"?, "aud"?: string or array, "lifetime_seconds"? (default 600), "iat"?, "exp"?, "claims"?: {…}}`. `issuer` is a `generate_key = true` issuer of the world, or `https://accounts.google.com` (Google's own ID-token key). `claims` are added last and may override the standard ones. Answers `{"token"}`; an issuer whose key the emulator does not hold is 404. |
//! | `GET /_emulator/stats` | The call counters, `{"google.oauth2.token": 3, …}` |
//! | `PUT`, `DELETE /_emulator/metadata/instance/attributes/{key}` | Sets (body: the value) or removes one of the VM's instance attributes, as `setMetadata` does; the metadata server's hanging GETs on it wake up. 204; 404 without a VM or (DELETE) an unknown key; 400 for a key that is not 1–128 of `[A-Za-z0-9_-]` |
//! | `GET /_emulator/issuers/{url-encoded issuer}/jwks` | The JWK set of an extra issuer (or of Google) |
//! | `GET`, `PUT /_emulator/chaos` | The fault injection in force on every listener, as JSON; `PUT` replaces it ([`crate::chaos`]) |

mod certs;
mod control;
mod iam_credentials;
mod oauth2;
pub mod sts;
mod tokeninfo;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use idbridge_wire::google::{GOOGLE_ISSUER, GoogleIdTokenClaims, OAuthError, RpcError, RpcStatus};
use serde::Serialize;

use crate::Emulator;
use crate::keys::KeyError;
use crate::world::ServiceAccount;

/// The Google APIs router (OAuth2, IAM Credentials, certificates, discovery, emulator control).
pub fn router(state: Arc<Emulator>) -> Router {
    Router::new()
        .route("/token", post(oauth2::token))
        .route("/v1/token", post(sts::token))
        .route("/tokeninfo", get(tokeninfo::get).post(tokeninfo::post))
        .route(
            "/oauth2/v3/tokeninfo",
            get(tokeninfo::get).post(tokeninfo::post),
        )
        .route("/oauth2/v4/token", post(oauth2::token))
        .route(
            "/v1/projects/{project}/serviceAccounts/{name}",
            post(iam_credentials::call),
        )
        .route("/oauth2/v3/certs", get(certs::jwks_v3))
        .route("/oauth2/v1/certs", get(certs::x509_v1))
        .route("/.well-known/openid-configuration", get(certs::discovery))
        .route(
            "/service_accounts/v1/metadata/x509/{email}",
            get(certs::sa_x509),
        )
        .route("/robot/v1/metadata/x509/{email}", get(certs::sa_x509))
        .route(
            "/service_accounts/v1/metadata/jwk/{email}",
            get(certs::sa_jwk),
        )
        .route("/_emulator/mint", post(control::mint))
        .route("/_emulator/stats", get(control::stats))
        .route(
            "/_emulator/chaos",
            get(crate::chaos::get_config).put(crate::chaos::put_config),
        )
        .route(
            "/_emulator/metadata/instance/attributes/{key}",
            put(crate::gce_metadata::set_attribute).delete(crate::gce_metadata::delete_attribute),
        )
        .route(
            "/_emulator/issuers/{issuer}/jwks",
            get(control::issuer_jwks),
        )
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested URL was not found on this server.",
        Vec::new(),
    )
}

/// A JSON response with Google's content type.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            )],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A `google.rpc.Status` error body.
pub(crate) fn rpc_error(
    code: StatusCode,
    status: &str,
    message: impl Into<String>,
    details: Vec<serde_json::Value>,
) -> Response {
    json_response(
        code,
        &RpcError {
            error: RpcStatus {
                code: code.as_u16(),
                message: message.into(),
                status: status.to_owned(),
                details,
            },
        },
    )
}

/// An OAuth-style `{"error","error_description"}` body.
pub(crate) fn oauth_error(
    code: StatusCode,
    error: &str,
    description: impl Into<String>,
) -> Response {
    let mut resp = json_response(
        code,
        &OAuthError {
            error: error.to_owned(),
            error_description: Some(description.into()),
        },
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    resp
}

/// The 500 answer for a signing failure (the cause is not a client's business).
pub(crate) fn signing_failed(e: &KeyError) -> Response {
    tracing::error!(error = %e, "emulator could not sign a token");
    rpc_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "Internal error encountered.",
        Vec::new(),
    )
}

/// What an ID token carries beyond the fixed claims.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdTokenOptions {
    /// `email` and `email_verified` (`includeEmail`, metadata `format=full`).
    pub(crate) include_email: bool,
    /// `azp` is the account's email instead of its unique id (`generateIdToken`'s
    /// `useEmailAzp`).
    pub(crate) email_azp: bool,
}

/// Signs a Google ID token for `sa`, as Google mints them for service accounts: `iss`
/// `https://accounts.google.com`, `sub` = the account's unique id, `azp` = the unique id (or
/// the email with [`IdTokenOptions::email_azp`]), `aud` = `audience`, `exp` = now + the
/// world's ID-token lifetime; `email`/`email_verified` with [`IdTokenOptions::include_email`];
/// `google` (the metadata server's `format=full` details) if given.
pub(crate) fn sign_google_id_token(
    state: &Emulator,
    sa: &ServiceAccount,
    audience: &str,
    include_email: bool,
    google: Option<serde_json::Value>,
) -> Result<String, KeyError> {
    let options = IdTokenOptions {
        include_email,
        email_azp: false,
    };
    sign_google_id_token_with(state, sa, audience, options, google)
}

/// [`sign_google_id_token`] with every option.
pub(crate) fn sign_google_id_token_with(
    state: &Emulator,
    sa: &ServiceAccount,
    audience: &str,
    options: IdTokenOptions,
    google: Option<serde_json::Value>,
) -> Result<String, KeyError> {
    let iat = state.clock.unix();
    let include_email = options.include_email;
    let claims = GoogleIdTokenClaims {
        iss: GOOGLE_ISSUER.to_owned(),
        aud: audience.to_owned(),
        azp: Some(if options.email_azp {
            sa.email.clone()
        } else {
            sa.unique_id.clone()
        }),
        sub: sa.unique_id.clone(),
        email: include_email.then(|| sa.email.clone()),
        email_verified: include_email.then_some(true),
        iat,
        exp: iat + state.world.lifetimes.id_token_seconds,
        google,
    };
    state.google_key.sign(&claims)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Shared helpers for the Google and metadata tests.

    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, Response};
    use http_body_util::BodyExt;
    use idbridge_core::clock::ManualClock;
    use tower::ServiceExt;

    use crate::{Emulator, World};

    /// 2025-01-01T00:00:00Z.
    pub(crate) const T0: i64 = 1_735_689_600;

    pub(crate) fn emulator_with(world: World) -> (Arc<Emulator>, ManualClock) {
        let clock = ManualClock::at(T0);
        let emu = Emulator::new(world, Arc::new(clock.clone())).unwrap();
        (emu, clock)
    }

    pub(crate) fn emulator() -> (Arc<Emulator>, ManualClock) {
        emulator_with(World::builtin().unwrap())
    }

    pub(crate) async fn send(router: &Router, req: Request<Body>) -> (Response<()>, String) {
        let resp = router.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            Response::from_parts(parts, ()),
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }
}
