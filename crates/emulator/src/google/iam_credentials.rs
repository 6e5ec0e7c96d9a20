//! IAM Credentials `generateIdToken` and `generateAccessToken`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use idbridge_core::timefmt::rfc3339_seconds;
use idbridge_policy::gcp::{AccountPolicy, check_chain};
use idbridge_wire::google::{
    GenerateAccessTokenRequest, GenerateAccessTokenResponse, GenerateIdTokenRequest,
    GenerateIdTokenResponse,
};
use idbridge_wire::proto_json;
use serde_json::json;

use super::sts::policy_principal;
use super::{IdTokenOptions, json_response, rpc_error, sign_google_id_token_with, signing_failed};
use crate::Emulator;
use crate::state::{GooglePrincipal, GoogleToken};
use crate::world::ServiceAccount;

/// Longest `generateAccessToken` lifetime without the org-policy extension.
const MAX_ACCESS_TOKEN_SECONDS: i64 = 3600;
/// Scopes that let a caller's token use the IAM Credentials API.
const API_SCOPES: [&str; 2] = [
    idbridge_wire::google::CLOUD_PLATFORM_SCOPE,
    idbridge_wire::google::IAM_SCOPE,
];
const RESOURCE_PREFIX: &str = "projects/-/serviceAccounts/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    IdToken,
    AccessToken,
}

impl Method {
    fn permission(self) -> &'static str {
        match self {
            Method::IdToken => "iam.serviceAccounts.getOpenIdToken",
            Method::AccessToken => "iam.serviceAccounts.getAccessToken",
        }
    }

    fn rpc_name(self) -> &'static str {
        match self {
            Method::IdToken => "google.iam.credentials.v1.IAMCredentials.GenerateIdToken",
            Method::AccessToken => "google.iam.credentials.v1.IAMCredentials.GenerateAccessToken",
        }
    }
}

/// `POST /v1/projects/{project}/serviceAccounts/{sa}:{method}`.
pub(super) async fn call(
    State(state): State<Arc<Emulator>>,
    Path((project, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let method = match name.rsplit_once(':') {
        Some((_, "generateIdToken")) => Method::IdToken,
        Some((_, "generateAccessToken")) => Method::AccessToken,
        Some((_, other @ ("signBlob" | "signJwt"))) => {
            return rpc_error(
                StatusCode::NOT_IMPLEMENTED,
                "UNIMPLEMENTED",
                format!("Method {other} is not implemented by the idbridge emulator."),
                Vec::new(),
            );
        }
        _ => {
            return rpc_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "Method not found.",
                Vec::new(),
            );
        }
    };
    let sa_name = name.rsplit_once(':').map(|(sa, _)| sa).unwrap_or_default();
    state.bump(match method {
        Method::IdToken => "google.iamcredentials.generateIdToken",
        Method::AccessToken => "google.iamcredentials.generateAccessToken",
    });

    let caller = match authenticate(&state, &headers) {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    if !caller.scopes.is_empty()
        && !caller
            .scopes
            .iter()
            .any(|s| API_SCOPES.contains(&s.as_str()))
    {
        return insufficient_scopes(method);
    }
    if project != "-" {
        return invalid_argument(format!(
            "Invalid resource name projects/{project}/serviceAccounts/{sa_name}: the project must be the wildcard '-'."
        ));
    }
    // The body is the method's proto message, read with Google's proto3 JSON rules (JSON or a
    // form body).
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match method {
        Method::IdToken => match proto_json::from_body(content_type, &body) {
            Ok(req) => generate_id_token(&state, sa_name, &caller, req),
            Err(e) => proto_json_error(&e),
        },
        Method::AccessToken => match proto_json::from_body(content_type, &body) {
            Ok(req) => generate_access_token(&state, sa_name, &caller, req),
            Err(e) => proto_json_error(&e),
        },
    }
}

/// Google's 400 for a body that does not fit the method's message.
fn proto_json_error(e: &proto_json::ProtoJsonError) -> Response {
    json_response(StatusCode::BAD_REQUEST, &e.to_status())
}

fn generate_id_token(
    state: &Emulator,
    sa_name: &str,
    caller: &GoogleToken,
    req: GenerateIdTokenRequest,
) -> Response {
    if req.audience.is_empty() {
        return invalid_argument("Audience is required and must not be empty.");
    }
    let target = match authorize(
        state,
        sa_name,
        req.delegates.as_deref(),
        caller,
        Method::IdToken,
    ) {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    let claims = IdTokenOptions {
        include_email: req.include_email.unwrap_or(false),
        email_azp: req.use_email_azp.unwrap_or(false),
    };
    match sign_google_id_token_with(state, target, &req.audience, claims, None) {
        Ok(token) => json_response(StatusCode::OK, &GenerateIdTokenResponse { token }),
        Err(e) => signing_failed(&e),
    }
}

fn generate_access_token(
    state: &Emulator,
    sa_name: &str,
    caller: &GoogleToken,
    req: GenerateAccessTokenRequest,
) -> Response {
    let scopes: Vec<String> = req
        .scope
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if scopes.is_empty() || scopes.len() != req.scope.len() {
        return invalid_argument("Scope is required: give at least one non-empty OAuth scope.");
    }
    let lifetime = match req.lifetime.as_deref().map(parse_duration) {
        None => MAX_ACCESS_TOKEN_SECONDS,
        Some(Some(secs)) if (1..=MAX_ACCESS_TOKEN_SECONDS).contains(&secs) => secs,
        Some(Some(secs)) => {
            return invalid_argument(format!(
                "The lifetime requested ({secs}s) must be between 1s and {MAX_ACCESS_TOKEN_SECONDS}s; longer lifetimes need the org-policy constraint constraints/iam.allowServiceAccountCredentialLifetimeExtension."
            ));
        }
        Some(None) => {
            return invalid_argument(
                "Invalid value for lifetime: expected a duration such as \"3600s\".",
            );
        }
    };
    let target = match authorize(
        state,
        sa_name,
        req.delegates.as_deref(),
        caller,
        Method::AccessToken,
    ) {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    let (access_token, expires_at) = state.issue_google_token(
        GooglePrincipal::ServiceAccount(target.email.clone()),
        scopes,
        lifetime,
    );
    json_response(
        StatusCode::OK,
        &GenerateAccessTokenResponse {
            access_token,
            expire_time: rfc3339_seconds(expires_at),
        },
    )
}

/// A protobuf JSON duration (`"3600s"`, `"1.5s"`), whole seconds (fractions truncated).
fn parse_duration(s: &str) -> Option<i64> {
    let num = s.strip_suffix('s')?;
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    whole.parse().ok()
}

/// The caller's live token from `Authorization: Bearer`.
fn authenticate(state: &Emulator, headers: &HeaderMap) -> Result<GoogleToken, Box<Response>> {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(Box::new(unauthenticated(
            "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "CREDENTIALS_MISSING",
        )));
    };
    let token = auth
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match token.and_then(|t| state.google_token(t)) {
        Some(t) => Ok(t),
        None => Err(Box::new(unauthenticated(
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "ACCESS_TOKEN_TYPE_UNSUPPORTED",
        ))),
    }
}

fn unauthenticated(message: &str, reason: &str) -> Response {
    let mut resp = rpc_error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        message,
        vec![json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": "iamcredentials.googleapis.com"},
        })],
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
    );
    resp
}

fn insufficient_scopes(method: Method) -> Response {
    rpc_error(
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        "Request had insufficient authentication scopes.",
        vec![json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
            "domain": "googleapis.com",
            "metadata": {"service": "iamcredentials.googleapis.com", "method": method.rpc_name()},
        })],
    )
}

fn invalid_argument(message: impl Into<String>) -> Response {
    rpc_error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        message,
        Vec::new(),
    )
}

fn not_found(sa: &str) -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("Not found; Gaia id not found for email {sa}"),
        Vec::new(),
    )
}

fn permission_denied(method: Method) -> Response {
    let permission = method.permission();
    rpc_error(
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        format!("Permission '{permission}' denied on resource (or it may not exist)."),
        vec![json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "IAM_PERMISSION_DENIED",
            "domain": "iam.googleapis.com",
            "metadata": {"permission": permission},
        })],
    )
}

/// The account named by a delegate, `projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}`
/// (the form Google documents for `delegates[]`: the `-` wildcard is required, and so is the
/// prefix — a bare email is not a delegate), or Google's 400.
fn delegate_name(delegate: &str) -> Result<&str, Box<Response>> {
    let invalid = |why: &str| {
        Box::new(invalid_argument(format!(
            "Invalid delegate {delegate}: {why}"
        )))
    };
    let Some(name) = delegate.strip_prefix(RESOURCE_PREFIX) else {
        return Err(match delegate.strip_prefix("projects/") {
            Some(rest) if rest.split('/').nth(1) == Some("serviceAccounts") => {
                invalid("the project must be the wildcard '-'.")
            }
            _ => invalid(
                "delegates must have the format projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}.",
            ),
        });
    };
    if !is_account_id(name) {
        return Err(Box::new(invalid_argument(format!(
            "Invalid form of account ID {name}. Should be [Gaia ID |Email |Unique ID |] of the account"
        ))));
    }
    Ok(name)
}

/// An account email (`local@domain`, one `@`, no `/`) or a numeric unique id.
fn is_account_id(name: &str) -> bool {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match name.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !name.contains('/')
                && !name.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// Resolves the target and every delegate, and checks each link of caller → delegates… →
/// target, as IAM Credentials does for a delegated request:
///
/// * every delegate is `projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}` (400 otherwise,
///   before any account is looked up);
/// * the target, then each delegate, exists (404, `Gaia id not found`, naming the first missing);
/// * the caller holds `iam.serviceAccounts.implicitDelegation` on the first delegate, each
///   delegate on the next — `roles/iam.serviceAccountTokenCreator` (`token_creators`), the role
///   Google documents for every link — and the last account of the chain holds the method's
///   permission on the target ([`has_grant`]). A missing link is the method's 403, the body
///   Google answers for any link of the chain.
///
/// Google documents no bound on the number of delegates; the request body's size bounds it.
fn authorize<'w>(
    state: &'w Emulator,
    sa_name: &str,
    delegates: Option<&[String]>,
    caller: &GoogleToken,
    method: Method,
) -> Result<&'w ServiceAccount, Box<Response>> {
    let names = delegates
        .unwrap_or_default()
        .iter()
        .map(|d| delegate_name(d))
        .collect::<Result<Vec<_>, _>>()?;
    if !is_account_id(sa_name) {
        return Err(Box::new(invalid_argument(format!(
            "Invalid form of account ID {sa_name}. Should be [Gaia ID |Email |Unique ID |] of the account"
        ))));
    }
    let Some(target) = state.world.service_account(sa_name) else {
        return Err(Box::new(not_found(sa_name)));
    };
    let mut chain = Vec::with_capacity(names.len());
    for name in names {
        match state.world.service_account(name) {
            Some(sa) => chain.push(sa),
            None => return Err(Box::new(not_found(name))),
        }
    }

    let Some(principal) = policy_principal(&caller.principal) else {
        return Err(Box::new(permission_denied(method)));
    };
    let delegates: Vec<AccountPolicy<'_>> = chain.iter().map(|sa| account_policy(sa)).collect();
    let check = check_chain(&principal, &delegates, &account_policy(target));
    if let Some(link) = check.first_missing() {
        tracing::debug!(account = %link.account, caller = %link.caller, "IAM Credentials: permission denied");
        return Err(Box::new(permission_denied(method)));
    }
    Ok(target)
}

/// What the delegation decision ([`check_chain`]) reads of a world account.
fn account_policy(sa: &ServiceAccount) -> AccountPolicy<'_> {
    AccountPolicy {
        email: &sa.email,
        token_creators: &sa.token_creators,
        workload_identity_users: &sa.workload_identity_users,
    }
}

/// Whether `principal` holds a role with the token-minting permissions on `account`: the
/// target link of [`check_chain`] (`roles/iam.serviceAccountTokenCreator` or
/// `roles/iam.workloadIdentityUser` for a service account; only the latter, through a
/// `principal://` or `principalSet://` member, for a federated principal).
#[cfg(test)]
fn has_grant(account: &ServiceAccount, principal: &GooglePrincipal) -> bool {
    policy_principal(principal)
        .is_some_and(|p| check_chain(&p, &[], &account_policy(account)).allowed())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::body::Body;
    use axum::http::Request;
    use serde_json::Value;

    use super::*;
    use crate::World;
    use crate::google::router;
    use crate::google::test_support::{T0, emulator, emulator_with, send};

    const VM_SA: &str = "psoxy-tenant@saas-tenant.iam.gserviceaccount.com";
    const MYAPP: &str = "myapp@gcp-project.iam.gserviceaccount.com";
    const MYAPP_ID: &str = "100367186111111111111";
    const AWS_CALLER: &str = "aws-caller@aws-bridge-prod.iam.gserviceaccount.com";
    const POOL: &str =
        "iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/aws-pool";

    /// A VM token obtained from the metadata router, as a workload would.
    async fn vm_token(emu: &Arc<Emulator>) -> String {
        let md = crate::gce_metadata::router(emu.clone());
        let req = Request::get("/computeMetadata/v1/instance/service-accounts/default/token")
            .header("Metadata-Flavor", "Google")
            .body(Body::empty())
            .unwrap();
        let (resp, body) = send(&md, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    async fn post(
        r: &axum::Router,
        path: &str,
        bearer: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut req = Request::post(path).header("content-type", "application/json");
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        let (resp, text) = send(r, req.body(Body::from(body.to_string())).unwrap()).await;
        (
            resp.status(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    fn id_path(sa: &str) -> String {
        format!("/v1/projects/-/serviceAccounts/{sa}:generateIdToken")
    }

    fn at_path(sa: &str) -> String {
        format!("/v1/projects/-/serviceAccounts/{sa}:generateAccessToken")
    }

    #[tokio::test]
    async fn vm_account_mints_id_token_for_myapp() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        let tok = vm_token(&emu).await;
        let (status, body) = post(
            &r,
            &id_path(MYAPP),
            Some(&tok),
            json!({"audience": "aws-trust-1", "delegates": null, "includeEmail": true}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let jwt = body["token"].as_str().unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&["aws-trust-1"]);
        v.validate_exp = false;
        let c = jsonwebtoken::decode::<Value>(jwt, emu.google_key.decoding_key(), &v)
            .unwrap()
            .claims;
        assert_eq!(c["iss"], "https://accounts.google.com");
        assert_eq!(c["sub"], MYAPP_ID);
        assert_eq!(c["azp"], MYAPP_ID);
        assert_eq!(c["email"], MYAPP);
        assert_eq!(c["email_verified"], true);
        assert_eq!(c["exp"], T0 + 3600);
        assert_eq!(emu.count("google.iamcredentials.generateIdToken"), 1);

        // By unique id, without email.
        let (status, body) =
            post(&r, &id_path(MYAPP_ID), Some(&tok), json!({"audience": "a"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let c = idbridge_core::jwt::UnverifiedJwt::parse(body["token"].as_str().unwrap()).unwrap();
        assert!(c.claims.get("email").is_none());
    }

    #[tokio::test]
    async fn bodies_follow_proto3_json() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        let tok = vm_token(&emu).await;
        let claims = |body: &Value| {
            idbridge_core::jwt::UnverifiedJwt::parse(body["token"].as_str().unwrap())
                .unwrap()
                .claims
        };
        // google-auth (Python): string booleans and `delegates: null`; snake_case names too.
        for req in [
            json!({"audience": "a", "delegates": null, "includeEmail": "true", "useEmailAzp": "true"}),
            json!({"audience": "a", "include_email": true, "use_email_azp": true, "delegates": []}),
        ] {
            let (status, body) = post(&r, &id_path(MYAPP), Some(&tok), req).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let c = claims(&body);
            assert_eq!(c["azp"], MYAPP, "useEmailAzp puts the email in azp");
            assert_eq!(c["sub"], MYAPP_ID);
            assert_eq!(c["email"], MYAPP);
        }
        let (status, body) = post(
            &r,
            &id_path(MYAPP),
            Some(&tok),
            json!({"audience": "a", "useEmailAzp": false, "includeEmail": null}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(claims(&body)["azp"], MYAPP_ID);
        assert!(claims(&body).get("email").is_none());

        // generateAccessToken with every field null but scope (external_account + impersonation).
        let (status, body) = post(
            &r,
            &at_path(MYAPP),
            Some(&tok),
            json!({"delegates": null, "scope": [API_SCOPES[0]], "lifetime": null}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // Unknown names: Google's exact 400.
        let (status, body) = post(
            &r,
            &at_path(MYAPP),
            Some(&tok),
            json!({"scope": [API_SCOPES[0]], "scopes": ["x"]}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let message = "Invalid JSON payload received. Unknown name \"scopes\": Cannot find field.";
        assert_eq!(
            body,
            json!({"error": {
                "code": 400,
                "message": message,
                "status": "INVALID_ARGUMENT",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"description": message}]
                }]
            }})
        );
        let (status, body) = post(
            &r,
            &id_path(MYAPP),
            Some(&tok),
            json!({"audience": "a", "includeEmail": "yes"}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body["error"]["message"],
            "Invalid value at 'include_email' (TYPE_BOOL), \"yes\""
        );

        // google-auth-library-java sends generateIdToken as a form.
        let req = Request::post(id_path(MYAPP))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Bearer {tok}"))
            .body(Body::from("audience=a&includeEmail=true&useEmailAzp=true"))
            .unwrap();
        let (resp, text) = send(&r, req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(claims(&body)["azp"], MYAPP);
    }

    #[tokio::test]
    async fn vm_account_is_denied_for_aws_caller_with_googles_body() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        let tok = vm_token(&emu).await;
        let (status, body) = post(
            &r,
            &id_path(AWS_CALLER),
            Some(&tok),
            json!({"audience": "a"}),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            json!({"error": {
                "code": 403,
                "message": "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist).",
                "status": "PERMISSION_DENIED",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED",
                    "domain": "iam.googleapis.com",
                    "metadata": {"permission": "iam.serviceAccounts.getOpenIdToken"}
                }]
            }})
        );
        let (status, body) = post(
            &r,
            &at_path(AWS_CALLER),
            Some(&tok),
            json!({"scope": ["s"]}),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body["error"]["message"],
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
        );
        assert_eq!(
            body["error"]["details"][0]["metadata"]["permission"],
            "iam.serviceAccounts.getAccessToken"
        );
    }

    #[tokio::test]
    async fn authentication_is_required() {
        let (emu, clock) = emulator();
        let r = router(emu.clone());
        let (status, body) = post(&r, &id_path(MYAPP), None, json!({"audience": "a"})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED");

        let (status, body) = post(
            &r,
            &id_path(MYAPP),
            Some("ya29.made-up"),
            json!({"audience": "a"}),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Request had invalid authentication credentials.")
        );
        assert!(!body.to_string().contains("made-up"));

        let tok = vm_token(&emu).await;
        clock.advance(3601);
        let (status, _) = post(&r, &id_path(MYAPP), Some(&tok), json!({"audience": "a"})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn unknown_account_project_and_method() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        let tok = vm_token(&emu).await;
        let ghost = "ghost@saas-tenant.iam.gserviceaccount.com";
        let (status, body) = post(&r, &id_path(ghost), Some(&tok), json!({"audience": "a"})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["status"], "NOT_FOUND");
        assert_eq!(
            body["error"]["message"],
            format!("Not found; Gaia id not found for email {ghost}")
        );

        let path = format!("/v1/projects/gcp-project/serviceAccounts/{MYAPP}:generateIdToken");
        let (status, body) = post(&r, &path, Some(&tok), json!({"audience": "a"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");

        let (status, body) = post(
            &r,
            &id_path(MYAPP),
            Some(&tok),
            json!({"includeEmail": true}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");

        let path = format!("/v1/projects/-/serviceAccounts/{MYAPP}:frobnicate");
        let (status, _) = post(&r, &path, Some(&tok), json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Percent-encoded email in the path.
        let path = "/v1/projects/-/serviceAccounts/myapp%40gcp-project.iam.gserviceaccount.com:generateIdToken";
        let (status, _) = post(&r, path, Some(&tok), json!({"audience": "a"})).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn access_token_lifetime_and_scope_rules() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        let tok = vm_token(&emu).await;
        let cp = "https://www.googleapis.com/auth/cloud-platform";

        let (status, body) = post(
            &r,
            &at_path(MYAPP),
            Some(&tok),
            json!({"delegates": null, "scope": [cp], "lifetime": "1200s"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["expireTime"], "2025-01-01T00:20:00Z");
        let issued = emu
            .google_token(body["accessToken"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            issued.principal,
            GooglePrincipal::ServiceAccount(MYAPP.to_owned())
        );
        assert_eq!(issued.scopes, vec![cp.to_owned()]);
        assert_eq!(emu.count("google.iamcredentials.generateAccessToken"), 1);

        // Default lifetime is one hour; so is the maximum.
        let (_, body) = post(&r, &at_path(MYAPP), Some(&tok), json!({"scope": [cp]})).await;
        assert_eq!(body["expireTime"], "2025-01-01T01:00:00Z");
        let (status, _) = post(
            &r,
            &at_path(MYAPP),
            Some(&tok),
            json!({"scope": [cp], "lifetime": "3600s"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);

        for bad in [
            json!({"scope": [cp], "lifetime": "43200s"}),
            json!({"scope": [cp], "lifetime": "0s"}),
            json!({"scope": [cp], "lifetime": "an hour"}),
            json!({"scope": []}),
            json!({}),
            json!({"scope": [""]}),
        ] {
            let (status, body) = post(&r, &at_path(MYAPP), Some(&tok), bad.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
            assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
        }

        // The minted token authenticates further IAM Credentials calls as myapp.
        let (_, body) = post(&r, &at_path(MYAPP), Some(&tok), json!({"scope": [cp]})).await;
        let myapp_tok = body["accessToken"].as_str().unwrap().to_owned();
        let (status, _) = post(
            &r,
            &id_path(MYAPP),
            Some(&myapp_tok),
            json!({"audience": "a"}),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "myapp holds no grant on itself"
        );
    }

    #[tokio::test]
    async fn caller_token_needs_an_api_scope() {
        let (emu, _) = emulator();
        let r = router(emu.clone());
        let (tok, _) = emu.issue_google_token(
            GooglePrincipal::ServiceAccount(VM_SA.to_owned()),
            vec!["https://www.googleapis.com/auth/devstorage.read_only".to_owned()],
            3600,
        );
        let (status, body) = post(&r, &id_path(MYAPP), Some(&tok), json!({"audience": "a"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body["error"]["details"][0]["reason"],
            "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
        );
    }

    const CHAIN_WORLD: &str = r#"
[[project]]
id = "p"
number = "42"

[[service_account]]
email = "a@p.iam.gserviceaccount.com"
unique_id = "1"
project = "p"

[[service_account]]
email = "b@p.iam.gserviceaccount.com"
unique_id = "2"
project = "p"
token_creators = ["serviceAccount:a@p.iam.gserviceaccount.com"]

[[service_account]]
email = "c@p.iam.gserviceaccount.com"
unique_id = "3"
project = "p"
token_creators = ["serviceAccount:b@p.iam.gserviceaccount.com"]
workload_identity_users = [
  "principalSet://iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/aws-pool/attribute.aws_role/arn:aws:sts::111122223333:assumed-role/ci",
]

[[service_account]]
email = "d@p.iam.gserviceaccount.com"
unique_id = "4"
project = "p"
token_creators = ["serviceAccount:c@p.iam.gserviceaccount.com"]
"#;

    #[tokio::test]
    async fn delegation_chain_allowed_and_denied() {
        let (emu, _) = emulator_with(World::from_str_at(CHAIN_WORLD, "chain.toml", None).unwrap());
        let r = router(emu.clone());
        let (a_tok, _) = emu.issue_google_token(
            GooglePrincipal::ServiceAccount("a@p.iam.gserviceaccount.com".to_owned()),
            vec![API_SCOPES[0].to_owned()],
            3600,
        );
        // a → b → c: each hop holds the grant.
        let (status, body) = post(
            &r,
            &id_path("c@p.iam.gserviceaccount.com"),
            Some(&a_tok),
            json!({"audience": "x", "delegates": ["projects/-/serviceAccounts/b@p.iam.gserviceaccount.com"]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // a → b → c → d by unique ids.
        let (status, body) = post(
            &r,
            &at_path("4"),
            Some(&a_tok),
            json!({"scope": ["s"], "delegates": ["projects/-/serviceAccounts/2", "projects/-/serviceAccounts/3"]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // a → c directly: no grant.
        let (status, _) = post(
            &r,
            &id_path("c@p.iam.gserviceaccount.com"),
            Some(&a_tok),
            json!({"audience": "x"}),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // a → b → d: b holds nothing on d.
        let (status, body) = post(
            &r,
            &at_path("d@p.iam.gserviceaccount.com"),
            Some(&a_tok),
            json!({"scope": ["s"], "delegates": ["projects/-/serviceAccounts/b@p.iam.gserviceaccount.com"]}),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body["error"]["details"][0]["reason"],
            "IAM_PERMISSION_DENIED"
        );
        // Unknown delegate.
        let (status, _) = post(
            &r,
            &at_path("d@p.iam.gserviceaccount.com"),
            Some(&a_tok),
            json!({"scope": ["s"], "delegates": ["projects/-/serviceAccounts/zz@p.iam.gserviceaccount.com"]}),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn delegate_names_have_googles_form() {
        let (emu, _) = emulator_with(World::from_str_at(CHAIN_WORLD, "chain.toml", None).unwrap());
        let r = router(emu.clone());
        let (a_tok, _) = emu.issue_google_token(
            GooglePrincipal::ServiceAccount("a@p.iam.gserviceaccount.com".to_owned()),
            vec![API_SCOPES[0].to_owned()],
            3600,
        );
        let c = "c@p.iam.gserviceaccount.com";
        let cases = [
            (
                "b@p.iam.gserviceaccount.com",
                "Invalid delegate b@p.iam.gserviceaccount.com: delegates must have the format projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}.",
            ),
            (
                "projects/p/serviceAccounts/b@p.iam.gserviceaccount.com",
                "Invalid delegate projects/p/serviceAccounts/b@p.iam.gserviceaccount.com: the project must be the wildcard '-'.",
            ),
            (
                "projects/-/serviceAccounts/",
                "Invalid form of account ID . Should be [Gaia ID |Email |Unique ID |] of the account",
            ),
            (
                "projects/-/serviceAccounts/b",
                "Invalid form of account ID b. Should be [Gaia ID |Email |Unique ID |] of the account",
            ),
            (
                "projects/-/serviceAccounts/b@p/x",
                "Invalid form of account ID b@p/x. Should be [Gaia ID |Email |Unique ID |] of the account",
            ),
        ];
        for (delegate, message) in cases {
            for (path, body) in [
                (
                    id_path(c),
                    json!({"audience": "x", "delegates": [delegate]}),
                ),
                (at_path(c), json!({"scope": ["s"], "delegates": [delegate]})),
            ] {
                let (status, got) = post(&r, &path, Some(&a_tok), body).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{delegate}: {got}");
                assert_eq!(
                    got,
                    json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}),
                    "{delegate}"
                );
            }
        }
        // The form is checked before any account is looked up.
        let (status, _) = post(
            &r,
            &at_path("ghost@p.iam.gserviceaccount.com"),
            Some(&a_tok),
            json!({"scope": ["s"], "delegates": ["b@p.iam.gserviceaccount.com"]}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // An unknown target is named before an unknown delegate.
        let (status, body) = post(
            &r,
            &at_path("ghost@p.iam.gserviceaccount.com"),
            Some(&a_tok),
            json!({"scope": ["s"], "delegates": ["projects/-/serviceAccounts/zz@p.iam.gserviceaccount.com"]}),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body["error"]["message"],
            "Not found; Gaia id not found for email ghost@p.iam.gserviceaccount.com"
        );
        let (_, body) = post(
            &r,
            &at_path(c),
            Some(&a_tok),
            json!({"scope": ["s"], "delegates": ["projects/-/serviceAccounts/b@p.iam.gserviceaccount.com", "projects/-/serviceAccounts/99"]}),
        )
        .await;
        assert_eq!(
            body["error"]["message"],
            "Not found; Gaia id not found for email 99"
        );
        // A target that is neither an email nor an id.
        let (status, body) = post(
            &r,
            &id_path("nobody"),
            Some(&a_tok),
            json!({"audience": "x"}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }

    #[tokio::test]
    async fn every_link_of_the_chain_needs_token_creator() {
        let (emu, _) = emulator_with(World::from_str_at(CHAIN_WORLD, "chain.toml", None).unwrap());
        let r = router(emu.clone());
        let d = "d@p.iam.gserviceaccount.com";
        let via_c = json!({"scope": ["s"], "delegates": ["projects/-/serviceAccounts/c@p.iam.gserviceaccount.com"]});
        // The federated `ci` principal is a workload identity user of c: enough to mint c's
        // tokens, not to pass through c (implicitDelegation is the token creator role's).
        let ci = GooglePrincipal::Federated {
            principal: format!(
                "principal://{POOL}/subject/arn:aws:sts::111122223333:assumed-role/ci/session"
            ),
            attributes: BTreeMap::from([(
                "attribute.aws_role".to_owned(),
                "arn:aws:sts::111122223333:assumed-role/ci".to_owned(),
            )]),
        };
        let (ci_tok, _) = emu.issue_google_token(ci, vec![API_SCOPES[0].to_owned()], 3600);
        let (status, _) = post(
            &r,
            &at_path("c@p.iam.gserviceaccount.com"),
            Some(&ci_tok),
            json!({"scope": ["s"]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = post(&r, &at_path(d), Some(&ci_tok), via_c.clone()).await;
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
        // b holds token creator on c, and c on d: b → c → d works.
        let (b_tok, _) = emu.issue_google_token(
            GooglePrincipal::ServiceAccount("b@p.iam.gserviceaccount.com".to_owned()),
            vec![API_SCOPES[0].to_owned()],
            3600,
        );
        let (status, body) = post(&r, &at_path(d), Some(&b_tok), via_c.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let issued = emu
            .google_token(body["accessToken"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            issued.principal,
            GooglePrincipal::ServiceAccount(d.to_owned())
        );
        // The same account twice is two links, each checked: c → c needs c on itself.
        let (status, _) = post(
            &r,
            &at_path(d),
            Some(&b_tok),
            json!({"scope": ["s"], "delegates": ["projects/-/serviceAccounts/c@p.iam.gserviceaccount.com", "projects/-/serviceAccounts/3"]}),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // An ID token through the chain names the ID-token permission.
        let (a_tok, _) = emu.issue_google_token(
            GooglePrincipal::ServiceAccount("a@p.iam.gserviceaccount.com".to_owned()),
            vec![API_SCOPES[0].to_owned()],
            3600,
        );
        let (status, body) = post(
            &r,
            &id_path(d),
            Some(&a_tok),
            json!({"audience": "x", "delegates": ["projects/-/serviceAccounts/b@p.iam.gserviceaccount.com"]}),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body["error"]["details"][0]["metadata"]["permission"],
            "iam.serviceAccounts.getOpenIdToken"
        );
    }

    #[tokio::test]
    async fn federated_principal_by_attribute() {
        let (emu, _) = emulator_with(World::from_str_at(CHAIN_WORLD, "chain.toml", None).unwrap());
        let r = router(emu.clone());
        let fed = |role: &str| GooglePrincipal::Federated {
            principal: format!(
                "principal://{POOL}/subject/arn:aws:sts::111122223333:assumed-role/{role}/session"
            ),
            attributes: BTreeMap::from([(
                "attribute.aws_role".to_owned(),
                format!("arn:aws:sts::111122223333:assumed-role/{role}"),
            )]),
        };
        let (ok_tok, _) = emu.issue_google_token(fed("ci"), vec![API_SCOPES[0].to_owned()], 3600);
        let (status, body) = post(
            &r,
            &at_path("c@p.iam.gserviceaccount.com"),
            Some(&ok_tok),
            json!({"scope": ["s"], "lifetime": "1200s"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["expireTime"],
            rfc3339_seconds(emu.clock.now() + time::Duration::seconds(1200))
        );
        let (bad_tok, _) =
            emu.issue_google_token(fed("other"), vec![API_SCOPES[0].to_owned()], 3600);
        let (status, _) = post(
            &r,
            &at_path("c@p.iam.gserviceaccount.com"),
            Some(&bad_tok),
            json!({"scope": ["s"]}),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn token_principals_as_policy_principals() {
        use idbridge_policy::gcp::Principal;

        let sa = GooglePrincipal::ServiceAccount("x@p.iam.gserviceaccount.com".to_owned());
        assert_eq!(
            policy_principal(&sa),
            Some(Principal::ServiceAccount(
                "x@p.iam.gserviceaccount.com".to_owned()
            ))
        );
        let subject = format!("principal://{POOL}/subject/repo:org/app:ref:refs/heads/main");
        let fed = GooglePrincipal::Federated {
            principal: subject.clone(),
            attributes: BTreeMap::from([
                ("attribute.repository".to_owned(), "org/app".to_owned()),
                ("env".to_owned(), "prod".to_owned()),
                (
                    "google.groups".to_owned(),
                    r#"["admins","devs"]"#.to_owned(),
                ),
            ]),
        };
        let Some(Principal::Federated(p)) = policy_principal(&fed) else {
            panic!("not federated");
        };
        assert_eq!(p.identifier(), subject);
        assert_eq!(p.attributes["repository"], "org/app");
        assert_eq!(p.attributes["env"], "prod");
        assert_eq!(p.groups, ["admins", "devs"]);
        let cases = [
            (subject, true),
            (format!("principalSet://{POOL}/*"), true),
            (
                format!("principalSet://{POOL}/attribute.repository/org/app"),
                true,
            ),
            (format!("principalSet://{POOL}/attribute.env/prod"), true),
            (format!("principalSet://{POOL}/group/devs"), true),
            (format!("principalSet://{POOL}/group/ops"), false),
            (
                "serviceAccount:x@p.iam.gserviceaccount.com".to_owned(),
                false,
            ),
        ];
        let caller = Principal::Federated(p);
        for (member, want) in cases {
            assert_eq!(
                idbridge_policy::gcp::member_matches(&member, &caller),
                want,
                "{member}"
            );
        }
        // A federated identifier that is not principal://…/subject/… is nobody.
        let odd = GooglePrincipal::Federated {
            principal: format!("principalSet://{POOL}/*"),
            attributes: BTreeMap::new(),
        };
        assert_eq!(policy_principal(&odd), None);
    }

    #[test]
    fn federated_callers_need_workload_identity_user() {
        // The federated principal is a token creator of c, not a workload identity user.
        let world = r#"
[[project]]
id = "p"
number = "42"

[[service_account]]
email = "c@p.iam.gserviceaccount.com"
unique_id = "3"
project = "p"
token_creators = [
  "principalSet://iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/aws-pool/*",
]
"#;
        let account = World::from_str_at(world, "w.toml", None)
            .unwrap()
            .service_accounts
            .remove(0);
        let fed = GooglePrincipal::Federated {
            principal: format!("principal://{POOL}/subject/s"),
            attributes: BTreeMap::new(),
        };
        assert!(!has_grant(&account, &fed));
        let mut account = account;
        account.workload_identity_users = account.token_creators.clone();
        assert!(has_grant(&account, &fed));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600s"), Some(3600));
        assert_eq!(parse_duration("1.5s"), Some(1));
        assert_eq!(parse_duration("3600"), None);
        assert_eq!(parse_duration("-5s"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
