//! Emulator control under `/_emulator/` (not a Google API): minting test tokens, counters, JWKS
//! of extra issuers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use idbridge_wire::google::GOOGLE_ISSUER;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{json_response, rpc_error, signing_failed};
use crate::Emulator;
use crate::keys;

/// Default lifetime of a minted token.
const DEFAULT_MINT_SECONDS: i64 = 600;

/// `POST /_emulator/mint` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    issuer: String,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    lifetime_seconds: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    claims: Option<Map<String, Value>>,
}

fn bad_request(message: impl Into<String>) -> Response {
    rpc_error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        message,
        Vec::new(),
    )
}

/// `POST /_emulator/mint`.
pub(super) async fn mint(State(state): State<Arc<Emulator>>, body: Bytes) -> Response {
    state.bump("emulator.mint");
    let req: MintRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("mint: invalid request body: {e}")),
    };
    let key = if req.issuer == GOOGLE_ISSUER {
        &state.google_key
    } else {
        match state.issuer_keys.get(&req.issuer) {
            Some(k) => k,
            None => {
                return rpc_error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!(
                        "mint: the emulator holds no key for issuer {:?} (declare it with generate_key = true)",
                        req.issuer
                    ),
                    Vec::new(),
                );
            }
        }
    };
    match &req.aud {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => return bad_request("mint: `aud` must be a string or an array of strings"),
    }
    let iat = req.iat.unwrap_or_else(|| state.clock.unix());
    let exp = req
        .exp
        .unwrap_or_else(|| iat + req.lifetime_seconds.unwrap_or(DEFAULT_MINT_SECONDS));

    let mut claims = Map::new();
    claims.insert("iss".to_owned(), Value::String(req.issuer.clone()));
    if let Some(sub) = req.sub {
        claims.insert("sub".to_owned(), Value::String(sub));
    }
    if let Some(aud) = req.aud {
        claims.insert("aud".to_owned(), aud);
    }
    claims.insert("iat".to_owned(), Value::from(iat));
    claims.insert("exp".to_owned(), Value::from(exp));
    for (k, v) in req.claims.unwrap_or_default() {
        claims.insert(k, v);
    }
    match key.sign(&claims) {
        Ok(token) => json_response(StatusCode::OK, &json!({ "token": token })),
        Err(e) => signing_failed(&e),
    }
}

/// `GET /_emulator/stats`.
pub(super) async fn stats(State(state): State<Arc<Emulator>>) -> Response {
    json_response(StatusCode::OK, &state.stats_snapshot())
}

/// `GET /_emulator/issuers/{issuer}/jwks` (the issuer URL percent-encoded into one segment).
pub(super) async fn issuer_jwks(
    State(state): State<Arc<Emulator>>,
    Path(issuer): Path<String>,
) -> Response {
    if issuer == GOOGLE_ISSUER {
        return json_response(StatusCode::OK, &keys::jwks([&state.google_key]));
    }
    match state.issuer_jwks.get(&issuer) {
        Some(set) => json_response(StatusCode::OK, set),
        None => rpc_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("unknown issuer {issuer:?}"),
            Vec::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    use super::*;
    use crate::google::router;
    use crate::google::test_support::{T0, emulator, send};

    const K8S: &str = "https://kubernetes.idbridge.test";

    async fn mint_req(r: &axum::Router, body: Value) -> (StatusCode, Value) {
        let req = Request::post("/_emulator/mint")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let (resp, text) = send(r, req).await;
        (resp.status(), serde_json::from_str(&text).unwrap())
    }

    #[tokio::test]
    async fn mints_with_issuer_key_verifiable_by_its_jwks() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        let (status, body) = mint_req(
            &r,
            json!({"issuer": K8S, "sub": "system:serviceaccount:default:my-app", "aud": ["sts.amazonaws.com"], "claims": {"kubernetes.io": {"namespace": "default"}}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let token = body["token"].as_str().unwrap();

        let path = format!(
            "/_emulator/issuers/{}/jwks",
            percent_encoding::utf8_percent_encode(K8S, percent_encoding::NON_ALPHANUMERIC)
        );
        let (resp, jwks) = send(&r, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks).unwrap();
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["sts.amazonaws.com"]);
        v.validate_exp = false;
        let c = jsonwebtoken::decode::<Value>(
            token,
            &DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap(),
            &v,
        )
        .unwrap()
        .claims;
        assert_eq!(c["iss"], K8S);
        assert_eq!(c["sub"], "system:serviceaccount:default:my-app");
        assert_eq!(c["iat"], T0);
        assert_eq!(c["exp"], T0 + 600);
        assert_eq!(c["kubernetes.io"]["namespace"], "default");
    }

    #[tokio::test]
    async fn mints_odd_google_tokens_and_rejects_unknown_issuers() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        let (status, body) = mint_req(
            &r,
            json!({"issuer": "https://accounts.google.com", "sub": "1", "aud": "a", "iat": T0 - 7200, "exp": T0 - 3600}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let mut v = Validation::new(Algorithm::RS256);
        v.validate_aud = false;
        v.validate_exp = false;
        let c = jsonwebtoken::decode::<Value>(
            body["token"].as_str().unwrap(),
            emu.google_key.decoding_key(),
            &v,
        )
        .unwrap()
        .claims;
        assert_eq!(c["exp"], T0 - 3600);

        let (status, _) = mint_req(&r, json!({"issuer": "https://nobody.example"})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = mint_req(&r, json!({"issuer": K8S, "aud": 5})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = mint_req(&r, json!({"issuer": K8S, "colour": "red"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (resp, text) = send(
            &r,
            Request::get("/_emulator/stats")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let stats: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(stats["emulator.mint"], 4);

        let (resp, _) = send(
            &r,
            Request::get("/_emulator/issuers/https%3A%2F%2Fnobody.example/jwks")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
