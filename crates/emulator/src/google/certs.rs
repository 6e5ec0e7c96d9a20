//! Google's published keys: ID-token certificates, OIDC discovery and service-account key metadata.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idbridge_wire::google::GOOGLE_ISSUER;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::DecodingKeyKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
    RSAKeyParameters, RSAKeyType,
};
use serde_json::json;

use super::{json_response, rpc_error};
use crate::Emulator;
use crate::keys;

/// `GET /oauth2/v3/certs`.
pub(super) async fn jwks_v3(State(state): State<Arc<Emulator>>) -> Response {
    json_response(StatusCode::OK, &keys::jwks([&state.google_key]))
}

/// `GET /oauth2/v1/certs`.
pub(super) async fn x509_v1(State(state): State<Arc<Emulator>>) -> Response {
    let map = BTreeMap::from([(
        state.google_key.kid.clone(),
        state.google_key.cert_pem.clone(),
    )]);
    json_response(StatusCode::OK, &map)
}

/// The base URL clients reach this listener at: the bound address, else the `Host` header.
fn base_url(state: &Emulator, headers: &HeaderMap) -> String {
    let bound = state.endpoints().google;
    if !bound.is_empty() {
        return bound.trim_end_matches('/').to_owned();
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_default()
}

/// `GET /.well-known/openid-configuration`.
pub(super) async fn discovery(State(state): State<Arc<Emulator>>, headers: HeaderMap) -> Response {
    let base = base_url(&state, &headers);
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": GOOGLE_ISSUER,
            "authorization_endpoint": format!("{base}/o/oauth2/v2/auth"),
            "token_endpoint": format!("{base}/token"),
            "userinfo_endpoint": format!("{base}/v1/userinfo"),
            "revocation_endpoint": format!("{base}/revoke"),
            "jwks_uri": format!("{base}/oauth2/v3/certs"),
            "response_types_supported": ["code", "token", "id_token", "code token", "code id_token", "token id_token", "code token id_token", "none"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["aud", "email", "email_verified", "exp", "family_name", "given_name", "iat", "iss", "name", "picture", "sub"],
            "grant_types_supported": [
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code",
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
            ],
        }),
    )
}

/// The user-managed keys of a service account (by email or unique id): `(kid, PEM)`.
fn sa_keys<'a>(state: &'a Emulator, email: &str) -> Option<Vec<(&'a str, &'a str)>> {
    let sa = state.world.service_account(email)?;
    Some(
        state
            .world
            .resolved_sa_keys
            .iter()
            .filter(|(_, (owner, _))| *owner == sa.email)
            .map(|(kid, (_, pem))| (kid.as_str(), pem.as_str()))
            .collect(),
    )
}

fn account_not_found(email: &str) -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("Service account {email} not found."),
        Vec::new(),
    )
}

/// `GET /service_accounts/v1/metadata/x509/{email}`: `{kid: PEM}` (certificates, or public keys
/// where the world declares only the key; google-auth's verifier takes either).
pub(super) async fn sa_x509(
    State(state): State<Arc<Emulator>>,
    Path(email): Path<String>,
) -> Response {
    match sa_keys(&state, &email) {
        Some(keys) => {
            let map: BTreeMap<&str, &str> = keys.into_iter().collect();
            json_response(StatusCode::OK, &map)
        }
        None => account_not_found(&email),
    }
}

/// `GET /service_accounts/v1/metadata/jwk/{email}`: JWK set of the account's RSA keys.
pub(super) async fn sa_jwk(
    State(state): State<Arc<Emulator>>,
    Path(email): Path<String>,
) -> Response {
    match sa_keys(&state, &email) {
        Some(keys) => {
            let set = JwkSet {
                keys: keys
                    .into_iter()
                    .filter_map(|(kid, pem)| rsa_pem_to_jwk(kid, pem))
                    .collect(),
            };
            json_response(StatusCode::OK, &set)
        }
        None => account_not_found(&email),
    }
}

/// The public JWK of an RSA public-key or certificate PEM (parsed by jsonwebtoken and aws-lc-rs).
fn rsa_pem_to_jwk(kid: &str, pem: &str) -> Option<Jwk> {
    let key = DecodingKey::from_rsa_pem(pem.as_bytes()).ok()?;
    let DecodingKeyKind::SecretOrDer(der) = key.kind() else {
        return None;
    };
    let public = aws_lc_rs::rsa::PublicKey::from_der(der).ok()?;
    Some(Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::RS256),
            key_id: Some(kid.to_owned()),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::RSA(RSAKeyParameters {
            key_type: RSAKeyType::RSA,
            n: URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            e: URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::Value;

    use super::*;
    use crate::google::router;
    use crate::google::test_support::{emulator, send};

    const SA: &str = "aws-caller@aws-bridge-prod.iam.gserviceaccount.com";
    const KID: &str = "5f1c0a3e9b2d4c6e8f7a1b3c5d7e9f0a2b4c6d8e";

    async fn get_json(r: &axum::Router, path: &str) -> (StatusCode, Value) {
        let req = Request::get(path)
            .header("host", "127.0.0.1:9")
            .body(Body::empty())
            .unwrap();
        let (resp, body) = send(r, req).await;
        (resp.status(), serde_json::from_str(&body).unwrap())
    }

    #[tokio::test]
    async fn certs_and_discovery() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        let (status, v3) = get_json(&r, "/oauth2/v3/certs").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v3["keys"][0]["kid"], emu.google_key.kid);
        assert_eq!(v3["keys"][0]["alg"], "RS256");
        let (_, v1) = get_json(&r, "/oauth2/v1/certs").await;
        assert!(
            v1[&emu.google_key.kid]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );

        let (_, d) = get_json(&r, "/.well-known/openid-configuration").await;
        assert_eq!(d["issuer"], "https://accounts.google.com");
        assert_eq!(d["jwks_uri"], "http://127.0.0.1:9/oauth2/v3/certs");
        assert_eq!(d["id_token_signing_alg_values_supported"], json!(["RS256"]));

        if let Ok(mut e) = emu.endpoints.write() {
            e.google = "http://127.0.0.1:4002".to_owned();
        }
        let (_, d) = get_json(&r, "/.well-known/openid-configuration").await;
        assert_eq!(d["jwks_uri"], "http://127.0.0.1:4002/oauth2/v3/certs");
    }

    #[tokio::test]
    async fn service_account_key_metadata() {
        let (emu, _) = emulator();
        let r = router(emu);
        let (status, x509) =
            get_json(&r, &format!("/service_accounts/v1/metadata/x509/{SA}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(x509[KID].as_str().unwrap().contains("BEGIN PUBLIC KEY"));

        let (status, set) = get_json(&r, &format!("/service_accounts/v1/metadata/jwk/{SA}")).await;
        assert_eq!(status, StatusCode::OK);
        let set: JwkSet = serde_json::from_value(set).unwrap();
        let jwk = set.find(KID).unwrap();
        assert_eq!(jwk.common.key_algorithm, Some(KeyAlgorithm::RS256));
        // The JWK verifies what the key file's private key signs.
        let kf: Value = serde_json::from_str(include_str!(
            "../../../../examples/keys/seed004-sa-key.json"
        ))
        .unwrap();
        let enc =
            jsonwebtoken::EncodingKey::from_rsa_pem(kf["private_key"].as_str().unwrap().as_bytes())
                .unwrap();
        let tok = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &json!({"exp": 1}),
            &enc,
        )
        .unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.validate_exp = false;
        assert!(
            jsonwebtoken::decode::<Value>(&tok, &DecodingKey::from_jwk(jwk).unwrap(), &v).is_ok()
        );

        let (status, _) = get_json(
            &r,
            "/service_accounts/v1/metadata/jwk/nobody@x.iam.gserviceaccount.com",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = get_json(
            &r,
            "/robot/v1/metadata/x509/myapp@gcp-project.iam.gserviceaccount.com",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
}
