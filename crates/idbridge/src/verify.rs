//! Verifying a JWT's signature for `explain --verify`: against a JWKS file, a JWKS URL, or an
//! issuer (its `/.well-known/openid-configuration` → `jwks_uri`). Uses jsonwebtoken.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};

async fn fetch_json(url: &str) -> Result<serde_json::Value, String> {
    let resp = reqwest::get(url)
        .await
        .map_err(|e| format!("--verify: cannot fetch {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("--verify: {url} answered HTTP {}", resp.status()));
    }
    resp.json()
        .await
        .map_err(|_| format!("--verify: {url} did not answer JSON"))
}

async fn load_jwks(source: &str) -> Result<JwkSet, String> {
    let value = if source.starts_with("http://") || source.starts_with("https://") {
        let v = fetch_json(source).await;
        match v {
            Ok(v) if v.get("keys").is_some() => v,
            Ok(v) if v.get("jwks_uri").is_some() => {
                fetch_json(v["jwks_uri"].as_str().unwrap_or_default()).await?
            }
            _ => {
                let disco = format!(
                    "{}/.well-known/openid-configuration",
                    source.trim_end_matches('/')
                );
                let d = fetch_json(&disco).await?;
                let uri = d["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| format!("--verify: {disco} has no jwks_uri"))?;
                fetch_json(uri).await?
            }
        }
    } else {
        let text = std::fs::read_to_string(source)
            .map_err(|e| format!("--verify: cannot read {source}: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("--verify: {source} is not JSON: {e}"))?
    };
    serde_json::from_value(value).map_err(|e| format!("--verify: not a JWK set: {e}"))
}

/// Verifies the signature (not audience or expiry: `explain` reports those itself).
pub(crate) async fn verify(token: &str, source: &str) -> Result<(), String> {
    let header =
        decode_header(token).map_err(|e| format!("--verify: unreadable token header: {e}"))?;
    let set = load_jwks(source).await?;
    let kid = header
        .kid
        .as_deref()
        .ok_or("--verify: the token has no kid")?;
    let jwk = set
        .find(kid)
        .ok_or_else(|| format!("--verify: no key with kid {kid:?} in {source}"))?;
    let key =
        DecodingKey::from_jwk(jwk).map_err(|e| format!("--verify: unusable key {kid:?}: {e}"))?;
    let mut v = Validation::new(header.alg);
    v.validate_aud = false;
    v.validate_exp = false;
    v.required_spec_claims.clear();
    decode::<serde_json::Value>(token, &key, &v)
        .map(|_| ())
        .map_err(|e| format!("--verify: signature check failed: {e}"))
}
