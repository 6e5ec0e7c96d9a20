//! The emulated AWS STS: the query protocol (`2011-06-15`) at `/`.
//!
//! Requests are `POST /` with an `application/x-www-form-urlencoded` body or `GET /?Action=…`;
//! parameters from the query string and the body are merged (Google's libraries send
//! `POST /?Action=GetCallerIdentity&Version=2011-06-15` with an empty body). Every response is
//! `text/xml` with an `x-amzn-RequestId` header; errors are `<ErrorResponse>` documents with
//! `Type` `Sender` and AWS's wire codes (`InvalidIdentityToken` but `ExpiredTokenException`;
//! `IDPRejectedClaim`, `AccessDenied` and the signature errors are 403, the rest 400).
//!
//! | action | authentication | checks |
//! |---|---|---|
//! | `AssumeRoleWithWebIdentity` | none (the token is the credential) | parameter constraints; the token's signature, issuer, `kid`, timestamps and claims ([`crate::token_verify`]); the role exists; its trust policy allows the token's claims (`idbridge-policy`); `DurationSeconds` within the role's maximum; the session policy parses |
//! | `GetCallerIdentity` | SigV4, header or presigned ([`crate::sigv4`]) | the key is a session this STS issued, with its session token, not expired; the signature; credential scope service `sts` |
//!
//! Issued sessions are kept in [`Emulator::aws_sessions`]; calls are counted as
//! `aws_sts.<Action>`.

use std::cell::Cell;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{StatusCode, request};
use idbridge_core::SecretString;
use idbridge_core::timefmt::rfc3339_seconds;
use idbridge_policy::aws::{
    Evaluation, Principal, TrustPolicy, WebIdentityProvider, WebIdentityRequest, evaluate,
    web_identity_context,
};
use idbridge_wire::aws_sts as wire;
use sha2::{Digest, Sha256};

use crate::sigv4::{self, SigV4Error, SignedRequestParts};
use crate::state::AwsSession;
use crate::token_verify::{self, IssuerKind, TokenError, VerifyOptions};
use crate::world::AwsRole;
use crate::Emulator;

/// The only API version STS speaks.
pub const API_VERSION: &str = "2011-06-15";

/// Largest request body read (AWS caps `WebIdentityToken` at 20,000 characters).
const MAX_BODY_BYTES: usize = 256 * 1024;

/// `DurationSeconds` bounds and default.
const MIN_DURATION: i64 = 900;
const MAX_DURATION: i64 = 43_200;
const DEFAULT_DURATION: i64 = 3600;

/// The largest session policy, in characters; `PackedPolicySize` is reported relative to it.
const MAX_POLICY_CHARS: usize = 2048;

/// The message AWS gives when a trust policy does not allow the call.
const NOT_AUTHORIZED: &str = "Not authorized to perform sts:AssumeRoleWithWebIdentity";

/// The router serving the STS query protocol at `/`.
pub fn router(state: Arc<Emulator>) -> Router {
    Router::new()
        .route("/", get(handle).post(handle))
        .with_state(state)
}

/// An STS error: HTTP status, wire code, message.
#[derive(Debug)]
struct StsError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl StsError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        StsError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn access_denied() -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDenied", NOT_AUTHORIZED)
    }

    fn response(self, request_id: &str) -> Response {
        let doc = wire::ErrorResponse {
            xmlns: wire::XMLNS,
            error: wire::ErrorBody {
                kind: "Sender",
                code: self.code.to_owned(),
                message: self.message,
            },
            request_id: request_id.to_owned(),
        };
        match wire::to_xml(&doc) {
            Ok(xml) => xml_response(self.status, request_id, xml),
            Err(_) => internal_error(request_id),
        }
    }
}

impl From<SigV4Error> for StsError {
    fn from(e: SigV4Error) -> Self {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN);
        StsError::new(status, e.code(), e.to_string())
    }
}

fn xml_response(status: StatusCode, request_id: &str, xml: String) -> Response {
    let mut response = (status, xml).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), id);
    }
    response
}

fn internal_error(request_id: &str) -> Response {
    xml_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        request_id,
        format!(
            "<ErrorResponse xmlns=\"{}\"><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>The request processing has failed because of an unknown error.</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
            wire::XMLNS
        ),
    )
}

/// Request parameters, query first then body; the first occurrence of a name wins.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn starting_with<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

async fn handle(State(state): State<Arc<Emulator>>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return StsError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "Request body must be less than 256 KB.",
        )
        .response(&request_id);
    };
    match dispatch(&state, &parts, &body, &request_id) {
        Ok(xml) => xml_response(StatusCode::OK, &request_id, xml),
        Err(e) => e.response(&request_id),
    }
}

fn dispatch(state: &Emulator, parts: &request::Parts, body: &Bytes, request_id: &str) -> Result<String, StsError> {
    let mut params: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let form_body = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if form_body && !body.is_empty() {
        params.extend(url::form_urlencoded::parse(body).into_owned());
    }
    let params = Params(params);

    let Some(action) = params.get("Action") else {
        return Err(StsError::bad_request("MissingAction", "Missing Action"));
    };
    let known = matches!(action, "AssumeRoleWithWebIdentity" | "GetCallerIdentity");
    state.bump(&format!(
        "aws_sts.{}",
        if known { action } else { "InvalidAction" }
    ));
    let version = params.get("Version");
    if version != Some(API_VERSION) || !known {
        return Err(StsError::bad_request(
            "InvalidAction",
            format!(
                "Could not find operation {} for version {}",
                short(action, 128),
                version.map_or_else(|| "NO_VERSION_SPECIFIED".to_owned(), |v| short(v, 64))
            ),
        ));
    }
    match action {
        "AssumeRoleWithWebIdentity" => assume_role_with_web_identity(state, &params, request_id),
        _ => get_caller_identity(state, parts, body, request_id),
    }
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

// ---------------------------------------------------------------------------------------------
// AssumeRoleWithWebIdentity
// ---------------------------------------------------------------------------------------------

/// Validated parameters of `AssumeRoleWithWebIdentity`.
struct ArwwiParams<'a> {
    role_arn: &'a str,
    session_name: &'a str,
    token: SecretString,
    duration: i64,
    policy: Option<&'a str>,
    policy_arns: usize,
}

/// Collects constraint violations in AWS's `N validation error(s) detected: …` style.
#[derive(Default)]
struct Violations(Vec<String>);

impl Violations {
    /// `sensitive` members are named without their value, as AWS does for the token.
    fn length(&mut self, member: &str, value: Option<&str>, min: usize, max: usize, sensitive: bool) {
        let Some(value) = value else {
            self.0.push(format!(
                "Value null at '{member}' failed to satisfy constraint: Member must not be null"
            ));
            return;
        };
        let shown = if sensitive {
            String::new()
        } else {
            format!(" '{value}'")
        };
        let len = value.chars().count();
        if len < min {
            self.0.push(format!(
                "Value{shown} at '{member}' failed to satisfy constraint: Member must have length greater than or equal to {min}"
            ));
        } else if len > max {
            self.0.push(format!(
                "Value{shown} at '{member}' failed to satisfy constraint: Member must have length less than or equal to {max}"
            ));
        }
    }

    fn pattern(&mut self, member: &str, value: Option<&str>, ok: impl Fn(char) -> bool, pattern: &str) {
        if let Some(value) = value
            && !value.chars().all(ok)
        {
            self.0.push(format!(
                "Value '{value}' at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: {pattern}"
            ));
        }
    }

    fn into_error(self) -> Option<StsError> {
        match self.0.len() {
            0 => None,
            n => Some(StsError::bad_request(
                "ValidationError",
                format!(
                    "{n} validation error{} detected: {}",
                    if n == 1 { "" } else { "s" },
                    self.0.join("; ")
                ),
            )),
        }
    }
}

fn validate_arwwi(params: &Params) -> Result<ArwwiParams<'_>, StsError> {
    let mut v = Violations::default();
    let role_arn = params.get("RoleArn");
    let session_name = params.get("RoleSessionName");
    let token = params.get("WebIdentityToken");
    let policy = params.get("Policy");
    let provider_id = params.get("ProviderId");

    v.length("roleArn", role_arn, 20, 2048, false);
    v.length("roleSessionName", session_name, 2, 64, false);
    v.pattern(
        "roleSessionName",
        session_name,
        |c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c),
        r"[\w+=,.@-]*",
    );
    v.length("webIdentityToken", token, 4, 20_000, true);
    if let Some(p) = policy {
        v.length("policy", Some(p), 1, MAX_POLICY_CHARS, false);
        v.pattern(
            "policy",
            Some(p),
            |c| matches!(c, '\u{9}' | '\u{a}' | '\u{d}' | '\u{20}'..='\u{ff}'),
            r"[\u0009\u000A\u000D\u0020-\u00FF]+",
        );
    }
    if provider_id.is_some() {
        v.length("providerId", provider_id, 4, 2048, false);
    }
    let mut duration = DEFAULT_DURATION;
    if let Some(raw) = params.get("DurationSeconds") {
        match raw.trim().parse::<i64>() {
            Ok(d) if d < MIN_DURATION => v.0.push(format!(
                "Value '{raw}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to {MIN_DURATION}"
            )),
            Ok(d) if d > MAX_DURATION => v.0.push(format!(
                "Value '{raw}' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to {MAX_DURATION}"
            )),
            Ok(d) => duration = d,
            Err(_) => v.0.push(format!(
                "Value '{}' at 'durationSeconds' failed to satisfy constraint: Member must be an integer",
                short(raw, 64)
            )),
        }
    }
    let policy_arns: Vec<(&str, &str)> = params
        .starting_with("PolicyArns.member.")
        .filter(|(k, _)| k.ends_with(".arn"))
        .collect();
    if policy_arns.len() > 10 {
        v.0.push(
            "Value at 'policyArns' failed to satisfy constraint: Member must have length less than or equal to 10"
                .to_owned(),
        );
    }
    for (_, arn) in &policy_arns {
        v.length("policyArns.member.arn", Some(arn), 20, 2048, false);
    }
    if let Some(e) = v.into_error() {
        return Err(e);
    }
    let (Some(role_arn), Some(session_name), Some(token)) = (role_arn, session_name, token) else {
        // Unreachable: `length` reported every missing one.
        return Err(StsError::bad_request("ValidationError", "1 validation error detected"));
    };
    if provider_id.is_some() {
        // `ProviderId` is only for OAuth 2.0 access tokens of www.amazon.com and
        // graph.facebook.com; every issuer this emulator knows is an OpenID Connect provider.
        return Err(StsError::bad_request(
            "InvalidParameterValue",
            "ProviderId is only valid for OAuth 2.0 access tokens from www.amazon.com or graph.facebook.com; omit it for OpenID Connect ID tokens.",
        ));
    }
    Ok(ArwwiParams {
        role_arn,
        session_name,
        token: SecretString::new(token),
        duration,
        policy,
        policy_arns: policy_arns.len(),
    })
}

/// The STS error for a token that did not verify. Messages never carry the token.
fn token_error(e: &TokenError) -> StsError {
    const KEY_NOT_FOUND: &str = "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements";
    let invalid = |m: String| StsError::bad_request("InvalidIdentityToken", m);
    match e {
        TokenError::Malformed(_) => invalid(
            "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)"
                .to_owned(),
        ),
        TokenError::UnsupportedAlgorithm(alg) => invalid(format!(
            "Unsupported token signing algorithm '{alg}'. Tokens must be signed using RS256, RS384, RS512, ES256, ES384 or ES512."
        )),
        TokenError::MissingIssuer => invalid("The ID Token provided has no issuer (iss) claim.".to_owned()),
        TokenError::UnknownIssuer(iss) => invalid(format!("No OpenIDConnect provider found in your account for {iss}")),
        TokenError::MissingKid | TokenError::UnknownKid => invalid(KEY_NOT_FOUND.to_owned()),
        TokenError::BadSignature => invalid("The signature of the ID Token could not be verified.".to_owned()),
        TokenError::NonIntegerTimestamp(claim) => invalid(format!(
            "Incorrect token format: the {claim} claim must be an integer or a long integer."
        )),
        TokenError::MissingExpiry => invalid("The ID Token provided has no expiration (exp) claim.".to_owned()),
        TokenError::Expired { exp, now } => StsError::bad_request(
            "ExpiredTokenException",
            format!("Token expired: current date/time {now} must be before the expiration date/time {exp}"),
        ),
        TokenError::NotYetValid { nbf, now } => invalid(format!(
            "Token is not yet valid: current date/time {now} must be after the not-before date/time {nbf}"
        )),
        TokenError::IssuedInFuture { iat, now } => invalid(format!(
            "Token issued in the future: issue date/time {iat} is after current date/time {now}"
        )),
        TokenError::LifetimeTooLong { .. } => invalid("The ID Token provided is valid for too long.".to_owned()),
        TokenError::MissingClaim(claim) => StsError::new(
            StatusCode::FORBIDDEN,
            "IDPRejectedClaim",
            format!("The ID Token provided is missing the required {claim} claim."),
        ),
    }
}

fn assume_role_with_web_identity(state: &Emulator, params: &Params, request_id: &str) -> Result<String, StsError> {
    let p = validate_arwwi(params)?;

    let packed_policy_size = match p.policy {
        Some(text) => Some(packed_policy_size(text)?),
        None if p.policy_arns > 0 => Some(0),
        None => None,
    };

    let now = state.clock.now();
    let token = token_verify::verify_jwt(
        state,
        p.token.expose_secret(),
        now.unix_timestamp(),
        &VerifyOptions::aws_sts(),
    )
    .map_err(|e| {
        tracing::info!(role = %p.role_arn, error = %e, "AssumeRoleWithWebIdentity: token rejected");
        token_error(&e)
    })?;

    let Some(role) = state.world.role(p.role_arn) else {
        tracing::info!(role = %p.role_arn, "AssumeRoleWithWebIdentity: no such role");
        return Err(StsError::access_denied());
    };

    let provider = WebIdentityProvider::from_issuer(&token.issuer);
    let partition = role.arn.split(':').nth(1).unwrap_or("aws");
    let mut request = WebIdentityRequest::new(role.account(), p.session_name, now);
    request.partition = partition.to_owned();
    let ctx = web_identity_context(&provider, &token.claims, &request).map_err(|e| {
        tracing::info!(role = %role.arn, error = %e, "AssumeRoleWithWebIdentity: unusable token claims");
        StsError::bad_request("InvalidIdentityToken", format!("The ID Token provided is not acceptable: {e}"))
    })?;
    let policy = TrustPolicy::parse(&role.trust_policy).map_err(|e| {
        tracing::warn!(role = %role.arn, error = %e, "AssumeRoleWithWebIdentity: the role's trust policy does not parse");
        StsError::access_denied()
    })?;
    let evaluation = evaluate(&policy, &ctx);
    if !evaluation.is_allowed() {
        log_denial(role, "sts:AssumeRoleWithWebIdentity", &evaluation);
        return Err(StsError::access_denied());
    }
    if ctx.get("aws:TagKeys").is_some() {
        let tagging = evaluate(&policy, &ctx.clone().with_action("sts:TagSession"));
        if !tagging.is_allowed() {
            log_denial(role, "sts:TagSession", &tagging);
            return Err(StsError::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Not authorized to perform sts:TagSession",
            ));
        }
    }
    if p.duration > i64::from(role.max_session_duration) {
        return Err(StsError::bad_request(
            "ValidationError",
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        ));
    }

    let session = AwsSession {
        access_key_id: access_key_id(),
        secret_access_key: SecretString::new(random_b64(30)),
        session_token: SecretString::new(random_b64(384)),
        role_arn: role.arn.clone(),
        session_name: p.session_name.to_owned(),
        role_id: role_id(&role.arn),
        expires_at: now + time::Duration::seconds(p.duration),
    };
    state.insert_session(session.clone());
    tracing::info!(
        role = %role.arn,
        session = %session.session_name,
        access_key_id = %session.access_key_id,
        "AssumeRoleWithWebIdentity: issued session"
    );

    let audience = match token.kind {
        IssuerKind::Google => token.authorized_party.clone(),
        IssuerKind::Oidc => None,
    }
    .or_else(|| token.audiences.first().cloned())
    .unwrap_or_default();
    let provider_name = match provider.principal_in_partition(partition, role.account()) {
        Principal::Federated(p) => p,
        _ => provider.name().to_owned(),
    };
    let doc = wire::AssumeRoleWithWebIdentityResponse {
        xmlns: wire::XMLNS,
        assume_role_with_web_identity_result: wire::AssumeRoleWithWebIdentityResult {
            subject_from_web_identity_token: token.subject.clone(),
            audience,
            assumed_role_user: wire::AssumedRoleUser {
                assumed_role_id: format!("{}:{}", session.role_id, session.session_name),
                arn: session.assumed_role_arn(),
            },
            credentials: wire::Credentials {
                access_key_id: session.access_key_id.clone(),
                secret_access_key: session.secret_access_key.expose_secret().to_owned(),
                session_token: session.session_token.expose_secret().to_owned(),
                expiration: rfc3339_seconds(session.expires_at),
            },
            provider: provider_name,
            packed_policy_size,
        },
        response_metadata: wire::ResponseMetadata {
            request_id: request_id.to_owned(),
        },
    };
    wire::to_xml(&doc).map_err(|_| {
        StsError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The request processing has failed because of an unknown error.",
        )
    })
}

/// Logs why a trust policy did not allow a call: per statement, what did not match. Condition
/// values from the token are not logged, only the key, the operator and the policy's values.
fn log_denial(role: &AwsRole, action: &str, evaluation: &Evaluation) {
    for s in &evaluation.statements {
        let failed: Vec<String> = s
            .conditions
            .iter()
            .filter(|c| !c.result)
            .map(|c| {
                format!(
                    "{} {} {:?} (key {})",
                    c.operator,
                    c.key,
                    c.policy_values,
                    if c.context_values.is_some() { "present" } else { "absent" }
                )
            })
            .collect();
        tracing::info!(
            role = %role.arn,
            action,
            decision = ?evaluation.decision,
            statement = s.index,
            sid = s.sid.as_deref().unwrap_or(""),
            effect = ?s.effect,
            principal_matched = s.principal_matched,
            action_matched = s.action_matched,
            failed_conditions = %failed.join("; "),
            "trust policy statement did not allow the request"
        );
    }
    if evaluation.statements.is_empty() {
        tracing::info!(role = %role.arn, action, "trust policy has no statements");
    }
}

/// Parses a session policy and reports its packed size in percent of the allowed maximum.
///
/// AWS packs session policies into a compressed binary form whose size is not documented; this
/// reports the compact JSON's size relative to the 2,048-character limit instead.
fn packed_policy_size(text: &str) -> Result<u32, StsError> {
    TrustPolicy::parse(text).map_err(|e| StsError::bad_request("MalformedPolicyDocument", e.aws_message()))?;
    let compact = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string(&v).ok())
        .map_or(text.len(), |s| s.len());
    let percent = compact.saturating_mul(100).div_ceil(MAX_POLICY_CHARS);
    if percent > 100 {
        return Err(StsError::bad_request(
            "PackedPolicyTooLarge",
            format!("Packed policy consumes {percent}% of allotted space, please use smaller policy."),
        ));
    }
    Ok(u32::try_from(percent).unwrap_or(100))
}

/// `ASIA` + 16 random upper-case letters and digits, like a temporary access key id.
fn access_key_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let bytes: [u8; 16] = rand::random();
    let tail: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    format!("ASIA{tail}")
}

/// Base64 of `n` random bytes (30 bytes → the 40 characters of a secret access key).
fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::fill(&mut bytes[..]);
    STANDARD.encode(&bytes)
}

/// `AROA` + 17 characters derived from the role ARN, stable across restarts (real role ids are
/// random per role but fixed for its life).
pub fn role_id(role_arn: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(role_arn.as_bytes());
    let mut out = String::from("AROA");
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in digest.iter() {
        acc = (acc << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 && out.len() < 21 {
            bits -= 5;
            let index = usize::try_from((acc >> bits) & 31).unwrap_or(0);
            out.push(char::from(ALPHABET[index]));
        }
        acc &= (1 << bits) - 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// GetCallerIdentity
// ---------------------------------------------------------------------------------------------

fn get_caller_identity(
    state: &Emulator,
    parts: &request::Parts,
    body: &[u8],
    request_id: &str,
) -> Result<String, StsError> {
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let uri = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let signed = SignedRequestParts {
        method: parts.method.as_str(),
        uri,
        headers,
        body,
    };
    let now = state.clock.now();
    let expired = Cell::new(false);
    let lookup = |akid: &str| {
        let session = state.session(akid)?;
        if session.expires_at <= now {
            expired.set(true);
        }
        Some((session.secret_access_key, Some(session.session_token)))
    };
    let result = sigv4::verify(&signed, lookup, now);
    let caller = match result {
        Err(e @ (SigV4Error::UnknownAccessKey | SigV4Error::InvalidSessionToken)) => return Err(e.into()),
        // The key and its token were recognized: an expired session says so whatever else is
        // wrong with the request.
        _ if expired.get() => {
            return Err(StsError::new(
                StatusCode::FORBIDDEN,
                "ExpiredToken",
                "The security token included in the request is expired",
            ));
        }
        Err(e) => {
            tracing::info!(error = %e, code = e.code(), "GetCallerIdentity: signature rejected");
            return Err(e.into());
        }
        Ok(caller) => caller,
    };
    sigv4::check_service(&caller, "sts")?;
    let Some(session) = state.session(&caller.access_key_id) else {
        return Err(SigV4Error::UnknownAccessKey.into());
    };
    let doc = wire::GetCallerIdentityResponse {
        xmlns: wire::XMLNS,
        get_caller_identity_result: wire::GetCallerIdentityResult {
            arn: session.assumed_role_arn(),
            user_id: format!("{}:{}", session.role_id, session.session_name),
            account: session.account().to_owned(),
        },
        response_metadata: wire::ResponseMetadata {
            request_id: request_id.to_owned(),
        },
    };
    wire::to_xml(&doc).map_err(|_| {
        StsError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The request processing has failed because of an unknown error.",
        )
    })
}
