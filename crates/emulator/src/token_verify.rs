//! Verifying third-party JWTs (OIDC ID tokens) against the issuer keys the emulator trusts.
//!
//! Used by the emulated AWS STS (`AssumeRoleWithWebIdentity`) and reusable by an emulated Google
//! STS. [`verify_jwt`] checks, in this order, and stops at the first failure:
//!
//! 1. the token is a compact JWS (three base64url parts, JSON header and payload);
//! 2. the header `alg` is one of [`VerifyOptions::algorithms`] (by default AWS's list: RS256,
//!    RS384, RS512, ES256, ES384). This happens **before any key is touched**, so `alg: none`
//!    and HMAC tokens — including the key-confusion attack, an HS256 token whose HMAC secret is
//!    the issuer's public key — are refused outright;
//! 3. the unverified `iss` names a trusted issuer: `https://accounts.google.com` or
//!    `accounts.google.com` → the emulator's Google key ([`Emulator::google_key`]); an issuer in
//!    [`Emulator::issuer_jwks`] → its JWK set; nothing else (with [`verify_jwt_with_jwks`]:
//!    exactly the issuer the caller names, with the JWK set it gives);
//! 4. the header `kid` names a key of that issuer (a JWK that declares another `alg` or the
//!    `enc` use does not count);
//! 5. the signature verifies (`jsonwebtoken`, no hand-written crypto);
//! 6. `exp` is present and `exp`, `iat`, `nbf` are integers (AWS: "Timestamps in the token must
//!    be formatted as either an integer or a long integer"); the token has not expired, is
//!    not used before `nbf`, and was not issued in the future — each with at most
//!    [`VerifyOptions::leeway_secs`] of clock skew; optionally `exp - iat` is bounded;
//! 7. the required claims (`sub`, `aud` by default) are present.
//!
//! Time comes from the caller (the emulator's clock), never from the system clock. Errors name
//! what failed but never contain the token or its claims.

use std::str::FromStr;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::{Emulator, short};

/// Google's issuer as Google writes it in ID tokens.
pub use idbridge_wire::google::GOOGLE_ISSUER;

/// The bare host form of Google's issuer, which Google also accepts in `iss`.
pub const GOOGLE_ISSUER_HOST: &str = "accounts.google.com";

/// Clock skew tolerated on `exp`, `nbf` and `iat`: at most five minutes, the usual allowance
/// between an IdP's clock and a relying party's.
pub const DEFAULT_LEEWAY_SECS: i64 = 300;

/// Longest token considered at all (AWS's own limit for `WebIdentityToken` is 20,000 chars).
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Client-chosen text (an `alg`, an issuer) is quoted in messages up to this many characters.
const MAX_QUOTED: usize = 256;

/// Which kind of issuer signed a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerKind {
    /// Google (`accounts.google.com`), a provider built into AWS.
    Google,
    /// Any other OpenID Connect issuer declared in the world.
    Oidc,
}

/// What [`verify_jwt`] accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accepted header `alg` values. Never put an HMAC algorithm here: the issuers' keys are
    /// public.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: i64,
    /// Longest `exp - iat` accepted (Google STS: 48 h); `None` leaves it unchecked.
    pub max_lifetime_secs: Option<i64>,
    /// Claims that must be present (and non-empty), e.g. `sub`, `aud`.
    pub required_claims: Vec<&'static str>,
}

impl VerifyOptions {
    /// AWS STS `AssumeRoleWithWebIdentity`: RSA or ECDSA signatures, five minutes of skew,
    /// `sub` and `aud` required. (AWS also lists ES512, which `jsonwebtoken` cannot verify; such
    /// tokens are refused with [`TokenError::UnsupportedAlgorithm`].)
    pub fn aws_sts() -> Self {
        VerifyOptions {
            algorithms: vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::ES256,
                Algorithm::ES384,
            ],
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_lifetime_secs: None,
            required_claims: vec!["sub", "aud"],
        }
    }
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self::aws_sts()
    }
}

/// A token whose signature and timestamps checked out.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// `iss`, as written in the token.
    pub issuer: String,
    /// Which kind of issuer signed it.
    pub kind: IssuerKind,
    /// The header `alg`.
    pub algorithm: Algorithm,
    /// The header `kid`.
    pub kid: String,
    /// `sub` (empty when not required and absent).
    pub subject: String,
    /// `aud`, one or more values (empty when not required and absent).
    pub audiences: Vec<String>,
    /// `azp`, when present.
    pub authorized_party: Option<String>,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
    /// `iat`, Unix seconds, when present.
    pub issued_at: Option<i64>,
    /// Every claim of the payload.
    pub claims: Map<String, Value>,
}

/// Why a token was rejected. Messages never contain the token or its claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a compact JWS with a JSON header and payload.
    #[error("the token is not a JWT: {0}")]
    Malformed(&'static str),
    /// The header `alg` is not accepted (e.g. `none`, `HS256`).
    #[error("the token's signing algorithm {0:?} is not accepted")]
    UnsupportedAlgorithm(String),
    /// No `iss` string.
    #[error("the token has no iss claim")]
    MissingIssuer,
    /// `iss` is not a trusted issuer.
    #[error("no trusted OpenID Connect provider for issuer {0}")]
    UnknownIssuer(String),
    /// The header has no `kid`.
    #[error("the token header has no kid")]
    MissingKid,
    /// No key of the issuer has that `kid` (or the key may not verify this `alg`).
    #[error("no verification key of the issuer matches the token's kid")]
    UnknownKid,
    /// The signature does not verify with the issuer's key.
    #[error("the token signature does not verify")]
    BadSignature,
    /// A timestamp claim is not an integer.
    #[error("the {0} claim is not an integer")]
    NonIntegerTimestamp(&'static str),
    /// No `exp`.
    #[error("the token has no exp claim")]
    MissingExpiry,
    /// `exp` has passed.
    #[error("the token expired at {exp} (now {now})")]
    Expired {
        /// `exp`.
        exp: i64,
        /// The verifier's time.
        now: i64,
    },
    /// `nbf` is in the future.
    #[error("the token is not valid before {nbf} (now {now})")]
    NotYetValid {
        /// `nbf`.
        nbf: i64,
        /// The verifier's time.
        now: i64,
    },
    /// `iat` is in the future.
    #[error("the token was issued in the future, at {iat} (now {now})")]
    IssuedInFuture {
        /// `iat`.
        iat: i64,
        /// The verifier's time.
        now: i64,
    },
    /// `exp - iat` exceeds [`VerifyOptions::max_lifetime_secs`].
    #[error("the token lifetime of {lifetime} s exceeds the maximum of {max} s")]
    LifetimeTooLong {
        /// `exp - iat`.
        lifetime: i64,
        /// The maximum.
        max: i64,
    },
    /// A required claim is absent or empty.
    #[error("the token has no {0} claim")]
    MissingClaim(&'static str),
}

/// The verification key chosen for a token.
enum Key<'a> {
    Google(&'a DecodingKey),
    Jwk(&'a Jwk),
}

/// Verifies `token` against the issuers `state` trusts, at Unix time `now`. See the module
/// documentation for the checks and their order.
pub fn verify_jwt(
    state: &Emulator,
    token: &str,
    now: i64,
    opts: &VerifyOptions,
) -> Result<VerifiedToken, TokenError> {
    verify_with(token, now, opts, |issuer| {
        if issuer == GOOGLE_ISSUER || issuer == GOOGLE_ISSUER_HOST {
            Ok((IssuerKind::Google, Keys::Google(&state.google_key)))
        } else if let Some(set) = state.issuer_jwks.get(issuer) {
            Ok((IssuerKind::Oidc, Keys::Set(set)))
        } else {
            Err(TokenError::UnknownIssuer(short(issuer, MAX_QUOTED)))
        }
    })
}

/// Verifies `token` like [`verify_jwt`], but trusting only `issuer`, with the keys of `jwks`
/// (e.g. a JWK set configured on a workload identity provider, or fetched from the issuer's
/// `jwks_uri`). A token from any other issuer is [`TokenError::UnknownIssuer`].
pub fn verify_jwt_with_jwks(
    token: &str,
    issuer: &str,
    jwks: &JwkSet,
    now: i64,
    opts: &VerifyOptions,
) -> Result<VerifiedToken, TokenError> {
    verify_with(token, now, opts, |iss| {
        if iss != issuer {
            Err(TokenError::UnknownIssuer(short(iss, MAX_QUOTED)))
        } else if iss == GOOGLE_ISSUER || iss == GOOGLE_ISSUER_HOST {
            Ok((IssuerKind::Google, Keys::Set(jwks)))
        } else {
            Ok((IssuerKind::Oidc, Keys::Set(jwks)))
        }
    })
}

/// Where the keys of a token's issuer come from.
enum Keys<'a> {
    /// The emulator's Google key.
    Google(&'a crate::keys::SigningKey),
    /// A JWK set.
    Set(&'a JwkSet),
}

/// The checks of [`verify_jwt`]; `keys_for` maps the token's (unverified) issuer to its keys.
fn verify_with<'k>(
    token: &str,
    now: i64,
    opts: &VerifyOptions,
    keys_for: impl FnOnce(&str) -> Result<(IssuerKind, Keys<'k>), TokenError>,
) -> Result<VerifiedToken, TokenError> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let unverified = idbridge_core::jwt::UnverifiedJwt::parse(token).map_err(|e| {
        TokenError::Malformed(match e {
            idbridge_core::jwt::JwtShapeError::Parts => "expected three dot-separated parts",
            idbridge_core::jwt::JwtShapeError::Base64(_) => "a part is not base64url",
            idbridge_core::jwt::JwtShapeError::Json(_) => "a part is not a JSON object",
        })
    })?;

    // 2. The algorithm, before anything else: a refused alg never reaches a key.
    let alg_name = unverified
        .header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let algorithm = Algorithm::from_str(alg_name)
        .ok()
        .filter(|a| opts.algorithms.contains(a))
        .ok_or_else(|| TokenError::UnsupportedAlgorithm(short(alg_name, MAX_QUOTED)))?;

    // 3. The issuer, from the unverified payload (only to choose the keys).
    let issuer = unverified
        .str_claim("iss")
        .ok_or(TokenError::MissingIssuer)?
        .to_owned();
    let (kind, keys) = keys_for(&issuer)?;

    // 4. The key.
    let kid = unverified
        .header
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or(TokenError::MissingKid)?
        .to_owned();
    let key = match keys {
        Keys::Google(google) if google.kid == kid => Key::Google(google.decoding_key()),
        Keys::Google(_) => return Err(TokenError::UnknownKid),
        Keys::Set(set) => Key::Jwk(
            idbridge_core::jwks::find_key(set, &kid, alg_name).ok_or(TokenError::UnknownKid)?,
        ),
    };

    // 5. The signature. Claims are checked below, against the injected clock.
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let owned;
    let decoding_key = match key {
        Key::Google(k) => k,
        Key::Jwk(jwk) => {
            owned = DecodingKey::from_jwk(jwk).map_err(|_| TokenError::UnknownKid)?;
            &owned
        }
    };
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, decoding_key, &validation)
        .map_err(|_| TokenError::BadSignature)?
        .claims;

    // 6. Timestamps.
    let exp = int_claim(&claims, "exp")?.ok_or(TokenError::MissingExpiry)?;
    let iat = int_claim(&claims, "iat")?;
    let nbf = int_claim(&claims, "nbf")?;
    let leeway = opts.leeway_secs;
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired { exp, now });
    }
    if let Some(nbf) = nbf
        && nbf > now.saturating_add(leeway)
    {
        return Err(TokenError::NotYetValid { nbf, now });
    }
    if let Some(iat) = iat
        && iat > now.saturating_add(leeway)
    {
        return Err(TokenError::IssuedInFuture { iat, now });
    }
    if let (Some(max), Some(iat)) = (opts.max_lifetime_secs, iat) {
        let lifetime = exp.saturating_sub(iat);
        if lifetime > max {
            return Err(TokenError::LifetimeTooLong { lifetime, max });
        }
    }

    // 7. Required claims.
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let audiences = idbridge_policy::azure::audiences(&claims);
    for required in &opts.required_claims {
        let present = match *required {
            "sub" => !subject.is_empty(),
            "aud" => !audiences.is_empty(),
            other => claims
                .get(other)
                .is_some_and(|v| !v.is_null() && v.as_str() != Some("")),
        };
        if !present {
            return Err(TokenError::MissingClaim(required));
        }
    }
    let authorized_party = claims.get("azp").and_then(Value::as_str).map(str::to_owned);

    Ok(VerifiedToken {
        issuer,
        kind,
        algorithm,
        kid,
        subject,
        audiences,
        authorized_party,
        expires_at: exp,
        issued_at: iat,
        claims,
    })
}

/// An integer timestamp claim: `Ok(None)` when absent, an error when present but not an integer.
fn int_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or(TokenError::NonIntegerTimestamp(name)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use idbridge_core::clock::ManualClock;
    use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::World;

    const NOW: i64 = 1_750_000_000;
    const SA: &str = "112233445566778899001";
    const K8S: &str = "https://kubernetes.idbridge.test";

    fn emulator() -> Arc<Emulator> {
        Emulator::new(World::builtin().unwrap(), Arc::new(ManualClock::at(NOW))).unwrap()
    }

    fn google_claims() -> Value {
        json!({
            "iss": GOOGLE_ISSUER, "aud": "https://sts.amazonaws.com", "azp": SA, "sub": SA,
            "email": "psoxy-tenant@saas-tenant.iam.gserviceaccount.com", "email_verified": true,
            "iat": NOW - 10, "exp": NOW + 3590,
        })
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// Signs with the emulator's Google key but a header of our choosing.
    fn google_signed(state: &Emulator, header: Header, claims: &Value) -> String {
        let key = EncodingKey::from_rsa_pem(state.google_key.private_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    fn verify(state: &Emulator, token: &str) -> Result<VerifiedToken, TokenError> {
        verify_jwt(state, token, NOW, &VerifyOptions::aws_sts())
    }

    #[test]
    fn google_token_verifies() {
        let state = emulator();
        let token = state.google_key.sign(&google_claims()).unwrap();
        let v = verify(&state, &token).unwrap();
        assert_eq!(v.kind, IssuerKind::Google);
        assert_eq!(v.subject, SA);
        assert_eq!(v.audiences, ["https://sts.amazonaws.com"]);
        assert_eq!(v.authorized_party.as_deref(), Some(SA));
        assert_eq!(v.algorithm, Algorithm::RS256);
        assert_eq!(v.expires_at, NOW + 3590);
        // The bare-host issuer form is Google too.
        let mut claims = google_claims();
        claims["iss"] = json!("accounts.google.com");
        let token = state.google_key.sign(&claims).unwrap();
        assert_eq!(verify(&state, &token).unwrap().kind, IssuerKind::Google);
    }

    #[test]
    fn oidc_issuer_token_verifies_against_its_jwks() {
        let state = emulator();
        let claims = json!({
            "iss": K8S, "aud": ["sts.amazonaws.com"], "sub": "system:serviceaccount:default:my-app",
            "iat": NOW, "nbf": NOW, "exp": NOW + 600,
        });
        let token = state.issuer_keys[K8S].sign(&claims).unwrap();
        let v = verify(&state, &token).unwrap();
        assert_eq!(v.kind, IssuerKind::Oidc);
        assert_eq!(v.audiences, ["sts.amazonaws.com"]);
        // The Google key does not vouch for the cluster's issuer.
        let forged = state.google_key.sign(&claims).unwrap();
        assert_eq!(verify(&state, &forged).unwrap_err(), TokenError::UnknownKid);
    }

    #[test]
    fn es256_issuer_from_a_declared_jwks() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let encoding = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("ec-1".to_owned());
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        let set = serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap();
        let world = World::from_str_at(
            &format!("[[oidc_issuer]]\nissuer = \"https://ec.example\"\njwks = '''{set}'''\n"),
            "test",
            None,
        )
        .unwrap();
        let state = Emulator::new(world, Arc::new(ManualClock::at(NOW))).unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec-1".to_owned());
        let claims = json!({"iss": "https://ec.example", "aud": "a", "sub": "s", "exp": NOW + 60});
        let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
        assert_eq!(verify(&state, &token).unwrap().algorithm, Algorithm::ES256);
        // The JWK is declared ES256: an RS256 header with the same kid does not select it.
        let mut rs = Header::new(Algorithm::RS256);
        rs.kid = Some("ec-1".to_owned());
        let token = format!(
            "{}.{}.c2ln",
            b64(&serde_json::to_value(&rs).unwrap()),
            b64(&claims)
        );
        assert_eq!(verify(&state, &token).unwrap_err(), TokenError::UnknownKid);
    }

    #[test]
    fn refused_algorithms_never_reach_a_key() {
        let state = emulator();
        let kid = state.google_key.kid.clone();
        // alg: none, with and without a signature part.
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": kid})),
            b64(&google_claims())
        );
        assert_eq!(
            verify(&state, &none).unwrap_err(),
            TokenError::UnsupportedAlgorithm("none".into())
        );
        // Key confusion: HS256 "signed" with the issuer's public key (as PEM public key and as
        // the published certificate). Were the public key used as an HMAC secret, these would
        // verify.
        let public_pem = rcgen::KeyPair::from_pem(state.google_key.private_pem())
            .unwrap()
            .public_key_pem();
        for secret in [public_pem.as_str(), state.google_key.cert_pem.as_str()] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.clone());
            let token = jsonwebtoken::encode(
                &header,
                &google_claims(),
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap();
            assert_eq!(
                verify(&state, &token).unwrap_err(),
                TokenError::UnsupportedAlgorithm("HS256".into())
            );
        }
        // PS256 is RSA, but not on AWS's list.
        let mut header = Header::new(Algorithm::PS256);
        header.kid = Some(kid);
        let token = google_signed(&state, header, &google_claims());
        assert_eq!(
            verify(&state, &token).unwrap_err(),
            TokenError::UnsupportedAlgorithm("PS256".into())
        );
    }

    #[test]
    fn issuer_and_kid_must_be_known() {
        let state = emulator();
        let mut claims = google_claims();
        claims["iss"] = json!("https://evil.example");
        let token = state.google_key.sign(&claims).unwrap();
        assert_eq!(
            verify(&state, &token).unwrap_err(),
            TokenError::UnknownIssuer("https://evil.example".into())
        );
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("not-a-kid".into());
        let token = google_signed(&state, header, &google_claims());
        assert_eq!(verify(&state, &token).unwrap_err(), TokenError::UnknownKid);
        let token = google_signed(&state, Header::new(Algorithm::RS256), &google_claims());
        assert_eq!(verify(&state, &token).unwrap_err(), TokenError::MissingKid);
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let state = emulator();
        let token = state.google_key.sign(&google_claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims = google_claims();
        claims["sub"] = json!("999999999999999999999");
        let swapped = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
        assert_eq!(
            verify(&state, &swapped).unwrap_err(),
            TokenError::BadSignature
        );
        let mut sig = parts[2].to_owned();
        let mid = sig.len() / 2;
        let c = if &sig[mid..=mid] == "A" { "B" } else { "A" };
        sig.replace_range(mid..=mid, c);
        let flipped = format!("{}.{}.{sig}", parts[0], parts[1]);
        assert_eq!(
            verify(&state, &flipped).unwrap_err(),
            TokenError::BadSignature
        );
        assert!(matches!(
            verify(&state, "not-a-jwt").unwrap_err(),
            TokenError::Malformed(_)
        ));
    }

    #[test]
    fn timestamps() {
        let state = emulator();
        let with = |k: &str, v: Value| {
            let mut claims = google_claims();
            claims[k] = v;
            verify(&state, &state.google_key.sign(&claims).unwrap())
        };
        assert_eq!(
            with("exp", json!("1750003600")).unwrap_err(),
            TokenError::NonIntegerTimestamp("exp")
        );
        assert_eq!(
            with("exp", json!(1_750_003_600.5)).unwrap_err(),
            TokenError::NonIntegerTimestamp("exp")
        );
        assert_eq!(
            with("iat", json!("x")).unwrap_err(),
            TokenError::NonIntegerTimestamp("iat")
        );
        assert_eq!(
            with("exp", Value::Null).unwrap_err(),
            TokenError::NonIntegerTimestamp("exp")
        );
        // Five minutes of skew, no more.
        assert!(with("exp", json!(NOW - 299)).is_ok());
        assert_eq!(
            with("exp", json!(NOW - 300)).unwrap_err(),
            TokenError::Expired {
                exp: NOW - 300,
                now: NOW
            }
        );
        assert!(with("nbf", json!(NOW + 300)).is_ok());
        assert_eq!(
            with("nbf", json!(NOW + 301)).unwrap_err(),
            TokenError::NotYetValid {
                nbf: NOW + 301,
                now: NOW
            }
        );
        assert!(with("iat", json!(NOW + 300)).is_ok());
        assert_eq!(
            with("iat", json!(NOW + 3600)).unwrap_err(),
            TokenError::IssuedInFuture {
                iat: NOW + 3600,
                now: NOW
            }
        );
        let mut claims = google_claims();
        claims.as_object_mut().unwrap().remove("exp");
        let token = state.google_key.sign(&claims).unwrap();
        assert_eq!(
            verify(&state, &token).unwrap_err(),
            TokenError::MissingExpiry
        );
        // An optional lifetime cap (Google STS uses 48 h).
        let opts = VerifyOptions {
            max_lifetime_secs: Some(60),
            ..VerifyOptions::aws_sts()
        };
        let token = state.google_key.sign(&google_claims()).unwrap();
        assert!(matches!(
            verify_jwt(&state, &token, NOW, &opts).unwrap_err(),
            TokenError::LifetimeTooLong {
                lifetime: 3600,
                max: 60
            }
        ));
    }

    #[test]
    fn sub_and_aud_are_required() {
        let state = emulator();
        for claim in ["sub", "aud"] {
            let mut claims = google_claims();
            claims.as_object_mut().unwrap().remove(claim);
            let token = state.google_key.sign(&claims).unwrap();
            assert_eq!(
                verify(&state, &token).unwrap_err(),
                TokenError::MissingClaim(claim)
            );
        }
    }

    #[test]
    fn errors_do_not_carry_the_token() {
        let state = emulator();
        let mut claims = google_claims();
        claims["exp"] = json!(NOW - 4000);
        let token = state.google_key.sign(&claims).unwrap();
        let err = verify(&state, &token).unwrap_err();
        let printed = format!("{err} {err:?}");
        assert!(
            !printed.contains(&token[..20]) && !printed.contains(SA),
            "{printed}"
        );
    }
}
