//! The request context AWS builds for `sts:AssumeRoleWithWebIdentity` from an OIDC token.
//!
//! The token's issuer selects the provider, and the provider decides which claims become
//! condition keys, each prefixed with the provider name:
//!
//! | provider | caller principal | keys |
//! |---|---|---|
//! | Google (`iss` = `https://accounts.google.com` or `accounts.google.com`) | `accounts.google.com` | `:aud` = `azp` when the token has one, else `aud`; `:oaud` = `aud` (only when `azp` is present); `:sub` = `sub` |
//! | Cognito (`https://cognito-identity.amazonaws.com`) | `cognito-identity.amazonaws.com` | `:aud`, `:sub`, `:amr` (multi-valued) |
//! | any other OIDC issuer `https://host/path` | `arn:aws:iam::<account>:oidc-provider/host/path` (a trailing `/` of the issuer kept: `sts.windows.net/{tid}/`) | `host/path:aud` (multi-valued when `aud` is a list), `host/path:sub`, `host/path:amr` (multi-valued, when present) |
//!
//! The Google mapping is the trap this crate exists to explain: a service account's ID token
//! carries the caller-chosen target audience in `aud` and the service account (its numeric unique
//! id, or its e-mail in some token flows) in `azp`, so `accounts.google.com:aud` is the service
//! account and the target audience is `accounts.google.com:oaud`.
//!
//! Google's `email` claim is not exposed as a condition key: AWS documents only `aud`, `oaud`
//! and `sub` for Google, so a condition on `accounts.google.com:email` sees an absent key. For
//! generic OIDC providers only `aud`, `sub` and `amr` are modelled; whether AWS exposes further
//! claims (`azp`, `oaud`, provider-specific ones) for some issuers is not modelled.
//!
//! Every context also has:
//!
//! * `aws:FederatedProvider`: the caller principal's provider name or OIDC provider ARN;
//! * `sts:RoleSessionName`: from the request;
//! * `aws:CurrentTime` (ISO 8601, UTC, whole seconds) and `aws:EpochTime`: from the `now` the
//!   caller supplies — this crate never reads the clock;
//! * `sts:SourceIdentity`: from the token's `https://aws.amazon.com/source_identity` claim;
//! * session tags from the token's `https://aws.amazon.com/tags` claim
//!   (`{"principal_tags": {"k": ["v"]}, "transitive_tag_keys": ["k"]}`): `aws:RequestTag/<k>`,
//!   `aws:TagKeys` and `sts:TransitiveTagKeys`. A request with session tags must also be allowed
//!   `sts:TagSession`: evaluate the same context again with
//!   [`RequestContext::with_action`]`("sts:TagSession")`.

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::evaluate::{ContextValue, Principal, RequestContext};

/// The action this context is built for.
pub const ASSUME_ROLE_WITH_WEB_IDENTITY: &str = "sts:AssumeRoleWithWebIdentity";

/// The claim that carries the session's source identity.
pub const SOURCE_IDENTITY_CLAIM: &str = "https://aws.amazon.com/source_identity";

/// The claim that carries session tags.
pub const TAGS_CLAIM: &str = "https://aws.amazon.com/tags";

const GOOGLE: &str = "accounts.google.com";
const COGNITO: &str = "cognito-identity.amazonaws.com";

/// A web identity provider as AWS sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum WebIdentityProvider {
    /// Google, built into AWS (no IAM OIDC provider needed).
    Google,
    /// Amazon Cognito identity pools, built into AWS.
    Cognito,
    /// Any other OIDC issuer, registered in IAM as an OIDC provider.
    Oidc {
        /// The issuer URL without `https://` (a trailing `/` kept, as IAM keeps it), e.g.
        /// `oidc.eks.us-east-1.amazonaws.com/id/ABC` or `sts.windows.net/{tid}/`. It prefixes
        /// the condition keys.
        name: String,
    },
}

impl WebIdentityProvider {
    /// The provider for a token's `iss` claim.
    pub fn from_issuer(iss: &str) -> WebIdentityProvider {
        let iss = iss.trim();
        let name = iss.strip_prefix("https://").unwrap_or(iss);
        let bare = name.trim_end_matches('/');
        if bare.eq_ignore_ascii_case(GOOGLE) {
            WebIdentityProvider::Google
        } else if bare.eq_ignore_ascii_case(COGNITO) {
            WebIdentityProvider::Cognito
        } else {
            // IAM names an OIDC provider by its URL without `https://`, a trailing `/` kept:
            // Entra's v1 issuer `https://sts.windows.net/{tid}/` is the provider
            // `sts.windows.net/{tid}/`, its keys `sts.windows.net/{tid}/:aud`.
            WebIdentityProvider::Oidc {
                name: name.to_owned(),
            }
        }
    }

    /// The provider name that prefixes its condition keys, e.g. `accounts.google.com`.
    pub fn name(&self) -> &str {
        match self {
            WebIdentityProvider::Google => GOOGLE,
            WebIdentityProvider::Cognito => COGNITO,
            WebIdentityProvider::Oidc { name } => name,
        }
    }

    /// The `Federated` principal a trust policy names for this provider, in the `aws` partition:
    /// the provider name for built-in providers, the IAM OIDC provider ARN in `account` otherwise.
    pub fn principal(&self, account: &str) -> Principal {
        self.principal_in_partition("aws", account)
    }

    /// Like [`WebIdentityProvider::principal`], in another partition (`aws-cn`, `aws-us-gov`).
    pub fn principal_in_partition(&self, partition: &str, account: &str) -> Principal {
        Principal::Federated(self.provider_id(partition, account))
    }

    /// The provider name (built-in providers) or IAM OIDC provider ARN.
    fn provider_id(&self, partition: &str, account: &str) -> String {
        match self {
            WebIdentityProvider::Google | WebIdentityProvider::Cognito => self.name().to_owned(),
            WebIdentityProvider::Oidc { name } => {
                format!("arn:{partition}:iam::{account}:oidc-provider/{name}")
            }
        }
    }
}

/// The parts of an `AssumeRoleWithWebIdentity` request that are not in the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentityRequest {
    /// The account that owns the role (and the IAM OIDC provider).
    pub account: String,
    /// The partition of the role's ARN, usually `aws`.
    pub partition: String,
    /// The `RoleSessionName` parameter.
    pub role_session_name: String,
    /// The time of the request.
    pub now: OffsetDateTime,
}

impl WebIdentityRequest {
    /// A request in the `aws` partition.
    pub fn new(
        account: impl Into<String>,
        role_session_name: impl Into<String>,
        now: OffsetDateTime,
    ) -> Self {
        WebIdentityRequest {
            account: account.into(),
            partition: "aws".to_owned(),
            role_session_name: role_session_name.into(),
            now,
        }
    }
}

/// A token claim that AWS would not accept in the shape it has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {claim} claim: {reason}")]
pub struct ClaimsError {
    /// The claim's name.
    pub claim: String,
    /// What is wrong with it.
    pub reason: String,
}

fn claims_error(claim: &str, reason: impl Into<String>) -> ClaimsError {
    ClaimsError {
        claim: claim.to_owned(),
        reason: reason.into(),
    }
}

/// Builds the request context AWS evaluates a role's trust policy with when `claims` (a verified
/// token's payload) is presented to `sts:AssumeRoleWithWebIdentity` for `provider`.
pub fn web_identity_context(
    provider: &WebIdentityProvider,
    claims: &Map<String, Value>,
    request: &WebIdentityRequest,
) -> Result<RequestContext, ClaimsError> {
    let provider_id = provider.provider_id(&request.partition, &request.account);
    let principal = Principal::Federated(provider_id.clone());
    let mut ctx = RequestContext::new(principal, ASSUME_ROLE_WITH_WEB_IDENTITY)
        .with_key("aws:FederatedProvider", provider_id)
        .with_key("sts:RoleSessionName", request.role_session_name.clone())
        .with_key("aws:EpochTime", request.now.unix_timestamp().to_string());
    if let Some(now) = current_time(request.now) {
        ctx.insert("aws:CurrentTime", ContextValue::Single(now));
    }

    let name = provider.name();
    let mut put = |suffix: &str, value: Option<ContextValue>| {
        if let Some(value) = value {
            ctx.insert(&format!("{name}:{suffix}"), value);
        }
    };
    match provider {
        WebIdentityProvider::Google => {
            let azp = claim_value(claims.get("azp"));
            let aud = claim_value(claims.get("aud"));
            if azp.is_some() {
                put("aud", azp);
                put("oaud", aud);
            } else {
                put("aud", aud);
            }
            put("sub", claim_value(claims.get("sub")));
        }
        WebIdentityProvider::Cognito | WebIdentityProvider::Oidc { .. } => {
            put("aud", claim_value(claims.get("aud")));
            put("sub", claim_value(claims.get("sub")));
            put("amr", claim_value(claims.get("amr")).map(into_multi));
        }
    }

    match claims.get(SOURCE_IDENTITY_CLAIM) {
        None => {}
        Some(Value::String(identity)) => {
            ctx.insert("sts:SourceIdentity", ContextValue::Single(identity.clone()));
        }
        Some(other) => {
            return Err(claims_error(
                SOURCE_IDENTITY_CLAIM,
                format!("expected a string, found {}", json_type(other)),
            ));
        }
    }
    if let Some(tags) = claims.get(TAGS_CLAIM) {
        add_session_tags(&mut ctx, tags)?;
    }
    Ok(ctx)
}

/// `aws:CurrentTime`: UTC, whole seconds, `Z` suffix.
fn current_time(now: OffsetDateTime) -> Option<String> {
    now.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// A claim as a context value: scalars stringified, lists of scalars multi-valued. Objects and
/// nulls have no condition-key form.
fn claim_value(value: Option<&Value>) -> Option<ContextValue> {
    match value? {
        Value::Array(items) => Some(ContextValue::Multi(
            items.iter().filter_map(scalar).collect(),
        )),
        other => scalar(other).map(ContextValue::Single),
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn into_multi(value: ContextValue) -> ContextValue {
    match value {
        ContextValue::Single(one) => ContextValue::Multi(vec![one]),
        multi => multi,
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn add_session_tags(ctx: &mut RequestContext, tags: &Value) -> Result<(), ClaimsError> {
    let err = |reason: String| claims_error(TAGS_CLAIM, reason);
    let Value::Object(tags) = tags else {
        return Err(err(format!(
            "expected an object, found {}",
            json_type(tags)
        )));
    };
    let mut keys = Vec::new();
    if let Some(principal_tags) = tags.get("principal_tags") {
        let Value::Object(principal_tags) = principal_tags else {
            return Err(err(format!(
                "principal_tags is {}, not an object",
                json_type(principal_tags)
            )));
        };
        for (key, value) in principal_tags {
            let value = match value {
                Value::String(v) => v,
                Value::Array(items) => match items.as_slice() {
                    [Value::String(v)] => v,
                    _ => {
                        return Err(err(format!(
                            "the tag {key:?} must have exactly one string value"
                        )));
                    }
                },
                other => {
                    return Err(err(format!(
                        "the tag {key:?} has {} as its value",
                        json_type(other)
                    )));
                }
            };
            ctx.insert(
                &format!("aws:RequestTag/{key}"),
                ContextValue::Single(value.clone()),
            );
            keys.push(key.clone());
        }
    }
    if !keys.is_empty() {
        ctx.insert("aws:TagKeys", ContextValue::Multi(keys));
    }
    if let Some(transitive) = tags.get("transitive_tag_keys") {
        let Value::Array(items) = transitive else {
            return Err(err(format!(
                "transitive_tag_keys is {}, not a list",
                json_type(transitive)
            )));
        };
        let keys = items
            .iter()
            .map(|item| match item {
                Value::String(key) => Ok(key.clone()),
                other => Err(err(format!(
                    "transitive_tag_keys lists {}, not a string",
                    json_type(other)
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        ctx.insert("sts:TransitiveTagKeys", ContextValue::Multi(keys));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("claims must be an object"),
        }
    }

    fn get(ctx: &RequestContext, key: &str) -> Option<ContextValue> {
        ctx.get(key).cloned()
    }

    fn request() -> WebIdentityRequest {
        WebIdentityRequest::new(
            "111122223333",
            "my-session",
            datetime!(2024-01-01 00:00:00.5 UTC),
        )
    }

    fn single(v: &str) -> Option<ContextValue> {
        Some(ContextValue::Single(v.to_owned()))
    }

    fn multi(v: &[&str]) -> Option<ContextValue> {
        Some(ContextValue::Multi(
            v.iter().map(|s| (*s).to_owned()).collect(),
        ))
    }

    #[test]
    fn providers_from_issuer() {
        let cases = [
            ("https://accounts.google.com", WebIdentityProvider::Google),
            ("accounts.google.com", WebIdentityProvider::Google),
            ("https://accounts.google.com/", WebIdentityProvider::Google),
            (
                "https://cognito-identity.amazonaws.com",
                WebIdentityProvider::Cognito,
            ),
            (
                "https://oidc.eks.us-east-1.amazonaws.com/id/ABC",
                WebIdentityProvider::Oidc {
                    name: "oidc.eks.us-east-1.amazonaws.com/id/ABC".into(),
                },
            ),
            (
                "https://token.actions.githubusercontent.com",
                WebIdentityProvider::Oidc {
                    name: "token.actions.githubusercontent.com".into(),
                },
            ),
            (
                "https://sts.windows.net/7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d/",
                WebIdentityProvider::Oidc {
                    name: "sts.windows.net/7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d/".into(),
                },
            ),
            (
                "https://login.microsoftonline.com/7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d/v2.0",
                WebIdentityProvider::Oidc {
                    name: "login.microsoftonline.com/7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d/v2.0"
                        .into(),
                },
            ),
        ];
        for (iss, want) in cases {
            assert_eq!(WebIdentityProvider::from_issuer(iss), want, "{iss}");
        }
    }

    #[test]
    fn principals() {
        assert_eq!(
            WebIdentityProvider::Google.principal("111122223333"),
            Principal::Federated("accounts.google.com".into())
        );
        assert_eq!(
            WebIdentityProvider::Cognito.principal("111122223333"),
            Principal::Federated("cognito-identity.amazonaws.com".into())
        );
        let eks =
            WebIdentityProvider::from_issuer("https://oidc.eks.us-east-1.amazonaws.com/id/ABC");
        assert_eq!(
            eks.principal("111122223333"),
            Principal::Federated(
                "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
                    .into()
            )
        );
        assert_eq!(
            eks.principal_in_partition("aws-cn", "111122223333"),
            Principal::Federated(
                "arn:aws-cn:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
                    .into()
            )
        );
    }

    #[test]
    fn google_service_account_token() {
        let token = claims(json!({
            "aud": "aws-trust-1",
            "azp": "myapp@my-project.iam.gserviceaccount.com",
            "email": "myapp@my-project.iam.gserviceaccount.com",
            "email_verified": true,
            "sub": "10036718611111111111",
            "iss": "https://accounts.google.com"
        }));
        let ctx = web_identity_context(&WebIdentityProvider::Google, &token, &request()).unwrap();
        assert_eq!(
            ctx.principal,
            Principal::Federated("accounts.google.com".into())
        );
        assert_eq!(ctx.action, "sts:AssumeRoleWithWebIdentity");
        assert_eq!(
            get(&ctx, "accounts.google.com:aud"),
            single("myapp@my-project.iam.gserviceaccount.com")
        );
        assert_eq!(get(&ctx, "accounts.google.com:oaud"), single("aws-trust-1"));
        assert_eq!(
            get(&ctx, "accounts.google.com:sub"),
            single("10036718611111111111")
        );
        assert_eq!(get(&ctx, "accounts.google.com:email"), None);
        assert_eq!(
            get(&ctx, "aws:FederatedProvider"),
            single("accounts.google.com")
        );
        assert_eq!(get(&ctx, "sts:RoleSessionName"), single("my-session"));
        assert_eq!(get(&ctx, "aws:CurrentTime"), single("2024-01-01T00:00:00Z"));
        assert_eq!(get(&ctx, "aws:EpochTime"), single("1704067200"));
        assert_eq!(get(&ctx, "sts:SourceIdentity"), None);
        assert_eq!(get(&ctx, "aws:TagKeys"), None);
    }

    #[test]
    fn google_token_without_azp() {
        let token = claims(json!({"aud": "123.apps.googleusercontent.com", "sub": "42"}));
        let ctx = web_identity_context(&WebIdentityProvider::Google, &token, &request()).unwrap();
        assert_eq!(
            get(&ctx, "accounts.google.com:aud"),
            single("123.apps.googleusercontent.com")
        );
        assert_eq!(get(&ctx, "accounts.google.com:oaud"), None);
    }

    #[test]
    fn generic_oidc_token() {
        let provider =
            WebIdentityProvider::from_issuer("https://oidc.eks.us-east-1.amazonaws.com/id/ABC");
        let token = claims(json!({
            "iss": "https://oidc.eks.us-east-1.amazonaws.com/id/ABC",
            "aud": ["sts.amazonaws.com", "other"],
            "azp": "ignored",
            "sub": "system:serviceaccount:default:my-app",
            "amr": "pwd"
        }));
        let ctx = web_identity_context(&provider, &token, &request()).unwrap();
        let prefix = "oidc.eks.us-east-1.amazonaws.com/id/ABC";
        assert_eq!(
            get(&ctx, &format!("{prefix}:aud")),
            multi(&["sts.amazonaws.com", "other"])
        );
        assert_eq!(
            get(&ctx, &format!("{prefix}:sub")),
            single("system:serviceaccount:default:my-app")
        );
        assert_eq!(get(&ctx, &format!("{prefix}:amr")), multi(&["pwd"]));
        assert_eq!(get(&ctx, &format!("{prefix}:azp")), None);
        assert_eq!(get(&ctx, &format!("{prefix}:oaud")), None);
        assert_eq!(
            get(&ctx, "aws:FederatedProvider"),
            single(
                "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
            )
        );
    }

    #[test]
    fn cognito_token() {
        let token = claims(json!({
            "aud": "us-east-1:12345678-1234-1234-1234-123456789012",
            "sub": "us-east-1:abcd",
            "amr": ["authenticated", "cognito-idp.us-east-1.amazonaws.com"]
        }));
        let ctx = web_identity_context(&WebIdentityProvider::Cognito, &token, &request()).unwrap();
        assert_eq!(
            get(&ctx, "cognito-identity.amazonaws.com:amr"),
            multi(&["authenticated", "cognito-idp.us-east-1.amazonaws.com"])
        );
        assert_eq!(
            get(&ctx, "cognito-identity.amazonaws.com:aud"),
            single("us-east-1:12345678-1234-1234-1234-123456789012")
        );
    }

    #[test]
    fn session_tags_and_source_identity() {
        let token = claims(json!({
            "sub": "s",
            "aud": "a",
            "https://aws.amazon.com/source_identity": "alice",
            "https://aws.amazon.com/tags": {
                "principal_tags": {"Project": ["Blue"], "Team": "Red"},
                "transitive_tag_keys": ["Project"]
            }
        }));
        let provider = WebIdentityProvider::from_issuer("https://issuer.example");
        let ctx = web_identity_context(&provider, &token, &request()).unwrap();
        assert_eq!(get(&ctx, "sts:SourceIdentity"), single("alice"));
        assert_eq!(get(&ctx, "aws:RequestTag/Project"), single("Blue"));
        assert_eq!(get(&ctx, "aws:requesttag/team"), single("Red"));
        assert_eq!(get(&ctx, "aws:TagKeys"), multi(&["Project", "Team"]));
        assert_eq!(get(&ctx, "sts:TransitiveTagKeys"), multi(&["Project"]));
    }

    #[test]
    fn malformed_claims() {
        let cases = [
            json!({"https://aws.amazon.com/source_identity": 5}),
            json!({"https://aws.amazon.com/tags": []}),
            json!({"https://aws.amazon.com/tags": {"principal_tags": []}}),
            json!({"https://aws.amazon.com/tags": {"principal_tags": {"a": ["1", "2"]}}}),
            json!({"https://aws.amazon.com/tags": {"principal_tags": {"a": []}}}),
            json!({"https://aws.amazon.com/tags": {"principal_tags": {"a": 1}}}),
            json!({"https://aws.amazon.com/tags": {"transitive_tag_keys": "a"}}),
            json!({"https://aws.amazon.com/tags": {"transitive_tag_keys": [1]}}),
        ];
        for case in cases {
            let token = claims(case.clone());
            let err =
                web_identity_context(&WebIdentityProvider::Google, &token, &request()).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("malformed https://aws.amazon.com/"),
                "{case}: {err}"
            );
        }
    }
}
