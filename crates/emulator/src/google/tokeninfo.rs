//! `GET|POST /tokeninfo` (oauth2.googleapis.com): what an access token is.
//!
//! The token is the `access_token` parameter (query string, or form body of a POST), or else the
//! `Authorization: Bearer` header: google-auth-library (Node) `getTokenInfo()` POSTs an empty
//! body with the token in the header. A POST body is read whatever its `Content-Type`.
//!
//! Answers `{"azp","aud","sub","scope","exp","expires_in","email","email_verified","access_type"}`
//! for a live token the emulator issued (for a federated token, `sub` is the `principal://`
//! identifier and there is no email), and `400 {"error":"invalid_token","error_description":
//! "Invalid Value"}` otherwise — Google's own answer for unknown or expired tokens.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use crate::Emulator;
use crate::state::GooglePrincipal;

/// GET with `?access_token=` or `Authorization: Bearer`.
pub(super) async fn get(
    State(state): State<Arc<Emulator>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let token = q.get("access_token").cloned().or_else(|| bearer(&headers));
    answer(&state, token.as_deref())
}

/// POST with a form `access_token=` (or `?access_token=`), or `Authorization: Bearer`.
pub(super) async fn post(
    State(state): State<Arc<Emulator>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let token = form
        .get("access_token")
        .or_else(|| q.get("access_token"))
        .cloned()
        .or_else(|| bearer(&headers));
    answer(&state, token.as_deref())
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

fn answer(state: &Emulator, token: Option<&str>) -> Response {
    state.bump("google.oauth2.tokeninfo");
    let Some(info) = token.and_then(|t| state.google_token(t)) else {
        return super::oauth_error(StatusCode::BAD_REQUEST, "invalid_token", "Invalid Value");
    };
    let expires_in = (info.expires_at - state.clock.now()).whole_seconds().max(0);
    let body = match &info.principal {
        GooglePrincipal::ServiceAccount(email) => {
            let id = state
                .world
                .service_account(email)
                .map(|s| s.unique_id.clone())
                .unwrap_or_default();
            json!({
                "azp": id, "aud": id, "sub": id,
                "scope": info.scopes.join(" "),
                "exp": info.expires_at.unix_timestamp().to_string(),
                "expires_in": expires_in.to_string(),
                "email": email, "email_verified": "true", "access_type": "online",
            })
        }
        GooglePrincipal::Federated { principal, .. } => json!({
            "sub": principal,
            "scope": info.scopes.join(" "),
            "exp": info.expires_at.unix_timestamp().to_string(),
            "expires_in": expires_in.to_string(),
            "access_type": "online",
        }),
    };
    super::json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;

    use super::super::test_support::{emulator, send};
    use super::*;

    #[tokio::test]
    async fn describes_live_tokens_and_refuses_others() {
        let (state, _clock) = emulator();
        let (token, _) = state.issue_google_token(
            GooglePrincipal::ServiceAccount("myapp@gcp-project.iam.gserviceaccount.com".into()),
            vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            600,
        );
        let router = crate::google::router(state.clone());
        let req = Request::post("/tokeninfo")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("access_token={token}")))
            .unwrap();
        let (resp, body) = send(&router, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["email"], "myapp@gcp-project.iam.gserviceaccount.com");
        assert_eq!(v["sub"], "100367186111111111111");
        let req = Request::get("/tokeninfo?access_token=ya29.nope")
            .body(Body::empty())
            .unwrap();
        let (resp, body) = send(&router, req).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(body.contains("invalid_token"), "{body}");

        // google-auth-library's getTokenInfo(): the token in the header, an empty POST body.
        for req in [
            Request::post("/tokeninfo")
                .header(
                    "content-type",
                    "application/x-www-form-urlencoded;charset=UTF-8",
                )
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
            Request::post("/tokeninfo")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
            Request::get("/oauth2/v3/tokeninfo")
                .header("authorization", format!("bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        ] {
            let (resp, body) = send(&router, req).await;
            assert_eq!(resp.status(), StatusCode::OK, "{body}");
            assert!(body.contains("myapp@gcp-project"), "{body}");
        }
        let req = Request::post("/tokeninfo")
            .header("authorization", "Bearer ya29.nope")
            .body(Body::empty())
            .unwrap();
        let (resp, body) = send(&router, req).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(body.contains("invalid_token"), "{body}");
    }
}
