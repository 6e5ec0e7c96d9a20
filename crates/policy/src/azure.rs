//! Microsoft Entra ID workload identity federation: which federated identity credential of an
//! app registration or user-assigned managed identity takes an external token, or the AADSTS
//! error Entra answers with.
//!
//! A federated identity credential ([`FederatedCredential`]) names an `issuer`, a `subject`
//! and one audience; Entra accepts a client assertion when its `alg` is one it verifies, a
//! credential names the assertion's `iss`, the issuer's keys verify the signature, the
//! assertion is within its validity (five minutes of skew), and a credential with that issuer
//! has exactly the assertion's `sub` (case-sensitive) and an audience among its `aud`.
//!
//! [`federate`] takes that decision for the claims of an assertion and the outcome of the
//! signature check (done by the caller, who holds the keys: [`Signature`]). It checks every
//! credential even after a failure, so that a [`Trace`] shows the whole picture (what
//! `idbridge explain --entra` prints); [`Trace::rejection`] is the first failure in Entra's
//! order, the one its token endpoint answers with ([`Rejection::code`] is the AADSTS code,
//! [`Rejection::message`] the description after `AADSTS<code>: `).
//!
//! ```
//! use idbridge_policy::azure::{FederatedCredential, Signature, federate};
//!
//! let credentials = [FederatedCredential {
//!     name: "kubernetes".into(),
//!     issuer: "https://kubernetes.example".into(),
//!     subject: "system:serviceaccount:default:my-app".into(),
//!     audiences: vec!["api://AzureADTokenExchange".into()],
//! }];
//! let claims = serde_json::json!({
//!     "iss": "https://kubernetes.example",
//!     "sub": "system:serviceaccount:default:other",
//!     "aud": "api://AzureADTokenExchange",
//!     "exp": 1_700_000_600,
//! });
//! let trace = federate(&credentials, "RS256", claims.as_object().unwrap(), Signature::Valid, 1_700_000_000);
//! assert_eq!(trace.rejection.unwrap().code(), 700213);
//! ```
//!
//! Not modelled: `claimsMatchingExpression` (the preview alternative to `subject`), flexible
//! federated credentials, and the AADSTS70021 wording some Entra deployments return instead of
//! the per-field codes.
//!
//! Microsoft documentation: "Workload identity federation" and the Microsoft Graph
//! `federatedIdentityCredential` resource.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The audience Entra recommends for federated credentials.
pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";

/// The signing algorithms Entra verifies client assertions with (never `none` or HMAC).
pub const ACCEPTED_ALGORITHMS: &[&str] = &["RS256", "RS384", "RS512", "ES256", "ES384"];

/// Clock skew Entra allows on `exp`, `nbf` and `iat`, in seconds.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Longest `name` of a credential.
pub const MAX_NAME_LEN: usize = 120;

/// Longest `issuer`, `subject` or audience of a credential.
pub const MAX_VALUE_LEN: usize = 600;

/// Client-chosen text is quoted in messages up to this many characters.
const MAX_QUOTED: usize = 256;

/// A federated identity credential of an app registration or a user-assigned managed identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredential {
    /// Name (unique within the app).
    pub name: String,
    /// Must equal the assertion's `iss`.
    pub issuer: String,
    /// Must equal the assertion's `sub` (case-sensitive).
    pub subject: String,
    /// Exactly one audience the assertion's `aud` must contain.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
}

fn default_audiences() -> Vec<String> {
    vec![DEFAULT_AUDIENCE.to_owned()]
}

/// Why a list of credentials breaks Entra's rules: the index of the credential and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("federated_credential[{index}] ({name}): {rule}")]
pub struct CredentialError {
    /// Index of the offending credential.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// The rule broken, naming the field.
    pub rule: String,
}

/// Checks Entra's rules on the credentials of one app or identity: `name` 1..=120 characters
/// and unique, exactly one audience, `issuer`/`subject`/audience 1..=600 characters, and the
/// pair (issuer, subject) unique.
pub fn validate(credentials: &[FederatedCredential]) -> Result<(), CredentialError> {
    for (index, f) in credentials.iter().enumerate() {
        let fail = |rule: String| CredentialError {
            index,
            name: short(&f.name, MAX_QUOTED),
            rule,
        };
        if f.name.is_empty() || f.name.chars().count() > MAX_NAME_LEN {
            return Err(fail(format!(
                "field `name` must be 1..={MAX_NAME_LEN} characters"
            )));
        }
        let [audience] = f.audiences.as_slice() else {
            return Err(fail(
                "field `audiences` must hold exactly one value (Entra's rule)".into(),
            ));
        };
        for (field, v) in [
            ("issuer", &f.issuer),
            ("subject", &f.subject),
            ("audiences", audience),
        ] {
            if v.is_empty() || v.chars().count() > MAX_VALUE_LEN {
                return Err(fail(format!(
                    "field `{field}` must be 1..={MAX_VALUE_LEN} characters"
                )));
            }
        }
        let earlier = &credentials[..index];
        if earlier
            .iter()
            .any(|g| g.issuer == f.issuer && g.subject == f.subject)
        {
            return Err(fail(
                "the pair (issuer, subject) is already used by another credential".into(),
            ));
        }
        if earlier.iter().any(|g| g.name == f.name) {
            return Err(fail("field `name`: already used".into()));
        }
    }
    Ok(())
}

/// The outcome of the signature check, which needs the issuer's keys and so is the caller's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// The issuer's key verified it.
    Valid,
    /// No key of the issuer has the `kid`, or the signature does not verify (AADSTS700027).
    Invalid,
    /// The issuer's OpenID discovery document or JWKS could not be fetched (AADSTS50166).
    KeysUnavailable,
    /// The token could not be read for verification (AADSTS50027), with why.
    Unreadable(String),
    /// Not checked (`idbridge explain` without `--verify`); taken as valid.
    Unchecked,
}

/// The time claims against the clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validity {
    /// The evaluation time.
    pub now: i64,
    /// `nbf`, when present.
    pub not_before: Option<i64>,
    /// `exp`, when present.
    pub expires: Option<i64>,
    /// `iat`, when present.
    pub issued_at: Option<i64>,
    /// Within the validity, with [`CLOCK_SKEW_SECS`] either side.
    pub ok: bool,
}

/// One credential compared with the assertion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialCheck {
    /// The credential.
    pub credential: FederatedCredential,
    /// Its issuer is the assertion's `iss`.
    pub issuer: bool,
    /// Its subject is the assertion's `sub` (case-sensitive).
    pub subject: bool,
    /// Only the letter case of the subject differs (a common mistake).
    pub subject_case_only: bool,
    /// Its audience is among the assertion's `aud`.
    pub audience: bool,
}

impl CredentialCheck {
    /// Issuer, subject and audience all match.
    pub fn matches(&self) -> bool {
        self.issuer && self.subject && self.audience
    }
}

/// Why Entra refuses the assertion, in the order it checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not a JWT, a missing or non-integer time claim, or an unreadable token (AADSTS50027).
    Malformed(String),
    /// The `alg` is not one Entra verifies (AADSTS50027).
    Algorithm(String),
    /// No credential names the assertion's issuer (AADSTS700211).
    Issuer(String),
    /// A credential names the issuer, but its OpenID discovery document or JWKS could not be
    /// fetched (AADSTS50166).
    IssuerKeys(String),
    /// The signature does not verify (AADSTS700027).
    Signature,
    /// Outside its validity (AADSTS700024).
    Time(Validity),
    /// No credential with the issuer has the subject (AADSTS700213).
    Subject(String),
    /// No credential with the issuer and subject has an audience of the assertion
    /// (AADSTS700212).
    Audience(Vec<String>),
}

impl Rejection {
    /// The AADSTS code.
    pub fn code(&self) -> u32 {
        match self {
            Rejection::Malformed(_) | Rejection::Algorithm(_) => 50027,
            Rejection::Issuer(_) => 700211,
            Rejection::IssuerKeys(_) => 50166,
            Rejection::Signature => 700027,
            Rejection::Time(_) => 700024,
            Rejection::Subject(_) => 700213,
            Rejection::Audience(_) => 700212,
        }
    }

    /// The OAuth `error`.
    pub fn error(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) | Rejection::Algorithm(_) | Rejection::IssuerKeys(_) => {
                "invalid_request"
            }
            _ => "invalid_client",
        }
    }

    /// The HTTP status: 400 for a malformed request or an issuer whose discovery failed, 401
    /// for a failed credential check.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Malformed(_) | Rejection::Algorithm(_) | Rejection::IssuerKeys(_) => 400,
            _ => 401,
        }
    }

    /// The description, without the `AADSTS<code>: ` prefix. It quotes the assertion's
    /// `iss`, `sub` and `aud` (shortened), never the assertion.
    pub fn message(&self) -> String {
        const CHECK: &str = "Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.";
        match self {
            Rejection::Malformed(why) => format!("JWT token is invalid or malformed: {why}."),
            Rejection::Algorithm(alg) => format!(
                "JWT token is invalid or malformed: the signing algorithm '{}' is not supported.",
                short(alg, 32)
            ),
            Rejection::Issuer(iss) => format!(
                "No matching federated identity record found for presented assertion issuer '{}'. {CHECK}",
                short(iss, MAX_QUOTED)
            ),
            // Entra quotes nothing here: not the issuer, nor the URL it failed to fetch.
            Rejection::IssuerKeys(_) => "Request to External OIDC endpoint failed.".to_owned(),
            Rejection::Signature => "Client assertion failed signature validation.".to_owned(),
            Rejection::Time(v) => format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                iso(v.now),
                iso(v.not_before.unwrap_or(0)),
                iso(v.expires.unwrap_or(0))
            ),
            Rejection::Subject(sub) => format!(
                "No matching federated identity record found for presented assertion subject '{}'. {CHECK}",
                short(sub, MAX_QUOTED)
            ),
            Rejection::Audience(aud) => format!(
                "No matching federated identity record found for presented assertion audience '{}'. {CHECK}",
                short(&aud.join(","), MAX_QUOTED)
            ),
        }
    }
}

/// Every check of a decision and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The assertion's `alg`, and whether Entra verifies it.
    pub algorithm: (String, bool),
    /// `iss` (empty when absent).
    pub issuer: String,
    /// `sub` (empty when absent).
    pub subject: String,
    /// `aud`, as a list.
    pub audiences: Vec<String>,
    /// The time claims.
    pub validity: Validity,
    /// The signature check as the caller did it.
    pub signature: Signature,
    /// Each credential compared, in declaration order.
    pub credentials: Vec<CredentialCheck>,
    /// The first failure; `None` when Entra accepts the assertion.
    pub rejection: Option<Rejection>,
}

impl Trace {
    /// Whether Entra accepts the assertion.
    pub fn allowed(&self) -> bool {
        self.rejection.is_none()
    }

    /// The credential that takes the assertion, when one does.
    pub fn matched(&self) -> Option<&FederatedCredential> {
        self.credentials
            .iter()
            .find(|c| c.matches())
            .map(|c| &c.credential)
    }
}

/// The claim `aud` as a list (a string or an array of strings; empty values dropped).
pub fn audiences(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(a)) if !a.is_empty() => vec![a.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Entra's decision on an assertion with header `alg` and `claims`, presented for a client
/// with `credentials`, whose signature check came out as `signature`, at Unix time `now`.
pub fn federate(
    credentials: &[FederatedCredential],
    alg: &str,
    claims: &Map<String, Value>,
    signature: Signature,
    now: i64,
) -> Trace {
    let text = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let issuer = text("iss");
    let subject = text("sub");
    let audiences = audiences(claims);
    let alg_ok = ACCEPTED_ALGORITHMS.contains(&alg);

    let mut malformed = None;
    let mut time = |k: &'static str| match claims.get(k) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(t) => Some(t),
            None => {
                malformed.get_or_insert_with(|| format!("the {k} claim is not an integer"));
                None
            }
        },
    };
    let (expires, not_before, issued_at) = (time("exp"), time("nbf"), time("iat"));
    if expires.is_none() && malformed.is_none() {
        malformed = Some("the token has no exp claim".to_owned());
    }
    let late = now.saturating_sub(CLOCK_SKEW_SECS);
    let early = now.saturating_add(CLOCK_SKEW_SECS);
    let validity = Validity {
        now,
        not_before,
        expires,
        issued_at,
        ok: expires.is_some_and(|exp| late < exp)
            && not_before.is_none_or(|nbf| nbf <= early)
            && issued_at.is_none_or(|iat| iat <= early),
    };

    let checks: Vec<CredentialCheck> = credentials
        .iter()
        .map(|c| CredentialCheck {
            credential: c.clone(),
            issuer: c.issuer == issuer,
            subject: c.subject == subject,
            subject_case_only: c.subject != subject && c.subject.eq_ignore_ascii_case(&subject),
            audience: c.audiences.iter().any(|a| audiences.contains(a)),
        })
        .collect();

    let rejection = if !alg_ok {
        Some(Rejection::Algorithm(alg.to_owned()))
    } else if !checks.iter().any(|c| c.issuer) {
        Some(Rejection::Issuer(issuer.clone()))
    } else {
        match &signature {
            Signature::KeysUnavailable => Some(Rejection::IssuerKeys(issuer.clone())),
            Signature::Invalid => Some(Rejection::Signature),
            Signature::Unreadable(why) => Some(Rejection::Malformed(why.clone())),
            Signature::Valid | Signature::Unchecked => None,
        }
    }
    .or_else(|| {
        // A missing or non-integer time claim is malformed; a passed one is out of range.
        match &malformed {
            Some(why) => Some(Rejection::Malformed(why.clone())),
            None if !validity.ok => Some(Rejection::Time(validity.clone())),
            None => None,
        }
    })
    .or_else(|| {
        let with_subject: Vec<_> = checks.iter().filter(|c| c.issuer && c.subject).collect();
        if with_subject.is_empty() {
            Some(Rejection::Subject(subject.clone()))
        } else if !with_subject.iter().any(|c| c.audience) {
            Some(Rejection::Audience(audiences.clone()))
        } else {
            None
        }
    });

    Trace {
        algorithm: (alg.to_owned(), alg_ok),
        issuer,
        subject,
        audiences,
        validity,
        signature,
        credentials: checks,
        rejection,
    }
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// ISO time as AADSTS700024 quotes it (`1970-01-01T00:00:00.0000000Z` for a missing claim).
fn iso(unix: i64) -> String {
    let f =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].0000000Z");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&f).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ISS: &str = "https://kubernetes.idbridge.test";
    const SUB: &str = "system:serviceaccount:default:my-app";
    const NOW: i64 = 1_800_000_000;

    fn credential(name: &str, issuer: &str, subject: &str, audience: &str) -> FederatedCredential {
        FederatedCredential {
            name: name.into(),
            issuer: issuer.into(),
            subject: subject.into(),
            audiences: vec![audience.into()],
        }
    }

    fn credentials() -> Vec<FederatedCredential> {
        vec![
            credential(
                "github",
                "https://token.actions.githubusercontent.com",
                "repo:o/r:ref:refs/heads/main",
                DEFAULT_AUDIENCE,
            ),
            credential("k8s", ISS, SUB, DEFAULT_AUDIENCE),
        ]
    }

    fn claims(extra: Value) -> Map<String, Value> {
        let mut base = json!({"iss": ISS, "sub": SUB, "aud": DEFAULT_AUDIENCE,
            "iat": NOW - 10, "exp": NOW + 600});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        base.as_object().cloned().unwrap_or_default()
    }

    fn code(extra: Value, alg: &str, signature: Signature) -> Option<u32> {
        federate(&credentials(), alg, &claims(extra), signature, NOW)
            .rejection
            .map(|r| r.code())
    }

    #[test]
    fn a_matching_credential_is_named() {
        let trace = federate(
            &credentials(),
            "RS256",
            &claims(json!({})),
            Signature::Valid,
            NOW,
        );
        assert!(trace.allowed(), "{trace:?}");
        assert_eq!(trace.matched().map(|c| c.name.as_str()), Some("k8s"));
        assert!(!trace.credentials[0].issuer);
        // `aud` as a list, one of them the credential's.
        let listed = claims(json!({"aud": ["other", DEFAULT_AUDIENCE]}));
        assert!(federate(&credentials(), "ES256", &listed, Signature::Unchecked, NOW).allowed());
    }

    #[test]
    fn each_failure_has_entras_code_in_entras_order() {
        let valid = || Signature::Valid;
        assert_eq!(code(json!({}), "HS256", valid()), Some(50027));
        assert_eq!(code(json!({}), "none", valid()), Some(50027));
        assert_eq!(
            code(json!({"iss": "https://else"}), "RS256", valid()),
            Some(700211)
        );
        // The issuer comes before the signature: an unknown issuer is 700211 either way.
        assert_eq!(
            code(json!({"iss": "https://else"}), "RS256", Signature::Invalid),
            Some(700211)
        );
        assert_eq!(code(json!({}), "RS256", Signature::Invalid), Some(700027));
        // A credential names the issuer but its discovery document or JWKS is out of reach.
        assert_eq!(
            code(json!({}), "RS256", Signature::KeysUnavailable),
            Some(50166)
        );
        // An issuer no credential names is still 700211, reachable or not.
        assert_eq!(
            code(
                json!({"iss": "https://else"}),
                "RS256",
                Signature::KeysUnavailable
            ),
            Some(700211)
        );
        assert_eq!(
            code(json!({}), "RS256", Signature::Unreadable("x".into())),
            Some(50027)
        );
        assert_eq!(
            code(json!({"exp": NOW - 301}), "RS256", valid()),
            Some(700024)
        );
        assert_eq!(code(json!({"exp": NOW - 299}), "RS256", valid()), None);
        assert_eq!(
            code(json!({"nbf": NOW + 301}), "RS256", valid()),
            Some(700024)
        );
        assert_eq!(
            code(json!({"iat": NOW + 301}), "RS256", valid()),
            Some(700024)
        );
        assert_eq!(code(json!({"exp": null}), "RS256", valid()), Some(50027));
        assert_eq!(code(json!({"exp": "soon"}), "RS256", valid()), Some(50027));
        // The time comes before the subject.
        assert_eq!(
            code(json!({"exp": NOW - 3600, "sub": "x"}), "RS256", valid()),
            Some(700024)
        );
        assert_eq!(
            code(
                json!({"sub": "system:serviceaccount:x:y"}),
                "RS256",
                valid()
            ),
            Some(700213)
        );
        assert_eq!(
            code(json!({"aud": "api://else"}), "RS256", valid()),
            Some(700212)
        );
        assert_eq!(code(json!({"aud": []}), "RS256", valid()), Some(700212));
    }

    #[test]
    fn subjects_match_case_sensitively_and_the_case_slip_is_flagged() {
        let upper = claims(json!({"sub": SUB.to_uppercase()}));
        let trace = federate(&credentials(), "RS256", &upper, Signature::Valid, NOW);
        assert_eq!(trace.rejection.as_ref().map(Rejection::code), Some(700213));
        assert!(trace.credentials[1].subject_case_only);
    }

    #[test]
    fn the_audience_must_be_on_a_credential_with_the_subject() {
        // Another credential of the issuer has the audience, but not the subject.
        let mut creds = credentials();
        creds.push(credential(
            "k8s-other",
            ISS,
            "system:serviceaccount:x:y",
            "api://else",
        ));
        let trace = federate(
            &creds,
            "RS256",
            &claims(json!({"aud": "api://else"})),
            Signature::Valid,
            NOW,
        );
        assert_eq!(trace.rejection.map(|r| r.code()), Some(700212));
    }

    #[test]
    fn unreachable_issuer_is_entras_50166() {
        let trace = federate(
            &credentials(),
            "RS256",
            &claims(json!({})),
            Signature::KeysUnavailable,
            NOW,
        );
        let r = trace.rejection.unwrap();
        assert_eq!(
            (r.code(), r.error(), r.status()),
            (50166, "invalid_request", 400)
        );
        assert_eq!(r.message(), "Request to External OIDC endpoint failed.");
    }

    #[test]
    fn messages_quote_claims_shortened_and_have_entras_shape() {
        let long = "s".repeat(1000);
        let trace = federate(
            &credentials(),
            "RS256",
            &claims(json!({"sub": long})),
            Signature::Valid,
            NOW,
        );
        let r = trace.rejection.unwrap();
        assert_eq!((r.error(), r.status()), ("invalid_client", 401));
        let m = r.message();
        assert!(
            m.starts_with(
                "No matching federated identity record found for presented assertion subject 'sss"
            ),
            "{m}"
        );
        assert!(m.len() < 600, "{m}");
        let t = federate(
            &credentials(),
            "RS256",
            &claims(json!({"exp": 0, "iat": null})),
            Signature::Valid,
            NOW,
        )
        .rejection
        .unwrap()
        .message();
        assert!(t.contains("assertion valid from 1970-01-01T00:00:00.0000000Z, expiry time of assertion 1970-01-01T00:00:00.0000000Z"), "{t}");
        assert_eq!(
            Rejection::Algorithm("none".into()).error(),
            "invalid_request"
        );
    }

    #[test]
    fn validation_has_entras_rules() {
        assert_eq!(validate(&credentials()), Ok(()));
        let mut two = credentials();
        two[1].audiences.push("x".into());
        assert!(validate(&two).unwrap_err().rule.contains("exactly one"));
        let mut dup = credentials();
        dup.push(credential("k8s-again", ISS, SUB, "x"));
        let e = validate(&dup).unwrap_err();
        assert_eq!(e.index, 2);
        assert!(e.rule.contains("(issuer, subject)"), "{e}");
        let mut name = credentials();
        name.push(credential("k8s", ISS, "other", "x"));
        assert!(validate(&name).unwrap_err().rule.contains("already used"));
        let mut empty = credentials();
        empty[0].subject.clear();
        assert!(
            validate(&empty)
                .unwrap_err()
                .to_string()
                .contains("field `subject`")
        );
        let mut long = credentials();
        long[0].name = "n".repeat(121);
        assert!(validate(&long).is_err());
    }

    #[test]
    fn the_default_audience_is_filled_in() {
        let c: FederatedCredential =
            serde_json::from_value(json!({"name": "a", "issuer": "i", "subject": "s"})).unwrap();
        assert_eq!(c.audiences, [DEFAULT_AUDIENCE]);
    }
}
