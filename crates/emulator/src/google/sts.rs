//! Google STS `POST /v1/token`: the token exchange of workload identity federation, and the
//! world's `[[workload_identity_pool]]` / `[google_sts]` sections it reads.
//!
//! A request is an RFC 8693 form (`grant_type=urn:ietf:params:oauth:grant-type:token-exchange`,
//! `requested_token_type=urn:ietf:params:oauth:token-type:access_token`, `audience`, `scope`,
//! `subject_token`, `subject_token_type`, optional `options`). It is checked in this order:
//!
//! 1. the form fields (`invalid_request`, or `unsupported_grant_type`);
//! 2. `audience` names an enabled provider of an enabled pool, with or without `https:`
//!    (`invalid_target`, with Google's message);
//! 3. the subject token type fits the provider: `…:aws4_request` for AWS providers,
//!    `…:jwt` / `…:id_token` for OIDC providers (`invalid_request`);
//! 4. the subject token is verified into an *assertion* (`invalid_grant` when it is not):
//!    * **AWS**: the token is URL-encoded JSON `{url, method, headers:[{key,value}]}` (`%20` and
//!      `+` both decode to a space, so Python's `quote` and Go's `QueryEscape` both work;
//!      header names match in any case). The `x-goog-cloud-target-resource` header must be
//!      present — signed or not — and name the same provider as `audience`; the URL must be
//!      `https://sts[.REGION].amazonaws.com[/]?Action=GetCallerIdentity&Version=2011-06-15`,
//!      the method `POST` or `GET`, and the `host` header the URL's host. The request is then
//!      replayed to AWS STS with its original headers and an empty body: in process to the
//!      emulator's own STS ([`crate::aws_sts::router`]), or over HTTP to
//!      `[google_sts] aws_sts_endpoint` when the world sets it. Anything but a 200 is refused
//!      naming AWS's error code (a stale `x-amz-date`, beyond ±15 minutes, is AWS's
//!      `SignatureDoesNotMatch`). Replays within that window are accepted, as Google does. The
//!      assertion is `{"arn", "account", "userid"}` from `GetCallerIdentity`, and the account must
//!      be the provider's `aws.account_id`;
//!    * **OIDC**: the JWT's `iss` must be the provider's `issuer_uri`; its keys are the
//!      provider's `jwks_json`, else those the emulator holds for the issuer, else the issuer's
//!      discovery document's `jwks_uri` (fetched over HTTP). RS256/ES256 only, `kid` required,
//!      `iat` required and not in the future, `exp - iat` at most 48 hours
//!      ([`crate::token_verify`]); `aud` must include one of `allowed_audiences`, or, when none
//!      are configured, the provider's canonical name with or without `https:`. The assertion
//!      is the token's claims;
//! 5. the provider's attribute mapping (the AWS default when an AWS provider has none) is
//!    applied (`invalid_request` when it fails) and its attribute condition must be true
//!    (`unauthorized_client`, "The given credential is rejected by the attribute
//!    condition.").
//!
//!    This step, the AWS account and the OIDC audience checks of step 4 and the principal of
//!    step 6 are one pure decision, [`idbridge_policy::gcp::federate`] (the same `explain`
//!    prints); this module verifies the subject token into the assertion and answers with
//!    the decision's first [`Rejection`] in Google's words;
//! 6. a federated access token is issued for
//!    `principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/subject/SUBJECT`
//!    with the mapped attributes, for one hour: `{"access_token", "issued_token_type",
//!    "token_type": "Bearer", "expires_in": 3600}`.
//!
//! Errors are `{"error", "error_description"}` with status 400; descriptions never contain the
//! subject token or its signature. Calls are counted as `google.sts.token`.
//!
//! # World
//!
//! ```toml
//! [[workload_identity_pool]]
//! project = "example-project"      # a [[project]] id; its number is in principal identifiers
//! id = "aws-pool"
//! disabled = false
//!
//! [[workload_identity_pool.provider]]
//! id = "aws-test-account"
//! disabled = false
//! aws = { account_id = "111122223333" }
//! # or: oidc = { issuer_uri = "https://…", allowed_audiences = ["…"], jwks_json = "…" }
//! attribute_mapping = { "google.subject" = "assertion.arn" }  # optional for AWS
//! attribute_condition = "attribute.aws_role == '…'"           # optional
//!
//! [google_sts]
//! aws_sts_endpoint = "http://127.0.0.1:5000"  # verify AWS subject tokens there instead
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use idbridge_policy::gcp::{
    Assertion, CallerIdentity, FederatedPrincipal, MappedAttributes, PoolProvider, Principal,
    ProviderKind, ProviderName, Rejection, federate,
};
use idbridge_wire::google::{
    ACCESS_TOKEN_TYPE, AWS4_REQUEST_TOKEN_TYPE, AwsSubjectToken, AwsSubjectTokenHeader,
    ID_TOKEN_TYPE, JWT_TOKEN_TYPE, StsOptions, StsTokenRequest, StsTokenResponse,
    TARGET_RESOURCE_HEADER, TOKEN_EXCHANGE_GRANT,
};
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use serde_json::Value;
use tower::ServiceExt;

use super::{json_response, oauth_error};
use crate::state::GooglePrincipal;
use crate::token_verify::{self, DEFAULT_LEEWAY_SECS, VerifyOptions};
use crate::world::World;
use crate::{Emulator, short};

/// Lifetime of the federated access tokens STS issues.
pub const FEDERATED_TOKEN_SECONDS: i64 = 3600;

/// Longest `exp - iat` Google STS accepts in an OIDC token.
pub const MAX_OIDC_TOKEN_LIFETIME_SECS: i64 = 48 * 3600;

/// Google's message for an audience naming no usable provider.
pub const INVALID_TARGET_MESSAGE: &str = "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.";

/// Google's message for a credential the attribute condition refuses.
pub const CONDITION_REJECTED_MESSAGE: &str =
    "The given credential is rejected by the attribute condition.";

/// Timeout of the HTTP calls STS makes (AWS STS replay, OIDC discovery and JWKS).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response read from AWS STS or an OIDC issuer.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// The only STS API version and action an AWS subject token may call.
const GET_CALLER_IDENTITY: [(&str, &str); 2] =
    [("Action", "GetCallerIdentity"), ("Version", "2011-06-15")];

// ---------------------------------------------------------------------------------------------
// World
// ---------------------------------------------------------------------------------------------

pub use idbridge_policy::gcp::{
    AwsProviderConfig, OidcProviderConfig, WorkloadIdentityPool, WorkloadIdentityProvider,
};

/// `[google_sts]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleStsConfig {
    /// Verify AWS subject tokens by replaying them to this STS endpoint (`http://host:port`)
    /// instead of the emulator's own.
    #[serde(default)]
    pub aws_sts_endpoint: Option<String>,
}

impl World {
    /// The pool and provider an STS `audience` names, whether enabled or not.
    pub fn workload_identity_provider(
        &self,
        name: &ProviderName,
    ) -> Option<(&WorkloadIdentityPool, &WorkloadIdentityProvider)> {
        self.workload_identity_pools.iter().find_map(|pool| {
            let number = self.project(&pool.project).map(|p| p.number.as_str());
            if pool.id != name.pool.pool || number != Some(name.pool.project_number.as_str()) {
                return None;
            }
            pool.providers
                .iter()
                .find(|p| p.id == name.provider)
                .map(|p| (pool, p))
        })
    }
}

/// Checks the `[[workload_identity_pool]]` and `[google_sts]` sections; the message names the
/// object and field.
pub(crate) fn validate_world(world: &World) -> Result<(), String> {
    let mut seen_pools = Vec::new();
    for (i, pool) in world.workload_identity_pools.iter().enumerate() {
        let at = format!("workload_identity_pool[{i}] ({})", pool.id);
        pool.validate_id().map_err(|e| format!("{at}: {e}"))?;
        if world.project(&pool.project).is_none() {
            return Err(format!(
                "{at}: field `project`: unknown project {:?}",
                pool.project
            ));
        }
        if seen_pools.contains(&(&pool.project, &pool.id)) {
            return Err(format!(
                "{at}: field `id`: project {} already has a pool {:?}",
                pool.project, pool.id
            ));
        }
        seen_pools.push((&pool.project, &pool.id));
        let mut seen_providers = Vec::new();
        for (j, provider) in pool.providers.iter().enumerate() {
            let at = format!("{at}.provider[{j}] ({})", provider.id);
            validate_provider(provider, &at)?;
            if seen_providers.contains(&&provider.id) {
                return Err(format!(
                    "{at}: field `id`: the pool already has a provider {:?}",
                    provider.id
                ));
            }
            seen_providers.push(&provider.id);
        }
    }
    if let Some(endpoint) = &world.google_sts.aws_sts_endpoint {
        let ok = url::Url::parse(endpoint)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            return Err(format!(
                "google_sts: field `aws_sts_endpoint`: {endpoint:?} is not an http(s) URL"
            ));
        }
    }
    Ok(())
}

fn validate_provider(provider: &WorkloadIdentityProvider, at: &str) -> Result<(), String> {
    provider
        .validate(|jwks| {
            serde_json::from_str::<JwkSet>(jwks)
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| format!("{at}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Federated principals on access tokens
// ---------------------------------------------------------------------------------------------

/// The attributes recorded on a federated access token ([`GooglePrincipal::Federated`]):
/// `attribute.NAME` → value, and `google.groups` → the groups as a JSON array (when any).
pub fn federated_attributes(mapped: &MappedAttributes) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = mapped
        .attributes
        .iter()
        .map(|(k, v)| (format!("attribute.{k}"), v.clone()))
        .collect();
    if !mapped.groups.is_empty() {
        out.insert(
            "google.groups".to_owned(),
            Value::from(mapped.groups.clone()).to_string(),
        );
    }
    out
}

/// The policy crate's view of a token's principal, for IAM member matching. Federated
/// attributes are read as [`federated_attributes`] writes them (a bare key is taken as an
/// attribute name; `google.groups` may also be a comma-separated list). `None` for a
/// federated identifier that is not a `principal://…/subject/…`.
pub fn policy_principal(principal: &GooglePrincipal) -> Option<Principal> {
    match principal {
        GooglePrincipal::ServiceAccount(email) => Some(Principal::ServiceAccount(email.clone())),
        GooglePrincipal::Federated {
            principal,
            attributes,
        } => {
            let mut federated = FederatedPrincipal::from_identifier(principal).ok()?;
            for (key, value) in attributes {
                match key.as_str() {
                    "google.groups" => federated.groups = group_list(value),
                    "google.subject" => {}
                    _ => {
                        let name = key.strip_prefix("attribute.").unwrap_or(key);
                        federated.attributes.insert(name.to_owned(), value.clone());
                    }
                }
            }
            Some(Principal::Federated(federated))
        }
    }
}

fn group_list(groups: &str) -> Vec<String> {
    if groups.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<String>>(groups).unwrap_or_default()
    } else {
        groups
            .split(',')
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The endpoint
// ---------------------------------------------------------------------------------------------

/// A refused exchange: status, OAuth error code, description (never a token).
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl Refusal {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }

    fn invalid_target() -> Self {
        Self::new("invalid_target", INVALID_TARGET_MESSAGE)
    }
}

/// `POST /v1/token`. An `Authorization` header is ignored. The body is a form, or proto3 JSON
/// when `Content-Type` says `application/json` (refused as Google's transcoder refuses it,
/// e.g. an unknown field, with a `google.rpc.Status` 400).
pub(super) async fn token(
    State(state): State<Arc<Emulator>>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    state.bump("google.sts.token");
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
    let req = if is_json {
        match idbridge_wire::proto_json::from_json::<StsTokenRequest>(&body) {
            Ok(req) => Ok(req),
            Err(e) => return json_response(StatusCode::BAD_REQUEST, &e.to_status()),
        }
    } else {
        serde_urlencoded::from_bytes(&body).map_err(|_| {
            Refusal::invalid_request(
                "The request body must be a form (application/x-www-form-urlencoded).",
            )
        })
    };
    let result = match req {
        Ok(req) => exchange(&state, req).await,
        Err(refusal) => Err(refusal),
    };
    match result {
        Ok(response) => json_response(StatusCode::OK, &response),
        Err(refusal) => {
            tracing::info!(
                error = refusal.error,
                description = %refusal.description,
                "Google STS: token exchange refused"
            );
            oauth_error(refusal.status, refusal.error, refusal.description)
        }
    }
}

async fn exchange(
    state: &Arc<Emulator>,
    req: StsTokenRequest,
) -> Result<StsTokenResponse, Refusal> {
    if req.grant_type.is_empty() {
        return Err(Refusal::invalid_request(
            "The grant_type parameter is required.",
        ));
    }
    if req.grant_type != TOKEN_EXCHANGE_GRANT {
        return Err(Refusal::new(
            "unsupported_grant_type",
            format!("Unsupported grant_type; use {TOKEN_EXCHANGE_GRANT}."),
        ));
    }
    if req.requested_token_type != ACCESS_TOKEN_TYPE {
        return Err(Refusal::invalid_request(format!(
            "The requested_token_type parameter must be {ACCESS_TOKEN_TYPE}."
        )));
    }
    if req.subject_token_type.is_empty() {
        return Err(Refusal::invalid_request(
            "The subject_token_type parameter is required.",
        ));
    }
    if req.subject_token.is_empty() {
        return Err(Refusal::invalid_request(
            "The subject_token parameter is required.",
        ));
    }
    if req.audience.is_empty() {
        return Err(Refusal::invalid_request(
            "The audience parameter is required.",
        ));
    }
    if let Some(options) = &req.options {
        parse_options(options)?;
    }

    let name = ProviderName::parse_audience(&req.audience).ok_or_else(Refusal::invalid_target)?;
    // A disabled pool or provider is refused before its subject token is looked at.
    let (pool, provider) = state
        .world
        .workload_identity_provider(&name)
        .filter(|(pool, provider)| !pool.disabled && !provider.disabled)
        .ok_or_else(Refusal::invalid_target)?;

    // The subject token is verified into an assertion; the decision is the policy crate's.
    let assertion = match (&provider.aws, &provider.oidc) {
        (Some(_), _) if req.subject_token_type == AWS4_REQUEST_TOKEN_TYPE => {
            Assertion::Aws(verify_aws_token(state, &name, &req.subject_token).await?)
        }
        (None, Some(oidc))
            if req.subject_token_type == JWT_TOKEN_TYPE
                || req.subject_token_type == ID_TOKEN_TYPE =>
        {
            Assertion::Oidc(verify_oidc_token(state, oidc, &req.subject_token).await?)
        }
        _ => {
            let expected = provider.kind();
            return Err(refusal(&name, Rejection::SubjectKind { expected }));
        }
    };

    let number = name.pool.project_number.as_str();
    let trace = federate(&PoolProvider::new(number, pool, provider), &assertion);
    if let Some(rejection) = trace.rejection {
        return Err(refusal(&name, rejection));
    }
    let (Some(mapped), Some(principal)) = (trace.mapped, trace.principal) else {
        return Err(Refusal::invalid_request("The exchange was not decided."));
    };
    let scopes: Vec<String> = req.scope.split_whitespace().map(str::to_owned).collect();
    let (access_token, _) = state.issue_google_token(
        GooglePrincipal::Federated {
            principal: principal.identifier(),
            attributes: federated_attributes(&mapped),
        },
        scopes,
        FEDERATED_TOKEN_SECONDS,
    );
    tracing::debug!(principal = %principal.identifier(), "Google STS: federated token issued");
    Ok(StsTokenResponse {
        access_token,
        issued_token_type: ACCESS_TOKEN_TYPE.to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: Some(FEDERATED_TOKEN_SECONDS),
    })
}

/// Google STS's answer to a [`Rejection`] of the exchange at provider `name`.
fn refusal(name: &ProviderName, rejection: Rejection) -> Refusal {
    let error = rejection.error();
    let description = match rejection {
        Rejection::Disabled => INVALID_TARGET_MESSAGE.to_owned(),
        Rejection::SubjectKind { expected } => match expected {
            ProviderKind::Aws => format!(
                "The subject_token_type is not supported by AWS provider {}: use {AWS4_REQUEST_TOKEN_TYPE}.",
                name.provider
            ),
            ProviderKind::Oidc => format!(
                "The subject_token_type is not supported by OIDC provider {}: use {JWT_TOKEN_TYPE} or {ID_TOKEN_TYPE}.",
                name.provider
            ),
        },
        Rejection::Account { account, expected } => format!(
            "The AWS account {} of the caller is not the account {expected} of the provider.",
            short(&account, 32)
        ),
        Rejection::Issuer { issuer, expected } => format!(
            "The issuer in ID Token {} does not match the expected issuer {expected}.",
            short(&issuer, 200)
        ),
        Rejection::Audience { audiences, allowed } => {
            let expected = if allowed.is_empty() {
                let canonical = name.canonical();
                format!("{canonical} or https:{canonical}")
            } else {
                allowed.join(", ")
            };
            format!(
                "The audience in ID Token [{}] does not match the expected audience {expected}.",
                short(&audiences.join(", "), 300)
            )
        }
        Rejection::InvalidMapping(e) => format!("Invalid attribute mapping: {e}"),
        Rejection::Mapping(e) => e.to_string(),
        Rejection::InvalidCondition(e) => format!("Invalid attribute condition: {e}"),
        Rejection::ConditionFalse => CONDITION_REJECTED_MESSAGE.to_owned(),
        Rejection::Condition(e) => format!("{CONDITION_REJECTED_MESSAGE} ({e})"),
    };
    Refusal::new(error, description)
}

/// `options`: JSON, URL-encoded (once more, by google-auth) or not.
fn parse_options(raw: &str) -> Result<StsOptions, Refusal> {
    let text = if raw.trim_start().starts_with('{') {
        raw.to_owned()
    } else {
        url_decode(raw).ok_or_else(|| {
            Refusal::invalid_request("The options parameter is not URL-encoded JSON.")
        })?
    };
    serde_json::from_str(&text).map_err(|_| {
        Refusal::invalid_request("The options parameter is not a valid Options JSON object.")
    })
}

/// Percent-decodes `text`, `+` being a space (Go's `QueryEscape`).
fn url_decode(text: &str) -> Option<String> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

// ----- AWS ------------------------------------------------------------------------------------

/// `GetCallerIdentityResponse` as AWS STS returns it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CallerIdentityResponse {
    get_caller_identity_result: CallerIdentityResult,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CallerIdentityResult {
    arn: String,
    user_id: String,
    account: String,
}

/// `ErrorResponse`, with the error at the top level or under `Errors`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsErrorResponse {
    #[serde(default)]
    error: Option<AwsError>,
    #[serde(default)]
    errors: Option<AwsErrors>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsErrors {
    error: AwsError,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsError {
    code: String,
    #[serde(default)]
    message: Option<String>,
}

/// Decodes an AWS subject token: URL-encoded JSON (or plain JSON).
fn decode_aws_token(raw: &str) -> Result<AwsSubjectToken, Refusal> {
    let raw = raw.trim();
    let text = if raw.starts_with('{') {
        raw.to_owned()
    } else {
        url_decode(raw).ok_or_else(|| {
            Refusal::invalid_request("The AWS subject token is not URL-encoded UTF-8.")
        })?
    };
    // serde's messages can quote values (a signature, a session token): never pass them on.
    serde_json::from_str(&text).map_err(|_| {
        Refusal::invalid_request(
            "The AWS subject token must be URL-encoded JSON {\"url\", \"method\", \"headers\": [{\"key\", \"value\"}]}.",
        )
    })
}

/// The path and query of a `GetCallerIdentity` URL of AWS STS, checked.
fn caller_identity_target(
    token: &AwsSubjectToken,
) -> Result<(http::Method, String, String), Refusal> {
    let bad_url = || {
        Refusal::invalid_grant(
            "The AWS subject token's url must be https://sts[.REGION].amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15.",
        )
    };
    let url = url::Url::parse(&token.url).map_err(|_| bad_url())?;
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let region_ok = host
        .strip_prefix("sts.")
        .and_then(|h| h.strip_suffix(".amazonaws.com"))
        .is_some_and(|region| {
            !region.is_empty()
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if url.scheme() != "https"
        || url.port().is_some()
        || !(host == "sts.amazonaws.com" || region_ok)
        || url.path() != "/"
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(bad_url());
    }
    let mut params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    params.sort();
    let expected: Vec<(String, String)> = GET_CALLER_IDENTITY
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    if params != expected {
        return Err(bad_url());
    }
    let method = match token.method.to_ascii_uppercase().as_str() {
        "POST" => http::Method::POST,
        "GET" => http::Method::GET,
        _ => {
            return Err(Refusal::invalid_grant(
                "The AWS subject token's method must be POST or GET.",
            ));
        }
    };
    if token.body.as_deref().is_some_and(|b| !b.is_empty()) {
        return Err(Refusal::invalid_grant(
            "The AWS subject token's request must have an empty body.",
        ));
    }
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    Ok((method, path_and_query, host))
}

/// Verifies an AWS subject token by replaying its `GetCallerIdentity` request: the caller's
/// identity (whether its account is the provider's is [`federate`]'s to decide).
async fn verify_aws_token(
    state: &Arc<Emulator>,
    name: &ProviderName,
    raw: &str,
) -> Result<CallerIdentity, Refusal> {
    let token = decode_aws_token(raw)?;
    let header = |wanted: &str| {
        token
            .headers
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(wanted))
            .map(|h| h.value.as_str())
    };
    let Some(target) = header(TARGET_RESOURCE_HEADER) else {
        return Err(Refusal::invalid_grant(format!(
            "The AWS subject token has no {TARGET_RESOURCE_HEADER} header: sign the GetCallerIdentity request with the provider's resource name in it."
        )));
    };
    if !name.is_audience(target) {
        return Err(Refusal::invalid_grant(format!(
            "The {TARGET_RESOURCE_HEADER} header of the AWS subject token does not match the audience {}.",
            name.canonical()
        )));
    }
    let (method, path_and_query, host) = caller_identity_target(&token)?;
    if !header("host").is_some_and(|h| h.trim().eq_ignore_ascii_case(&host)) {
        return Err(Refusal::invalid_grant(
            "The AWS subject token's host header must be the host of its url.",
        ));
    }

    let (status, body, in_process) = match &state.world.google_sts.aws_sts_endpoint {
        None => {
            let (status, body) = replay_in_process(state, &token, method, &path_and_query).await?;
            (status, body, true)
        }
        Some(endpoint) => {
            let (status, body) =
                replay_over_http(endpoint, &token, method, &path_and_query).await?;
            (status, body, false)
        }
    };
    if status != StatusCode::OK {
        let error = quick_xml::de::from_str::<AwsErrorResponse>(&body)
            .ok()
            .and_then(|e| e.error.or(e.errors.map(|e| e.error)));
        let (code, message) = error
            .map(|e| (e.code, e.message.unwrap_or_default()))
            .unwrap_or_else(|| (format!("HTTP {}", status.as_u16()), String::new()));
        let code = short(&code, 64);
        // AWS's messages from the emulator's own STS are known to carry no secrets; those of
        // another endpoint are not repeated.
        let description = if in_process && !message.is_empty() {
            format!(
                "Received invalid AWS response of type {code} with error message: {}",
                short(&message, 300)
            )
        } else {
            format!("Received invalid AWS response of type {code}.")
        };
        return Err(Refusal::invalid_grant(format!(
            "sts:GetCallerIdentity failed: {description}"
        )));
    }
    let identity = quick_xml::de::from_str::<CallerIdentityResponse>(&body)
        .map_err(|_| {
            Refusal::invalid_grant(
                "AWS STS answered GetCallerIdentity with an unreadable document.",
            )
        })?
        .get_caller_identity_result;
    Ok(CallerIdentity {
        arn: identity.arn,
        account: identity.account,
        user_id: identity.user_id,
    })
}

fn invalid_header() -> Refusal {
    Refusal::invalid_grant("The AWS subject token has a header that is not a valid HTTP header.")
}

fn name_of(h: &AwsSubjectTokenHeader) -> Result<http::HeaderName, Refusal> {
    http::HeaderName::from_bytes(h.key.as_bytes()).map_err(|_| invalid_header())
}

/// A replayed header's value, marked sensitive: `Authorization` carries the signature and
/// `x-amz-security-token` the caller's session token.
fn value_of(h: &AwsSubjectTokenHeader) -> Result<http::HeaderValue, Refusal> {
    let mut value = http::HeaderValue::from_str(&h.value).map_err(|_| invalid_header())?;
    value.set_sensitive(true);
    Ok(value)
}

async fn replay_in_process(
    state: &Arc<Emulator>,
    token: &AwsSubjectToken,
    method: http::Method,
    path_and_query: &str,
) -> Result<(StatusCode, String), Refusal> {
    let mut builder = http::Request::builder().method(method).uri(path_and_query);
    for h in &token.headers {
        builder = builder.header(name_of(h)?, value_of(h)?);
    }
    let request = builder.body(Body::empty()).map_err(|_| invalid_header())?;
    let response = match crate::aws_sts::router(Arc::clone(state))
        .oneshot(request)
        .await
    {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), MAX_RESPONSE_BYTES)
        .await
        .map_err(|_| Refusal::invalid_grant("AWS STS's answer could not be read."))?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| e.to_string())
}

async fn replay_over_http(
    endpoint: &str,
    token: &AwsSubjectToken,
    method: http::Method,
    path_and_query: &str,
) -> Result<(StatusCode, String), Refusal> {
    let unreachable =
        || Refusal::invalid_grant("AWS STS could not be reached to verify the subject token.");
    let client = http_client().map_err(|_| unreachable())?;
    let url = format!("{}{path_and_query}", endpoint.trim_end_matches('/'));
    let mut request = client.request(method, url).body(Vec::new());
    for h in &token.headers {
        request = request.header(name_of(h)?, value_of(h)?);
    }
    let response = request.send().await.map_err(|e| {
        tracing::warn!(error = %e.without_url(), "Google STS: AWS STS replay failed");
        unreachable()
    })?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = read_limited(response).await.map_err(|_| unreachable())?;
    Ok((status, body))
}

async fn read_limited(mut response: reqwest::Response) -> Result<String, String> {
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err("response too large".to_owned());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

// ----- OIDC -----------------------------------------------------------------------------------

/// Verifies an OIDC subject token: its issuer is the provider's, its signature one of the
/// issuer's keys, its lifetime within Google's limits. Its claims are the assertion (whether
/// its audience is accepted is [`federate`]'s to decide).
async fn verify_oidc_token(
    state: &Emulator,
    oidc: &OidcProviderConfig,
    token: &str,
) -> Result<serde_json::Map<String, Value>, Refusal> {
    let unverified = idbridge_core::jwt::UnverifiedJwt::parse(token.trim())
        .map_err(|_| Refusal::invalid_grant("The subject token is not a JWT."))?;
    let issuer = unverified.str_claim("iss").unwrap_or_default().to_owned();
    if !oidc.issuer_matches(&issuer) {
        return Err(Refusal::invalid_grant(format!(
            "The issuer in ID Token {} does not match the expected issuer {}.",
            short(&issuer, 200),
            oidc.issuer_uri
        )));
    }
    let jwks = oidc_keys(state, oidc, &issuer).await?;
    let opts = VerifyOptions {
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        leeway_secs: DEFAULT_LEEWAY_SECS,
        max_lifetime_secs: Some(MAX_OIDC_TOKEN_LIFETIME_SECS),
        required_claims: vec!["sub", "aud"],
    };
    let verified =
        token_verify::verify_jwt_with_jwks(token, &issuer, &jwks, state.clock.unix(), &opts)
            .map_err(|e| Refusal::invalid_grant(format!("Invalid ID Token: {e}.")))?;
    if verified.issued_at.is_none() {
        return Err(Refusal::invalid_grant(
            "Invalid ID Token: the token has no iat claim.",
        ));
    }
    Ok(verified.claims)
}

/// The verification keys of an OIDC provider: configured, held by the emulator (for the
/// token's issuer as written, which matched the provider's), or fetched.
async fn oidc_keys(
    state: &Emulator,
    oidc: &OidcProviderConfig,
    token_issuer: &str,
) -> Result<JwkSet, Refusal> {
    if let Some(text) = &oidc.jwks_json {
        return serde_json::from_str(text)
            .map_err(|_| Refusal::invalid_grant("The provider's jwks_json is not a JWK set."));
    }
    let issuer = oidc.issuer_uri.as_str();
    if oidc.issuer_matches(token_verify::GOOGLE_ISSUER) {
        return Ok(crate::keys::jwks([&state.google_key]));
    }
    if let Some(set) = state
        .issuer_jwks
        .get(token_issuer)
        .or_else(|| state.issuer_jwks.get(issuer))
    {
        return Ok(set.clone());
    }
    fetch_jwks(issuer).await.map_err(|e| {
        Refusal::invalid_grant(format!(
            "The JWKS of issuer {issuer} could not be retrieved: {e}"
        ))
    })
}

/// `<issuer>/.well-known/openid-configuration` → `jwks_uri` → the JWK set.
async fn fetch_jwks(issuer: &str) -> Result<JwkSet, String> {
    let client = http_client()?;
    let get = |url: String| {
        let client = client.clone();
        async move {
            let response = client
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {}", e.without_url()))?;
            if !response.status().is_success() {
                return Err(format!("GET {url}: HTTP {}", response.status().as_u16()));
            }
            read_limited(response)
                .await
                .map_err(|e| format!("GET {url}: {e}"))
        }
    };
    idbridge_core::jwks::fetch_issuer_jwks(issuer, get).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use idbridge_core::SecretString;
    use idbridge_policy::gcp::AttributeMapping;
    use idbridge_wire::google::AwsSubjectTokenHeader;
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    use serde_json::json;
    use time::OffsetDateTime;

    use super::*;
    use crate::google::router;
    use crate::google::test_support::{T0, emulator, emulator_with, send};
    use crate::keys::SigningKey;
    use crate::sigv4::testing::Client;
    use crate::state::AwsSession;

    const AWS_AUDIENCE: &str = "//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/aws-pool/providers/aws-test-account";
    const SPIRE_AUDIENCE: &str = "//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/spiffe-pool/providers/spire";
    const AWS_SA: &str = "aws-service-account-demo@example-project.iam.gserviceaccount.com";
    const SPIFFE_SA: &str = "spiffe-demo@example-project.iam.gserviceaccount.com";
    const SPIRE: &str = "https://spire.idbridge.test";
    const BILLING: &str = "spiffe://example.org/ns/prod/sa/billing";
    const STS_HOST: &str = "sts.us-east-1.amazonaws.com";
    const GCI_URL: &str =
        "https://sts.us-east-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15";
    const SESSION: &str = "i-0a1b2c3d4e5f60718";
    const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

    /// `urllib.parse.quote` (safe `/`).
    const PY_QUOTE: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'_')
        .remove(b'.')
        .remove(b'-')
        .remove(b'~')
        .remove(b'/');
    /// Go's `url.QueryEscape`, before spaces become `+`.
    const GO_QUERY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'_')
        .remove(b'.')
        .remove(b'-')
        .remove(b'~');

    struct Creds {
        akid: String,
        secret: String,
        token: String,
    }

    /// An STS session of `role`, as the emulated EC2 instance or ECS task would hand out.
    fn aws_session(emu: &Emulator, role: &str) -> Creds {
        let creds = Creds {
            akid: format!("ASIA{}", hex::encode_upper(rand::random::<[u8; 8]>())),
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned(),
            token: format!("FQoGZXIvYXdzEXAMPLE+/{role}="),
        };
        let role_arn = format!("arn:aws:iam::111122223333:role/{role}");
        emu.insert_session(AwsSession {
            access_key_id: creds.akid.clone(),
            secret_access_key: SecretString::new(creds.secret.clone()),
            session_token: SecretString::new(creds.token.clone()),
            role_id: crate::aws_sts::role_id(&role_arn),
            role_arn,
            session_name: SESSION.to_owned(),
            expires_at: emu.clock.now() + time::Duration::hours(1),
            context: Default::default(),
        });
        creds
    }

    fn signer(c: &Creds, time: i64) -> Client<'_> {
        Client {
            access_key_id: &c.akid,
            secret: &c.secret,
            session_token: Some(&c.token),
            region: "us-east-1",
            service: "sts",
            time: OffsetDateTime::from_unix_timestamp(time).unwrap(),
        }
    }

    fn gci_request(extra: &[(&str, &str)]) -> Request<Vec<u8>> {
        let mut req =
            Request::post("/?Action=GetCallerIdentity&Version=2011-06-15").header("host", STS_HOST);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.body(Vec::new()).unwrap()
    }

    /// The headers google-auth (Python) puts in the token, in its order: signed over host,
    /// x-amz-date and x-amz-security-token; x-goog-cloud-target-resource is added after signing.
    fn python_headers(c: &Creds, time: i64, target: Option<&str>) -> Vec<(String, String)> {
        let mut req = gci_request(&[]);
        signer(c, time).sign(&mut req, None, false);
        let h = |n: &str| req.headers()[n].to_str().unwrap().to_owned();
        let mut headers = vec![
            ("Authorization".to_owned(), h("authorization")),
            ("host".to_owned(), h("host")),
            ("x-amz-date".to_owned(), h("x-amz-date")),
            ("x-amz-security-token".to_owned(), h("x-amz-security-token")),
        ];
        if let Some(t) = target {
            headers.push((TARGET_RESOURCE_HEADER.to_owned(), t.to_owned()));
        }
        headers
    }

    /// `quote(json.dumps(obj, separators=(",", ":"), sort_keys=True))`.
    fn python_encode(headers: Vec<(String, String)>, method: &str, url: &str) -> String {
        let token = AwsSubjectToken {
            headers: headers
                .into_iter()
                .map(|(key, value)| AwsSubjectTokenHeader { key, value })
                .collect(),
            method: method.to_owned(),
            url: url.to_owned(),
            body: None,
        };
        let json = serde_json::to_string(&token).unwrap();
        assert!(json.starts_with("{\"headers\":[{\"key\":\""), "sorted keys");
        utf8_percent_encode(&json, PY_QUOTE).to_string()
    }

    fn python_token(c: &Creds, target: Option<&str>) -> String {
        python_encode(python_headers(c, T0, target), "POST", GCI_URL)
    }

    /// golang/oauth2: the target header is signed; names in Go's canonical case, sorted;
    /// `json.Marshal` of `{url, method, headers}` (which writes `&` as `\u0026`) and
    /// `url.QueryEscape` (spaces as `+`, `/` escaped).
    fn go_token(c: &Creds, target: &str) -> String {
        let mut req = gci_request(&[(TARGET_RESOURCE_HEADER, target)]);
        signer(c, T0).sign(&mut req, None, false);
        let canonical = |n: &str| {
            n.split('-')
                .map(|w| {
                    let mut cs = w.chars();
                    cs.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + cs.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("-")
        };
        let mut headers: Vec<Value> = req
            .headers()
            .iter()
            .map(|(n, v)| json!({"key": canonical(n.as_str()), "value": v.to_str().unwrap()}))
            .collect();
        headers.sort_by_key(|h| h["key"].as_str().unwrap().to_owned());
        let json = format!(
            "{{\"url\":{},\"method\":\"POST\",\"headers\":{}}}",
            Value::from(GCI_URL),
            Value::from(headers)
        )
        .replace('&', "\\u0026");
        let escaped = utf8_percent_encode(&json, GO_QUERY_ESCAPE)
            .to_string()
            .replace("%20", "+");
        assert!(escaped.contains('+') && escaped.contains("%2F"));
        escaped
    }

    fn form(audience: &str, subject_token: &str, token_type: &str) -> Vec<(String, String)> {
        [
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("audience", audience),
            ("scope", CLOUD_PLATFORM),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", subject_token),
            ("subject_token_type", token_type),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    async fn post_form(emu: &Arc<Emulator>, fields: &[(String, String)]) -> (StatusCode, Value) {
        let req = Request::post("/v1/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(serde_urlencoded::to_string(fields).unwrap()))
            .unwrap();
        let (resp, text) = send(&router(emu.clone()), req).await;
        (resp.status(), serde_json::from_str(&text).unwrap())
    }

    async fn exchange_aws(emu: &Arc<Emulator>, subject_token: &str) -> (StatusCode, Value) {
        post_form(
            emu,
            &form(AWS_AUDIENCE, subject_token, AWS4_REQUEST_TOKEN_TYPE),
        )
        .await
    }

    async fn exchange_jwt(emu: &Arc<Emulator>, audience: &str, jwt: &str) -> (StatusCode, Value) {
        post_form(emu, &form(audience, jwt, JWT_TOKEN_TYPE)).await
    }

    async fn iam(emu: &Arc<Emulator>, bearer: &str, sa: &str, method: &str) -> (StatusCode, Value) {
        let body = if method == "generateAccessToken" {
            json!({"delegates": null, "scope": [CLOUD_PLATFORM], "lifetime": "1200s"})
        } else {
            json!({"audience": "https://example.com", "delegates": null, "includeEmail": true})
        };
        let req = Request::post(format!("/v1/projects/-/serviceAccounts/{sa}:{method}"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {bearer}"))
            .body(Body::from(body.to_string()))
            .unwrap();
        let (resp, text) = send(&router(emu.clone()), req).await;
        (resp.status(), serde_json::from_str(&text).unwrap())
    }

    #[track_caller]
    fn assert_oauth_error(got: &(StatusCode, Value), error: &str) {
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);
        assert_eq!(got.1["error"], error, "{}", got.1);
        assert!(got.1["error_description"].is_string(), "{}", got.1);
    }

    #[track_caller]
    fn assert_token(got: &(StatusCode, Value)) -> String {
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        assert_eq!(got.1["issued_token_type"], ACCESS_TOKEN_TYPE);
        assert_eq!(got.1["token_type"], "Bearer");
        assert_eq!(got.1["expires_in"], 3600);
        got.1["access_token"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn seed001_python_and_go_subject_tokens_end_to_end() {
        let (emu, _) = emulator();
        let creds = aws_session(&emu, "gcp-caller");

        let sts_token =
            assert_token(&exchange_aws(&emu, &python_token(&creds, Some(AWS_AUDIENCE))).await);
        let issued = emu.google_token(&sts_token).unwrap();
        let subject = format!("arn:aws:sts::111122223333:assumed-role/gcp-caller/{SESSION}");
        assert_eq!(
            issued.principal,
            GooglePrincipal::Federated {
                principal: format!(
                    "principal://iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/aws-pool/subject/{subject}"
                ),
                attributes: BTreeMap::from([(
                    "attribute.aws_role".to_owned(),
                    "arn:aws:sts::111122223333:assumed-role/gcp-caller".to_owned()
                )]),
            }
        );
        assert_eq!(issued.scopes, [CLOUD_PLATFORM]);
        assert_eq!(
            issued.expires_at,
            emu.clock.now() + time::Duration::hours(1)
        );

        // Seed 001's second step: impersonate the service account with the federated token.
        let (status, body) = iam(&emu, &sts_token, AWS_SA, "generateAccessToken").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let sa_token = emu
            .google_token(body["accessToken"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            sa_token.principal,
            GooglePrincipal::ServiceAccount(AWS_SA.to_owned())
        );
        let (status, body) = iam(&emu, &sts_token, AWS_SA, "generateIdToken").await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // The Go shape: signed target header, canonical-case names, `+` for spaces.
        let go = assert_token(&exchange_aws(&emu, &go_token(&creds, AWS_AUDIENCE)).await);
        let (status, _) = iam(&emu, &go, AWS_SA, "generateAccessToken").await;
        assert_eq!(status, StatusCode::OK);

        // Replays inside the signature window are accepted, as Google does.
        assert_token(&exchange_aws(&emu, &python_token(&creds, Some(AWS_AUDIENCE))).await);
        // The target header may carry the https: form of the audience, and the audience too.
        let https = format!("https:{AWS_AUDIENCE}");
        assert_token(&exchange_aws(&emu, &python_token(&creds, Some(&https))).await);
        let fields = form(
            &https,
            &python_token(&creds, Some(AWS_AUDIENCE)),
            AWS4_REQUEST_TOKEN_TYPE,
        );
        assert_token(&post_form(&emu, &fields).await);

        assert_eq!(emu.count("google.sts.token"), 5);
        assert_eq!(emu.count("aws_sts.GetCallerIdentity"), 5);
    }

    #[tokio::test]
    async fn other_app_is_rejected_by_the_attribute_condition() {
        let (emu, _) = emulator();
        let creds = aws_session(&emu, "other-app");
        let got = exchange_aws(&emu, &python_token(&creds, Some(AWS_AUDIENCE))).await;
        assert_oauth_error(&got, "unauthorized_client");
        assert_eq!(got.1["error_description"], CONDITION_REJECTED_MESSAGE);
    }

    #[tokio::test]
    async fn target_resource_header_is_required_and_must_match() {
        let (emu, _) = emulator();
        let creds = aws_session(&emu, "gcp-caller");
        let got = exchange_aws(&emu, &python_token(&creds, None)).await;
        assert_oauth_error(&got, "invalid_grant");
        assert!(
            got.1["error_description"]
                .as_str()
                .unwrap()
                .contains(TARGET_RESOURCE_HEADER)
        );

        let other = AWS_AUDIENCE.replace("aws-test-account", "other-provider");
        let got = exchange_aws(&emu, &python_token(&creds, Some(&other))).await;
        assert_oauth_error(&got, "invalid_grant");
        // Nothing was replayed to AWS.
        assert_eq!(emu.count("aws_sts.GetCallerIdentity"), 0);
    }

    #[tokio::test]
    async fn signature_problems_are_named_with_the_aws_code() {
        let (emu, _) = emulator();
        let creds = aws_session(&emu, "gcp-caller");
        let mut headers = python_headers(&creds, T0, Some(AWS_AUDIENCE));
        let auth = &mut headers[0].1;
        let last = auth.pop().unwrap();
        auth.push(if last == '0' { '1' } else { '0' });
        let got = exchange_aws(&emu, &python_encode(headers, "POST", GCI_URL)).await;
        assert_oauth_error(&got, "invalid_grant");
        let description = got.1["error_description"].as_str().unwrap();
        assert!(
            description.contains("SignatureDoesNotMatch"),
            "{description}"
        );
        assert!(!description.contains(&creds.token) && !description.contains(&creds.secret));

        // Signed 20 minutes ago: outside AWS's 15-minute window.
        let stale = python_encode(
            python_headers(&creds, T0 - 1200, Some(AWS_AUDIENCE)),
            "POST",
            GCI_URL,
        );
        let got = exchange_aws(&emu, &stale).await;
        assert_oauth_error(&got, "invalid_grant");
        assert!(
            got.1["error_description"]
                .as_str()
                .unwrap()
                .contains("Signature expired")
        );

        // Keys STS never issued.
        let ghost = Creds {
            akid: "ASIAGHOSTGHOSTGHOST1".to_owned(),
            secret: creds.secret.clone(),
            token: creds.token.clone(),
        };
        let got = exchange_aws(&emu, &python_token(&ghost, Some(AWS_AUDIENCE))).await;
        assert_oauth_error(&got, "invalid_grant");
        assert!(
            got.1["error_description"]
                .as_str()
                .unwrap()
                .contains("InvalidClientTokenId")
        );
    }

    #[tokio::test]
    async fn subject_token_shape_is_checked() {
        let (emu, _) = emulator();
        let creds = aws_session(&emu, "gcp-caller");
        let headers = || python_headers(&creds, T0, Some(AWS_AUDIENCE));
        for url in [
            "http://sts.us-east-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
            "https://sts.us-east-1.amazonaws.com.evil.example?Action=GetCallerIdentity&Version=2011-06-15",
            "https://iam.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
            "https://sts.us-east-1.amazonaws.com?Action=AssumeRole&Version=2011-06-15",
            "https://sts.us-east-1.amazonaws.com/other?Action=GetCallerIdentity&Version=2011-06-15",
            "https://sts.us-east-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15&X=1",
        ] {
            let got = exchange_aws(&emu, &python_encode(headers(), "POST", url)).await;
            assert_oauth_error(&got, "invalid_grant");
        }
        let got = exchange_aws(&emu, &python_encode(headers(), "DELETE", GCI_URL)).await;
        assert_oauth_error(&got, "invalid_grant");
        // GET works as well as POST.
        let mut get = Request::get("/?Action=GetCallerIdentity&Version=2011-06-15")
            .header("host", STS_HOST)
            .body(Vec::new())
            .unwrap();
        signer(&creds, T0).sign(&mut get, None, false);
        let mut get_headers: Vec<(String, String)> = get
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        get_headers.push((TARGET_RESOURCE_HEADER.to_owned(), AWS_AUDIENCE.to_owned()));
        get_headers.sort_by_key(|(n, _)| n != "authorization");
        assert_token(&exchange_aws(&emu, &python_encode(get_headers, "GET", GCI_URL)).await);
        // The host header must be the URL's.
        let other_region =
            "https://sts.eu-west-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15";
        let got = exchange_aws(&emu, &python_encode(headers(), "POST", other_region)).await;
        assert_oauth_error(&got, "invalid_grant");
        // Not URL-encoded JSON at all: the description does not echo it.
        let got = exchange_aws(&emu, "not%20json%20secret-material").await;
        assert_oauth_error(&got, "invalid_request");
        assert!(!got.1.to_string().contains("secret-material"));
        // Plain (not URL-encoded) JSON is accepted.
        let plain = percent_encoding::percent_decode_str(&python_token(&creds, Some(AWS_AUDIENCE)))
            .decode_utf8()
            .unwrap()
            .into_owned();
        assert_token(&exchange_aws(&emu, &plain).await);
    }

    #[tokio::test]
    async fn unknown_or_disabled_providers_are_invalid_targets() {
        let world = format!(
            "{}\n[[workload_identity_pool]]\nproject = \"example-project\"\nid = \"off-pool\"\ndisabled = true\n\n[[workload_identity_pool.provider]]\nid = \"aws-off\"\naws = {{ account_id = \"111122223333\" }}\n\n[[workload_identity_pool]]\nproject = \"example-project\"\nid = \"on-pool\"\n\n[[workload_identity_pool.provider]]\nid = \"aws-off\"\ndisabled = true\naws = {{ account_id = \"111122223333\" }}\n",
            crate::world::BUILTIN_TOML
        );
        let (emu, _) = emulator_with(World::from_str_at(&world, "w.toml", None).unwrap());
        let creds = aws_session(&emu, "gcp-caller");
        let base =
            "//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools";
        for audience in [
            format!("{base}/aws-pool/providers/nope"),
            format!("{base}/nope/providers/aws-test-account"),
            format!("{base}/off-pool/providers/aws-off"),
            format!("{base}/on-pool/providers/aws-off"),
            // A project id instead of the number.
            "//iam.googleapis.com/projects/example-project/locations/global/workloadIdentityPools/aws-pool/providers/aws-test-account".to_owned(),
            "//iam.googleapis.com/projects/271828182845/locations/global/workloadIdentityPools/aws-pool/providers/aws-test-account".to_owned(),
            "aws-test-account".to_owned(),
        ] {
            let token = python_token(&creds, Some(&audience));
            let got = post_form(&emu, &form(&audience, &token, AWS4_REQUEST_TOKEN_TYPE)).await;
            assert_oauth_error(&got, "invalid_target");
            assert_eq!(got.1["error_description"], INVALID_TARGET_MESSAGE, "{audience}");
        }
    }

    #[tokio::test]
    async fn the_caller_must_be_in_the_providers_account() {
        let world = format!(
            "{}\n[[workload_identity_pool]]\nproject = \"example-project\"\nid = \"elsewhere\"\n\n[[workload_identity_pool.provider]]\nid = \"other-account\"\naws = {{ account_id = \"444455556666\" }}\n",
            crate::world::BUILTIN_TOML
        );
        let (emu, _) = emulator_with(World::from_str_at(&world, "w.toml", None).unwrap());
        let creds = aws_session(&emu, "gcp-caller");
        let audience = "//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/elsewhere/providers/other-account";
        let token = python_token(&creds, Some(audience));
        let got = post_form(&emu, &form(audience, &token, AWS4_REQUEST_TOKEN_TYPE)).await;
        assert_oauth_error(&got, "invalid_grant");
        assert!(
            got.1["error_description"]
                .as_str()
                .unwrap()
                .contains("111122223333"),
            "{}",
            got.1
        );
    }

    #[tokio::test]
    async fn request_fields_are_checked() {
        let (emu, _) = emulator();
        let creds = aws_session(&emu, "gcp-caller");
        let token = python_token(&creds, Some(AWS_AUDIENCE));
        let base = form(AWS_AUDIENCE, &token, AWS4_REQUEST_TOKEN_TYPE);
        let with = |name: &str, value: Option<&str>| {
            let mut f: Vec<(String, String)> =
                base.iter().filter(|(k, _)| k != name).cloned().collect();
            if let Some(v) = value {
                f.push((name.to_owned(), v.to_owned()));
            }
            f
        };
        let cases = [
            (with("grant_type", None), "invalid_request"),
            (
                with(
                    "grant_type",
                    Some("urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ),
                "unsupported_grant_type",
            ),
            (with("requested_token_type", None), "invalid_request"),
            (
                with(
                    "requested_token_type",
                    Some("urn:ietf:params:oauth:token-type:id_token"),
                ),
                "invalid_request",
            ),
            (with("subject_token", None), "invalid_request"),
            (with("subject_token_type", None), "invalid_request"),
            (with("audience", None), "invalid_request"),
            // An OIDC token type for an AWS provider.
            (
                with("subject_token_type", Some(JWT_TOKEN_TYPE)),
                "invalid_request",
            ),
            (with("subject_token_type", Some("urn:x")), "invalid_request"),
            (with("options", Some("%7Bnot-json")), "invalid_request"),
        ];
        for (fields, error) in cases {
            let got = post_form(&emu, &fields).await;
            assert_oauth_error(&got, error);
        }
        // google-auth's options: JSON URL-quoted inside the form; an Authorization header is
        // ignored.
        let options = utf8_percent_encode(r#"{"userProject": "p"}"#, PY_QUOTE).to_string();
        let fields = with("options", Some(&options));
        let req = Request::post("/v1/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", "Bearer ya29.ignored")
            .body(Body::from(serde_urlencoded::to_string(&fields).unwrap()))
            .unwrap();
        let (resp, text) = send(&router(emu.clone()), req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{text}");
        // The wrong token type for an OIDC provider.
        let got = exchange_jwt(&emu, SPIRE_AUDIENCE, &token).await;
        assert_oauth_error(&got, "invalid_grant");
        let fields = form(SPIRE_AUDIENCE, &token, AWS4_REQUEST_TOKEN_TYPE);
        assert_oauth_error(&post_form(&emu, &fields).await, "invalid_request");
    }

    #[tokio::test]
    async fn federated_principals_not_bound_get_permission_denied() {
        let (emu, _) = emulator();
        let other = GooglePrincipal::Federated {
            principal: format!(
                "principal://iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/aws-pool/subject/arn:aws:sts::111122223333:assumed-role/other-app/{SESSION}"
            ),
            attributes: BTreeMap::from([(
                "attribute.aws_role".to_owned(),
                "arn:aws:sts::111122223333:assumed-role/other-app".to_owned(),
            )]),
        };
        let (token, _) = emu.issue_google_token(other, vec![CLOUD_PLATFORM.to_owned()], 3600);
        let (status, body) = iam(&emu, &token, AWS_SA, "generateAccessToken").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            json!({"error": {
                "code": 403,
                "message": "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
                "status": "PERMISSION_DENIED",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED",
                    "domain": "iam.googleapis.com",
                    "metadata": {"permission": "iam.serviceAccounts.getAccessToken"}
                }]
            }})
        );
        let (status, body) = iam(&emu, &token, AWS_SA, "generateIdToken").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body["error"]["details"][0]["metadata"]["permission"],
            "iam.serviceAccounts.getOpenIdToken"
        );
        // gcp-caller's federated principal is bound to the AWS account only.
        let creds = aws_session(&emu, "gcp-caller");
        let sts =
            assert_token(&exchange_aws(&emu, &python_token(&creds, Some(AWS_AUDIENCE))).await);
        let (status, _) = iam(&emu, &sts, SPIFFE_SA, "generateAccessToken").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    // ----- OIDC (seed 003) ------------------------------------------------------------------

    fn svid(emu: &Emulator, sub: &str, aud: &str, iat: i64, exp: i64) -> String {
        emu.issuer_keys[SPIRE]
            .sign(&json!({"iss": SPIRE, "sub": sub, "aud": [aud], "iat": iat, "exp": exp}))
            .unwrap()
    }

    #[tokio::test]
    async fn seed003_spiffe_jwt_svid_end_to_end() {
        let (emu, _) = emulator();
        let jwt = svid(&emu, BILLING, SPIRE_AUDIENCE, T0, T0 + 300);
        let sts = assert_token(&exchange_jwt(&emu, SPIRE_AUDIENCE, &jwt).await);
        assert_eq!(
            emu.google_token(&sts).unwrap().principal,
            GooglePrincipal::Federated {
                principal: format!(
                    "principal://iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/spiffe-pool/subject/{BILLING}"
                ),
                attributes: BTreeMap::new(),
            }
        );
        let (status, body) = iam(&emu, &sts, SPIFFE_SA, "generateAccessToken").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["expireTime"], "2025-01-01T00:20:00Z");
        // Not bound on the AWS demo account.
        let (status, _) = iam(&emu, &sts, AWS_SA, "generateAccessToken").await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // id_token is accepted like jwt; the audience may carry https:.
        let jwt = svid(
            &emu,
            BILLING,
            &format!("https:{SPIRE_AUDIENCE}"),
            T0,
            T0 + 300,
        );
        let fields = form(SPIRE_AUDIENCE, &jwt, ID_TOKEN_TYPE);
        assert_token(&post_form(&emu, &fields).await);
    }

    #[tokio::test]
    async fn entra_issuer_matches_with_or_without_the_trailing_slash() {
        const AZURE_AUDIENCE: &str = "//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/azure-pool/providers/entra";
        const AZURE_SA: &str = "azure-demo@example-project.iam.gserviceaccount.com";
        const TID: &str = "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
        // The built-in provider writes the issuer without the slash the v1 token's iss has.
        let (emu, _) = emulator();
        let jwt = crate::azure::vm_token(&emu, "api://idbridge-gcp");
        let sts = assert_token(&exchange_jwt(&emu, AZURE_AUDIENCE, &jwt).await);
        let (status, body) = iam(&emu, &sts, AZURE_SA, "generateAccessToken").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // A token for another resource is not one of the provider's allowed audiences.
        let jwt = crate::azure::vm_token(&emu, "api://idbridge-aws");
        let (status, body) = exchange_jwt(&emu, AZURE_AUDIENCE, &jwt).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_grant");

        // The issuer written with the slash matches too.
        let mut world = World::builtin().unwrap();
        let slashless = format!("https://sts.windows.net/{TID}");
        let provider = world
            .workload_identity_pools
            .iter_mut()
            .flat_map(|p| p.providers.iter_mut())
            .find(|p| p.id == "entra")
            .unwrap();
        let oidc = provider.oidc.as_mut().unwrap();
        assert_eq!(oidc.issuer_uri, slashless);
        oidc.issuer_uri = format!("{slashless}/");
        let (emu, _) = emulator_with(world);
        let jwt = crate::azure::vm_token(&emu, "api://idbridge-gcp");
        assert_token(&exchange_jwt(&emu, AZURE_AUDIENCE, &jwt).await);

        // Another tenant's issuer does not.
        let mut world = World::builtin().unwrap();
        let provider = world
            .workload_identity_pools
            .iter_mut()
            .flat_map(|p| p.providers.iter_mut())
            .find(|p| p.id == "entra")
            .unwrap();
        provider.oidc.as_mut().unwrap().issuer_uri =
            "https://sts.windows.net/00000000-0000-4000-8000-000000000000".to_owned();
        let (emu, _) = emulator_with(world);
        let jwt = crate::azure::vm_token(&emu, "api://idbridge-gcp");
        let (status, body) = exchange_jwt(&emu, AZURE_AUDIENCE, &jwt).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("The issuer in ID Token"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn oidc_token_rejections() {
        let (emu, _) = emulator();
        let cases = [
            ("expired", svid(&emu, BILLING, SPIRE_AUDIENCE, T0 - 4000, T0 - 3600)),
            ("wrong audience", svid(&emu, BILLING, "https://example.com", T0, T0 + 300)),
            (
                "other provider's audience",
                svid(&emu, BILLING, &SPIRE_AUDIENCE.replace("/spire", "/other"), T0, T0 + 300),
            ),
            (
                "over 48 hours",
                svid(&emu, BILLING, SPIRE_AUDIENCE, T0, T0 + MAX_OIDC_TOKEN_LIFETIME_SECS + 1),
            ),
            ("issued in the future", svid(&emu, BILLING, SPIRE_AUDIENCE, T0 + 3600, T0 + 7200)),
            (
                "another issuer's key",
                emu.issuer_keys["https://kubernetes.idbridge.test"]
                    .sign(&json!({"iss": SPIRE, "sub": BILLING, "aud": SPIRE_AUDIENCE, "iat": T0, "exp": T0 + 300}))
                    .unwrap(),
            ),
            (
                "another issuer",
                emu.issuer_keys["https://kubernetes.idbridge.test"]
                    .sign(&json!({"iss": "https://kubernetes.idbridge.test", "sub": BILLING, "aud": SPIRE_AUDIENCE, "iat": T0, "exp": T0 + 300}))
                    .unwrap(),
            ),
            (
                "no iat",
                emu.issuer_keys[SPIRE]
                    .sign(&json!({"iss": SPIRE, "sub": BILLING, "aud": SPIRE_AUDIENCE, "exp": T0 + 300}))
                    .unwrap(),
            ),
            ("not a JWT", "abc.def".to_owned()),
        ];
        for (what, jwt) in cases {
            let got = exchange_jwt(&emu, SPIRE_AUDIENCE, &jwt).await;
            assert_oauth_error(&got, "invalid_grant");
            let description = got.1["error_description"].as_str().unwrap().to_owned();
            if what.contains("audience") {
                assert!(
                    description.starts_with("The audience in ID Token ["),
                    "{description}"
                );
            }
            if what == "over 48 hours" {
                assert!(description.contains("172800"), "{description}");
            }
            assert!(
                !description.contains(&jwt[..jwt.len().min(30)]),
                "{what}: {description}"
            );
        }
        // Exactly 48 hours is fine.
        let jwt = svid(
            &emu,
            BILLING,
            SPIRE_AUDIENCE,
            T0,
            T0 + MAX_OIDC_TOKEN_LIFETIME_SECS,
        );
        assert_token(&exchange_jwt(&emu, SPIRE_AUDIENCE, &jwt).await);
    }

    #[tokio::test]
    async fn other_spiffe_id_is_denied_at_iam_credentials() {
        let (emu, _) = emulator();
        let jwt = svid(
            &emu,
            "spiffe://example.org/ns/prod/sa/reports",
            SPIRE_AUDIENCE,
            T0,
            T0 + 300,
        );
        let sts = assert_token(&exchange_jwt(&emu, SPIRE_AUDIENCE, &jwt).await);
        let (status, body) = iam(&emu, &sts, SPIFFE_SA, "generateAccessToken").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
        let (status, body) = iam(&emu, &sts, SPIFFE_SA, "generateIdToken").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body["error"]["message"],
            "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist)."
        );
    }

    // ----- over HTTP (loopback only) ---------------------------------------------------------

    /// Serves the router `make` builds for its own base URL on a loopback port.
    async fn serve_local(
        make: impl FnOnce(&str) -> axum::Router,
    ) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = make(&base);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (base, task)
    }

    #[tokio::test]
    async fn aws_tokens_can_be_verified_by_a_remote_sts() {
        // "AWS": an emulator whose STS issued the session, on a loopback port.
        let (aws, _) = emulator();
        let (endpoint, task) = serve_local(|_| crate::aws_sts::router(aws.clone())).await;
        // "Google": another emulator, told to replay AWS tokens to that STS.
        let world = format!(
            "{}\n[google_sts]\naws_sts_endpoint = \"{endpoint}\"\n",
            crate::world::BUILTIN_TOML
        );
        let (google, _) = emulator_with(World::from_str_at(&world, "w.toml", None).unwrap());

        let creds = aws_session(&aws, "gcp-caller");
        let sts =
            assert_token(&exchange_aws(&google, &python_token(&creds, Some(AWS_AUDIENCE))).await);
        let (status, _) = iam(&google, &sts, AWS_SA, "generateAccessToken").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(aws.count("aws_sts.GetCallerIdentity"), 1);
        assert_eq!(google.count("aws_sts.GetCallerIdentity"), 0);

        // A session only the Google side knows is unknown to the remote STS.
        let local_only = aws_session(&google, "gcp-caller");
        let got = exchange_aws(&google, &python_token(&local_only, Some(AWS_AUDIENCE))).await;
        assert_oauth_error(&got, "invalid_grant");
        assert!(
            got.1["error_description"]
                .as_str()
                .unwrap()
                .contains("InvalidClientTokenId")
        );
        task.abort();
    }

    #[tokio::test]
    async fn oidc_keys_are_fetched_from_the_issuer() {
        let key = SigningKey::generate_rsa("local-issuer").unwrap();
        let jwks = crate::keys::jwks([&key]);
        let (issuer, task) = serve_local(|base| {
            let discovery = json!({"issuer": base, "jwks_uri": format!("{base}/jwks")});
            axum::Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    axum::routing::get(move || async move { axum::Json(discovery) }),
                )
                .route(
                    "/jwks",
                    axum::routing::get(move || async move { axum::Json(jwks) }),
                )
        })
        .await;
        let world = format!(
            r#"
[[project]]
id = "p"
number = "42"

[[workload_identity_pool]]
project = "p"
id = "ci-pool"

[[workload_identity_pool.provider]]
id = "local-issuer"
oidc = {{ issuer_uri = "{issuer}", allowed_audiences = ["my-audience"] }}
attribute_mapping = {{ "google.subject" = "assertion.sub", "attribute.ns" = "assertion.sub.extract('/ns/{{ns}}/')" }}
attribute_condition = "attribute.ns != ''"

[[service_account]]
email = "ci@p.iam.gserviceaccount.com"
unique_id = "7"
project = "p"
workload_identity_users = [
  "principalSet://iam.googleapis.com/projects/42/locations/global/workloadIdentityPools/ci-pool/attribute.ns/prod",
]
"#
        );
        let (emu, _) = emulator_with(World::from_str_at(&world, "w.toml", None).unwrap());
        let audience = "//iam.googleapis.com/projects/42/locations/global/workloadIdentityPools/ci-pool/providers/local-issuer";
        let sign = |sub: &str, aud: &str| {
            key.sign(&json!({"iss": issuer, "sub": sub, "aud": aud, "iat": T0, "exp": T0 + 600}))
                .unwrap()
        };
        let jwt = sign("spiffe://example.org/ns/prod/sa/ci", "my-audience");
        let sts = assert_token(&exchange_jwt(&emu, audience, &jwt).await);
        let (status, body) = iam(
            &emu,
            &sts,
            "ci@p.iam.gserviceaccount.com",
            "generateAccessToken",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // allowed_audiences replaces the canonical-name default.
        let got = exchange_jwt(
            &emu,
            audience,
            &sign("spiffe://example.org/ns/prod/sa/ci", audience),
        )
        .await;
        assert_oauth_error(&got, "invalid_grant");
        // The condition: no /ns/ segment, no exchange.
        let got = exchange_jwt(
            &emu,
            audience,
            &sign("spiffe://example.org/sa/ci", "my-audience"),
        )
        .await;
        assert_oauth_error(&got, "unauthorized_client");
        // Another namespace exchanges, but is not bound.
        let sts = assert_token(
            &exchange_jwt(
                &emu,
                audience,
                &sign("spiffe://example.org/ns/dev/sa/ci", "my-audience"),
            )
            .await,
        );
        let (status, _) = iam(
            &emu,
            &sts,
            "ci@p.iam.gserviceaccount.com",
            "generateAccessToken",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        task.abort();
    }

    // ----- world -------------------------------------------------------------------------------

    #[test]
    fn builtin_world_has_the_seed_pools() {
        let world = World::builtin().unwrap();
        let aws = ProviderName::parse_audience(AWS_AUDIENCE).unwrap();
        let (pool, provider) = world.workload_identity_provider(&aws).unwrap();
        assert_eq!(pool.id, "aws-pool");
        assert_eq!(provider.kind(), ProviderKind::Aws);
        assert_eq!(provider.mapping().unwrap(), AttributeMapping::aws_default());
        assert!(provider.condition().unwrap().is_some());
        let spire = ProviderName::parse_audience(SPIRE_AUDIENCE).unwrap();
        let (_, provider) = world.workload_identity_provider(&spire).unwrap();
        assert_eq!(provider.kind(), ProviderKind::Oidc);
        assert!(provider.oidc.as_ref().unwrap().allowed_audiences.is_empty());
    }

    #[test]
    fn world_errors_name_the_provider_and_field() {
        let head = "[[project]]\nid = \"p\"\nnumber = \"42\"\n\n[[workload_identity_pool]]\nproject = \"p\"\nid = \"my-pool\"\n\n[[workload_identity_pool.provider]]\nid = \"my-provider\"\n";
        let cases = [
            (
                "aws = { account_id = \"111122223333\" }\nattribute_condition = \"attribute.aws_role ==\"\n",
                "field `attribute_condition`",
            ),
            (
                "aws = { account_id = \"111122223333\" }\nattribute_condition = \"atribute.aws_role == 'x'\"\n",
                "field `attribute_condition`",
            ),
            (
                "aws = { account_id = \"111122223333\" }\nattribute_mapping = { \"attribute.aws_role\" = \"assertion.arn\" }\n",
                "field `attribute_mapping`: the attribute mapping must map google.subject",
            ),
            (
                "oidc = { issuer_uri = \"https://issuer.example\" }\n",
                "field `attribute_mapping`",
            ),
            (
                "oidc = { issuer_uri = \"http://issuer.example\" }\nattribute_mapping = { \"google.subject\" = \"assertion.sub\" }\n",
                "field `oidc.issuer_uri`",
            ),
            (
                "oidc = { issuer_uri = \"https://issuer.example\", jwks_json = \"[]\" }\nattribute_mapping = { \"google.subject\" = \"assertion.sub\" }\n",
                "field `oidc.jwks_json`",
            ),
            (
                "aws = { account_id = \"1111\" }\n",
                "field `aws.account_id`",
            ),
            (
                "aws = { account_id = \"111122223333\" }\noidc = { issuer_uri = \"https://issuer.example\" }\n",
                "set exactly one of `aws`, `oidc`",
            ),
            ("", "set exactly one of `aws`, `oidc`"),
        ];
        for (tail, want) in cases {
            let err = World::from_str_at(&format!("{head}{tail}"), "w.toml", None)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("workload_identity_pool[0] (my-pool).provider[0] (my-provider)")
                    && err.contains(want),
                "{tail}: {err}"
            );
        }
        let err = World::from_str_at(
            "[[workload_identity_pool]]\nproject = \"nope\"\nid = \"my-pool\"\n",
            "w.toml",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("field `project`"), "{err}");
        let err = World::from_str_at(
            "[[project]]\nid = \"p\"\nnumber = \"42\"\n[[workload_identity_pool]]\nproject = \"p\"\nid = \"gcp-pool\"\n",
            "w.toml",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("field `id`"), "{err}");
        let err = World::from_str_at(
            "[[workload_identity_pool]]\nproject = \"p\"\nid = \"my-pool\"\ncolour = 1\n",
            "w.toml",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("colour"), "{err}");
    }
}
