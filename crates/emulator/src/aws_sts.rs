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
//! | `AssumeRole` | SigV4 by a session of this STS | parameter constraints; the role exists and its trust policy allows the calling session (`sts:AssumeRole`, `sts:TagSession` with tags, `sts:SetSourceIdentity` with a source identity; `sts:ExternalId`, `aws:PrincipalTag/…` of the caller, `aws:RequestTag/…`); the 1-hour limit of a chained session |
//! | `GetWebIdentityToken` | SigV4 by a session of this STS | the account's outbound federation switch, audiences, algorithm, duration within the session ([`crate::aws_outbound`]) |
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
    Evaluation, MalformedKind, Principal, TrustPolicy, WebIdentityProvider, WebIdentityRequest,
    evaluate, web_identity_context,
};
use idbridge_wire::aws_sts as wire;
use sha2::{Digest, Sha256};

use crate::sigv4::{self, SigV4Error, SignedRequestParts};
use crate::state::AwsSession;
use crate::token_verify::{self, IssuerKind, TokenError, VerifyOptions};
use crate::world::AwsRole;
use crate::{Emulator, short};

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
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn starting_with<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
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

fn dispatch(
    state: &Emulator,
    parts: &request::Parts,
    body: &Bytes,
    request_id: &str,
) -> Result<String, StsError> {
    let mut params: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let form_body = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if form_body && !body.is_empty() {
        params.extend(url::form_urlencoded::parse(body).into_owned());
    }
    let params = Params(params);

    let Some(action) = params.get("Action") else {
        return Err(StsError::bad_request("MissingAction", "Missing Action"));
    };
    let known = matches!(
        action,
        "AssumeRoleWithWebIdentity" | "GetCallerIdentity" | "AssumeRole" | "GetWebIdentityToken"
    );
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
        "AssumeRole" => assume_role::assume_role(state, parts, body, &params, request_id),
        "GetWebIdentityToken" => get_web_identity_token(state, parts, body, &params, request_id),
        _ => get_caller_identity(state, parts, body, request_id),
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
    fn length(
        &mut self,
        member: &str,
        value: Option<&str>,
        min: usize,
        max: usize,
        sensitive: bool,
    ) {
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

    fn pattern(
        &mut self,
        member: &str,
        value: Option<&str>,
        ok: impl Fn(char) -> bool,
        pattern: &str,
    ) {
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
        return Err(StsError::bad_request(
            "ValidationError",
            "1 validation error detected",
        ));
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

fn assume_role_with_web_identity(
    state: &Emulator,
    params: &Params,
    request_id: &str,
) -> Result<String, StsError> {
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
        let tagging = evaluate(&policy, &ctx.with_action("sts:TagSession"));
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

    let session = issue_session(
        state,
        &role.arn,
        p.session_name,
        now + time::Duration::seconds(p.duration),
    );
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
            subject_from_web_identity_token: token.subject,
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
                    if c.context_values.is_some() {
                        "present"
                    } else {
                        "absent"
                    }
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
    parse_session_policy(text)?;
    let compact = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string(&v).ok())
        .map_or(text.len(), |s| s.len());
    let percent = compact.saturating_mul(100).div_ceil(MAX_POLICY_CHARS);
    if percent > 100 {
        return Err(StsError::bad_request(
            "PackedPolicyTooLarge",
            format!(
                "Packed policy consumes {percent}% of allotted space, please use smaller policy."
            ),
        ));
    }
    Ok(u32::try_from(percent).unwrap_or(100))
}

/// Checks a session policy against the IAM policy grammar.
///
/// A session policy is an identity policy: it must not name a principal, while the grammar of
/// `idbridge-policy` is that of trust policies, which require one. So a document whose only
/// fault is the missing `Principal` is checked again with `"Principal": "*"` added to each
/// statement, which leaves every other rule of the grammar in force.
fn parse_session_policy(text: &str) -> Result<(), StsError> {
    let malformed = |message: String| StsError::bad_request("MalformedPolicyDocument", message);
    match TrustPolicy::parse(text) {
        Ok(_) => Err(malformed(
            "Policy document should not specify a principal.".to_owned(),
        )),
        Err(e) if *e.kind() == MalformedKind::MissingField("Principal") => {
            let mut doc: serde_json::Value =
                serde_json::from_str(text).map_err(|_| malformed(e.aws_message()))?;
            match doc.get_mut("Statement") {
                Some(serde_json::Value::Array(items)) => {
                    items.iter_mut().for_each(add_any_principal)
                }
                Some(one) => add_any_principal(one),
                None => {}
            }
            TrustPolicy::parse(&doc.to_string())
                .map(|_| ())
                .map_err(|e| malformed(e.aws_message()))
        }
        Err(e) => Err(malformed(e.aws_message())),
    }
}

fn add_any_principal(statement: &mut serde_json::Value) {
    if let Some(map) = statement.as_object_mut()
        && !map.contains_key("Principal")
        && !map.contains_key("NotPrincipal")
    {
        map.insert(
            "Principal".to_owned(),
            serde_json::Value::String("*".to_owned()),
        );
    }
}

/// A fresh session of `role_arn` named `session_name`, valid until `expires_at`, recorded in
/// [`Emulator::aws_sessions`] so that this STS and SigV4 verification accept it.
pub(crate) fn issue_session(
    state: &Emulator,
    role_arn: &str,
    session_name: &str,
    expires_at: time::OffsetDateTime,
) -> AwsSession {
    issue_session_with(
        state,
        role_arn,
        session_name,
        expires_at,
        Default::default(),
    )
}

/// [`issue_session`] with what the session carries into a role chain.
pub(crate) fn issue_session_with(
    state: &Emulator,
    role_arn: &str,
    session_name: &str,
    expires_at: time::OffsetDateTime,
    context: crate::state::SessionContext,
) -> AwsSession {
    let session = AwsSession {
        access_key_id: access_key_id(),
        secret_access_key: SecretString::new(random_b64(30)),
        session_token: SecretString::new(random_b64(384)),
        role_arn: role_arn.to_owned(),
        session_name: session_name.to_owned(),
        role_id: role_id(role_arn),
        expires_at,
        context,
    };
    state.insert_session(session.clone());
    session
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
    // 17 characters of 5 bits each: the first 85 bits of the digest.
    for byte in digest.iter() {
        acc = (acc << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let index = usize::try_from((acc >> bits) & 31).unwrap_or(0);
            out.push(char::from(ALPHABET[index]));
            if out.len() == 21 {
                return out;
            }
        }
        acc &= (1 << bits) - 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// GetCallerIdentity
// ---------------------------------------------------------------------------------------------

/// The live session whose credentials SigV4-signed this request (service `sts`).
fn authenticate(
    state: &Emulator,
    parts: &request::Parts,
    body: &[u8],
    action: &str,
) -> Result<AwsSession, StsError> {
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
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
        Err(e @ (SigV4Error::UnknownAccessKey | SigV4Error::InvalidSessionToken)) => {
            return Err(e.into());
        }
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
            tracing::info!(error = %e, code = e.code(), action, "signature rejected");
            return Err(e.into());
        }
        Ok(caller) => caller,
    };
    sigv4::check_service(&caller, "sts")?;
    state
        .session(&caller.access_key_id)
        .ok_or_else(|| SigV4Error::UnknownAccessKey.into())
}

/// `GetWebIdentityToken` ([`crate::aws_outbound`] mints the token).
fn get_web_identity_token(
    state: &Emulator,
    parts: &request::Parts,
    body: &[u8],
    params: &Params,
    request_id: &str,
) -> Result<String, StsError> {
    let caller = authenticate(state, parts, body, "GetWebIdentityToken")?;
    let region = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or("us-east-1");
    let get = |name: &str| params.get(name).map(str::to_owned);
    let (token, expires_at) = crate::aws_outbound::mint(state, &caller, &get, region)
        .map_err(|e| StsError::new(e.status, e.code, e.message))?;
    let doc = wire::GetWebIdentityTokenResponse {
        xmlns: wire::XMLNS,
        get_web_identity_token_result: wire::GetWebIdentityTokenResult {
            web_identity_token: token,
            expiration: rfc3339_seconds(expires_at),
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

fn get_caller_identity(
    state: &Emulator,
    parts: &request::Parts,
    body: &[u8],
    request_id: &str,
) -> Result<String, StsError> {
    let session = authenticate(state, parts, body, "GetCallerIdentity")?;
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

mod assume_role;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use http::Request;
    use idbridge_core::clock::ManualClock;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;
    use crate::World;
    use crate::sigv4::testing::Client;
    use crate::test_util::Reply;

    /// 2025-06-15T15:06:40Z.
    const NOW: i64 = 1_750_000_000;
    const ACCOUNT: &str = "111122223333";
    const SEED000_ROLE: &str = "arn:aws:iam::111122223333:role/psoxy-tenant-access";
    const SEED000_SA: &str = "112233445566778899001";
    const SEED002_ROLE: &str = "arn:aws:iam::111122223333:role/google-cloud-myapp";
    const SEED002_NAIVE_ROLE: &str = "arn:aws:iam::111122223333:role/google-cloud-myapp-naive";
    const SEED002_SA: &str = "100367186111111111111";
    const SEED004_ROLE: &str = "arn:aws:iam::111122223333:role/gcp-sa-key-caller";
    const SEED004_SA: &str = "104729384756102938475";
    const K8S_ROLE: &str = "arn:aws:iam::111122223333:role/k8s-workload";
    const K8S_ISSUER: &str = "https://kubernetes.idbridge.test";
    const STS_HOST: &str = "sts.amazonaws.com";

    struct Env {
        state: Arc<Emulator>,
        clock: ManualClock,
    }

    fn env() -> Env {
        let clock = ManualClock::at(NOW);
        let state = Emulator::new(World::builtin().unwrap(), Arc::new(clock.clone())).unwrap();
        Env { state, clock }
    }

    /// AWS's XML answers, read from a [`Reply`].
    trait XmlReply {
        fn tag(&self, name: &str) -> Option<String>;
        fn code(&self) -> String;
        fn message(&self) -> String;
        fn assert_error(&self, status: u16, code: &str);
    }

    impl XmlReply for Reply {
        fn tag(&self, name: &str) -> Option<String> {
            let open = format!("<{name}>");
            let start = self.body.find(&open)? + open.len();
            let end = self.body[start..].find(&format!("</{name}>"))? + start;
            Some(self.body[start..end].to_owned())
        }

        fn code(&self) -> String {
            self.tag("Code").unwrap_or_default()
        }

        fn message(&self) -> String {
            self.tag("Message").unwrap_or_default()
        }

        #[track_caller]
        fn assert_error(&self, status: u16, code: &str) {
            assert_eq!(
                (self.status.as_u16(), self.code().as_str()),
                (status, code),
                "{}",
                self.body
            );
            assert!(self.body.starts_with("<ErrorResponse"), "{}", self.body);
            assert_eq!(self.tag("Type").as_deref(), Some("Sender"));
        }
    }

    async fn send(env: &Env, req: Request<Body>) -> Reply {
        let reply = crate::test_util::send(&router(env.state.clone()), req).await;
        assert_eq!(reply.headers[CONTENT_TYPE], "text/xml");
        let id = reply.headers["x-amzn-requestid"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            reply.tag("RequestId").as_deref(),
            Some(id.as_str()),
            "{}",
            reply.body
        );
        reply
    }

    fn form(params: &[(&str, &str)]) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish()
    }

    /// An unsigned form POST, as botocore sends AssumeRoleWithWebIdentity.
    async fn post(env: &Env, params: &[(&str, &str)]) -> Reply {
        let req = Request::post("/")
            .header("host", STS_HOST)
            .header(
                CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(Body::from(form(params)))
            .unwrap();
        send(env, req).await
    }

    async fn arwwi(env: &Env, role: &str, token: &str, extra: &[(&str, &str)]) -> Reply {
        let mut params = vec![
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", API_VERSION),
            ("RoleArn", role),
            ("RoleSessionName", "idbridge-test"),
            ("WebIdentityToken", token),
        ];
        for (k, v) in extra {
            params.retain(|(name, _)| name != k);
            params.push((k, v));
        }
        post(env, &params).await
    }

    /// Claims of a Google service-account ID token: `azp` = `sub` = the account's unique id.
    fn google_claims(sa: &str, aud: &str) -> Value {
        json!({
            "iss": "https://accounts.google.com", "aud": aud, "azp": sa, "sub": sa,
            "email": "someone@example.iam.gserviceaccount.com", "email_verified": true,
            "iat": NOW - 5, "exp": NOW + 3595,
        })
    }

    fn google_token(env: &Env, claims: &Value) -> String {
        env.state.google_key.sign(claims).unwrap()
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    // ----- AssumeRoleWithWebIdentity: success -------------------------------------------------

    #[tokio::test]
    async fn seed000_numeric_audience_is_allowed() {
        let env = env();
        let token = google_token(
            &env,
            &google_claims(SEED000_SA, "https://sts.amazonaws.com"),
        );
        let r = arwwi(&env, SEED000_ROLE, &token, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.body.starts_with("<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"));
        assert_eq!(
            r.tag("SubjectFromWebIdentityToken").as_deref(),
            Some(SEED000_SA)
        );
        // Google tokens with `azp`: the audience AWS reports is the azp.
        assert_eq!(r.tag("Audience").as_deref(), Some(SEED000_SA));
        assert_eq!(r.tag("Provider").as_deref(), Some("accounts.google.com"));
        assert_eq!(
            r.tag("Arn").as_deref(),
            Some("arn:aws:sts::111122223333:assumed-role/psoxy-tenant-access/idbridge-test")
        );
        let role_id = role_id(SEED000_ROLE);
        assert!(
            role_id.starts_with("AROA") && role_id.len() == 21,
            "{role_id}"
        );
        assert!(
            role_id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
        assert_eq!(
            r.tag("AssumedRoleId"),
            Some(format!("{role_id}:idbridge-test"))
        );
        let akid = r.tag("AccessKeyId").unwrap();
        assert!(akid.starts_with("ASIA") && akid.len() == 20, "{akid}");
        assert!(
            akid.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
        assert_eq!(r.tag("SecretAccessKey").unwrap().len(), 40);
        assert!(r.tag("SessionToken").unwrap().len() > 100);
        assert_eq!(r.tag("Expiration").as_deref(), Some("2025-06-15T16:06:40Z"));
        assert_eq!(r.tag("PackedPolicySize"), None);
        let session = env.state.session(&akid).unwrap();
        assert_eq!(session.role_arn, SEED000_ROLE);
        assert_eq!(session.expires_at.unix_timestamp(), NOW + 3600);
        assert_eq!(env.state.count("aws_sts.AssumeRoleWithWebIdentity"), 1);
    }

    #[tokio::test]
    async fn seed002_corrected_role_allows_and_naive_role_denies() {
        let env = env();
        let token = google_token(&env, &google_claims(SEED002_SA, "aws-trust-1"));
        let r = arwwi(&env, SEED002_ROLE, &token, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = arwwi(&env, SEED002_NAIVE_ROLE, &token, &[]).await;
        r.assert_error(403, "AccessDenied");
        assert_eq!(
            r.message(),
            "Not authorized to perform sts:AssumeRoleWithWebIdentity"
        );
    }

    #[tokio::test]
    async fn seed004_oaud_and_null_conditions_with_a_twelve_hour_session() {
        let env = env();
        let token = google_token(
            &env,
            &google_claims(SEED004_SA, "https://myservice.aud.my-corp.net"),
        );
        let r = arwwi(&env, SEED004_ROLE, &token, &[("DurationSeconds", "43200")]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.tag("Expiration").as_deref(), Some("2025-06-16T03:06:40Z"));
        // Without azp, `accounts.google.com:oaud` is absent and the Null condition fails.
        let mut claims = google_claims(SEED004_SA, SEED004_SA);
        claims.as_object_mut().unwrap().remove("azp");
        let r = arwwi(&env, SEED004_ROLE, &google_token(&env, &claims), &[]).await;
        r.assert_error(403, "AccessDenied");
    }

    #[tokio::test]
    async fn kubernetes_issuer_via_the_oidc_provider() {
        let env = env();
        let claims = json!({
            "iss": K8S_ISSUER, "aud": ["sts.amazonaws.com"],
            "sub": "system:serviceaccount:default:my-app",
            "iat": NOW, "nbf": NOW, "exp": NOW + 3600,
            "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "my-app"}},
        });
        let token = env.state.issuer_keys[K8S_ISSUER].sign(&claims).unwrap();
        let r = arwwi(&env, K8S_ROLE, &token, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            r.tag("Provider").as_deref(),
            Some("arn:aws:iam::111122223333:oidc-provider/kubernetes.idbridge.test")
        );
        assert_eq!(r.tag("Audience").as_deref(), Some("sts.amazonaws.com"));
        assert_eq!(
            r.tag("SubjectFromWebIdentityToken").as_deref(),
            Some("system:serviceaccount:default:my-app")
        );
        // Another service account of the cluster is not trusted.
        let mut other = claims.clone();
        other["sub"] = json!("system:serviceaccount:default:intruder");
        let token = env.state.issuer_keys[K8S_ISSUER].sign(&other).unwrap();
        arwwi(&env, K8S_ROLE, &token, &[])
            .await
            .assert_error(403, "AccessDenied");
    }

    #[tokio::test]
    async fn entra_issuers_via_their_oidc_providers() {
        const ROLE: &str = "arn:aws:iam::111122223333:role/azure-vm-access";
        const TID: &str = "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
        let env = env();
        // v1 (`https://sts.windows.net/{tid}/`): IAM keeps the trailing slash in the provider.
        let token = crate::azure::vm_token(&env.state, "api://idbridge-aws");
        let r = arwwi(&env, ROLE, &token, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            r.tag("Provider"),
            Some(format!(
                "arn:aws:iam::111122223333:oidc-provider/sts.windows.net/{TID}/"
            ))
        );
        assert_eq!(r.tag("Audience").as_deref(), Some("api://idbridge-aws"));
        assert_eq!(
            r.tag("SubjectFromWebIdentityToken").as_deref(),
            Some("e1111111-0000-4000-8000-0000000000d1")
        );
        // v2 (`https://login.microsoftonline.com/{tid}/v2.0`, aud = the app's client id).
        let token = crate::azure::vm_token(&env.state, "api://idbridge-reports");
        let r = arwwi(&env, ROLE, &token, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            r.tag("Provider"),
            Some(format!(
                "arn:aws:iam::111122223333:oidc-provider/login.microsoftonline.com/{TID}/v2.0"
            ))
        );
        // A token for another audience of the tenant: the trust policy refuses it.
        let token = crate::azure::vm_token(&env.state, "api://idbridge-gcp");
        arwwi(&env, ROLE, &token, &[])
            .await
            .assert_error(403, "AccessDenied");
        // A trust policy that drops the v1 issuer's trailing slash names no provider AWS has.
        let mut world = World::builtin().unwrap();
        let role = world.aws_roles.iter_mut().find(|r| r.arn == ROLE).unwrap();
        role.trust_policy = role.trust_policy.replace(&format!("{TID}/"), TID);
        let clock = ManualClock::at(NOW);
        let state = Emulator::new(world, Arc::new(clock.clone())).unwrap();
        let slashless = Env { state, clock };
        let token = crate::azure::vm_token(&slashless.state, "api://idbridge-aws");
        arwwi(&slashless, ROLE, &token, &[])
            .await
            .assert_error(403, "AccessDenied");
    }

    #[tokio::test]
    async fn get_with_query_parameters_works_too() {
        let env = env();
        let token = google_token(&env, &google_claims(SEED000_SA, "aud"));
        let query = form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", API_VERSION),
            ("RoleArn", SEED000_ROLE),
            ("RoleSessionName", "via-get"),
            ("WebIdentityToken", &token),
        ]);
        let req = Request::get(format!("/?{query}"))
            .body(Body::empty())
            .unwrap();
        let r = send(&env, req).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    #[tokio::test]
    async fn session_policy_is_parsed_and_sized() {
        let env = env();
        let token = google_token(&env, &google_claims(SEED000_SA, "aud"));
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
        let r = arwwi(&env, SEED000_ROLE, &token, &[("Policy", policy)]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.tag("PackedPolicySize").as_deref(), Some("5"));
        for bad in [
            "{not json",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Action":"s3:GetObject","Resource":"*"}]}"#,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*"}}"#,
        ] {
            let r = arwwi(&env, SEED000_ROLE, &token, &[("Policy", bad)]).await;
            r.assert_error(400, "MalformedPolicyDocument");
        }
    }

    // ----- AssumeRoleWithWebIdentity: token rejections -----------------------------------------

    #[tokio::test]
    async fn tampered_payload_and_signature_are_invalid_tokens() {
        let env = env();
        let token = google_token(&env, &google_claims(SEED000_SA, "aud"));
        let parts: Vec<&str> = token.split('.').collect();
        let swapped = format!(
            "{}.{}.{}",
            parts[0],
            b64(&google_claims(SEED000_SA, "other")),
            parts[2]
        );
        arwwi(&env, SEED000_ROLE, &swapped, &[])
            .await
            .assert_error(400, "InvalidIdentityToken");
        let mut sig = parts[2].to_owned();
        let mid = sig.len() / 2;
        let c = if &sig[mid..=mid] == "A" { "B" } else { "A" };
        sig.replace_range(mid..=mid, c);
        let flipped = format!("{}.{}.{sig}", parts[0], parts[1]);
        arwwi(&env, SEED000_ROLE, &flipped, &[])
            .await
            .assert_error(400, "InvalidIdentityToken");
        let r = arwwi(&env, SEED000_ROLE, "ya29.an-access-token", &[]).await;
        r.assert_error(400, "InvalidIdentityToken");
        assert!(
            r.message()
                .starts_with("The ID Token provided is not a valid JWT"),
            "{}",
            r.body
        );
        assert!(env.state.aws_sessions.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn expired_token() {
        let env = env();
        let mut claims = google_claims(SEED000_SA, "aud");
        claims["iat"] = json!(NOW - 7200);
        claims["exp"] = json!(NOW - 3600);
        let r = arwwi(&env, SEED000_ROLE, &google_token(&env, &claims), &[]).await;
        r.assert_error(400, "ExpiredTokenException");
        assert_eq!(
            r.message(),
            format!(
                "Token expired: current date/time {NOW} must be before the expiration date/time {}",
                NOW - 3600
            )
        );
        // The same token was fine an hour and a half earlier: the emulator's clock decides.
        env.clock.set(NOW - 5400);
        let r = arwwi(&env, SEED000_ROLE, &google_token(&env, &claims), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    #[tokio::test]
    async fn wrong_audience_is_denied_by_the_trust_policy() {
        let env = env();
        // A valid token of another service account (azp = its id, not the seed-000 one).
        let token = google_token(&env, &google_claims(SEED002_SA, SEED000_SA));
        let r = arwwi(&env, SEED000_ROLE, &token, &[]).await;
        r.assert_error(403, "AccessDenied");
        // seed 002: right service account, wrong target audience (oaud).
        let token = google_token(&env, &google_claims(SEED002_SA, "aws-trust-2"));
        arwwi(&env, SEED002_ROLE, &token, &[])
            .await
            .assert_error(403, "AccessDenied");
    }

    #[tokio::test]
    async fn alg_none_and_key_confusion_are_refused() {
        let env = env();
        let kid = env.state.google_key.kid.clone();
        let claims = google_claims(SEED000_SA, "aud");
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
            b64(&claims)
        );
        arwwi(&env, SEED000_ROLE, &none, &[])
            .await
            .assert_error(400, "InvalidIdentityToken");
        let public_pem = rcgen::KeyPair::from_pem(env.state.google_key.private_pem())
            .unwrap()
            .public_key_pem();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid);
        let hs = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        let r = arwwi(&env, SEED000_ROLE, &hs, &[]).await;
        r.assert_error(400, "InvalidIdentityToken");
        assert!(r.message().contains("HS256"), "{}", r.body);
        assert!(env.state.aws_sessions.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn kid_problems_and_unknown_issuer() {
        let env = env();
        let key = EncodingKey::from_rsa_pem(env.state.google_key.private_pem().as_bytes()).unwrap();
        let claims = google_claims(SEED000_SA, "aud");
        let key_message = "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements";
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("0123456789abcdef".into());
        let unknown_kid = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let r = arwwi(&env, SEED000_ROLE, &unknown_kid, &[]).await;
        r.assert_error(400, "InvalidIdentityToken");
        assert_eq!(r.message(), key_message);
        let no_kid = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
        let r = arwwi(&env, SEED000_ROLE, &no_kid, &[]).await;
        r.assert_error(400, "InvalidIdentityToken");
        assert_eq!(r.message(), key_message);
        let mut foreign = claims.clone();
        foreign["iss"] = json!("https://issuer.evil.example");
        let r = arwwi(&env, SEED000_ROLE, &google_token(&env, &foreign), &[]).await;
        r.assert_error(400, "InvalidIdentityToken");
        assert_eq!(
            r.message(),
            "No OpenIDConnect provider found in your account for https://issuer.evil.example"
        );
    }

    #[tokio::test]
    async fn string_exp_and_future_nbf() {
        let env = env();
        let mut claims = google_claims(SEED000_SA, "aud");
        claims["exp"] = json!((NOW + 3600).to_string());
        let r = arwwi(&env, SEED000_ROLE, &google_token(&env, &claims), &[]).await;
        r.assert_error(400, "InvalidIdentityToken");
        let mut claims = google_claims(SEED000_SA, "aud");
        claims["nbf"] = json!(NOW + 3600);
        let r = arwwi(&env, SEED000_ROLE, &google_token(&env, &claims), &[]).await;
        r.assert_error(400, "InvalidIdentityToken");
    }

    #[tokio::test]
    async fn missing_sub_is_an_idp_rejected_claim() {
        let env = env();
        let mut claims = google_claims(SEED000_SA, "aud");
        claims.as_object_mut().unwrap().remove("sub");
        let r = arwwi(&env, SEED000_ROLE, &google_token(&env, &claims), &[]).await;
        r.assert_error(403, "IDPRejectedClaim");
    }

    // ----- AssumeRoleWithWebIdentity: parameters ------------------------------------------------

    #[tokio::test]
    async fn duration_bounds() {
        let env = env();
        let token = google_token(&env, &google_claims(SEED000_SA, "aud"));
        let r = arwwi(&env, SEED000_ROLE, &token, &[("DurationSeconds", "899")]).await;
        r.assert_error(400, "ValidationError");
        assert_eq!(
            r.message(),
            "1 validation error detected: Value '899' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900"
        );
        let r = arwwi(&env, SEED000_ROLE, &token, &[("DurationSeconds", "43201")]).await;
        r.assert_error(400, "ValidationError");
        assert_eq!(
            r.message(),
            "1 validation error detected: Value '43201' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to 43200"
        );
        // Within the API's range but above the role's MaxSessionDuration (3600).
        let r = arwwi(&env, SEED000_ROLE, &token, &[("DurationSeconds", "3601")]).await;
        r.assert_error(400, "ValidationError");
        assert_eq!(
            r.message(),
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
        );
        let r = arwwi(&env, SEED000_ROLE, &token, &[("DurationSeconds", "900")]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.tag("Expiration").as_deref(), Some("2025-06-15T15:21:40Z"));
    }

    #[tokio::test]
    async fn bad_session_name() {
        let env = env();
        let token = google_token(&env, &google_claims(SEED000_SA, "aud"));
        let r = arwwi(
            &env,
            SEED000_ROLE,
            &token,
            &[("RoleSessionName", "bad name!")],
        )
        .await;
        r.assert_error(400, "ValidationError");
        assert_eq!(
            r.message(),
            r"1 validation error detected: Value 'bad name!' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\w+=,.@-]*"
        );
        let r = arwwi(&env, SEED000_ROLE, &token, &[("RoleSessionName", "x")]).await;
        assert_eq!(
            r.message(),
            "1 validation error detected: Value 'x' at 'roleSessionName' failed to satisfy constraint: Member must have length greater than or equal to 2"
        );
    }

    #[tokio::test]
    async fn missing_parameters() {
        let env = env();
        let r = post(
            &env,
            &[
                ("Action", "AssumeRoleWithWebIdentity"),
                ("Version", API_VERSION),
            ],
        )
        .await;
        r.assert_error(400, "ValidationError");
        assert_eq!(
            r.message(),
            "3 validation errors detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null; Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null; Value null at 'webIdentityToken' failed to satisfy constraint: Member must not be null"
        );
        // A too-short token is reported without its value.
        let r = arwwi(&env, SEED000_ROLE, "abc", &[]).await;
        assert_eq!(
            r.message(),
            "1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: Member must have length greater than or equal to 4"
        );
        post(&env, &[("Version", API_VERSION)])
            .await
            .assert_error(400, "MissingAction");
        let r = post(&env, &[("Action", "AssumeRoleWithWebIdentity")]).await;
        r.assert_error(400, "InvalidAction");
        assert_eq!(
            r.message(),
            "Could not find operation AssumeRoleWithWebIdentity for version NO_VERSION_SPECIFIED"
        );
        let r = post(
            &env,
            &[("Action", "GetCallerIdentity"), ("Version", "2010-01-01")],
        )
        .await;
        r.assert_error(400, "InvalidAction");
        let r = post(
            &env,
            &[("Action", "AssumeRoleWithSAML"), ("Version", API_VERSION)],
        )
        .await;
        r.assert_error(400, "InvalidAction");
        assert_eq!(
            r.message(),
            "Could not find operation AssumeRoleWithSAML for version 2011-06-15"
        );
        let token = google_token(&env, &google_claims(SEED000_SA, "aud"));
        let r = arwwi(
            &env,
            SEED000_ROLE,
            &token,
            &[("ProviderId", "accounts.google.com")],
        )
        .await;
        r.assert_error(400, "InvalidParameterValue");
    }

    #[tokio::test]
    async fn unknown_role_is_access_denied() {
        let env = env();
        let token = google_token(&env, &google_claims(SEED000_SA, "aud"));
        let r = arwwi(
            &env,
            "arn:aws:iam::111122223333:role/does-not-exist",
            &token,
            &[],
        )
        .await;
        r.assert_error(403, "AccessDenied");
        assert_eq!(
            r.message(),
            "Not authorized to perform sts:AssumeRoleWithWebIdentity"
        );
    }

    // ----- GetCallerIdentity ------------------------------------------------------------------

    struct Creds {
        akid: String,
        secret: String,
        token: String,
    }

    async fn assume(env: &Env) -> Creds {
        let token = google_token(env, &google_claims(SEED000_SA, "aud"));
        let r = arwwi(env, SEED000_ROLE, &token, &[("RoleSessionName", "gci")]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        Creds {
            akid: r.tag("AccessKeyId").unwrap(),
            secret: r.tag("SecretAccessKey").unwrap(),
            token: r.tag("SessionToken").unwrap(),
        }
    }

    fn client<'a>(c: &'a Creds, time: i64) -> Client<'a> {
        Client {
            access_key_id: &c.akid,
            secret: &c.secret,
            session_token: Some(&c.token),
            region: "us-east-1",
            service: "sts",
            time: time::OffsetDateTime::from_unix_timestamp(time).unwrap(),
        }
    }

    /// botocore: a form POST to `/`, every header signed (content-type included).
    fn botocore_request(c: &Client<'_>) -> Request<Vec<u8>> {
        let mut req = Request::post("/")
            .header("host", STS_HOST)
            .header(
                CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(b"Action=GetCallerIdentity&Version=2011-06-15".to_vec())
            .unwrap();
        c.sign(&mut req, None, false);
        req
    }

    fn into_axum(req: Request<Vec<u8>>) -> Request<Body> {
        req.map(Body::from)
    }

    const TARGET: &str = "//iam.googleapis.com/projects/161803398874/locations/global/workloadIdentityPools/aws/providers/aws";

    #[track_caller]
    fn assert_caller(r: &Reply) {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.body.starts_with("<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult>"));
        assert_eq!(
            r.tag("Arn").as_deref(),
            Some("arn:aws:sts::111122223333:assumed-role/psoxy-tenant-access/gci")
        );
        assert_eq!(
            r.tag("UserId"),
            Some(format!("{}:gci", role_id(SEED000_ROLE)))
        );
        assert_eq!(r.tag("Account").as_deref(), Some(ACCOUNT));
    }

    #[tokio::test]
    async fn get_caller_identity_in_every_client_shape() {
        let env = env();
        let creds = assume(&env).await;
        let c = client(&creds, NOW + 10);

        // botocore-style form POST.
        assert_caller(&send(&env, into_axum(botocore_request(&c))).await);

        // Google's Python client: empty-body POST with the action in the query, and
        // x-goog-cloud-target-resource added after signing.
        let mut req = Request::post("/?Action=GetCallerIdentity&Version=2011-06-15")
            .header("host", STS_HOST)
            .body(Vec::new())
            .unwrap();
        c.sign(&mut req, None, false);
        req.headers_mut()
            .insert("x-goog-cloud-target-resource", TARGET.parse().unwrap());
        assert_caller(&send(&env, into_axum(req)).await);

        // Google's Go client: the same, with the header signed (the canonical-case names Go
        // sends are covered in sigv4's tests; http lower-cases them here).
        let mut req = Request::post("/?Action=GetCallerIdentity&Version=2011-06-15")
            .header("Host", STS_HOST)
            .header("X-Goog-Cloud-Target-Resource", TARGET)
            .body(Vec::new())
            .unwrap();
        c.sign(&mut req, None, false);
        let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
        assert!(
            auth.contains(
                "SignedHeaders=host;x-amz-date;x-amz-security-token;x-goog-cloud-target-resource"
            ),
            "{auth}"
        );
        assert_caller(&send(&env, into_axum(req)).await);

        // A presigned GET (as EKS tokens and `aws sts get-caller-identity` presigners make).
        let mut req = Request::get("/?Action=GetCallerIdentity&Version=2011-06-15")
            .header("host", STS_HOST)
            .body(Vec::new())
            .unwrap();
        c.sign(&mut req, Some(60), true);
        assert!(req.uri().query().unwrap().contains("X-Amz-Signature="));
        assert_caller(&send(&env, into_axum(req)).await);

        assert_eq!(env.state.count("aws_sts.GetCallerIdentity"), 4);
    }

    fn signed_form(c: &Client<'_>, body: String) -> Request<Body> {
        let mut req = Request::post("/")
            .header("host", STS_HOST)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.into_bytes())
            .unwrap();
        c.sign(&mut req, None, false);
        into_axum(req)
    }

    #[tokio::test]
    async fn assume_role_chains_with_external_id_tags_and_the_one_hour_limit() {
        let env = env();
        let creds = assume(&env).await;
        let c = client(&creds, NOW + 10);
        let chained = "arn:aws:iam::111122223333:role/chained-reader";
        let call = |extra: &[(&str, &str)]| {
            let mut params = vec![
                ("Action", "AssumeRole"),
                ("Version", API_VERSION),
                ("RoleArn", chained),
                ("RoleSessionName", "chain"),
            ];
            params.extend_from_slice(extra);
            form(&params)
        };
        let ok = send(
            &env,
            signed_form(
                &c,
                call(&[
                    ("ExternalId", "tenant-7"),
                    ("SourceIdentity", "alice"),
                    ("Tags.member.1.Key", "team"),
                    ("Tags.member.1.Value", "billing"),
                    ("TransitiveTagKeys.member.1", "team"),
                ]),
            ),
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
        assert!(ok.body.starts_with("<AssumeRoleResponse"), "{}", ok.body);
        assert_eq!(
            ok.tag("Arn").as_deref(),
            Some("arn:aws:sts::111122223333:assumed-role/chained-reader/chain")
        );
        assert_eq!(ok.tag("SourceIdentity").as_deref(), Some("alice"));
        let session = env.state.session(&ok.tag("AccessKeyId").unwrap()).unwrap();
        assert!(session.context.chained);
        assert_eq!(
            session.context.tags,
            [("team".to_owned(), "billing".to_owned())]
        );
        assert_eq!(session.context.transitive_tag_keys, ["team"]);
        assert_eq!(session.expires_at.unix_timestamp(), NOW + 3600);

        let denied = send(&env, signed_form(&c, call(&[("ExternalId", "tenant-8")]))).await;
        denied.assert_error(403, "AccessDenied");
        assert_eq!(
            denied.message(),
            "User: arn:aws:sts::111122223333:assumed-role/psoxy-tenant-access/gci is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::111122223333:role/chained-reader"
        );
        let long = send(
            &env,
            signed_form(
                &c,
                call(&[("ExternalId", "tenant-7"), ("DurationSeconds", "7200")]),
            ),
        )
        .await;
        long.assert_error(400, "ValidationError");
        assert_eq!(
            long.message(),
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
        );
        let unsigned = post(&env, &[("Action", "AssumeRole"), ("Version", API_VERSION)]).await;
        unsigned.assert_error(403, "MissingAuthenticationToken");
    }

    #[tokio::test]
    async fn get_caller_identity_rejections() {
        let env = env();
        let creds = assume(&env).await;

        // Wrong secret.
        let wrong = Creds {
            secret: "0".repeat(40),
            ..Creds {
                ..assume(&env).await
            }
        };
        let r = send(&env, into_axum(botocore_request(&client(&wrong, NOW)))).await;
        r.assert_error(403, "SignatureDoesNotMatch");
        assert!(
            r.message()
                .starts_with("The request signature we calculated does not match"),
            "{}",
            r.body
        );

        // Unknown access key.
        let unknown = Creds {
            akid: "ASIAAAAAAAAAAAAAAAAA".into(),
            secret: creds.secret.clone(),
            token: creds.token.clone(),
        };
        let r = send(&env, into_axum(botocore_request(&client(&unknown, NOW)))).await;
        r.assert_error(403, "InvalidClientTokenId");
        assert_eq!(
            r.message(),
            "The security token included in the request is invalid."
        );

        // Another session's token.
        let other = assume(&env).await;
        let mixed = Creds {
            akid: creds.akid.clone(),
            secret: creds.secret.clone(),
            token: other.token.clone(),
        };
        let r = send(&env, into_axum(botocore_request(&client(&mixed, NOW)))).await;
        r.assert_error(403, "InvalidClientTokenId");

        // Signed 20 minutes ago.
        let r = send(
            &env,
            into_axum(botocore_request(&client(&creds, NOW - 1200))),
        )
        .await;
        r.assert_error(403, "SignatureDoesNotMatch");
        assert_eq!(
            r.message(),
            "Signature expired: 20250615T144640Z is now earlier than 20250615T145140Z (20250615T150640Z - 15 min.)"
        );

        // Body changed after signing.
        let mut req = botocore_request(&client(&creds, NOW));
        *req.body_mut() = b"Action=GetCallerIdentity&Version=2011-06-15&X=1".to_vec();
        send(&env, into_axum(req))
            .await
            .assert_error(403, "SignatureDoesNotMatch");

        // Signed for S3.
        let s3 = Client {
            service: "s3",
            ..client(&creds, NOW)
        };
        let r = send(&env, into_axum(botocore_request(&s3))).await;
        r.assert_error(403, "SignatureDoesNotMatch");
        assert_eq!(
            r.message(),
            "Credential should be scoped to correct service: 'sts'. "
        );

        // Not signed at all.
        let r = post(
            &env,
            &[("Action", "GetCallerIdentity"), ("Version", API_VERSION)],
        )
        .await;
        r.assert_error(403, "MissingAuthenticationToken");
        assert_eq!(r.message(), "Request is missing Authentication Token");

        // Still fine at the last second of the session, expired after it.
        env.clock.advance(3599);
        let r = send(
            &env,
            into_axum(botocore_request(&client(&creds, NOW + 3599))),
        )
        .await;
        assert_caller(&r);
        env.clock.advance(1);
        let r = send(
            &env,
            into_axum(botocore_request(&client(&creds, NOW + 3600))),
        )
        .await;
        r.assert_error(403, "ExpiredToken");
        assert_eq!(
            r.message(),
            "The security token included in the request is expired"
        );
    }

    #[tokio::test]
    async fn no_secret_in_error_messages() {
        let env = env();
        let creds = assume(&env).await;
        let mixed = Creds {
            akid: creds.akid.clone(),
            secret: creds.secret.clone(),
            token: "forged-session-token".into(),
        };
        let r = send(&env, into_axum(botocore_request(&client(&mixed, NOW)))).await;
        assert!(!r.body.contains("forged-session-token") && !r.body.contains(&creds.secret));
        let token = google_token(&env, &google_claims(SEED000_SA, "aud"));
        let r = arwwi(&env, SEED000_ROLE, &token, &[("DurationSeconds", "1")]).await;
        assert!(!r.body.contains(&token));
    }
}
