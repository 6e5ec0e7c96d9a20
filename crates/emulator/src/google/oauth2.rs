//! OAuth2 token endpoint: the jwt-bearer grant with a service-account key assertion.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use idbridge_core::jwt::UnverifiedJwt;
use idbridge_wire::google::{
    JWT_BEARER_GRANT, OAUTH2_TOKEN_AUDIENCE, OAUTH2_TOKEN_AUDIENCE_V4, OAuth2TokenResponse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{json_response, oauth_error, sign_google_id_token, signing_failed};
use crate::Emulator;
use crate::state::GooglePrincipal;
use crate::world::ServiceAccount;

const INVALID_SIGNATURE: &str = "Invalid JWT Signature.";
const BAD_TIMES: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";
const ACCOUNT_NOT_FOUND: &str = "Invalid grant: account not found";
/// Longest assertion Google accepts (`exp - iat`).
const MAX_ASSERTION_SECONDS: i64 = 3600;
/// How far `iat` may be ahead of the clock.
const IAT_SKEW_SECONDS: i64 = 300;

/// `POST /token`.
pub(super) async fn token(
    State(state): State<Arc<Emulator>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.bump("google.oauth2.token");
    let Some(params) = parse_params(&headers, &body) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Could not parse the request body.",
        );
    };
    let grant_type = params
        .get("grant_type")
        .map(String::as_str)
        .unwrap_or_default();
    if grant_type != JWT_BEARER_GRANT {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("Invalid grant_type: {grant_type}"),
        );
    }
    let Some(assertion) = params.get("assertion").filter(|a| !a.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let (sa, claims) = match verify_assertion(&state, assertion) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };

    if let Some(audience) = claims
        .get("target_audience")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        return match sign_google_id_token(&state, &sa, audience, true, None) {
            Ok(id_token) => json_response(
                StatusCode::OK,
                &OAuth2TokenResponse {
                    id_token: Some(id_token),
                    ..OAuth2TokenResponse::default()
                },
            ),
            Err(e) => signing_failed(&e),
        };
    }

    let scopes: Vec<String> = claims
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    // Domain-wide delegation (`sub` naming a user) is not something these accounts have.
    if let Some(sub) = claims.get("sub").and_then(Value::as_str)
        && sub != sa.email
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
        );
    }
    let lifetime = state.world.lifetimes.access_token_seconds;
    let (access_token, expires_at) =
        state.issue_google_token(GooglePrincipal::ServiceAccount(sa.email), scopes, lifetime);
    let mut resp = json_response(
        StatusCode::OK,
        &OAuth2TokenResponse {
            access_token: Some(access_token),
            expires_in: Some((expires_at - state.clock.now()).whole_seconds()),
            token_type: Some("Bearer".to_owned()),
            id_token: None,
        },
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    resp
}

/// Form parameters (or a JSON object, which Google's endpoint also takes); first value wins.
fn parse_params(headers: &HeaderMap, body: &[u8]) -> Option<BTreeMap<String, String>> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let mut out = BTreeMap::new();
    if is_json {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        for (k, v) in map {
            if let Value::String(s) = v {
                out.insert(k, s);
            }
        }
    } else {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
        for (k, v) in pairs {
            out.entry(k).or_insert(v);
        }
    }
    Some(out)
}

/// Verifies a service-account assertion as Google does; returns the account and the claims.
fn verify_assertion(
    state: &Emulator,
    assertion: &str,
) -> Result<(ServiceAccount, Map<String, Value>), Box<Response>> {
    let invalid_grant =
        |msg: &str| Box::new(oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", msg));

    let Ok(unverified) = UnverifiedJwt::parse(assertion) else {
        return Err(invalid_grant(
            "Invalid JWT: the assertion is not a compact JWS.",
        ));
    };
    let Some(sa) = unverified
        .str_claim("iss")
        .and_then(|iss| state.world.service_account(iss))
        .filter(|sa| unverified.str_claim("iss") == Some(sa.email.as_str()))
    else {
        return Err(invalid_grant(ACCOUNT_NOT_FOUND));
    };

    // The key must be one of the issuer's own user-managed keys.
    let alg = unverified.header.get("alg").and_then(Value::as_str);
    let kid = unverified.header.get("kid").and_then(Value::as_str);
    let Some((_, pem)) = kid
        .and_then(|kid| state.world.resolved_sa_keys.get(kid))
        .filter(|(email, _)| *email == sa.email)
    else {
        return Err(invalid_grant(INVALID_SIGNATURE));
    };
    if alg != Some("RS256") {
        return Err(invalid_grant(INVALID_SIGNATURE));
    }
    let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) else {
        tracing::error!(account = %sa.email, "user-managed key of the world is not an RSA PEM");
        return Err(invalid_grant(INVALID_SIGNATURE));
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(assertion, &key, &validation) else {
        return Err(invalid_grant(INVALID_SIGNATURE));
    };
    let claims = data.claims;

    let aud = claims.get("aud").and_then(Value::as_str);
    if !matches!(aud, Some(OAUTH2_TOKEN_AUDIENCE | OAUTH2_TOKEN_AUDIENCE_V4)) {
        return Err(invalid_grant(&format!(
            "Invalid JWT: Failed audience check. The right audience is {OAUTH2_TOKEN_AUDIENCE}"
        )));
    }

    let now = state.clock.unix();
    let (Some(iat), Some(exp)) = (
        claims.get("iat").and_then(Value::as_i64),
        claims.get("exp").and_then(Value::as_i64),
    ) else {
        return Err(invalid_grant(BAD_TIMES));
    };
    let lifetime = exp - iat;
    if lifetime <= 0
        || lifetime > MAX_ASSERTION_SECONDS
        || iat > now + IAT_SKEW_SECONDS
        || exp <= now
    {
        return Err(invalid_grant(BAD_TIMES));
    }
    Ok((sa.clone(), claims))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::google::router;
    use crate::google::test_support::{T0, emulator, send};

    const KEY_FILE: &str = include_str!("../../../../examples/keys/seed004-sa-key.json");
    const SA: &str = "aws-caller@aws-bridge-prod.iam.gserviceaccount.com";
    const SA_ID: &str = "104729384756102938475";

    fn key_file() -> Value {
        serde_json::from_str(KEY_FILE).unwrap()
    }

    fn sign_with(kid: &str, claims: &Value) -> String {
        let kf = key_file();
        let key =
            EncodingKey::from_rsa_pem(kf["private_key"].as_str().unwrap().as_bytes()).unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    fn sign(claims: &Value) -> String {
        let kid = key_file()["private_key_id"].as_str().unwrap().to_owned();
        sign_with(&kid, claims)
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({
            "iss": SA,
            "aud": OAUTH2_TOKEN_AUDIENCE,
            "iat": T0,
            "exp": T0 + 3600,
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn form(pairs: &[(&str, &str)]) -> Request<Body> {
        Request::post("/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(serde_urlencoded::to_string(pairs).unwrap()))
            .unwrap()
    }

    async fn grant(assertion: &str) -> (StatusCode, Value) {
        let (emu, _) = emulator();
        let r = router(emu);
        let (resp, body) = send(
            &r,
            form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", assertion)]),
        )
        .await;
        (resp.status(), serde_json::from_str(&body).unwrap())
    }

    async fn expect_error(assertion: &str, error: &str, description: &str) {
        let (status, body) = grant(assertion).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], error, "{body}");
        assert_eq!(body["error_description"], description, "{body}");
    }

    #[tokio::test]
    async fn id_token_grant_verifies_against_published_jwks() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        let assertion = sign(&claims(
            json!({"target_audience": "https://myservice.aud.my-corp.net"}),
        ));
        let (resp, body) = send(
            &r,
            form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)]),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK, "{body}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body.get("access_token").is_none());
        let id_token = body["id_token"].as_str().unwrap();

        let (_, jwks) = send(
            &r,
            Request::get("/oauth2/v3/certs")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks).unwrap();
        let header = jsonwebtoken::decode_header(id_token).unwrap();
        let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["https://myservice.aud.my-corp.net"]);
        v.set_issuer(&["https://accounts.google.com"]);
        v.validate_exp = false;
        let c = jsonwebtoken::decode::<Value>(id_token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
            .unwrap()
            .claims;
        assert_eq!(c["sub"], SA_ID);
        assert_eq!(c["azp"], SA_ID);
        assert_eq!(c["email"], SA);
        assert_eq!(c["email_verified"], true);
        assert_eq!(c["iat"], T0);
        assert_eq!(c["exp"], T0 + 3600);
        assert_eq!(emu.count("google.oauth2.token"), 1);
    }

    #[tokio::test]
    async fn access_token_grant_issues_a_live_token() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        // The legacy audience and the v4 path work too.
        let assertion = sign(&claims(json!({
            "aud": OAUTH2_TOKEN_AUDIENCE_V4,
            "scope": "https://www.googleapis.com/auth/cloud-platform openid",
        })));
        let req = Request::post("/oauth2/v4/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(
                serde_urlencoded::to_string([
                    ("grant_type", JWT_BEARER_GRANT),
                    ("assertion", &assertion),
                ])
                .unwrap(),
            ))
            .unwrap();
        let (resp, body) = send(&r, req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        let tok = emu
            .google_token(body["access_token"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            tok.principal,
            GooglePrincipal::ServiceAccount(SA.to_owned())
        );
        assert_eq!(tok.scopes.len(), 2);
    }

    #[tokio::test]
    async fn bad_signature_is_rejected() {
        let good = sign(&claims(json!({"scope": "s"})));
        let other = sign(&claims(json!({"scope": "t"})));
        // Claims of one token with the signature of another.
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[2] = other.rsplit('.').next().unwrap();
        expect_error(&parts.join("."), "invalid_grant", INVALID_SIGNATURE).await;
    }

    #[tokio::test]
    async fn unknown_kid_is_rejected() {
        let t = sign_with(
            "0000000000000000000000000000000000000000",
            &claims(json!({"scope": "s"})),
        );
        expect_error(&t, "invalid_grant", INVALID_SIGNATURE).await;
    }

    #[tokio::test]
    async fn key_of_another_account_is_rejected() {
        let t = sign(&claims(
            json!({"scope": "s", "iss": "myapp@gcp-project.iam.gserviceaccount.com"}),
        ));
        expect_error(&t, "invalid_grant", INVALID_SIGNATURE).await;
    }

    #[tokio::test]
    async fn unknown_account_is_rejected() {
        let t = sign(&claims(
            json!({"scope": "s", "iss": "ghost@nowhere.iam.gserviceaccount.com"}),
        ));
        expect_error(&t, "invalid_grant", ACCOUNT_NOT_FOUND).await;
    }

    #[tokio::test]
    async fn wrong_audience_is_rejected() {
        let t = sign(&claims(
            json!({"scope": "s", "aud": "http://127.0.0.1:1234/token"}),
        ));
        expect_error(
            &t,
            "invalid_grant",
            "Invalid JWT: Failed audience check. The right audience is https://oauth2.googleapis.com/token",
        )
        .await;
    }

    #[tokio::test]
    async fn bad_times_are_rejected() {
        for (iat, exp) in [
            (T0, T0 + 3601),        // too long-lived
            (T0 - 7200, T0 - 3600), // expired
            (T0 + 600, T0 + 1200),  // issued in the future
            (T0, T0),               // empty window
        ] {
            let t = sign(&claims(json!({"scope": "s", "iat": iat, "exp": exp})));
            expect_error(&t, "invalid_grant", BAD_TIMES).await;
        }
        // A little clock skew is fine.
        let t = sign(&claims(
            json!({"scope": "s", "iat": T0 + 60, "exp": T0 + 3660}),
        ));
        assert_eq!(grant(&t).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn wrong_grant_type_and_missing_fields() {
        let (emu, _) = emulator();
        let r = router(emu);
        let (resp, body) = send(
            &r,
            form(&[("grant_type", "client_credentials"), ("assertion", "x")]),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "unsupported_grant_type");
        assert_eq!(
            body["error_description"],
            "Invalid grant_type: client_credentials"
        );

        let (resp, body) = send(&r, form(&[("grant_type", JWT_BEARER_GRANT)])).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(
            body["error_description"],
            "Missing required parameter: assertion"
        );

        let (status, body) = grant("not-a-jwt").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_grant");
    }

    #[tokio::test]
    async fn neither_scope_nor_audience_is_invalid_scope() {
        let t = sign(&claims(json!({})));
        expect_error(
            &t,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        )
        .await;
    }

    #[tokio::test]
    async fn errors_never_echo_the_assertion() {
        let t = sign(&claims(json!({"scope": "s", "aud": "wrong"})));
        let (_, body) = grant(&t).await;
        assert!(!body.to_string().contains(&t));
    }
}
