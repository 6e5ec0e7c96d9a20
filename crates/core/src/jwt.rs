//! Reading JWT claims without trusting them.
//!
//! idbridge never *accepts* a token on the strength of this module: the clouds (and the
//! emulator, with `jsonwebtoken`) verify signatures. The broker only reads `exp` to schedule a
//! refresh and shows claims in `doctor`/`explain`, always saying they are unverified.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Why a string is not a readable JWT.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtShapeError {
    /// Not three dot-separated parts.
    #[error("not a JWT: expected three dot-separated parts")]
    Parts,
    /// A part is not base64url.
    #[error("not a JWT: the {0} is not base64url")]
    Base64(&'static str),
    /// A part is not a JSON object.
    #[error("not a JWT: the {0} is not a JSON object")]
    Json(&'static str),
}

/// Header and claims of a JWT, unverified.
#[derive(Debug, Clone)]
pub struct UnverifiedJwt {
    /// The JOSE header.
    pub header: Map<String, Value>,
    /// The claims.
    pub claims: Map<String, Value>,
}

impl UnverifiedJwt {
    /// Splits and decodes a compact JWS without checking its signature.
    pub fn parse(token: &str) -> Result<Self, JwtShapeError> {
        let mut parts = token.trim().split('.');
        let (Some(h), Some(c), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtShapeError::Parts);
        };
        Ok(Self {
            header: decode_part(h, "header")?,
            claims: decode_part(c, "payload")?,
        })
    }

    /// A string claim.
    pub fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// An integer claim (`exp`, `iat`, `nbf`).
    pub fn int_claim(&self, name: &str) -> Option<i64> {
        self.claims.get(name).and_then(Value::as_i64)
    }

    /// `exp`, if present and an integer.
    pub fn exp(&self) -> Option<i64> {
        self.int_claim("exp")
    }
}

fn decode_part(part: &str, what: &'static str) -> Result<Map<String, Value>, JwtShapeError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtShapeError::Base64(what))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtShapeError::Json(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            UnverifiedJwt::parse("abc").err(),
            Some(JwtShapeError::Parts)
        );
        assert_eq!(
            UnverifiedJwt::parse("a.b.c").err(),
            Some(JwtShapeError::Base64("header"))
        );
        assert!(UnverifiedJwt::parse("e30.e30.").is_ok());
    }
}
