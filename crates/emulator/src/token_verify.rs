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
//!    [`Emulator::issuer_jwks`] → its JWK set; nothing else;
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

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::Emulator;

/// Google's issuer as Google writes it in ID tokens.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// The bare host form of Google's issuer, which Google also accepts in `iss`.
pub const GOOGLE_ISSUER_HOST: &str = "accounts.google.com";

/// Clock skew tolerated on `exp`, `nbf` and `iat`: at most five minutes, the usual allowance
/// between an IdP's clock and a relying party's.
pub const DEFAULT_LEEWAY_SECS: i64 = 300;

/// Longest token considered at all (AWS's own limit for `WebIdentityToken` is 20,000 chars).
const MAX_TOKEN_LEN: usize = 64 * 1024;

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
pub fn verify_jwt(state: &Emulator, token: &str, now: i64, opts: &VerifyOptions) -> Result<VerifiedToken, TokenError> {
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
    let alg_name = unverified.header.get("alg").and_then(Value::as_str).unwrap_or_default();
    let algorithm = Algorithm::from_str(alg_name)
        .ok()
        .filter(|a| opts.algorithms.contains(a))
        .ok_or_else(|| TokenError::UnsupportedAlgorithm(short(alg_name)))?;

    // 3. The issuer, from the unverified payload (only to choose the keys).
    let issuer = unverified.str_claim("iss").ok_or(TokenError::MissingIssuer)?.to_owned();
    let kind = if issuer == GOOGLE_ISSUER || issuer == GOOGLE_ISSUER_HOST {
        IssuerKind::Google
    } else if state.issuer_jwks.contains_key(&issuer) {
        IssuerKind::Oidc
    } else {
        return Err(TokenError::UnknownIssuer(short(&issuer)));
    };

    // 4. The key.
    let kid = unverified
        .header
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or(TokenError::MissingKid)?
        .to_owned();
    let key = match kind {
        IssuerKind::Google if state.google_key.kid == kid => Key::Google(state.google_key.decoding_key()),
        IssuerKind::Google => return Err(TokenError::UnknownKid),
        IssuerKind::Oidc => {
            let jwk = state
                .issuer_jwks
                .get(&issuer)
                .and_then(|set| set.find(&kid))
                .ok_or(TokenError::UnknownKid)?;
            let alg_fits = jwk
                .common
                .key_algorithm
                .is_none_or(|declared| declared.to_string() == alg_name);
            let use_fits = !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
            if !alg_fits || !use_fits {
                return Err(TokenError::UnknownKid);
            }
            Key::Jwk(jwk)
        }
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
    let subject = claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned();
    let audiences: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) if !a.is_empty() => vec![a.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    for required in &opts.required_claims {
        let present = match *required {
            "sub" => !subject.is_empty(),
            "aud" => !audiences.is_empty(),
            other => claims.get(other).is_some_and(|v| !v.is_null() && v.as_str() != Some("")),
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
        Some(v) => v.as_i64().map(Some).ok_or(TokenError::NonIntegerTimestamp(name)),
    }
}

/// Keeps client-chosen text (an `alg`, an issuer) short in messages.
fn short(s: &str) -> String {
    const MAX: usize = 256;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}
