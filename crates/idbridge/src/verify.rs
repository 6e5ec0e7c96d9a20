//! Verifying a JWT's signature for `explain --verify`: against a JWKS file, a JWKS URL, or an
//! issuer (its `/.well-known/openid-configuration` → `jwks_uri`). Uses jsonwebtoken.

use idbridge_core::jwks::{ASYMMETRIC_ALGORITHMS, fetch_jwks, verify_signature};
use jsonwebtoken::jwk::JwkSet;

/// GET `url`'s body.
async fn get(url: String) -> Result<String, String> {
    let resp = reqwest::get(&url)
        .await
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered HTTP {}", resp.status()));
    }
    resp.text()
        .await
        .map_err(|e| format!("cannot fetch {url}: {e}"))
}

async fn load_jwks(source: &str) -> Result<JwkSet, String> {
    if source.starts_with("http://") || source.starts_with("https://") {
        return fetch_jwks(source, get)
            .await
            .map_err(|e| format!("--verify: {e}"));
    }
    let text = std::fs::read_to_string(source)
        .map_err(|e| format!("--verify: cannot read {source}: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("--verify: {source} is not JSON: {e}"))?;
    serde_json::from_value(value).map_err(|e| format!("--verify: not a JWK set: {e}"))
}

/// Verifies the signature, with an asymmetric algorithm (not audience or expiry: `explain`
/// reports those itself).
pub(crate) async fn verify(token: &str, source: &str) -> Result<(), String> {
    let set = load_jwks(source).await?;
    verify_signature(token, &set, &ASYMMETRIC_ALGORITHMS)
        .map(drop)
        .map_err(|e| format!("--verify: {e} ({source})"))
}

#[cfg(test)]
mod tests {
    use idbridge_emulator::keys::{SigningKey, jwks};

    use super::*;

    #[tokio::test]
    async fn a_jwks_file_verifies_its_keys_tokens_and_refuses_others() {
        let key = SigningKey::generate_rsa("verify-test").unwrap();
        let other = SigningKey::generate_rsa("verify-other").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, serde_json::to_string(&jwks([&key])).unwrap()).unwrap();
        let source = path.to_str().unwrap();
        let claims = serde_json::json!({"iss": "https://issuer.example", "sub": "s"});

        verify(&key.sign(&claims).unwrap(), source).await.unwrap();
        let err = verify(&other.sign(&claims).unwrap(), source)
            .await
            .unwrap_err();
        assert!(err.contains("no key with kid"), "{err}");
        // Same header and claims, another key's signature.
        let good = key.sign(&claims).unwrap();
        let forged = format!(
            "{}.{}",
            good.rsplit_once('.').unwrap().0,
            other.sign(&claims).unwrap().rsplit_once('.').unwrap().1
        );
        let err = verify(&forged, source).await.unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        // An HMAC token is refused by its algorithm, before any key is used.
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header {
                kid: Some(key.kid.clone()),
                ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
            },
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"public key bytes"),
        )
        .unwrap();
        let err = verify(&hs, source).await.unwrap_err();
        assert!(err.contains("\"HS256\" is not accepted"), "{err}");
    }
}
