//! JSON Web Key sets: finding an issuer's keys and checking a JWT's signature against them,
//! with an algorithm allowlist. One implementation for every verifier (the emulator's STS
//! endpoints, `explain --verify`); jsonwebtoken does the cryptography.
//!
//! * [`fetch_issuer_jwks`] follows an OpenID issuer's discovery document
//!   (`ISSUER/.well-known/openid-configuration`) to its `jwks_uri`; [`fetch_jwks`] also takes a
//!   JWKS URL or a discovery document URL. The HTTP GET is the caller's (its client, timeouts
//!   and size limits), passed as a function from URL to body.
//! * [`find_key`] picks the key a token's `kid` names, skipping keys that declare another
//!   algorithm or the encryption use.
//! * [`verify_signature`] refuses an `alg` outside the allowlist **before any key is
//!   touched** (so `alg: none` and HMAC key-confusion tokens never reach a key), then checks
//!   the signature. It checks no claim: expiry, audience and issuer rules belong to the caller.

use std::future::Future;
use std::str::FromStr as _;

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Every asymmetric signature algorithm: what a verifier that knows only public keys may
/// accept (never `none`, never HMAC).
pub const ASYMMETRIC_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a signature was not accepted. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not readable.
    #[error("unreadable token header")]
    Header,
    /// `alg` is not in the allowlist (the value, shortened).
    #[error("the algorithm {0:?} is not accepted")]
    Algorithm(String),
    /// No `kid` in the header.
    #[error("the token has no kid")]
    MissingKid,
    /// No usable key has that `kid`.
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
}

/// The key of `set` a token signed with `alg` and `kid` names: a key that declares another
/// algorithm or the encryption use does not count.
pub fn find_key<'a>(set: &'a JwkSet, kid: &str, alg: &str) -> Option<&'a Jwk> {
    let jwk = set.find(kid)?;
    let alg_fits = jwk
        .common
        .key_algorithm
        .is_none_or(|declared| declared.to_string() == alg);
    let use_fits = !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
    (alg_fits && use_fits).then_some(jwk)
}

/// Checks `token`'s signature against `set`, accepting only the algorithms in `allowed`; the
/// claims, unchecked.
pub fn verify_signature(
    token: &str,
    set: &JwkSet,
    allowed: &[Algorithm],
) -> Result<Map<String, Value>, SignatureError> {
    let unverified = crate::jwt::UnverifiedJwt::parse(token).map_err(|_| SignatureError::Header)?;
    let alg = unverified
        .header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let algorithm = Algorithm::from_str(alg)
        .ok()
        .filter(|a| allowed.contains(a))
        .ok_or_else(|| SignatureError::Algorithm(alg.chars().take(64).collect()))?;
    let kid = unverified
        .header
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or(SignatureError::MissingKid)?;
    let unknown = || SignatureError::UnknownKid(kid.chars().take(128).collect());
    let jwk = find_key(set, kid, alg).ok_or_else(unknown)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| unknown())?;
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|_| SignatureError::BadSignature)
}

/// `ISSUER/.well-known/openid-configuration`.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

fn json(url: &str, body: &str) -> Result<Value, String> {
    serde_json::from_str(body).map_err(|_| format!("{url} is not JSON"))
}

fn jwks_uri(url: &str, doc: &Value) -> Result<String, String> {
    doc.get("jwks_uri")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{url} has no jwks_uri"))
}

fn jwk_set(url: &str, doc: Value) -> Result<JwkSet, String> {
    serde_json::from_value(doc).map_err(|_| format!("{url} is not a JWK set"))
}

/// An issuer's keys: its discovery document's `jwks_uri`, fetched with `get` (URL → body).
pub async fn fetch_issuer_jwks<F, Fut>(issuer: &str, get: F) -> Result<JwkSet, String>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let discovery = discovery_url(issuer);
    let doc = json(&discovery, &get(discovery.clone()).await?)?;
    let uri = jwks_uri(&discovery, &doc)?;
    jwk_set(&uri, json(&uri, &get(uri.clone()).await?)?)
}

/// The keys at `url`: a JWK set, a discovery document (its `jwks_uri`), or else an issuer
/// ([`fetch_issuer_jwks`]).
pub async fn fetch_jwks<F, Fut>(url: &str, get: F) -> Result<JwkSet, String>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let doc = match get(url.to_owned()).await {
        Ok(body) => json(url, &body).ok(),
        Err(_) => None,
    };
    match doc {
        Some(doc) if doc.get("keys").is_some() => jwk_set(url, doc),
        Some(doc) if doc.get("jwks_uri").is_some() => {
            let uri = jwks_uri(url, &doc)?;
            jwk_set(&uri, json(&uri, &get(uri.clone()).await?)?)
        }
        _ => fetch_issuer_jwks(url, get).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Value) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn token(header: Value) -> String {
        format!(
            "{}.{}.c2ln",
            b64(&header),
            b64(&serde_json::json!({"sub": "s"}))
        )
    }

    #[test]
    fn algorithms_outside_the_allowlist_are_refused_before_any_key() {
        let empty = JwkSet { keys: Vec::new() };
        for alg in ["none", "HS256", "RS384", ""] {
            let t = token(serde_json::json!({"alg": alg, "kid": "k"}));
            assert_eq!(
                verify_signature(&t, &empty, &[Algorithm::RS256, Algorithm::ES256]),
                Err(SignatureError::Algorithm(alg.to_owned())),
                "{alg}"
            );
        }
        let t = token(serde_json::json!({"alg": "RS256"}));
        assert_eq!(
            verify_signature(&t, &empty, &ASYMMETRIC_ALGORITHMS),
            Err(SignatureError::MissingKid)
        );
        let t = token(serde_json::json!({"alg": "RS256", "kid": "k"}));
        assert_eq!(
            verify_signature(&t, &empty, &ASYMMETRIC_ALGORITHMS),
            Err(SignatureError::UnknownKid("k".into()))
        );
        assert!(!ASYMMETRIC_ALGORITHMS.contains(&Algorithm::HS256));
    }
}
