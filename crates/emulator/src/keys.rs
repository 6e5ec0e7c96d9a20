//! Signing keys held by the emulated clouds.
//!
//! Keys are generated at start-up (RSA-2048 through rcgen on aws-lc-rs) and published the way
//! Google publishes its own: a JWK set (`/oauth2/v3/certs`) and a `{kid: X.509 PEM}` map
//! (`/oauth2/v1/certs`), so any third-party verifier (google-auth, PyJWT) can check what the
//! emulator signs. Signing and verification go through `jsonwebtoken`; nothing here is
//! hand-written crypto.

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

/// Failure to create or use a key.
#[derive(Debug, thiserror::Error)]
#[error("emulator key error: {0}")]
pub struct KeyError(String);

impl KeyError {
    /// An error with `message`.
    pub(crate) fn new(message: String) -> Self {
        KeyError(message)
    }
}

/// A private signing key with its public forms.
pub struct SigningKey {
    /// Key id (`kid`).
    pub kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Public JWK (with `kid`, `alg`, `use`).
    pub jwk: Jwk,
    /// Self-signed certificate of the public key, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM (only for emulator-held test issuers).
    private_pem: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates an RSA-2048 key with a random `kid`, certified for `subject`.
    pub fn generate_rsa(subject: &str) -> Result<Self, KeyError> {
        let kp =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .map_err(|e| KeyError(e.to_string()))?;
        let private_pem = kp.serialize_pem();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| KeyError(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, subject);
        let cert = params
            .self_signed(&kp)
            .map_err(|e| KeyError(e.to_string()))?;
        let kid = hex::encode(rand::random::<[u8; 20]>());
        Self::from_parts(kid, &private_pem, cert.pem(), &kp.public_key_pem())
    }

    fn from_parts(
        kid: String,
        private_pem: &str,
        cert_pem: String,
        public_pem: &str,
    ) -> Result<Self, KeyError> {
        let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes())
            .map_err(|e| KeyError(e.to_string()))?;
        let decoding = DecodingKey::from_rsa_pem(public_pem.as_bytes())
            .map_err(|e| KeyError(e.to_string()))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .map_err(|e| KeyError(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self {
            kid,
            encoding,
            decoding,
            jwk,
            cert_pem,
            private_pem: zeroize::Zeroizing::new(private_pem.to_owned()),
        })
    }

    /// Signs `claims` as an RS256 JWT with this key's `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| KeyError(e.to_string()))
    }

    /// The verification key.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The private key PEM (emulator-held test issuers only).
    pub fn private_pem(&self) -> &str {
        &self.private_pem
    }
}

/// A JWK set of the given keys.
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> JwkSet {
    JwkSet {
        keys: keys.into_iter().map(|k| k.jwk.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let k = SigningKey::generate_rsa("test").unwrap();
        let tok = k
            .sign(&serde_json::json!({"sub": "x", "exp": 4_000_000_000i64}))
            .unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
        v.validate_aud = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(&tok, k.decoding_key(), &v).unwrap();
        assert_eq!(data.claims["sub"], "x");
        let from_jwk = DecodingKey::from_jwk(&k.jwk).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&tok, &from_jwk, &v).is_ok());
        assert!(!format!("{k:?}").contains("PRIVATE"));
    }
}
