//! AWS outbound identity federation: IAM's switch (`EnableOutboundWebIdentityFederation`,
//! `GetOutboundWebIdentityFederationInfo`, `DisableOutboundWebIdentityFederation`, query
//! protocol `2010-05-08` on the IAM listener), the per-account issuer's discovery document and
//! JWKS, and the tokens STS's `GetWebIdentityToken` mints (`mint`, called from
//! [`crate::aws_sts`]).
//!
//! An account takes part when its `[[aws_account]]` names `outbound_issuer`, an
//! `[[oidc_issuer]]` with `generate_key = true` (its RSA key signs `RS256` tokens; an ECDSA P-384
//! key is generated beside it for `ES384`, and both are in the issuer's JWK set, so the emulated
//! Google STS and AWS STS verify these tokens like any OIDC token). `outbound_federation_enabled`
//! is the switch's initial state.
//!
//! IAM calls are SigV4-signed (service `iam`) by a session of the account. Errors are IAM's
//! `<ErrorResponse>`: `FeatureEnabled` 409, `FeatureDisabled` 404 (botocore's model), the
//! signature errors as STS answers them. Discovery: `GET /<account>/.well-known/openid-configuration`
//! and `GET /<account>/.well-known/jwks.json` on the IAM listener (the issuer URL itself is the
//! world's; clients are pointed at the listener).
//!
//! `GetWebIdentityToken`: `Audience.member.N` (1–10, each 1–1000 characters), `SigningAlgorithm`
//! `RS256` or `ES384` (required), `DurationSeconds` 60–3600 (default 300), `Tags.member.N` (at
//! most 50, as `request_tags`); `OutboundWebIdentityFederationDisabledException` (403) while the
//! switch is off, `SessionDurationEscalationException` (403) when the token would outlive the
//! calling session. Claims: `iss`, `aud` (a string for one audience), `sub` = the role ARN,
//! `iat`, `exp`, `jti`, and `https://sts.amazonaws.com/` with `aws_account`, `source_region`,
//! `principal_id` (the session ARN) and `request_tags`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::Emulator;
use crate::keys::KeyError;
use crate::sigv4::{self, SignedRequestParts};
use crate::state::AwsSession;
use crate::world::World;

/// The IAM API version.
pub const IAM_API_VERSION: &str = "2010-05-08";
const IAM_XMLNS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
/// The namespace claim of the tokens.
pub const NAMESPACE_CLAIM: &str = "https://sts.amazonaws.com/";
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Checks the accounts' `outbound_issuer`s.
pub(crate) fn validate_world(world: &World) -> Result<(), String> {
    for (i, account) in world.aws_accounts.iter().enumerate() {
        if let Some(issuer) = &account.outbound_issuer
            && !world
                .oidc_issuers
                .iter()
                .any(|o| &o.issuer == issuer && o.generate_key)
        {
            return Err(format!(
                "aws_account[{i}] ({}): field `outbound_issuer`: {issuer:?} must be an oidc_issuer with generate_key = true",
                account.id
            ));
        }
    }
    Ok(())
}

/// The switch per account and the ES384 keys per issuer.
pub struct OutboundState {
    enabled: Mutex<BTreeSet<String>>,
    es384: BTreeMap<String, (EncodingKey, String)>,
}

impl std::fmt::Debug for OutboundState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundState")
            .field("issuers", &self.es384.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl OutboundState {
    /// Generates the ES384 keys and adds their JWKs to `jwks` (the issuers' sets).
    pub(crate) fn new(
        world: &World,
        jwks: &mut BTreeMap<String, JwkSet>,
    ) -> Result<OutboundState, KeyError> {
        let mut es384 = BTreeMap::new();
        for issuer in world
            .aws_accounts
            .iter()
            .filter_map(|a| a.outbound_issuer.as_ref())
        {
            if es384.contains_key(issuer) {
                continue;
            }
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
                .map_err(|e| KeyError::new(e.to_string()))?;
            let key = EncodingKey::from_ec_der(&kp.serialize_der());
            let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES384)
                .map_err(|e| KeyError::new(e.to_string()))?;
            let kid = format!("es384-{}", &hex::encode(rand::random::<[u8; 8]>()));
            jwk.common.key_id = Some(kid.clone());
            jwks.entry(issuer.clone())
                .or_insert_with(|| JwkSet { keys: Vec::new() })
                .keys
                .push(jwk);
            es384.insert(issuer.clone(), (key, kid));
        }
        let enabled = world
            .aws_accounts
            .iter()
            .filter(|a| a.outbound_issuer.is_some() && a.outbound_federation_enabled)
            .map(|a| a.id.clone())
            .collect();
        Ok(OutboundState {
            enabled: Mutex::new(enabled),
            es384,
        })
    }

    fn is_enabled(&self, account: &str) -> bool {
        self.enabled.lock().is_ok_and(|s| s.contains(account))
    }

    /// Turns the switch; `Err(())` when it already was in that position.
    fn set(&self, account: &str, on: bool) -> Result<(), ()> {
        let mut set = self.enabled.lock().map_err(|_| ())?;
        let changed = if on {
            set.insert(account.to_owned())
        } else {
            set.remove(account)
        };
        if changed { Ok(()) } else { Err(()) }
    }
}

/// An error of `GetWebIdentityToken` or IAM: status, code, message.
#[derive(Debug)]
pub(crate) struct OutboundError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl OutboundError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        OutboundError {
            status,
            code,
            message: message.into(),
        }
    }
}

fn issuer_of<'w>(state: &'w Emulator, account: &str) -> Option<&'w str> {
    state
        .world
        .aws_accounts
        .iter()
        .find(|a| a.id == account)
        .and_then(|a| a.outbound_issuer.as_deref())
}

/// Mints the token of `GetWebIdentityToken` for `caller`; `params` are the request's.
pub(crate) fn mint(
    state: &Emulator,
    caller: &AwsSession,
    get: &dyn Fn(&str) -> Option<String>,
    region: &str,
) -> Result<(String, time::OffsetDateTime), OutboundError> {
    let validation = |m: String| OutboundError::new(StatusCode::BAD_REQUEST, "ValidationError", m);
    let audiences: Vec<String> = (1..=11)
        .map_while(|n| get(&format!("Audience.member.{n}")))
        .collect();
    if audiences.is_empty() {
        return Err(validation("1 validation error detected: Value null at 'audience' failed to satisfy constraint: Member must not be null".to_owned()));
    }
    if audiences.len() > 10
        || audiences
            .iter()
            .any(|a| a.is_empty() || a.chars().count() > 1000)
    {
        return Err(validation("1 validation error detected: Value at 'audience' failed to satisfy constraint: Member must have length less than or equal to 10, each member between 1 and 1000 characters".to_owned()));
    }
    let algorithm = match get("SigningAlgorithm").as_deref() {
        Some("RS256") => Algorithm::RS256,
        Some("ES384") => Algorithm::ES384,
        None => return Err(validation("1 validation error detected: Value null at 'signingAlgorithm' failed to satisfy constraint: Member must not be null".to_owned())),
        Some(other) => return Err(validation(format!("1 validation error detected: Value '{}' at 'signingAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [RS256, ES384]", crate::short(other, 16)))),
    };
    let duration = match get("DurationSeconds") {
        None => 300,
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(d) if (60..=3600).contains(&d) => d,
            _ => {
                return Err(validation(format!(
                    "1 validation error detected: Value '{}' at 'durationSeconds' failed to satisfy constraint: Member must have value between 60 and 3600",
                    crate::short(&raw, 16)
                )));
            }
        },
    };
    let mut tags = serde_json::Map::new();
    for n in 1..=51 {
        let Some(key) = get(&format!("Tags.member.{n}.Key")) else {
            break;
        };
        if n > 50 {
            return Err(OutboundError::new(
                StatusCode::BAD_REQUEST,
                "JWTPayloadSizeExceededException",
                "The requested token payload size exceeds the maximum allowed size.",
            ));
        }
        let value = get(&format!("Tags.member.{n}.Value")).unwrap_or_default();
        tags.insert(key, json!(value));
    }
    let account = caller.account();
    let issuer = issuer_of(state, account).filter(|_| state.aws_outbound.is_enabled(account));
    let Some(issuer) = issuer else {
        return Err(OutboundError::new(
            StatusCode::FORBIDDEN,
            "OutboundWebIdentityFederationDisabledException",
            "Outbound web identity federation is not enabled for this account.",
        ));
    };
    let now = state.clock.now();
    let exp = now + time::Duration::seconds(duration);
    if exp > caller.expires_at {
        return Err(OutboundError::new(
            StatusCode::FORBIDDEN,
            "SessionDurationEscalationException",
            "The requested token duration would extend the session beyond its original expiration time.",
        ));
    }
    let aud = match &audiences[..] {
        [one] => json!(one),
        many => json!(many),
    };
    let mut namespace = serde_json::Map::new();
    namespace.insert("aws_account".into(), json!(account));
    namespace.insert("source_region".into(), json!(region));
    namespace.insert("principal_id".into(), json!(caller.assumed_role_arn()));
    if !tags.is_empty() {
        namespace.insert("request_tags".into(), serde_json::Value::Object(tags));
    }
    let claims = json!({
        "iss": issuer,
        "aud": aud,
        "sub": caller.role_arn,
        "iat": now.unix_timestamp(),
        "exp": exp.unix_timestamp(),
        "jti": uuid::Uuid::new_v4().to_string(),
        NAMESPACE_CLAIM: namespace,
    });
    let internal = || {
        OutboundError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The request processing has failed because of an unknown error.",
        )
    };
    let token = match algorithm {
        Algorithm::ES384 => {
            let (key, kid) = state.aws_outbound.es384.get(issuer).ok_or_else(internal)?;
            let mut header = Header::new(Algorithm::ES384);
            header.kid = Some(kid.clone());
            header.typ = Some("JWT".to_owned());
            jsonwebtoken::encode(&header, &claims, key).map_err(|_| internal())?
        }
        _ => state
            .issuer_keys
            .get(issuer)
            .ok_or_else(internal)?
            .sign(&claims)
            .map_err(|_| internal())?,
    };
    tracing::info!(account, principal = %caller.assumed_role_arn(), ?algorithm, "GetWebIdentityToken: issued token");
    Ok((token, exp))
}

// ---------------------------------------------------------------------------------------------
// The IAM listener
// ---------------------------------------------------------------------------------------------

/// IAM's query protocol at `/` and the issuers' discovery under `/<account>/.well-known/`.
pub fn iam_router(state: Arc<Emulator>) -> Router {
    Router::new()
        .route("/", post(iam))
        .route(
            "/{account}/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/{account}/.well-known/jwks.json", get(jwks))
        .with_state(state)
}

fn xml(status: StatusCode, request_id: &str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), id);
    }
    response
}

fn iam_error(e: OutboundError, request_id: &str) -> Response {
    let body = format!(
        "<ErrorResponse xmlns=\"{IAM_XMLNS}\"><Error><Type>Sender</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        e.code,
        quick_xml::escape::escape(e.message.as_str())
    );
    xml(e.status, request_id, body)
}

async fn iam(State(state): State<Arc<Emulator>>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return iam_error(
            OutboundError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "Request body too large.",
            ),
            &request_id,
        );
    };
    match iam_dispatch(&state, &parts, &body) {
        Ok((action, result)) => xml(
            StatusCode::OK,
            &request_id,
            format!(
                "<{action}Response xmlns=\"{IAM_XMLNS}\">{result}<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
            ),
        ),
        Err(e) => iam_error(e, &request_id),
    }
}

fn iam_dispatch(
    state: &Emulator,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<(&'static str, String), OutboundError> {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let param = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let action = match param("Action") {
        Some("EnableOutboundWebIdentityFederation") => "EnableOutboundWebIdentityFederation",
        Some("GetOutboundWebIdentityFederationInfo") => "GetOutboundWebIdentityFederationInfo",
        Some("DisableOutboundWebIdentityFederation") => "DisableOutboundWebIdentityFederation",
        other => {
            return Err(OutboundError::new(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!(
                    "Could not find operation {} for version {IAM_API_VERSION}",
                    crate::short(other.unwrap_or("NO_ACTION"), 128)
                ),
            ));
        }
    };
    state.bump(&format!("aws_iam.{action}"));
    if param("Version") != Some(IAM_API_VERSION) {
        return Err(OutboundError::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!(
                "Could not find operation {action} for version {}",
                crate::short(param("Version").unwrap_or("NO_VERSION_SPECIFIED"), 64)
            ),
        ));
    }
    let caller = authenticate(state, parts, body, "iam")?;
    let account = caller.account().to_owned();
    let issuer = issuer_of(state, &account).map(str::to_owned);
    let feature_disabled = || {
        OutboundError::new(
            StatusCode::NOT_FOUND,
            "FeatureDisabled",
            "Outbound identity federation is disabled for this account.",
        )
    };
    let result = match action {
        "EnableOutboundWebIdentityFederation" => {
            let issuer = issuer.ok_or_else(feature_disabled)?;
            state.aws_outbound.set(&account, true).map_err(|()| {
                OutboundError::new(
                    StatusCode::CONFLICT,
                    "FeatureEnabled",
                    "Outbound identity federation is already enabled for this account.",
                )
            })?;
            format!(
                "<IssuerIdentifier>{}</IssuerIdentifier>",
                quick_xml::escape::escape(issuer.as_str())
            )
        }
        "GetOutboundWebIdentityFederationInfo" => {
            let issuer = issuer.ok_or_else(feature_disabled)?;
            let on = state.aws_outbound.is_enabled(&account);
            if !on {
                return Err(feature_disabled());
            }
            format!(
                "<IssuerIdentifier>{}</IssuerIdentifier><JwtVendingEnabled>true</JwtVendingEnabled>",
                quick_xml::escape::escape(issuer.as_str())
            )
        }
        _ => {
            state
                .aws_outbound
                .set(&account, false)
                .map_err(|()| feature_disabled())?;
            return Ok((action, String::new()));
        }
    };
    Ok((action, format!("<{action}Result>{result}</{action}Result>")))
}

/// The live session that SigV4-signed the request for `service`.
fn authenticate(
    state: &Emulator,
    parts: &http::request::Parts,
    body: &[u8],
    service: &str,
) -> Result<AwsSession, OutboundError> {
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
    let signed = SignedRequestParts {
        method: parts.method.as_str(),
        uri: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        headers,
        body,
    };
    let now = state.clock.now();
    let lookup = |akid: &str| {
        let s = state.session(akid).filter(|s| s.expires_at > now)?;
        Some((s.secret_access_key, Some(s.session_token)))
    };
    let to_error = |e: sigv4::SigV4Error| {
        OutboundError::new(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN),
            e.code(),
            e.to_string(),
        )
    };
    let caller = sigv4::verify(&signed, lookup, now).map_err(to_error)?;
    sigv4::check_service(&caller, service).map_err(to_error)?;
    state
        .session(&caller.access_key_id)
        .ok_or_else(|| to_error(sigv4::SigV4Error::UnknownAccessKey))
}

async fn discovery(State(state): State<Arc<Emulator>>, Path(account): Path<String>) -> Response {
    let Some(issuer) = issuer_of(&state, &account) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let base = state.endpoints().aws_iam;
    axum::Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{base}/{account}/.well-known/jwks.json"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES384"],
    }))
    .into_response()
}

async fn jwks(State(state): State<Arc<Emulator>>, Path(account): Path<String>) -> Response {
    match issuer_of(&state, &account).and_then(|i| state.issuer_jwks.get(i)) {
        Some(set) => axum::Json(set.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
