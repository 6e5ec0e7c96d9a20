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
            .field("header_names", &self.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
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
    #[error("Signature expired: {signed} is now earlier than {earliest} ({now} - 15 min.)")]
    Expired {
        /// The request's `x-amz-date`.
        signed: String,
        /// The earliest acceptable date.
        earliest: String,
        /// The server's time.
        now: String,
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
            SigV4Error::UnknownAccessKey | SigV4Error::InvalidSessionToken => "InvalidClientTokenId",
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
        (Some(expected), Some(sent)) if ct_eq(expected.expose_secret().as_bytes(), sent.as_bytes()) => {}
        _ => return Err(SigV4Error::InvalidSessionToken),
    }

    check_skew(&parsed, now)?;

    let candidates: &[SignableBody<'_>] = if parsed.presigned {
        // Presigners differ: botocore signs `UNSIGNED-PAYLOAD`, others the body's hash.
        &[SignableBody::Precomputed(UNSIGNED_PAYLOAD.to_owned()), SignableBody::Bytes(req.body)]
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

fn parse_header_auth<'r>(req: &'r SignedRequestParts<'r>, auth: &'r str) -> Result<Parsed<'r>, SigV4Error> {
    let auth = auth.trim();
    let (algorithm, rest) = auth.split_once(' ').unwrap_or((auth, ""));
    if algorithm != ALGORITHM {
        return Err(SigV4Error::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{}'. Only '{ALGORITHM}' is supported.",
            shorten(algorithm)
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
        missing.push("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
    }
    let (Some(credential), Some(signed_headers), Some(signature), Some(amz_date)) =
        (credential, signed_headers, signature, amz_date)
    else {
        return Err(SigV4Error::Incomplete(missing.join(" ")));
    };
    let session_token = req.header("x-amz-security-token").map(Cow::Borrowed);
    build_parsed(false, credential, signed_headers, signature, amz_date.trim(), session_token, None)
}

fn parse_query_auth<'r>(req: &'r SignedRequestParts<'r>) -> Result<Parsed<'r>, SigV4Error> {
    let pairs = query_pairs(req.uri);
    let get = |name: &str| pairs.iter().find(|(k, _, _)| k == name).map(|(_, v, _)| v.clone());
    let required = [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Date",
        "X-Amz-Expires",
    ];
    let missing: Vec<&str> = required.iter().copied().filter(|p| get(p).is_none()).collect();
    if !missing.is_empty() {
        return Err(SigV4Error::Incomplete(format!(
            "AWS query-string parameters must include {}. Re-examine the query-string parameters.",
            missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", ")
        )));
    }
    let algorithm = get("X-Amz-Algorithm").unwrap_or_default();
    if algorithm != ALGORITHM {
        return Err(SigV4Error::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{}'. Only '{ALGORITHM}' is supported.",
            shorten(&algorithm)
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
                shorten(&expires_raw)
            ))
        })?;
    let credential = get("X-Amz-Credential").unwrap_or_default();
    let signed_headers = get("X-Amz-SignedHeaders").unwrap_or_default();
    let signature = get("X-Amz-Signature").unwrap_or_default();
    let amz_date = get("X-Amz-Date").unwrap_or_default();
    let session_token = get("X-Amz-Security-Token").map(Cow::Owned);
    build_parsed(true, &credential, &signed_headers, &signature, &amz_date, session_token, Some(expires))
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
        return Err(SigV4Error::Incomplete("Credential is missing the access key id.".to_owned()));
    }
    if *terminator != "aws4_request" {
        return Err(SigV4Error::Scope(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'. ",
            shorten(terminator)
        )));
    }
    if region.is_empty() {
        return Err(SigV4Error::Scope("Credential should be scoped to a valid region. ".to_owned()));
    }
    if service.is_empty() {
        return Err(SigV4Error::Scope("Credential should be scoped to correct service. ".to_owned()));
    }
    let Some(signed_at) = parse_amz_date(amz_date) else {
        return Err(SigV4Error::Incomplete(format!(
            "Date must be in ISO-8601 'basic format'. Got '{}'. See http://en.wikipedia.org/wiki/ISO_8601",
            shorten(amz_date)
        )));
    };
    let day = amz_date.get(..8).unwrap_or_default();
    if *scope_date != day {
        return Err(SigV4Error::Scope(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{day}', from '{amz_date}'.",
            shorten(scope_date)
        )));
    }
    let names: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
    if names.iter().any(String::is_empty) {
        return Err(SigV4Error::Incomplete("SignedHeaders must not contain empty header names.".to_owned()));
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

/// Keeps client-supplied text short in messages.
fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

fn check_skew(parsed: &Parsed<'_>, now: OffsetDateTime) -> Result<(), SigV4Error> {
    // STS does not honour `X-Amz-Expires` on presigned GetCallerIdentity URLs (they stay valid
    // for the same 15 minutes as any signature, whatever the URL says), so the window is the
    // same for both shapes; `X-Amz-Expires` is only part of what was signed.
    if parsed.signed_at < now - MAX_CLOCK_SKEW {
        return Err(SigV4Error::Expired {
            signed: parsed.amz_date.clone(),
            earliest: amz_date(now - MAX_CLOCK_SKEW),
            now: amz_date(now),
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
    let listed = |name: &str| parsed.signed_headers.iter().any(|n| n.eq_ignore_ascii_case(name));
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
            return Err(SigV4Error::Incomplete("'X-Amz-Expires' is missing.".to_owned()));
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
    let (instructions, signature) = sign(signable, &params).map_err(|_| SigV4Error::Mismatch)?.into_parts();

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
