//! Azure managed identity endpoints, serving side: the request rules and the token documents of
//! Azure IMDS (`/metadata/identity/oauth2/token`) and of the App Service / Functions / Container
//! Apps protocol (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`), shared by the emulator's Azure VM
//! and (later) idbridge's Azure frontends, so both answer the SDKs alike.
//!
//! **IMDS** ([`admit_imds`]), checked in this order:
//!
//! 1. `GET` only (else 405);
//! 2. a request carrying `X-Forwarded-For` is refused (400): IMDS answers no proxied request;
//! 3. the `Metadata` header must be `true` (compared case-insensitively: Google's url-sourced
//!    credential files send `True`) — else 400 `invalid_request` "Required metadata header not
//!    specified". azure-identity's first request inside a credential chain is such a probe;
//!    any HTTP answer tells it the endpoint exists;
//! 4. `api-version` present (400) and a supported version ([`IMDS_API_VERSIONS`]; 400);
//! 5. `resource` present (400);
//! 6. at most one of `client_id`, `object_id`, `msi_res_id` (400).
//!
//! Errors are `{"error", "error_description"}` JSON ([`ImdsError`]). The answer
//! ([`ImdsToken`]) carries every number as a **string**; MSAL Python requires `access_token` and
//! `expires_in` on this path.
//!
//! **App Service** ([`admit_app_service`]): `GET` only; the `X-IDENTITY-HEADER` must equal the
//! endpoint's secret (absent: 400, wrong: 401); `api-version` must be [`APP_SERVICE_API_VERSION`];
//! `resource` present; at most one of `client_id`, `mi_res_id`, `object_id` or `principal_id`
//! (older azidentity's name for an object id). Errors are `{"statusCode", "message",
//! "correlationId"}` ([`AppServiceError`]). The answer ([`AppServiceToken`]) has `expires_on`
//! (a string epoch) and **no** `expires_in`; MSAL Python requires `expires_on` here.
//!
//! Clients turn a scope into `resource` by dropping a trailing `/.default`.

use http::Method;
use http::StatusCode;
use http::header::HeaderMap;
use serde::Serialize;

/// Path of IMDS's token endpoint.
pub const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// The one App Service protocol version today's SDKs speak.
pub const APP_SERVICE_API_VERSION: &str = "2019-08-01";
/// Request header carrying the App Service endpoint's secret (`IDENTITY_HEADER`).
pub const IDENTITY_HEADER: &str = "x-identity-header";
/// IMDS identity API versions accepted (2018-02-01 is what azure-identity and MSAL send).
pub const IMDS_API_VERSIONS: &[&str] = &[
    "2018-02-01",
    "2019-03-11",
    "2019-06-01",
    "2019-08-01",
    "2019-11-01",
    "2020-06-01",
    "2020-09-01",
    "2021-01-01",
    "2021-02-01",
    "2021-05-01",
    "2021-10-01",
    "2021-12-13",
];
/// Longest query value considered (a resource URI, an ARM resource id).
const MAX_VALUE_LEN: usize = 2048;

/// Which identity a token request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// None named: the system-assigned identity (or the only user-assigned one).
    Default,
    /// `client_id`: a user-assigned identity's client (application) id.
    ClientId(String),
    /// `object_id` (`principal_id`): the identity's service principal object id.
    ObjectId(String),
    /// `msi_res_id` (IMDS) / `mi_res_id` (App Service): the identity's ARM resource id.
    ResourceId(String),
}

/// An admitted token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The resource (audience) asked for, as sent.
    pub resource: String,
    /// The identity asked for.
    pub selector: Selector,
}

/// A request refused by the rules: the status and the message the endpoint answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// HTTP status.
    pub status: StatusCode,
    /// IMDS `error` code (App Service answers carry only the message).
    pub error: &'static str,
    /// The message.
    pub message: String,
}

impl Refused {
    fn bad(message: impl Into<String>) -> Self {
        Refused {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            message: message.into(),
        }
    }

    /// The IMDS body of this refusal.
    pub fn imds_body(&self) -> ImdsError {
        ImdsError {
            error: self.error.to_owned(),
            error_description: self.message.clone(),
        }
    }

    /// The App Service body of this refusal.
    pub fn app_service_body(&self, correlation_id: &str) -> AppServiceError {
        AppServiceError {
            status_code: self.status.as_u16(),
            message: self.message.clone(),
            correlation_id: correlation_id.to_owned(),
        }
    }
}

/// IMDS's error document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImdsError {
    /// `invalid_request`, `invalid_resource`, `unknown_source`, …
    pub error: String,
    /// What is wrong.
    pub error_description: String,
}

/// App Service's error document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppServiceError {
    /// The HTTP status, repeated.
    pub status_code: u16,
    /// What is wrong.
    pub message: String,
    /// A request id.
    pub correlation_id: String,
}

/// IMDS's token answer: every number a string.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct ImdsToken {
    /// The Entra access token.
    pub access_token: String,
    /// The identity's client id.
    pub client_id: String,
    /// Seconds until expiry.
    pub expires_in: String,
    /// Expiry, Unix seconds.
    pub expires_on: String,
    /// Extended lifetime, seconds.
    pub ext_expires_in: String,
    /// Start of validity, Unix seconds.
    pub not_before: String,
    /// The resource, as asked.
    pub resource: String,
    /// `Bearer`.
    pub token_type: String,
}

impl std::fmt::Debug for ImdsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImdsToken")
            .field("client_id", &self.client_id)
            .field("expires_on", &self.expires_on)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

/// App Service's token answer: `expires_on` as a string epoch, no `expires_in`.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct AppServiceToken {
    /// The Entra access token.
    pub access_token: String,
    /// Expiry, Unix seconds, as a string.
    pub expires_on: String,
    /// The resource, as asked.
    pub resource: String,
    /// `Bearer`.
    pub token_type: String,
    /// The identity's client id.
    pub client_id: String,
}

impl std::fmt::Debug for AppServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppServiceToken")
            .field("client_id", &self.client_id)
            .field("expires_on", &self.expires_on)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

/// The query parameters, each name at most once.
fn params(query: Option<&str>) -> Result<Vec<(String, String)>, Refused> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if v.len() > MAX_VALUE_LEN {
            return Err(Refused::bad(format!("Query variable '{k}' is too long")));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(Refused::bad(format!("Query variable '{k}' is repeated")));
        }
        if out.len() >= 32 {
            return Err(Refused::bad("Too many query variables"));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, Refused> {
    get(params, name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Refused::bad(format!("Required query variable '{name}' is missing")))
}

/// A selector's query name and how its value names the identity.
type SelectorName = (&'static str, fn(String) -> Selector);

/// The selector among `names` (client id, object id, resource id — in that order of meaning).
fn selector(params: &[(String, String)], names: &[SelectorName]) -> Result<Selector, Refused> {
    let found: Vec<_> = names
        .iter()
        .filter_map(|(name, make)| get(params, name).map(|v| (*name, make, v)))
        .collect();
    match found.as_slice() {
        [] => Ok(Selector::Default),
        [(name, _, "")] => Err(Refused::bad(format!("Query variable '{name}' is empty"))),
        [(_, make, v)] => Ok(make((*v).to_owned())),
        [(a, _, _), (b, _, _), ..] => Err(Refused::bad(format!(
            "Only one identity selector may be given ('{a}' and '{b}' were)"
        ))),
    }
}

/// Applies IMDS's request rules (see the module documentation).
pub fn admit_imds(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<TokenRequest, Refused> {
    if method != Method::GET {
        return Err(Refused {
            status: StatusCode::METHOD_NOT_ALLOWED,
            error: "invalid_request",
            message: "The requested method is not supported".to_owned(),
        });
    }
    if headers.contains_key("x-forwarded-for") {
        return Err(Refused::bad(
            "Requests carrying an X-Forwarded-For header are not accepted",
        ));
    }
    let metadata = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if !metadata {
        return Err(Refused::bad("Required metadata header not specified"));
    }
    let params = params(query)?;
    let version = required(&params, "api-version")?;
    if !IMDS_API_VERSIONS.contains(&version) {
        return Err(Refused::bad(format!(
            "Invalid api-version '{}'. Supported versions: {}",
            short(version),
            IMDS_API_VERSIONS.join(", ")
        )));
    }
    let resource = required(&params, "resource")?.to_owned();
    let selector = selector(
        &params,
        &[
            ("client_id", Selector::ClientId),
            ("object_id", Selector::ObjectId),
            ("msi_res_id", Selector::ResourceId),
        ],
    )?;
    Ok(TokenRequest { resource, selector })
}

/// Applies the App Service protocol's request rules; `secret` is the endpoint's
/// `IDENTITY_HEADER`.
pub fn admit_app_service(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    secret: &str,
) -> Result<TokenRequest, Refused> {
    if method != Method::GET {
        return Err(Refused {
            status: StatusCode::METHOD_NOT_ALLOWED,
            error: "invalid_request",
            message: "The requested method is not supported".to_owned(),
        });
    }
    match headers.get(IDENTITY_HEADER).map(|v| v.as_bytes()) {
        None => {
            return Err(Refused::bad("The X-IDENTITY-HEADER header is missing"));
        }
        Some(sent) if !constant_time_eq(sent, secret.as_bytes()) => {
            return Err(Refused {
                status: StatusCode::UNAUTHORIZED,
                error: "unauthorized_client",
                message: "The X-IDENTITY-HEADER header does not match".to_owned(),
            });
        }
        Some(_) => {}
    }
    let params = params(query)?;
    let version = required(&params, "api-version")?;
    if version != APP_SERVICE_API_VERSION {
        return Err(Refused::bad(format!(
            "Unsupported api-version '{}'; this endpoint speaks {APP_SERVICE_API_VERSION}",
            short(version)
        )));
    }
    let resource = required(&params, "resource")?.to_owned();
    let selector = selector(
        &params,
        &[
            ("client_id", Selector::ClientId),
            ("object_id", Selector::ObjectId),
            ("principal_id", Selector::ObjectId),
            ("mi_res_id", Selector::ResourceId),
        ],
    )?;
    Ok(TokenRequest { resource, selector })
}

/// Equality whose time does not depend on where the inputs first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Compare digests, so neither the length nor the first difference shows in the timing.
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn imds_rules_in_order() {
        let ok = Some("api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net");
        let md = headers(&[("metadata", "true")]);
        let r = admit_imds(&Method::GET, &md, ok).unwrap();
        assert_eq!(r.resource, "https://vault.azure.net");
        assert_eq!(r.selector, Selector::Default);
        assert_eq!(
            admit_imds(&Method::POST, &md, ok).unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let proxied = headers(&[("metadata", "true"), ("x-forwarded-for", "10.0.0.1")]);
        assert!(
            admit_imds(&Method::GET, &proxied, ok)
                .unwrap_err()
                .message
                .contains("X-Forwarded-For")
        );
        let e = admit_imds(&Method::GET, &HeaderMap::new(), ok).unwrap_err();
        assert_eq!(e.message, "Required metadata header not specified");
        assert!(admit_imds(&Method::GET, &headers(&[("metadata", "True")]), ok).is_ok());
        let e = admit_imds(&Method::GET, &md, Some("resource=x")).unwrap_err();
        assert!(e.message.contains("api-version"), "{e:?}");
        let e =
            admit_imds(&Method::GET, &md, Some("api-version=1999-01-01&resource=x")).unwrap_err();
        assert!(e.message.contains("Invalid api-version"), "{e:?}");
        let e = admit_imds(&Method::GET, &md, Some("api-version=2018-02-01")).unwrap_err();
        assert!(e.message.contains("'resource'"), "{e:?}");
        let two = Some("api-version=2018-02-01&resource=x&client_id=a&msi_res_id=b");
        assert!(admit_imds(&Method::GET, &md, two).is_err());
        let one = Some("api-version=2018-02-01&resource=x&msi_res_id=%2Fsubscriptions%2Fs");
        assert_eq!(
            admit_imds(&Method::GET, &md, one).unwrap().selector,
            Selector::ResourceId("/subscriptions/s".into())
        );
    }

    #[test]
    fn app_service_rules() {
        let ok = Some("api-version=2019-08-01&resource=api%3A%2F%2Fx&principal_id=o");
        let h = headers(&[("x-identity-header", "s3cret")]);
        let r = admit_app_service(&Method::GET, &h, ok, "s3cret").unwrap();
        assert_eq!(r.selector, Selector::ObjectId("o".into()));
        assert_eq!(
            admit_app_service(&Method::GET, &HeaderMap::new(), ok, "s3cret")
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            admit_app_service(&Method::GET, &h, ok, "other")
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
        let old = Some("api-version=2017-09-01&resource=x");
        assert!(admit_app_service(&Method::GET, &h, old, "s3cret").is_err());
        let body = serde_json::to_value(
            admit_app_service(&Method::GET, &h, old, "s3cret")
                .unwrap_err()
                .app_service_body("c"),
        )
        .unwrap();
        assert_eq!(body["statusCode"], 400);
        assert_eq!(body["correlationId"], "c");
    }

    #[test]
    fn token_documents_are_strings_and_redacted() {
        let t = ImdsToken {
            access_token: "eyJsecret".into(),
            client_id: "c".into(),
            expires_in: "3599".into(),
            expires_on: "1700000000".into(),
            ext_expires_in: "3599".into(),
            not_before: "1699996400".into(),
            resource: "r".into(),
            token_type: "Bearer".into(),
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["expires_in"], "3599");
        assert!(!format!("{t:?}").contains("eyJsecret"));
    }
}
