//! Verifying AWS Signature Version 4 (`AWS4-HMAC-SHA256`) on incoming requests.
//!
//! The emulated STS uses this for `GetCallerIdentity`, and an emulated Google STS can use it for
//! the signed `GetCallerIdentity` request inside an AWS subject token. Both request shapes are
//! accepted:
//!
//! * **header-signed**: `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
//!   SignedHeaders=…, Signature=…` plus `x-amz-date` (and `x-amz-security-token` for session
//!   credentials);
//! * **presigned** (query string): `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`,
//!   `X-Amz-Expires`, `X-Amz-SignedHeaders`, `X-Amz-Signature` and optionally
//!   `X-Amz-Security-Token`.
//!
//! Nothing here computes an HMAC by hand: the expected signature is recomputed with the
//! `aws-sigv4` crate (the SDK's own signer) over a request rebuilt from exactly the headers the
//! client listed in `SignedHeaders`, at the time the client put in `x-amz-date`, for the region and
//! service of its credential scope. That is what lets one verifier accept every client:
//!
//! * header names arrive in any case (Go sends `X-Amz-Date`, Python `x-amz-date`);
//! * a header that was added after signing (Python and PHP add `x-goog-cloud-target-resource`
//!   after signing, Go and Java before) is simply not part of the recomputation;
//! * `+` and `%20` in the query string canonicalize the same way;
//! * the empty-body `POST /?Action=GetCallerIdentity&Version=2011-06-15` shape Google's libraries
//!   send is an ordinary request (the payload hash is that of the empty body).
//!
//! Signatures and session tokens are compared in constant time
//! (`aws_lc_rs::constant_time::verify_slices_are_equal`). Secrets stay in [`SecretString`]; no
//! error message carries a secret, a session token or a signature.
//!
//! Errors carry the STS wire code ([`SigV4Error::code`]), HTTP status
//! ([`SigV4Error::http_status`]) and, as their `Display`, the message AWS sends.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest, SignatureLocation,
    SigningParams, SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use idbridge_core::SecretString;
use idbridge_core::timefmt::{amz_date, parse_amz_date};
use time::OffsetDateTime;

use crate::short;

/// The only signing algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How far `x-amz-date` may be from the server's clock, either way. AWS allows 15 minutes and
/// says so in its `Signature expired: … (… - 15 min.)` message.
pub const MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(15);

/// Longest `X-Amz-Expires` SigV4 allows (seven days).
const MAX_PRESIGN_EXPIRES_SECS: u64 = 604_800;

/// The payload hash presigners put in the canonical request when they do not hash the body
/// (botocore does this for every presigned URL).
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Client-supplied text (an algorithm, a date) is quoted in messages up to this many characters.
const MAX_QUOTED: usize = 64;

/// The parts of an HTTP request that a SigV4 signature covers, as the server received them.
#[derive(Clone)]
pub struct SignedRequestParts<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Path and query exactly as sent, e.g. `/?Action=GetCallerIdentity&Version=2011-06-15`.
    pub uri: &'a str,
    /// Every request header (names in any case; repeated names allowed).
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: &'a [u8],
}

impl fmt::Debug for SignedRequestParts<'_> {
    /// Prints header names only: values include the signature and possibly a session token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.uri.split('?').next().unwrap_or_default();
        f.debug_struct("SignedRequestParts")
            .field("method", &self.method)
            .field("path", &path)
            .field(
                "header_names",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl SignedRequestParts<'_> {
    /// Whether the request carries any SigV4 material at all (an `Authorization` header or an
    /// `X-Amz-Signature`/`X-Amz-Credential`/`X-Amz-Algorithm` query parameter).
    pub fn has_signature(&self) -> bool {
        self.header("authorization").is_some()
            || query_pairs(self.uri).iter().any(|(k, _, _)| {
                k == "X-Amz-Signature" || k == "X-Amz-Credential" || k == "X-Amz-Algorithm"
            })
    }

    /// The first value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Who signed a request that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCaller {
    /// The access key id of the credential scope.
    pub access_key_id: String,
    /// Region of the credential scope, e.g. `us-east-2`.
    pub region: String,
    /// Service of the credential scope, e.g. `sts`. Callers check it ([`check_service`]).
    pub service: String,
    /// The signed header names, lower-case, in `SignedHeaders` order.
    pub signed_headers: Vec<String>,
    /// The signing time (`x-amz-date` / `X-Amz-Date`).
    pub signed_at: OffsetDateTime,
    /// Whether the signature was in the query string (a presigned URL).
    pub presigned: bool,
}

/// Why a request's SigV4 signature was not accepted. `Display` is AWS's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigV4Error {
    /// Neither an `Authorization` header nor presigning query parameters.
    #[error("Request is missing Authentication Token")]
    MissingAuthentication,
    /// The signature is present but malformed or incomplete (`IncompleteSignature`).
    #[error("{0}")]
    Incomplete(String),
    /// The access key id is not known.
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    /// The session token is missing, not expected, or not the one issued with the key.
    #[error("The security token included in the request is invalid.")]
    InvalidSessionToken,
    /// The credential scope does not fit the request (date, service, terminator).
    #[error("{0}")]
    Scope(String),
    /// `x-amz-date` is more than [`MAX_CLOCK_SKEW`] in the past.
    #[error("Signature expired: {signed} is now earlier than {earliest} ({now} - {window}.)")]
    Expired {
        /// The request's `x-amz-date`.
        signed: String,
        /// The earliest acceptable date.
        earliest: String,
        /// The server's time.
        now: String,
        /// How long a signature lives: `15 min` (header-signed, or a presigned URL with
        /// `X-Amz-Expires` ≥ 900), `N sec` (a presigned URL's shorter `X-Amz-Expires`).
        window: String,
    },
    /// `x-amz-date` is more than [`MAX_CLOCK_SKEW`] in the future.
    #[error("Signature not yet current: {signed} is still later than {latest} ({now} + 15 min.)")]
    NotYetCurrent {
        /// The request's `x-amz-date`.
        signed: String,
        /// The latest acceptable date.
        latest: String,
        /// The server's time.
        now: String,
    },
    /// The recomputed signature differs from the one sent.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    Mismatch,
}

impl SigV4Error {
    /// The AWS wire error code.
    pub fn code(&self) -> &'static str {
        match self {
            SigV4Error::MissingAuthentication => "MissingAuthenticationToken",
            SigV4Error::Incomplete(_) => "IncompleteSignature",
            SigV4Error::UnknownAccessKey | SigV4Error::InvalidSessionToken => {
                "InvalidClientTokenId"
            }
            SigV4Error::Scope(_)
            | SigV4Error::Expired { .. }
            | SigV4Error::NotYetCurrent { .. }
            | SigV4Error::Mismatch => "SignatureDoesNotMatch",
        }
    }

    /// The HTTP status AWS answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            SigV4Error::Incomplete(_) => 400,
            _ => 403,
        }
    }
}

/// Checks that the credential scope names `service` (e.g. `sts`), as AWS does.
pub fn check_service(caller: &VerifiedCaller, service: &str) -> Result<(), SigV4Error> {
    if caller.service == service {
        Ok(())
    } else {
        Err(SigV4Error::Scope(format!(
            "Credential should be scoped to correct service: '{service}'. "
        )))
    }
}

/// The signature material of a request, before any key is looked up.
struct Parsed<'r> {
    presigned: bool,
    access_key_id: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signed_headers_raw: String,
    signature: String,
    amz_date: String,
    signed_at: OffsetDateTime,
    /// The session token as sent (header or query).
    session_token: Option<Cow<'r, str>>,
    /// Presigned only: `X-Amz-Expires`.
    expires: Option<u64>,
}

/// Verifies the SigV4 signature of `req`.
///
/// `lookup` maps an access key id to its secret key and session token (`None` for long-term
/// keys); `now` is the server's time. Checks, in order: the signature material is complete; the
/// credential scope is well-formed and dated like `x-amz-date`; the key is known; the session
/// token sent is exactly the one issued with the key (and none is sent for a long-term key);
/// `x-amz-date` is within [`MAX_CLOCK_SKEW`] of `now`; the signature recomputed over the
/// headers named in `SignedHeaders` matches.
///
/// The service of the scope is returned, not checked: see [`check_service`].
pub fn verify(
    req: &SignedRequestParts<'_>,
    lookup: impl Fn(&str) -> Option<(SecretString, Option<SecretString>)>,
    now: OffsetDateTime,
) -> Result<VerifiedCaller, SigV4Error> {
    let parsed = parse(req)?;

    let Some((secret, expected_token)) = lookup(&parsed.access_key_id) else {
        return Err(SigV4Error::UnknownAccessKey);
    };
    match (&expected_token, &parsed.session_token) {
        (None, None) => {}
        (Some(expected), Some(sent))
            if ct_eq(expected.expose_secret().as_bytes(), sent.as_bytes()) => {}
        _ => return Err(SigV4Error::InvalidSessionToken),
    }

    check_skew(&parsed, now)?;

    let candidates: &[SignableBody<'_>] = if parsed.presigned {
        // Presigners differ: botocore signs `UNSIGNED-PAYLOAD`, others the body's hash.
        &[
            SignableBody::Precomputed(UNSIGNED_PAYLOAD.to_owned()),
            SignableBody::Bytes(req.body),
        ]
    } else {
        &[SignableBody::Bytes(req.body)]
    };
    let mut matched = false;
    for body in candidates {
        let (signature, signed_headers) = recompute(req, &parsed, &secret, body.clone())?;
        // The signer lists what it signed; a client that signed a different set (a header it
        // listed but did not send, `host` or `x-amz-date` left out) does not match.
        if signed_headers == parsed.signed_headers_raw
            && ct_eq(signature.as_bytes(), parsed.signature.as_bytes())
        {
            matched = true;
        }
    }
    if !matched {
        return Err(SigV4Error::Mismatch);
    }
    Ok(VerifiedCaller {
        access_key_id: parsed.access_key_id,
        region: parsed.region,
        service: parsed.service,
        signed_headers: parsed.signed_headers,
        signed_at: parsed.signed_at,
        presigned: parsed.presigned,
    })
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Query parameters as (decoded key, decoded value, raw `k=v` segment).
fn query_pairs(uri: &str) -> Vec<(String, String, &str)> {
    let Some((_, query)) = uri.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (k, v) = url::form_urlencoded::parse(segment.as_bytes())
                .next()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .unwrap_or_default();
            (k, v, segment)
        })
        .collect()
}

fn parse<'r>(req: &'r SignedRequestParts<'r>) -> Result<Parsed<'r>, SigV4Error> {
    if let Some(auth) = req.header("authorization") {
        parse_header_auth(req, auth)
    } else if req.has_signature() {
        parse_query_auth(req)
    } else {
        Err(SigV4Error::MissingAuthentication)
    }
}

fn parse_header_auth<'r>(
    req: &'r SignedRequestParts<'r>,
    auth: &'r str,
) -> Result<Parsed<'r>, SigV4Error> {
    let auth = auth.trim();
    let (algorithm, rest) = auth.split_once(' ').unwrap_or((auth, ""));
    if algorithm != ALGORITHM {
        return Err(SigV4Error::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{}'. Only '{ALGORITHM}' is supported.",
            short(algorithm, MAX_QUOTED)
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed_headers = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => {}
        }
    }
    let amz_date = req.header("x-amz-date");
    let mut missing = Vec::new();
    if credential.is_none() {
        missing.push("Authorization header requires 'Credential' parameter.");
    }
    if signature.is_none() {
        missing.push("Authorization header requires 'Signature' parameter.");
    }
    if signed_headers.is_none() {
        missing.push("Authorization header requires 'SignedHeaders' parameter.");
    }
    if amz_date.is_none() {
        missing.push(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        );
    }
    let (Some(credential), Some(signed_headers), Some(signature), Some(amz_date)) =
        (credential, signed_headers, signature, amz_date)
    else {
        return Err(SigV4Error::Incomplete(missing.join(" ")));
    };
    let session_token = req.header("x-amz-security-token").map(Cow::Borrowed);
    build_parsed(
        false,
        credential,
        signed_headers,
        signature,
        amz_date.trim(),
        session_token,
        None,
    )
}

fn parse_query_auth<'r>(req: &'r SignedRequestParts<'r>) -> Result<Parsed<'r>, SigV4Error> {
    let pairs = query_pairs(req.uri);
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _, _)| k == name)
            .map(|(_, v, _)| v.clone())
    };
    let required = [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Date",
        "X-Amz-Expires",
    ];
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|p| get(p).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(SigV4Error::Incomplete(format!(
            "AWS query-string parameters must include {}. Re-examine the query-string parameters.",
            missing
                .iter()
                .map(|m| format!("'{m}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let algorithm = get("X-Amz-Algorithm").unwrap_or_default();
    if algorithm != ALGORITHM {
        return Err(SigV4Error::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{}'. Only '{ALGORITHM}' is supported.",
            short(&algorithm, MAX_QUOTED)
        )));
    }
    let expires_raw = get("X-Amz-Expires").unwrap_or_default();
    let expires = expires_raw
        .parse::<u64>()
        .ok()
        .filter(|e| (1..=MAX_PRESIGN_EXPIRES_SECS).contains(e))
        .ok_or_else(|| {
            SigV4Error::Incomplete(format!(
                "X-Amz-Expires must be an integer between 1 and {MAX_PRESIGN_EXPIRES_SECS}, not '{}'.",
                short(&expires_raw, MAX_QUOTED)
            ))
        })?;
    let credential = get("X-Amz-Credential").unwrap_or_default();
    let signed_headers = get("X-Amz-SignedHeaders").unwrap_or_default();
    let signature = get("X-Amz-Signature").unwrap_or_default();
    let amz_date = get("X-Amz-Date").unwrap_or_default();
    let session_token = get("X-Amz-Security-Token").map(Cow::Owned);
    build_parsed(
        true,
        &credential,
        &signed_headers,
        &signature,
        &amz_date,
        session_token,
        Some(expires),
    )
}

fn build_parsed<'r>(
    presigned: bool,
    credential: &str,
    signed_headers: &str,
    signature: &str,
    amz_date: &str,
    session_token: Option<Cow<'r, str>>,
    expires: Option<u64>,
) -> Result<Parsed<'r>, SigV4Error> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [akid, scope_date, region, service, terminator] = parts.as_slice() else {
        return Err(SigV4Error::Incomplete(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got a different number."
                .to_owned(),
        ));
    };
    if akid.is_empty() {
        return Err(SigV4Error::Incomplete(
            "Credential is missing the access key id.".to_owned(),
        ));
    }
    if *terminator != "aws4_request" {
        return Err(SigV4Error::Scope(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'. ",
            short(terminator, MAX_QUOTED)
        )));
    }
    if region.is_empty() {
        return Err(SigV4Error::Scope(
            "Credential should be scoped to a valid region. ".to_owned(),
        ));
    }
    if service.is_empty() {
        return Err(SigV4Error::Scope(
            "Credential should be scoped to correct service. ".to_owned(),
        ));
    }
    let Some(signed_at) = parse_amz_date(amz_date) else {
        return Err(SigV4Error::Incomplete(format!(
            "Date must be in ISO-8601 'basic format'. Got '{}'. See http://en.wikipedia.org/wiki/ISO_8601",
            short(amz_date, MAX_QUOTED)
        )));
    };
    let day = amz_date.get(..8).unwrap_or_default();
    if *scope_date != day {
        return Err(SigV4Error::Scope(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{day}', from '{amz_date}'.",
            short(scope_date, MAX_QUOTED)
        )));
    }
    let names: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
    if names.iter().any(String::is_empty) {
        return Err(SigV4Error::Incomplete(
            "SignedHeaders must not contain empty header names.".to_owned(),
        ));
    }
    if !names.iter().any(|n| n.eq_ignore_ascii_case("host")) {
        return Err(SigV4Error::Incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".to_owned(),
        ));
    }
    if signature.is_empty() || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SigV4Error::Mismatch);
    }
    Ok(Parsed {
        presigned,
        access_key_id: (*akid).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
        signed_headers: names,
        signed_headers_raw: signed_headers.to_owned(),
        signature: signature.to_owned(),
        amz_date: amz_date.to_owned(),
        signed_at,
        session_token,
        expires,
    })
}

fn check_skew(parsed: &Parsed<'_>, now: OffsetDateTime) -> Result<(), SigV4Error> {
    // A presigned URL lives `X-Amz-Expires` seconds from its `X-Amz-Date`, but never longer
    // than any signature: STS is reported (aws/aws-sdk-go#2167) to keep presigned
    // GetCallerIdentity URLs for 15 minutes whatever a longer `X-Amz-Expires` says. So the
    // window is min(X-Amz-Expires, 15 min) for presigned requests, 15 min for the others.
    let window = match parsed.expires {
        Some(secs) if parsed.presigned && secs < MAX_CLOCK_SKEW.whole_seconds().unsigned_abs() => {
            time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
        }
        _ => MAX_CLOCK_SKEW,
    };
    if parsed.signed_at < now - window {
        return Err(SigV4Error::Expired {
            signed: parsed.amz_date.clone(),
            earliest: amz_date(now - window),
            now: amz_date(now),
            window: if window == MAX_CLOCK_SKEW {
                "15 min".to_owned()
            } else {
                format!("{} sec", window.whole_seconds())
            },
        });
    }
    if parsed.signed_at > now + MAX_CLOCK_SKEW {
        return Err(SigV4Error::NotYetCurrent {
            signed: parsed.amz_date.clone(),
            latest: amz_date(now + MAX_CLOCK_SKEW),
            now: amz_date(now),
        });
    }
    Ok(())
}

/// Recomputes the signature with `aws-sigv4`; returns it with the `SignedHeaders` the signer
/// produced.
fn recompute(
    req: &SignedRequestParts<'_>,
    parsed: &Parsed<'_>,
    secret: &SecretString,
    body: SignableBody<'_>,
) -> Result<(String, String), SigV4Error> {
    let listed = |name: &str| {
        parsed
            .signed_headers
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    };
    // The signer needs a host: without a `host` header it would take it from the URI, which a
    // server-side path has none of.
    if req.header("host").is_none() {
        return Err(SigV4Error::Mismatch);
    }

    let token_signed = listed("x-amz-security-token");
    let mut settings = SigningSettings::default();
    // Sign exactly the headers handed over below (those the client listed); the default list of
    // headers to leave out would otherwise drop e.g. a signed `user-agent`.
    settings.excluded_headers = None;
    // STS is not S3: paths are normalized and percent-encoded once more, as every SDK signs them.
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Enabled;
    settings.percent_encoding_mode = PercentEncodingMode::Double;

    let mut uri = req.uri.to_owned();
    let headers: Vec<(&str, &str)>;
    if parsed.presigned {
        settings.signature_location = SignatureLocation::QueryParams;
        // Always set for presigned requests (`parse_query_auth` requires it); the signer needs it.
        let Some(expires) = parsed.expires else {
            return Err(SigV4Error::Incomplete(
                "'X-Amz-Expires' is missing.".to_owned(),
            ));
        };
        settings.expires_in = Some(Duration::from_secs(expires));
        // The token travels in the query; the signer puts it back into the canonical query.
        settings.session_token_mode = SessionTokenMode::Include;
        // The signer re-adds the signing parameters (and the token) itself.
        uri = strip_signing_params(req.uri);
        headers = req
            .headers
            .iter()
            .filter(|(n, _)| listed(n))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
    } else {
        settings.signature_location = SignatureLocation::Headers;
        // The signer inserts `x-amz-security-token` from the credentials; it is signed only if
        // the client listed it (botocore and Google's libraries do; some clients add it after).
        settings.session_token_mode = if token_signed {
            SessionTokenMode::Include
        } else {
            SessionTokenMode::Exclude
        };
        // `x-amz-date` is inserted by the signer from the signing time (parsed from this very
        // header); the token comes from the credentials.
        headers = req
            .headers
            .iter()
            .filter(|(n, _)| {
                listed(n)
                    && !n.eq_ignore_ascii_case("x-amz-date")
                    && !n.eq_ignore_ascii_case("x-amz-security-token")
            })
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
    }

    let credentials = Credentials::new(
        parsed.access_key_id.as_str(),
        secret.expose_secret(),
        parsed.session_token.as_ref().map(|t| t.to_string()),
        None,
        "idbridge-emulator",
    );
    let identity: Identity = credentials.into();
    let time: SystemTime = parsed.signed_at.into();
    let params: SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(&parsed.region)
        .name(&parsed.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| SigV4Error::Incomplete(format!("cannot rebuild the signing parameters: {e}")))?
        .into();
    let signable = SignableRequest::new(req.method, uri, headers.into_iter(), body)
        .map_err(|_| SigV4Error::Mismatch)?;
    let (instructions, signature) = sign(signable, &params)
        .map_err(|_| SigV4Error::Mismatch)?
        .into_parts();

    let signed_headers = if parsed.presigned {
        instructions
            .params()
            .iter()
            .find(|(k, _)| *k == "X-Amz-SignedHeaders")
            .map(|(_, v)| v.to_string())
    } else {
        instructions
            .headers()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| {
                v.split(',')
                    .find_map(|p| p.trim().strip_prefix("SignedHeaders=").map(str::to_owned))
            })
    }
    .unwrap_or_default();
    Ok((signature, signed_headers))
}

/// The URI without the presigning parameters the signer adds back itself.
fn strip_signing_params(uri: &str) -> String {
    const SIGNING_PARAMS: [&str; 7] = [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    ];
    let path = uri.split('?').next().unwrap_or_default();
    let kept: Vec<&str> = query_pairs(uri)
        .into_iter()
        .filter(|(k, _, _)| !SIGNING_PARAMS.contains(&k.as_str()))
        .map(|(_, _, raw)| raw)
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Client-side signing with `aws-sigv4`, for tests here and in [`crate::aws_sts`].
#[cfg(test)]
pub(crate) mod testing {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{
        SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
    };
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;
    use time::OffsetDateTime;

    /// The credentials and scope a test client signs with.
    pub(crate) struct Client<'a> {
        pub(crate) access_key_id: &'a str,
        pub(crate) secret: &'a str,
        pub(crate) session_token: Option<&'a str>,
        pub(crate) region: &'a str,
        pub(crate) service: &'a str,
        pub(crate) time: OffsetDateTime,
    }

    impl Client<'_> {
        /// Signs `req` as the SDKs do: every header present is signed (the default settings
        /// leave out only `user-agent` and the like). With `presign_expires`, the signature goes
        /// into the query string; `unsigned_payload` then signs `UNSIGNED-PAYLOAD` (botocore)
        /// instead of the body's hash.
        pub(crate) fn sign(
            &self,
            req: &mut http::Request<Vec<u8>>,
            presign_expires: Option<u64>,
            unsigned_payload: bool,
        ) {
            let creds = Credentials::new(
                self.access_key_id,
                self.secret,
                self.session_token.map(str::to_owned),
                None,
                "test",
            );
            let identity: Identity = creds.into();
            let mut settings = SigningSettings::default();
            if let Some(expires) = presign_expires {
                settings.signature_location = SignatureLocation::QueryParams;
                settings.expires_in = Some(std::time::Duration::from_secs(expires));
            }
            let params = v4::SigningParams::builder()
                .identity(&identity)
                .region(self.region)
                .name(self.service)
                .time(self.time.into())
                .settings(settings)
                .build()
                .unwrap()
                .into();
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
            let body = if unsigned_payload {
                SignableBody::UnsignedPayload
            } else {
                SignableBody::Bytes(req.body())
            };
            let uri = req.uri().to_string();
            let signable = SignableRequest::new(
                req.method().as_str(),
                uri,
                headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                body,
            )
            .unwrap();
            let (instructions, _) = sign(signable, &params).unwrap().into_parts();
            instructions.apply_to_request_http1x(req);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Client;
    use super::*;

    const HOST: &str = "sts.us-east-2.amazonaws.com";
    const URI: &str = "/?Action=GetCallerIdentity&Version=2011-06-15";
    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const TOKEN: &str = "FQoGZXIvYXdzEExampleSessionToken+/=";

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    /// 2020-08-11T06:55:22Z, the time of the py-auth fixture.
    const T0: i64 = 1_597_128_922;

    fn long_term(akid: &str) -> Option<(SecretString, Option<SecretString>)> {
        (akid == AKID).then(|| (SecretString::new(SECRET), None))
    }

    fn with_token(akid: &str) -> Option<(SecretString, Option<SecretString>)> {
        (akid == AKID).then(|| (SecretString::new(SECRET), Some(SecretString::new(TOKEN))))
    }

    fn parts_of(req: &http::Request<Vec<u8>>) -> (String, String, Vec<(String, String)>) {
        let uri = req.uri().path_and_query().unwrap().as_str().to_owned();
        let headers = req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        (req.method().as_str().to_owned(), uri, headers)
    }

    fn client(token: Option<&'static str>, time: i64) -> Client<'static> {
        Client {
            access_key_id: AKID,
            secret: SECRET,
            session_token: token,
            region: "us-east-2",
            service: "sts",
            time: at(time),
        }
    }

    fn empty_post() -> http::Request<Vec<u8>> {
        http::Request::post(URI)
            .header("host", HOST)
            .body(Vec::new())
            .unwrap()
    }

    fn verify_req(
        req: &http::Request<Vec<u8>>,
        lookup: impl Fn(&str) -> Option<(SecretString, Option<SecretString>)>,
        now: i64,
    ) -> Result<VerifiedCaller, SigV4Error> {
        let (method, uri, headers) = parts_of(req);
        verify(
            &SignedRequestParts {
                method: &method,
                uri: &uri,
                headers,
                body: req.body(),
            },
            lookup,
            at(now),
        )
    }

    /// google-auth-library-python `tests/test_aws.py`, "POST request with session token
    /// credentials" without the token: an independent implementation's signature.
    fn pyauth_parts(signature: &str) -> Vec<(String, String)> {
        vec![
            (
                "Authorization".to_owned(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={AKID}/20200811/us-east-2/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
                ),
            ),
            ("host".to_owned(), HOST.to_owned()),
            ("x-amz-date".to_owned(), "20200811T065522Z".to_owned()),
        ]
    }

    const PYAUTH_SIGNATURE: &str =
        "9e722e5b7bfa163447e2a14df118b45ebd283c5aea72019bdf921d6e7dc01a9a";

    #[test]
    fn pyauth_vector_verifies() {
        let req = SignedRequestParts {
            method: "POST",
            uri: URI,
            headers: pyauth_parts(PYAUTH_SIGNATURE),
            body: b"",
        };
        let caller = verify(&req, long_term, at(T0)).unwrap();
        assert_eq!(caller.access_key_id, AKID);
        assert_eq!(caller.region, "us-east-2");
        assert_eq!(caller.service, "sts");
        assert_eq!(caller.signed_headers, ["host", "x-amz-date"]);
        assert_eq!(caller.signed_at, at(T0));
        assert!(!caller.presigned);
        assert!(check_service(&caller, "sts").is_ok());
    }

    #[test]
    fn pyauth_vector_with_a_changed_digit_does_not_match() {
        let mut bad = PYAUTH_SIGNATURE.to_owned();
        bad.replace_range(0..1, "8");
        let req = SignedRequestParts {
            method: "POST",
            uri: URI,
            headers: pyauth_parts(&bad),
            body: b"",
        };
        assert_eq!(verify(&req, long_term, at(T0)), Err(SigV4Error::Mismatch));
        // The same request with a body the client did not sign.
        let req = SignedRequestParts {
            method: "POST",
            uri: URI,
            headers: pyauth_parts(PYAUTH_SIGNATURE),
            body: b"Action=GetCallerIdentity",
        };
        assert_eq!(verify(&req, long_term, at(T0)), Err(SigV4Error::Mismatch));
    }

    #[test]
    fn aws_sigv4_and_pyauth_agree() {
        // Our test signer reproduces the independent vector, so the round-trip tests below
        // exercise the same algorithm.
        let mut req = empty_post();
        client(None, T0).sign(&mut req, None, false);
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.ends_with(&format!("Signature={PYAUTH_SIGNATURE}")),
            "{auth}"
        );
    }

    #[test]
    fn python_shape_with_unsigned_target_resource_header() {
        let mut req = empty_post();
        client(Some(TOKEN), T0).sign(&mut req, None, false);
        // google-auth adds this header after signing.
        req.headers_mut().insert(
            "x-goog-cloud-target-resource",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/aws"
                .parse()
                .unwrap(),
        );
        let caller = verify_req(&req, with_token, T0 + 60).unwrap();
        assert_eq!(
            caller.signed_headers,
            ["host", "x-amz-date", "x-amz-security-token"]
        );
    }

    #[test]
    fn go_shape_with_canonical_case_names_and_signed_target_resource() {
        let mut req = empty_post();
        req.headers_mut().insert(
            "x-goog-cloud-target-resource",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/aws"
                .parse()
                .unwrap(),
        );
        client(Some(TOKEN), T0).sign(&mut req, None, false);
        let (method, uri, headers) = parts_of(&req);
        // Go's http.Header canonicalizes names: `X-Amz-Date`, `X-Goog-Cloud-Target-Resource`.
        let canonical = |n: &str| {
            n.split('-')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("-")
        };
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(n, v)| (canonical(&n), v))
            .collect();
        assert!(
            headers
                .iter()
                .any(|(n, _)| n == "X-Goog-Cloud-Target-Resource")
        );
        let parts = SignedRequestParts {
            method: &method,
            uri: &uri,
            headers: headers.clone(),
            body: b"",
        };
        let caller = verify(&parts, with_token, at(T0)).unwrap();
        assert_eq!(
            caller.signed_headers,
            [
                "host",
                "x-amz-date",
                "x-amz-security-token",
                "x-goog-cloud-target-resource"
            ]
        );
        // Changing the signed header breaks the signature.
        let tampered: Vec<(String, String)> = headers
            .into_iter()
            .map(|(n, v)| {
                if n == "X-Goog-Cloud-Target-Resource" {
                    (n, "//iam.googleapis.com/other".to_owned())
                } else {
                    (n, v)
                }
            })
            .collect();
        let parts = SignedRequestParts {
            method: &method,
            uri: &uri,
            headers: tampered,
            body: b"",
        };
        assert_eq!(
            verify(&parts, with_token, at(T0)),
            Err(SigV4Error::Mismatch)
        );
    }

    #[test]
    fn query_plus_and_percent_twenty_are_the_same() {
        let mut req = http::Request::post("/?Action=GetCallerIdentity&Version=2011-06-15&X=a%20b")
            .header("host", HOST)
            .body(Vec::new())
            .unwrap();
        client(None, T0).sign(&mut req, None, false);
        let (method, _, headers) = parts_of(&req);
        let parts = SignedRequestParts {
            method: &method,
            uri: "/?Action=GetCallerIdentity&Version=2011-06-15&X=a+b",
            headers,
            body: b"",
        };
        assert!(verify(&parts, long_term, at(T0)).is_ok());
    }

    #[test]
    fn presigned_get_verifies_with_either_payload_hash() {
        for unsigned in [true, false] {
            let mut req = http::Request::get(URI)
                .header("host", HOST)
                .body(Vec::new())
                .unwrap();
            client(Some(TOKEN), T0).sign(&mut req, Some(900), unsigned);
            assert!(req.uri().query().unwrap().contains("X-Amz-Signature="));
            assert!(req.headers().get("authorization").is_none());
            let caller = verify_req(&req, with_token, T0 + 30).unwrap();
            assert!(caller.presigned);
            assert_eq!(caller.signed_headers, ["host"]);
            // A wrong token in the URL is refused before the signature is even looked at.
            let uri = req
                .uri()
                .to_string()
                .replace("X-Amz-Security-Token=", "X-Amz-Security-Token=x");
            let parts = SignedRequestParts {
                method: "GET",
                uri: &uri,
                headers: vec![("host".into(), HOST.into())],
                body: b"",
            };
            assert_eq!(
                verify(&parts, with_token, at(T0)),
                Err(SigV4Error::InvalidSessionToken)
            );
        }
    }

    #[test]
    fn presigned_urls_expire_after_x_amz_expires_or_fifteen_minutes() {
        let presigned = |expires| {
            let mut req = http::Request::get(URI)
                .header("host", HOST)
                .body(Vec::new())
                .unwrap();
            client(Some(TOKEN), T0).sign(&mut req, Some(expires), true);
            req
        };
        let short = presigned(60);
        assert!(verify_req(&short, with_token, T0 + 60).is_ok());
        let err = verify_req(&short, with_token, T0 + 61).unwrap_err();
        assert_eq!(
            (err.code(), err.http_status()),
            ("SignatureDoesNotMatch", 403)
        );
        assert_eq!(
            err.to_string(),
            "Signature expired: 20200811T065522Z is now earlier than 20200811T065523Z (20200811T065623Z - 60 sec.)"
        );
        // A longer X-Amz-Expires still ends with the 15-minute signature window.
        let long = presigned(3600);
        assert!(verify_req(&long, with_token, T0 + 900).is_ok());
        let err = verify_req(&long, with_token, T0 + 901).unwrap_err();
        assert!(err.to_string().ends_with("- 15 min.)"), "{err}");
    }

    #[test]
    fn clock_skew_beyond_fifteen_minutes_is_refused() {
        let mut req = empty_post();
        client(None, T0).sign(&mut req, None, false);
        assert!(verify_req(&req, long_term, T0 + 15 * 60).is_ok());
        let err = verify_req(&req, long_term, T0 + 15 * 60 + 1).unwrap_err();
        assert_eq!(err.code(), "SignatureDoesNotMatch");
        assert_eq!(
            err.to_string(),
            "Signature expired: 20200811T065522Z is now earlier than 20200811T065523Z (20200811T071023Z - 15 min.)"
        );
        let err = verify_req(&req, long_term, T0 - 15 * 60 - 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Signature not yet current: 20200811T065522Z is still later than 20200811T065521Z (20200811T064021Z + 15 min.)"
        );
    }

    #[test]
    fn keys_and_tokens() {
        let mut req = empty_post();
        client(Some(TOKEN), T0).sign(&mut req, None, false);
        // Unknown key.
        assert_eq!(
            verify_req(&req, |_| None, T0),
            Err(SigV4Error::UnknownAccessKey)
        );
        // A token sent for a long-term key.
        assert_eq!(
            verify_req(&req, long_term, T0),
            Err(SigV4Error::InvalidSessionToken)
        );
        // A different token than the one issued.
        let other = |_: &str| Some((SecretString::new(SECRET), Some(SecretString::new("other"))));
        assert_eq!(
            verify_req(&req, other, T0),
            Err(SigV4Error::InvalidSessionToken)
        );
        // No token for a temporary key.
        let mut req = empty_post();
        client(None, T0).sign(&mut req, None, false);
        assert_eq!(
            verify_req(&req, with_token, T0),
            Err(SigV4Error::InvalidSessionToken)
        );
        // Wrong secret.
        let wrong = |_: &str| Some((SecretString::new("not-the-secret"), None));
        assert_eq!(verify_req(&req, wrong, T0), Err(SigV4Error::Mismatch));
        let e = SigV4Error::InvalidSessionToken;
        assert_eq!((e.code(), e.http_status()), ("InvalidClientTokenId", 403));
    }

    #[test]
    fn token_added_after_signing_is_accepted_but_not_signed() {
        let mut req = empty_post();
        client(None, T0).sign(&mut req, None, false);
        req.headers_mut()
            .insert("x-amz-security-token", TOKEN.parse().unwrap());
        let caller = verify_req(&req, with_token, T0).unwrap();
        assert_eq!(caller.signed_headers, ["host", "x-amz-date"]);
    }

    #[test]
    fn malformed_and_missing_signatures() {
        let unsigned = empty_post();
        assert_eq!(
            verify_req(&unsigned, long_term, T0),
            Err(SigV4Error::MissingAuthentication)
        );

        let with_auth = |auth: &str| {
            let mut headers = pyauth_parts(PYAUTH_SIGNATURE);
            headers[0].1 = auth.to_owned();
            verify(
                &SignedRequestParts {
                    method: "POST",
                    uri: URI,
                    headers,
                    body: b"",
                },
                long_term,
                at(T0),
            )
        };
        let e = with_auth("AWS AKIAIOSFODNN7EXAMPLE:abc").unwrap_err();
        assert_eq!((e.code(), e.http_status()), ("IncompleteSignature", 400));
        let e = with_auth(
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20200811/us-east-2/sts/aws4_request",
        )
        .unwrap_err();
        assert_eq!(e.code(), "IncompleteSignature");
        assert!(e.to_string().contains("'Signature'"), "{e}");
        let e = with_auth(&format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20200810/us-east-2/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature={PYAUTH_SIGNATURE}"
        ))
        .unwrap_err();
        assert_eq!(e.code(), "SignatureDoesNotMatch");
        assert!(
            e.to_string()
                .starts_with("Date in Credential scope does not match"),
            "{e}"
        );
        let e = with_auth(&format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20200811/us-east-2/sts/aws4_request, SignedHeaders=x-amz-date, Signature={PYAUTH_SIGNATURE}"
        ))
        .unwrap_err();
        assert_eq!(e.code(), "IncompleteSignature");
        // Signed for another service: verifies, but `check_service` refuses it.
        let mut req = empty_post();
        Client {
            service: "s3",
            ..client(None, T0)
        }
        .sign(&mut req, None, false);
        let caller = verify_req(&req, long_term, T0).unwrap();
        let e = check_service(&caller, "sts").unwrap_err();
        assert_eq!(e.code(), "SignatureDoesNotMatch");
        assert_eq!(
            e.to_string(),
            "Credential should be scoped to correct service: 'sts'. "
        );
    }

    #[test]
    fn debug_shows_no_header_values() {
        let parts = SignedRequestParts {
            method: "POST",
            uri: "/?X-Amz-Security-Token=secret-token",
            headers: vec![("x-amz-security-token".into(), "secret-token".into())],
            body: b"",
        };
        let printed = format!("{parts:?}");
        assert!(!printed.contains("secret-token"), "{printed}");
    }
}
