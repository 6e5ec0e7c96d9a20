//! Evaluating a trust policy for one request.
//!
//! A statement applies when its principal, its action and every one of its conditions match. An
//! applying `Deny` statement decides the request (explicit deny wins over any allow); otherwise an
//! applying `Allow` statement allows it; otherwise the request is implicitly denied. Every
//! statement is evaluated in full, including conditions of statements whose principal or action
//! did not match, so that the trace can explain a near miss.
//!
//! Principal matching:
//!
//! * `"*"` matches every caller, anonymous ones included; `{"AWS": "*"}` (likewise for the other
//!   types) matches every caller of that type;
//! * `{"AWS": "123456789012"}` and `{"AWS": "arn:aws:iam::123456789012:root"}` match every AWS
//!   principal of that account (the `root` form also checks the partition);
//! * other AWS ARNs match exactly, and a role ARN also matches sessions of that role
//!   (`arn:aws:sts::123456789012:assumed-role/<role name>/<session>`), which is what makes role
//!   chaining work;
//! * `Federated` matches the provider name (`accounts.google.com`) or the OIDC provider ARN
//!   exactly, except that the host name is compared without regard to case;
//! * `Service` matches exactly; `CanonicalUser` never matches any [`Principal`] here;
//! * `NotPrincipal` matches every caller that none of its entries match.

use std::collections::BTreeMap;

use serde::Serialize;

use super::condition;
use super::pattern::Pattern;
use super::policy::{
    ActionSpec, Effect, PrincipalEntry, PrincipalKind, PrincipalSet, PrincipalSpec, Statement,
    TrustPolicy, is_account_id,
};

/// The caller whose request is evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Principal {
    /// A web identity or SAML provider: a built-in provider name such as
    /// `accounts.google.com`, or an IAM OIDC provider ARN such as
    /// `arn:aws:iam::123456789012:oidc-provider/issuer.example/path`.
    Federated(String),
    /// An AWS principal ARN: user, role, assumed-role session or account root.
    Aws(String),
    /// An AWS service principal such as `ec2.amazonaws.com`.
    Service(String),
    /// An unauthenticated caller.
    Anonymous,
}

/// A condition key's value in the request: one string or a set of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ContextValue {
    /// A single-valued key such as `aws:SourceIp`.
    Single(String),
    /// A multi-valued key such as `aws:TagKeys` or `cognito-identity.amazonaws.com:amr`.
    Multi(Vec<String>),
}

impl ContextValue {
    /// The value(s) as a slice.
    pub fn values(&self) -> &[String] {
        match self {
            ContextValue::Single(value) => std::slice::from_ref(value),
            ContextValue::Multi(values) => values,
        }
    }
}

/// Everything the evaluation looks at: who calls, which action, and the condition keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestContext {
    /// The caller.
    pub principal: Principal,
    /// The action, e.g. `sts:AssumeRoleWithWebIdentity`.
    pub action: String,
    /// Condition keys, lower-cased (condition keys are case-insensitive), and their values.
    /// Prefer [`RequestContext::insert`] and the `with_…` helpers, which lower-case for you.
    pub keys: BTreeMap<String, ContextValue>,
}

impl RequestContext {
    /// A request with no condition keys.
    pub fn new(principal: Principal, action: impl Into<String>) -> Self {
        RequestContext {
            principal,
            action: action.into(),
            keys: BTreeMap::new(),
        }
    }

    /// Adds a single-valued key.
    #[must_use]
    pub fn with_key(mut self, key: &str, value: impl Into<String>) -> Self {
        self.insert(key, ContextValue::Single(value.into()));
        self
    }

    /// Adds a multi-valued key.
    #[must_use]
    pub fn with_multi_key<I, S>(mut self, key: &str, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.insert(
            key,
            ContextValue::Multi(values.into_iter().map(Into::into).collect()),
        );
        self
    }

    /// Replaces the action, e.g. to evaluate `sts:TagSession` for the same request.
    #[must_use]
    pub fn with_action(mut self, action: impl Into<String>) -> Self {
        self.action = action.into();
        self
    }

    /// Sets a key (lower-cased), replacing any previous value.
    pub fn insert(&mut self, key: &str, value: ContextValue) {
        self.keys.insert(key.to_lowercase(), value);
    }

    /// Looks a key up without regard to case.
    pub fn get(&self, key: &str) -> Option<&ContextValue> {
        self.keys.get(&key.to_lowercase())
    }
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Decision {
    /// An `Allow` statement applies and no `Deny` statement does.
    Allow,
    /// A `Deny` statement applies.
    ExplicitDeny,
    /// No statement applies.
    ImplicitDeny,
}

/// The decision with the reasoning behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// One trace per statement, in policy order.
    pub statements: Vec<StatementTrace>,
}

impl Evaluation {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}

/// How one statement was evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementTrace {
    /// The statement's position in the policy, from 0.
    pub index: usize,
    /// The statement's `Sid`, when it has one.
    pub sid: Option<String>,
    /// The statement's effect.
    pub effect: Effect,
    /// Whether `Principal`/`NotPrincipal` matched the caller.
    pub principal_matched: bool,
    /// Whether `Action`/`NotAction` matched the action.
    pub action_matched: bool,
    /// Every condition, in policy order.
    pub conditions: Vec<ConditionTrace>,
    /// Whether the statement applies: principal, action and all conditions matched.
    pub matched: bool,
}

/// How one condition was evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConditionTrace {
    /// The operator as written, e.g. `ForAnyValue:StringLike`.
    pub operator: String,
    /// The key as written, e.g. `accounts.google.com:aud`.
    pub key: String,
    /// The request's value(s) for the key; `None` when the key is absent.
    pub context_values: Option<Vec<String>>,
    /// The policy's values as written.
    pub policy_values: Vec<String>,
    /// Whether the condition held.
    pub result: bool,
}

/// Evaluates `policy` for the request `ctx`.
pub fn evaluate(policy: &TrustPolicy, ctx: &RequestContext) -> Evaluation {
    let statements: Vec<StatementTrace> = policy
        .statements
        .iter()
        .map(|statement| trace_statement(policy, statement, ctx))
        .collect();
    let applies = |effect: Effect| statements.iter().any(|s| s.matched && s.effect == effect);
    let decision = if applies(Effect::Deny) {
        Decision::ExplicitDeny
    } else if applies(Effect::Allow) {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    };
    Evaluation {
        decision,
        statements,
    }
}

fn trace_statement(
    policy: &TrustPolicy,
    statement: &Statement,
    ctx: &RequestContext,
) -> StatementTrace {
    let principal_matched = principal_spec_matches(&statement.principal, &ctx.principal);
    let action_matched = action_matches(&statement.action, &ctx.action);
    let conditions: Vec<_> = statement
        .conditions
        .iter()
        .map(|c| condition::evaluate(c, policy.effective_version(), ctx))
        .collect();
    let matched = principal_matched && action_matched && conditions.iter().all(|c| c.result);
    StatementTrace {
        index: statement.index,
        sid: statement.sid.clone(),
        effect: statement.effect,
        principal_matched,
        action_matched,
        conditions,
        matched,
    }
}

fn action_matches(spec: &ActionSpec, action: &str) -> bool {
    let any = |patterns: &[String]| {
        patterns
            .iter()
            .any(|p| Pattern::glob(p).matches_ignore_case(action))
    };
    match spec {
        ActionSpec::Action(patterns) => any(patterns),
        ActionSpec::NotAction(patterns) => !any(patterns),
    }
}

fn principal_spec_matches(spec: &PrincipalSpec, principal: &Principal) -> bool {
    match spec {
        PrincipalSpec::Principal(set) => principal_set_matches(set, principal),
        PrincipalSpec::NotPrincipal(set) => !principal_set_matches(set, principal),
    }
}

fn principal_set_matches(set: &PrincipalSet, principal: &Principal) -> bool {
    match set {
        PrincipalSet::Wildcard => true,
        PrincipalSet::Listed(entries) => entries.iter().any(|e| entry_matches(e, principal)),
    }
}

fn entry_matches(entry: &PrincipalEntry, principal: &Principal) -> bool {
    match (entry.kind, principal) {
        (PrincipalKind::Aws, Principal::Aws(arn)) => aws_principal_matches(&entry.value, arn),
        (PrincipalKind::Federated, Principal::Federated(provider)) => {
            entry.value == "*" || federated_eq(&entry.value, provider)
        }
        (PrincipalKind::Service, Principal::Service(service)) => {
            entry.value == "*" || entry.value == *service
        }
        _ => false,
    }
}

/// The parts of an AWS principal ARN that matching needs.
struct AwsArn<'a> {
    partition: &'a str,
    service: &'a str,
    account: &'a str,
    resource: &'a str,
}

fn parse_aws_arn(arn: &str) -> Option<AwsArn<'_>> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(_region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    Some(AwsArn {
        partition,
        service,
        account,
        resource,
    })
}

fn aws_principal_matches(policy_value: &str, caller: &str) -> bool {
    if policy_value == "*" {
        return true;
    }
    if policy_value == caller {
        return true;
    }
    let Some(caller) = parse_aws_arn(caller) else {
        return false;
    };
    if is_account_id(policy_value) {
        return caller.account == policy_value;
    }
    let Some(policy) = parse_aws_arn(policy_value) else {
        return false;
    };
    if policy.partition != caller.partition || policy.account != caller.account {
        return false;
    }
    if policy.service == "iam" && policy.resource == "root" {
        return true;
    }
    // A role ARN (`role/<path>/<name>`) also names the role's sessions
    // (`assumed-role/<name>/<session>`, which carries no path).
    if policy.service == "iam"
        && caller.service == "sts"
        && let Some(role_path) = policy.resource.strip_prefix("role/")
        && let Some(session) = caller.resource.strip_prefix("assumed-role/")
        && let Some((role_name, _session_name)) = session.split_once('/')
    {
        let policy_role_name = role_path.rsplit('/').next().unwrap_or(role_path);
        return policy_role_name == role_name;
    }
    false
}

/// Provider names and OIDC provider ARNs are equal when they agree exactly, except for the case of
/// the host name (DNS names are case-insensitive).
fn federated_eq(a: &str, b: &str) -> bool {
    let (a_prefix, a_host, a_rest) = split_provider(a);
    let (b_prefix, b_host, b_rest) = split_provider(b);
    a_prefix == b_prefix && a_host.eq_ignore_ascii_case(b_host) && a_rest == b_rest
}

/// Splits `arn:…:oidc-provider/host/path` or `host/path` into (ARN prefix, host, `/path`).
fn split_provider(value: &str) -> (&str, &str, &str) {
    const MARKER: &str = ":oidc-provider/";
    let (prefix, name) = match value.find(MARKER) {
        Some(at) => value.split_at(at + MARKER.len()),
        None => ("", value),
    };
    match name.find('/') {
        Some(slash) => {
            let (host, rest) = name.split_at(slash);
            (prefix, host, rest)
        }
        None => (prefix, name, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> TrustPolicy {
        TrustPolicy::parse(json).unwrap()
    }

    fn google() -> Principal {
        Principal::Federated("accounts.google.com".into())
    }

    const WEB: &str = "sts:AssumeRoleWithWebIdentity";

    /// A one-statement policy with the given principal element, action element and conditions.
    fn one(effect: &str, principal: &str, action: &str, condition: &str) -> TrustPolicy {
        policy(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"{effect}",{principal},{action},"Condition":{condition}}}]}}"#
        ))
    }

    /// Evaluates one condition block for a Google caller with the given keys.
    fn check(condition: &str, keys: &[(&str, ContextValue)]) -> bool {
        let p = one(
            "Allow",
            r#""Principal":{"Federated":"accounts.google.com"}"#,
            r#""Action":"sts:AssumeRoleWithWebIdentity""#,
            condition,
        );
        let mut ctx = RequestContext::new(google(), WEB);
        for (key, value) in keys {
            ctx.insert(key, value.clone());
        }
        let eval = evaluate(&p, &ctx);
        assert_eq!(eval.is_allowed(), eval.statements[0].matched);
        eval.is_allowed()
    }

    fn s(v: &str) -> ContextValue {
        ContextValue::Single(v.to_owned())
    }

    fn m(v: &[&str]) -> ContextValue {
        ContextValue::Multi(v.iter().map(|s| (*s).to_owned()).collect())
    }

    /// (condition block, value of key `k:x` or None for absent, expected)
    type Case = (&'static str, Option<ContextValue>, bool);

    fn run(cases: Vec<Case>) {
        for (condition, value, want) in cases {
            let keys: Vec<(&str, ContextValue)> =
                value.iter().map(|v| ("k:x", v.clone())).collect();
            assert_eq!(check(condition, &keys), want, "{condition} with {value:?}");
        }
    }

    #[test]
    fn string_operators() {
        run(vec![
            (r#"{"StringEquals":{"k:x":"abc"}}"#, Some(s("abc")), true),
            (r#"{"StringEquals":{"k:x":"abc"}}"#, Some(s("ABC")), false),
            (r#"{"StringEquals":{"k:x":"a*"}}"#, Some(s("abc")), false),
            (r#"{"StringEquals":{"k:x":"a*"}}"#, Some(s("a*")), true),
            (r#"{"StringEquals":{"k:x":"abc"}}"#, None, false),
            (r#"{"StringEquals":{"K:X":"abc"}}"#, Some(s("abc")), true),
            (r#"{"StringNotEquals":{"k:x":"abc"}}"#, Some(s("abd")), true),
            (
                r#"{"StringNotEquals":{"k:x":"abc"}}"#,
                Some(s("abc")),
                false,
            ),
            (
                r#"{"StringNotEquals":{"k:x":["a","b"]}}"#,
                Some(s("b")),
                false,
            ),
            (
                r#"{"StringNotEquals":{"k:x":["a","b"]}}"#,
                Some(s("c")),
                true,
            ),
            (r#"{"StringNotEquals":{"k:x":"abc"}}"#, None, true),
            (
                r#"{"StringEqualsIgnoreCase":{"k:x":"AbC"}}"#,
                Some(s("aBc")),
                true,
            ),
            (
                r#"{"StringEqualsIgnoreCase":{"k:x":"abc"}}"#,
                Some(s("abd")),
                false,
            ),
            (r#"{"StringEqualsIgnoreCase":{"k:x":"abc"}}"#, None, false),
            (
                r#"{"StringNotEqualsIgnoreCase":{"k:x":"AbC"}}"#,
                Some(s("aBc")),
                false,
            ),
            (
                r#"{"StringNotEqualsIgnoreCase":{"k:x":"AbC"}}"#,
                Some(s("x")),
                true,
            ),
            (r#"{"StringNotEqualsIgnoreCase":{"k:x":"AbC"}}"#, None, true),
            (r#"{"StringLike":{"k:x":"a*c"}}"#, Some(s("abbbc")), true),
            (r#"{"StringLike":{"k:x":"a?c"}}"#, Some(s("abbc")), false),
            (r#"{"StringLike":{"k:x":"A*"}}"#, Some(s("abc")), false),
            (r#"{"StringLike":{"k:x":"b*"}}"#, Some(s("abc")), false),
            (r#"{"StringLike":{"k:x":"*"}}"#, None, false),
            (r#"{"StringNotLike":{"k:x":"a*"}}"#, Some(s("abc")), false),
            (r#"{"StringNotLike":{"k:x":"a*"}}"#, Some(s("bcd")), true),
            (r#"{"StringNotLike":{"k:x":"a*"}}"#, None, true),
        ]);
    }

    #[test]
    fn if_exists_suffix() {
        run(vec![
            (r#"{"StringEqualsIfExists":{"k:x":"abc"}}"#, None, true),
            (
                r#"{"StringEqualsIfExists":{"k:x":"abc"}}"#,
                Some(s("abc")),
                true,
            ),
            (
                r#"{"StringEqualsIfExists":{"k:x":"abc"}}"#,
                Some(s("x")),
                false,
            ),
            (r#"{"StringNotEqualsIfExists":{"k:x":"abc"}}"#, None, true),
            (
                r#"{"StringNotEqualsIfExists":{"k:x":"abc"}}"#,
                Some(s("abc")),
                false,
            ),
            (r#"{"NumericLessThanIfExists":{"k:x":"5"}}"#, None, true),
            (
                r#"{"NumericLessThanIfExists":{"k:x":"5"}}"#,
                Some(s("7")),
                false,
            ),
            (
                r#"{"DateGreaterThanIfExists":{"k:x":"2020-01-01T00:00:00Z"}}"#,
                None,
                true,
            ),
            (r#"{"BoolIfExists":{"k:x":"true"}}"#, None, true),
            (
                r#"{"BoolIfExists":{"k:x":"true"}}"#,
                Some(s("false")),
                false,
            ),
            (r#"{"BinaryEqualsIfExists":{"k:x":"QUJD"}}"#, None, true),
            (r#"{"IpAddressIfExists":{"k:x":"10.0.0.0/8"}}"#, None, true),
            (
                r#"{"IpAddressIfExists":{"k:x":"10.0.0.0/8"}}"#,
                Some(s("11.0.0.1")),
                false,
            ),
            (
                r#"{"ArnLikeIfExists":{"k:x":"arn:aws:iam::*:role/r"}}"#,
                None,
                true,
            ),
            (
                r#"{"stringlikeifexists":{"k:x":"a*"}}"#,
                Some(s("ab")),
                true,
            ),
        ]);
    }

    #[test]
    fn numeric_operators() {
        run(vec![
            (r#"{"NumericEquals":{"k:x":10}}"#, Some(s("10")), true),
            (r#"{"NumericEquals":{"k:x":"10"}}"#, Some(s("10.0")), true),
            (r#"{"NumericEquals":{"k:x":"10"}}"#, Some(s("11")), false),
            (r#"{"NumericEquals":{"k:x":"10"}}"#, Some(s("ten")), false),
            (r#"{"NumericEquals":{"k:x":"10"}}"#, None, false),
            (r#"{"NumericNotEquals":{"k:x":"10"}}"#, Some(s("11")), true),
            (r#"{"NumericNotEquals":{"k:x":"10"}}"#, Some(s("10")), false),
            (r#"{"NumericNotEquals":{"k:x":"10"}}"#, None, true),
            // A request value that is not a number satisfies neither form.
            (
                r#"{"NumericNotEquals":{"k:x":"10"}}"#,
                Some(s("ten")),
                false,
            ),
            (r#"{"NumericLessThan":{"k:x":"10"}}"#, Some(s("9.5")), true),
            (r#"{"NumericLessThan":{"k:x":"10"}}"#, Some(s("10")), false),
            (
                r#"{"NumericLessThanEquals":{"k:x":"10"}}"#,
                Some(s("10")),
                true,
            ),
            (
                r#"{"NumericLessThanEquals":{"k:x":"10"}}"#,
                Some(s("11")),
                false,
            ),
            (
                r#"{"NumericGreaterThan":{"k:x":"10"}}"#,
                Some(s("11")),
                true,
            ),
            (
                r#"{"NumericGreaterThan":{"k:x":"10"}}"#,
                Some(s("10")),
                false,
            ),
            (
                r#"{"NumericGreaterThanEquals":{"k:x":"10"}}"#,
                Some(s("10")),
                true,
            ),
            (
                r#"{"NumericGreaterThanEquals":{"k:x":"10"}}"#,
                Some(s("-10")),
                false,
            ),
            (r#"{"NumericGreaterThan":{"k:x":"10"}}"#, None, false),
            // A policy value that is not a number never matches; the other values still count.
            (
                r#"{"NumericEquals":{"k:x":["x", "3"]}}"#,
                Some(s("3")),
                true,
            ),
        ]);
    }

    #[test]
    fn date_operators() {
        let jan = "2024-01-01T00:00:00Z";
        run(vec![
            (
                r#"{"DateEquals":{"k:x":"2024-01-01T00:00:00Z"}}"#,
                Some(s(jan)),
                true,
            ),
            (
                r#"{"DateEquals":{"k:x":"2024-01-01T00:00:00Z"}}"#,
                Some(s("1704067200")),
                true,
            ),
            (r#"{"DateEquals":{"k:x":1704067200}}"#, Some(s(jan)), true),
            (
                r#"{"DateEquals":{"k:x":"2024-01-01T01:00:00+01:00"}}"#,
                Some(s(jan)),
                true,
            ),
            (r#"{"DateEquals":{"k:x":"2024-01-01"}}"#, Some(s(jan)), true),
            (
                r#"{"DateEquals":{"k:x":"2024-01-02"}}"#,
                Some(s(jan)),
                false,
            ),
            (
                r#"{"DateEquals":{"k:x":"2024-01-01"}}"#,
                Some(s("soon")),
                false,
            ),
            (
                r#"{"DateNotEquals":{"k:x":"2024-01-02"}}"#,
                Some(s(jan)),
                true,
            ),
            (
                r#"{"DateNotEquals":{"k:x":"2024-01-01"}}"#,
                Some(s(jan)),
                false,
            ),
            (r#"{"DateNotEquals":{"k:x":"2024-01-01"}}"#, None, true),
            (
                r#"{"DateLessThan":{"k:x":"2024-06-01T00:00:00Z"}}"#,
                Some(s(jan)),
                true,
            ),
            (
                r#"{"DateLessThan":{"k:x":"2024-01-01T00:00:00Z"}}"#,
                Some(s(jan)),
                false,
            ),
            (
                r#"{"DateLessThanEquals":{"k:x":"2024-01-01T00:00:00Z"}}"#,
                Some(s(jan)),
                true,
            ),
            (
                r#"{"DateGreaterThan":{"k:x":"2023-12-31T23:59:59Z"}}"#,
                Some(s(jan)),
                true,
            ),
            (
                r#"{"DateGreaterThan":{"k:x":"2024-01-01T00:00:00Z"}}"#,
                Some(s(jan)),
                false,
            ),
            (
                r#"{"DateGreaterThanEquals":{"k:x":"2024-01-01T00:00:00Z"}}"#,
                Some(s(jan)),
                true,
            ),
            (
                r#"{"DateGreaterThanEquals":{"k:x":"2024-01-01T00:00:01Z"}}"#,
                Some(s(jan)),
                false,
            ),
            (
                r#"{"DateLessThan":{"k:x":"2024-06-01T00:00:00Z"}}"#,
                None,
                false,
            ),
        ]);
    }

    #[test]
    fn bool_binary_ip_null_operators() {
        run(vec![
            (r#"{"Bool":{"k:x":true}}"#, Some(s("true")), true),
            (r#"{"Bool":{"k:x":"true"}}"#, Some(s("TRUE")), true),
            (r#"{"Bool":{"k:x":"false"}}"#, Some(s("true")), false),
            (r#"{"Bool":{"k:x":"true"}}"#, Some(s("yes")), false),
            (r#"{"Bool":{"k:x":"false"}}"#, None, false),
            (r#"{"BinaryEquals":{"k:x":"QUJD"}}"#, Some(s("QUJD")), true),
            (r#"{"BinaryEquals":{"k:x":"QUJD"}}"#, Some(s("QUJE")), false),
            (
                r#"{"BinaryEquals":{"k:x":"QUJD"}}"#,
                Some(s("not base64!")),
                false,
            ),
            (r#"{"BinaryEquals":{"k:x":"QUJD"}}"#, None, false),
            (
                r#"{"IpAddress":{"k:x":"203.0.113.0/24"}}"#,
                Some(s("203.0.113.9")),
                true,
            ),
            (
                r#"{"IpAddress":{"k:x":"203.0.113.0/24"}}"#,
                Some(s("203.0.112.9")),
                false,
            ),
            (
                r#"{"IpAddress":{"k:x":["10.0.0.0/8","2001:db8::/32"]}}"#,
                Some(s("2001:db8::5")),
                true,
            ),
            (
                r#"{"IpAddress":{"k:x":"203.0.113.0/24"}}"#,
                Some(s("localhost")),
                false,
            ),
            (r#"{"IpAddress":{"k:x":"203.0.113.0/24"}}"#, None, false),
            (
                r#"{"NotIpAddress":{"k:x":"203.0.113.0/24"}}"#,
                Some(s("198.51.100.1")),
                true,
            ),
            (
                r#"{"NotIpAddress":{"k:x":"203.0.113.0/24"}}"#,
                Some(s("203.0.113.1")),
                false,
            ),
            (r#"{"NotIpAddress":{"k:x":"203.0.113.0/24"}}"#, None, true),
            (r#"{"Null":{"k:x":"true"}}"#, None, true),
            (r#"{"Null":{"k:x":"true"}}"#, Some(s("v")), false),
            (r#"{"Null":{"k:x":"false"}}"#, Some(s("v")), true),
            (r#"{"Null":{"k:x":false}}"#, None, false),
            (r#"{"Null":{"k:x":["true","false"]}}"#, None, true),
            (r#"{"Null":{"k:x":"maybe"}}"#, None, false),
        ]);
    }

    #[test]
    fn arn_operators() {
        let role = "arn:aws:iam::123456789012:role/path/app";
        run(vec![
            (
                r#"{"ArnEquals":{"k:x":"arn:aws:iam::123456789012:role/path/app"}}"#,
                Some(s(role)),
                true,
            ),
            (
                r#"{"ArnEquals":{"k:x":"arn:aws:iam::*:role/path/*"}}"#,
                Some(s(role)),
                true,
            ),
            (
                r#"{"ArnLike":{"k:x":"arn:aws:iam::123456789012:role/*"}}"#,
                Some(s(role)),
                true,
            ),
            (
                r#"{"ArnLike":{"k:x":"arn:aws:iam::123456789012:user/*"}}"#,
                Some(s(role)),
                false,
            ),
            (
                r#"{"ArnLike":{"k:x":"arn:aws:iam::12345678901?:role/path/app"}}"#,
                Some(s(role)),
                true,
            ),
            (
                r#"{"ArnLike":{"k:x":"arn:aws:*:role/path/app"}}"#,
                Some(s(role)),
                false,
            ),
            (
                r#"{"ArnLike":{"k:x":"arn:aws:iam::*"}}"#,
                Some(s("not-an-arn")),
                false,
            ),
            (r#"{"ArnLike":{"k:x":"arn:aws:iam::*:*"}}"#, None, false),
            (
                r#"{"ArnNotLike":{"k:x":"arn:aws:iam::*:user/*"}}"#,
                Some(s(role)),
                true,
            ),
            (
                r#"{"ArnNotLike":{"k:x":"arn:aws:iam::*:role/*"}}"#,
                Some(s(role)),
                false,
            ),
            (
                r#"{"ArnNotLike":{"k:x":"arn:aws:iam::*:role/*"}}"#,
                None,
                true,
            ),
            (
                r#"{"ArnNotEquals":{"k:x":"arn:aws:iam::*:role/*"}}"#,
                Some(s(role)),
                false,
            ),
            (
                r#"{"ArnNotEquals":{"k:x":"arn:aws:iam::*:role/other"}}"#,
                Some(s(role)),
                true,
            ),
            (
                r#"{"ArnNotEquals":{"k:x":"arn:aws:iam::*:role/other"}}"#,
                Some(s("bogus")),
                false,
            ),
        ]);
    }

    #[test]
    fn set_operators() {
        run(vec![
            (
                r#"{"ForAnyValue:StringEquals":{"k:x":["a","b"]}}"#,
                Some(m(&["c", "b"])),
                true,
            ),
            (
                r#"{"ForAnyValue:StringEquals":{"k:x":["a","b"]}}"#,
                Some(m(&["c", "d"])),
                false,
            ),
            (
                r#"{"ForAnyValue:StringEquals":{"k:x":["a","b"]}}"#,
                Some(m(&[])),
                false,
            ),
            (
                r#"{"ForAnyValue:StringEquals":{"k:x":["a","b"]}}"#,
                None,
                false,
            ),
            (
                r#"{"ForAnyValue:StringEquals":{"k:x":"a"}}"#,
                Some(s("a")),
                true,
            ),
            (
                r#"{"ForAnyValue:StringLike":{"k:x":"cognito-idp.*"}}"#,
                Some(m(&["authenticated", "cognito-idp.us-east-1.amazonaws.com"])),
                true,
            ),
            (
                r#"{"ForAllValues:StringEquals":{"k:x":["a","b"]}}"#,
                Some(m(&["a", "b"])),
                true,
            ),
            (
                r#"{"ForAllValues:StringEquals":{"k:x":["a","b"]}}"#,
                Some(m(&["a", "c"])),
                false,
            ),
            (
                r#"{"ForAllValues:StringEquals":{"k:x":["a","b"]}}"#,
                Some(m(&[])),
                true,
            ),
            (
                r#"{"ForAllValues:StringEquals":{"k:x":["a","b"]}}"#,
                None,
                true,
            ),
            (
                r#"{"ForAllValues:StringNotEquals":{"k:x":["a","b"]}}"#,
                Some(m(&["c", "d"])),
                true,
            ),
            (
                r#"{"ForAllValues:StringNotEquals":{"k:x":["a","b"]}}"#,
                Some(m(&["c", "a"])),
                false,
            ),
            (
                r#"{"ForAnyValue:StringNotEquals":{"k:x":["a","b"]}}"#,
                Some(m(&["a", "c"])),
                true,
            ),
            (
                r#"{"ForAnyValue:StringNotEquals":{"k:x":["a","b"]}}"#,
                Some(m(&["a", "b"])),
                false,
            ),
            (
                r#"{"ForAnyValue:StringNotEquals":{"k:x":["a","b"]}}"#,
                None,
                false,
            ),
            (
                r#"{"ForAnyValue:StringEqualsIfExists":{"k:x":"a"}}"#,
                None,
                true,
            ),
            (
                r#"{"ForAllValues:NumericLessThan":{"k:x":"10"}}"#,
                Some(m(&["1", "9"])),
                true,
            ),
            (
                r#"{"ForAllValues:NumericLessThan":{"k:x":"10"}}"#,
                Some(m(&["1", "19"])),
                false,
            ),
            // Multi-valued key without a set operator: any value for positive operators, none
            // for negated ones.
            (
                r#"{"StringEquals":{"k:x":"a"}}"#,
                Some(m(&["b", "a"])),
                true,
            ),
            (
                r#"{"StringNotEquals":{"k:x":"a"}}"#,
                Some(m(&["b", "a"])),
                false,
            ),
            (
                r#"{"StringNotEquals":{"k:x":"a"}}"#,
                Some(m(&["b", "c"])),
                true,
            ),
        ]);
    }

    #[test]
    fn values_or_keys_and_blocks_and() {
        let values_or = r#"{"StringEquals":{"a:a":["1","2"]}}"#;
        assert!(check(values_or, &[("a:a", s("2"))]));
        assert!(!check(values_or, &[("a:a", s("3"))]));

        let keys_and = r#"{"StringEquals":{"a:a":"1","a:b":"2"}}"#;
        assert!(check(keys_and, &[("a:a", s("1")), ("a:b", s("2"))]));
        assert!(!check(keys_and, &[("a:a", s("1")), ("a:b", s("3"))]));
        assert!(!check(keys_and, &[("a:a", s("1"))]));

        let blocks_and = r#"{"StringEquals":{"a:a":"1"},"StringLike":{"a:b":"x*"}}"#;
        assert!(check(blocks_and, &[("a:a", s("1")), ("a:b", s("xyz"))]));
        assert!(!check(blocks_and, &[("a:a", s("1")), ("a:b", s("yz"))]));
        assert!(!check(blocks_and, &[("a:a", s("2")), ("a:b", s("xyz"))]));
    }

    #[test]
    fn policy_variables() {
        type Keys = Vec<(&'static str, ContextValue)>;
        let cases: Vec<(&str, Keys, bool)> = vec![
            (
                r#"{"StringEquals":{"a:sub":"${a:expected}"}}"#,
                vec![("a:sub", s("v")), ("a:expected", s("v"))],
                true,
            ),
            (
                r#"{"StringEquals":{"a:sub":"${A:Expected}"}}"#,
                vec![("a:sub", s("v")), ("a:expected", s("w"))],
                false,
            ),
            (
                r#"{"StringLike":{"a:sub":"repo:${a:org}/*"}}"#,
                vec![("a:sub", s("repo:acme/x")), ("a:org", s("acme"))],
                true,
            ),
            // The substituted text is literal, and `${*}` is a literal asterisk.
            (
                r#"{"StringLike":{"a:sub":"${a:org}"}}"#,
                vec![("a:sub", s("anything")), ("a:org", s("*"))],
                false,
            ),
            (
                r#"{"StringLike":{"a:sub":"a${*}"}}"#,
                vec![("a:sub", s("a*"))],
                true,
            ),
            (
                r#"{"StringLike":{"a:sub":"a${*}"}}"#,
                vec![("a:sub", s("ab"))],
                false,
            ),
            // A variable for an absent key makes the condition false, even when negated.
            (
                r#"{"StringEquals":{"a:sub":"${a:missing}"}}"#,
                vec![("a:sub", s(""))],
                false,
            ),
            (
                r#"{"StringNotEquals":{"a:sub":"${a:missing}"}}"#,
                vec![("a:sub", s("x"))],
                false,
            ),
            (
                r#"{"StringEquals":{"a:sub":"${a:missing, 'dflt'}"}}"#,
                vec![("a:sub", s("dflt"))],
                true,
            ),
            (
                r#"{"ArnLike":{"a:arn":"arn:aws:iam::${a:acct}:role/*"}}"#,
                vec![
                    ("a:arn", s("arn:aws:iam::123456789012:role/r")),
                    ("a:acct", s("123456789012")),
                ],
                true,
            ),
            // Not substituted for other operators.
            (
                r#"{"NumericEquals":{"a:n":"${a:m}"}}"#,
                vec![("a:n", s("1")), ("a:m", s("1"))],
                false,
            ),
        ];
        for (condition, keys, want) in cases {
            assert_eq!(check(condition, &keys), want, "{condition} {keys:?}");
        }
    }

    #[test]
    fn variables_are_literal_in_2008_policies() {
        for version in [r#""Version":"2008-10-17","#, ""] {
            let p = policy(&format!(
                r#"{{{version}"Statement":[{{"Effect":"Allow","Principal":"*","Action":"*",
                    "Condition":{{"StringEquals":{{"a:sub":"${{a:v}}"}}}}}}]}}"#
            ));
            let ctx = RequestContext::new(Principal::Anonymous, "sts:AssumeRole")
                .with_key("a:v", "x")
                .with_key("a:sub", "x");
            assert!(!evaluate(&p, &ctx).is_allowed());
            let literal = ctx.with_key("a:sub", "${a:v}");
            assert!(evaluate(&p, &literal).is_allowed());
        }
    }

    #[test]
    fn explicit_deny_wins() {
        let p = policy(
            r#"{"Version":"2012-10-17","Statement":[
                {"Sid":"Allow","Effect":"Allow","Principal":{"Federated":"accounts.google.com"},"Action":"sts:AssumeRoleWithWebIdentity"},
                {"Sid":"DenyBob","Effect":"Deny","Principal":"*","Action":"*",
                 "Condition":{"StringEquals":{"accounts.google.com:sub":"bob"}}}]}"#,
        );
        let alice = RequestContext::new(google(), WEB).with_key("accounts.google.com:sub", "alice");
        let bob = RequestContext::new(google(), WEB).with_key("accounts.google.com:sub", "bob");
        assert_eq!(evaluate(&p, &alice).decision, Decision::Allow);
        let eval = evaluate(&p, &bob);
        assert_eq!(eval.decision, Decision::ExplicitDeny);
        assert!(eval.statements.iter().all(|s| s.matched));
        let other =
            RequestContext::new(Principal::Aws("arn:aws:iam::123456789012:root".into()), WEB);
        assert_eq!(evaluate(&p, &other).decision, Decision::ImplicitDeny);
    }

    #[test]
    fn action_matching() {
        let cases: &[(&str, &str, bool)] = &[
            (r#""Action":"sts:AssumeRoleWithWebIdentity""#, WEB, true),
            (r#""Action":"STS:assumerolewithwebidentity""#, WEB, true),
            (r#""Action":"sts:AssumeRole""#, WEB, false),
            (r#""Action":"sts:AssumeRole*""#, WEB, true),
            (r#""Action":"sts:Assume?ole*""#, WEB, true),
            (r#""Action":"*""#, WEB, true),
            (r#""Action":"sts:*""#, WEB, true),
            (r#""Action":"iam:*""#, WEB, false),
            (
                r#""Action":["sts:TagSession","sts:AssumeRoleWithWebIdentity"]"#,
                WEB,
                true,
            ),
            (r#""NotAction":"sts:TagSession""#, WEB, true),
            (r#""NotAction":"sts:Assume*""#, WEB, false),
            (r#""NotAction":["iam:*","sts:TagSession"]"#, WEB, true),
        ];
        for (action, requested, want) in cases {
            let p = one("Allow", r#""Principal":"*""#, action, "{}");
            let ctx = RequestContext::new(google(), *requested);
            let eval = evaluate(&p, &ctx);
            assert_eq!(eval.statements[0].action_matched, *want, "{action}");
            assert_eq!(eval.is_allowed(), *want, "{action}");
        }
    }

    #[test]
    fn principal_matching() {
        let role = "arn:aws:iam::111122223333:role/path/deploy";
        let session = "arn:aws:sts::111122223333:assumed-role/deploy/ci-run";
        let oidc =
            "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC";
        let oidc_principal = format!(r#""Principal":{{"Federated":"{oidc}"}}"#);
        let oidc_principal = oidc_principal.as_str();
        let cases: Vec<(&str, Principal, bool)> = vec![
            (r#""Principal":"*""#, Principal::Anonymous, true),
            (r#""Principal":"*""#, google(), true),
            (
                r#""Principal":{"AWS":"*"}"#,
                Principal::Aws(role.into()),
                true,
            ),
            (r#""Principal":{"AWS":"*"}"#, google(), false),
            (r#""Principal":{"AWS":"*"}"#, Principal::Anonymous, false),
            (
                r#""Principal":{"AWS":"111122223333"}"#,
                Principal::Aws(role.into()),
                true,
            ),
            (
                r#""Principal":{"AWS":"111122223333"}"#,
                Principal::Aws(session.into()),
                true,
            ),
            (
                r#""Principal":{"AWS":"444455556666"}"#,
                Principal::Aws(role.into()),
                false,
            ),
            (
                r#""Principal":{"AWS":"arn:aws:iam::111122223333:root"}"#,
                Principal::Aws(role.into()),
                true,
            ),
            (
                r#""Principal":{"AWS":"arn:aws:iam::111122223333:root"}"#,
                Principal::Aws("arn:aws-cn:iam::111122223333:role/x".into()),
                false,
            ),
            (
                r#""Principal":{"AWS":"arn:aws:iam::111122223333:role/path/deploy"}"#,
                Principal::Aws(role.into()),
                true,
            ),
            (
                r#""Principal":{"AWS":"arn:aws:iam::111122223333:role/path/deploy"}"#,
                Principal::Aws(session.into()),
                true,
            ),
            (
                r#""Principal":{"AWS":"arn:aws:iam::111122223333:role/other"}"#,
                Principal::Aws(session.into()),
                false,
            ),
            (
                r#""Principal":{"AWS":"arn:aws:iam::111122223333:role/deploy"}"#,
                Principal::Aws("arn:aws:iam::111122223333:role/deploy2".into()),
                false,
            ),
            (
                r#""Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"}"#,
                Principal::Aws("arn:aws:iam::111122223333:user/Alice".into()),
                false,
            ),
            (
                r#""Principal":{"AWS":"arn:aws:iam::111122223333:role/path/deploy"}"#,
                Principal::Federated(role.into()),
                false,
            ),
            (
                r#""Principal":{"Federated":"accounts.google.com"}"#,
                google(),
                true,
            ),
            (
                r#""Principal":{"Federated":"Accounts.Google.com"}"#,
                google(),
                true,
            ),
            (
                r#""Principal":{"Federated":"accounts.google.com"}"#,
                Principal::Aws("arn:aws:iam::111122223333:root".into()),
                false,
            ),
            (
                r#""Principal":{"Federated":"cognito-identity.amazonaws.com"}"#,
                google(),
                false,
            ),
            (oidc_principal, Principal::Federated(oidc.into()), true),
            (
                oidc_principal,
                Principal::Federated(oidc.replace("oidc.eks", "OIDC.EKS")),
                true,
            ),
            (
                oidc_principal,
                Principal::Federated(oidc.replace("ABC", "abc")),
                false,
            ),
            (
                oidc_principal,
                Principal::Federated(oidc.replace("111122223333", "444455556666")),
                false,
            ),
            (
                oidc_principal,
                Principal::Federated("oidc.eks.us-east-1.amazonaws.com/id/ABC".into()),
                false,
            ),
            (
                r#""Principal":{"Service":"ec2.amazonaws.com"}"#,
                Principal::Service("ec2.amazonaws.com".into()),
                true,
            ),
            (
                r#""Principal":{"Service":["lambda.amazonaws.com","ec2.amazonaws.com"]}"#,
                Principal::Service("ec2.amazonaws.com".into()),
                true,
            ),
            (
                r#""Principal":{"Service":"ec2.amazonaws.com"}"#,
                Principal::Service("lambda.amazonaws.com".into()),
                false,
            ),
            (
                r#""Principal":{"CanonicalUser":"79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"}"#,
                Principal::Anonymous,
                false,
            ),
            (
                r#""NotPrincipal":{"Federated":"accounts.google.com"}"#,
                google(),
                false,
            ),
            (
                r#""NotPrincipal":{"Federated":"accounts.google.com"}"#,
                Principal::Anonymous,
                true,
            ),
            (
                r#""NotPrincipal":{"AWS":"111122223333"}"#,
                Principal::Aws(session.into()),
                false,
            ),
            (
                r#""NotPrincipal":{"AWS":"111122223333"}"#,
                Principal::Aws("arn:aws:iam::444455556666:root".into()),
                true,
            ),
        ];
        for (principal, caller, want) in cases {
            let p = one("Allow", principal, r#""Action":"*""#, "{}");
            let eval = evaluate(&p, &RequestContext::new(caller.clone(), WEB));
            assert_eq!(
                eval.statements[0].principal_matched, want,
                "{principal} vs {caller:?}"
            );
        }
    }

    #[test]
    fn not_principal_deny() {
        let p = policy(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole"},
                {"Effect":"Deny","NotPrincipal":{"AWS":"111122223333"},"Action":"sts:AssumeRole"}]}"#,
        );
        let inside = RequestContext::new(
            Principal::Aws("arn:aws:iam::111122223333:user/a".into()),
            "sts:AssumeRole",
        );
        let outside = RequestContext::new(
            Principal::Aws("arn:aws:iam::444455556666:user/a".into()),
            "sts:AssumeRole",
        );
        assert_eq!(evaluate(&p, &inside).decision, Decision::Allow);
        assert_eq!(evaluate(&p, &outside).decision, Decision::ExplicitDeny);
    }

    #[test]
    fn trace_records_everything() {
        let p = one(
            "Allow",
            r#""Principal":{"Federated":"accounts.google.com"}"#,
            r#""Action":"sts:AssumeRoleWithWebIdentity""#,
            r#"{"ForAnyValue:StringLike":{"Accounts.Google.com:Sub":["1*","2*"]},"Null":{"a:absent":"true"}}"#,
        );
        let ctx = RequestContext::new(Principal::Federated("other".into()), WEB)
            .with_multi_key("accounts.google.com:sub", ["3", "22"]);
        let eval = evaluate(&p, &ctx);
        assert_eq!(eval.decision, Decision::ImplicitDeny);
        assert_eq!(
            eval.statements,
            [StatementTrace {
                index: 0,
                sid: None,
                effect: Effect::Allow,
                principal_matched: false,
                action_matched: true,
                conditions: vec![
                    ConditionTrace {
                        operator: "ForAnyValue:StringLike".into(),
                        key: "Accounts.Google.com:Sub".into(),
                        context_values: Some(vec!["3".into(), "22".into()]),
                        policy_values: vec!["1*".into(), "2*".into()],
                        result: true,
                    },
                    ConditionTrace {
                        operator: "Null".into(),
                        key: "a:absent".into(),
                        context_values: None,
                        policy_values: vec!["true".into()],
                        result: true,
                    },
                ],
                matched: false,
            }]
        );
        let json = serde_json::to_value(&eval).unwrap();
        assert_eq!(json["decision"], "ImplicitDeny");
        assert_eq!(
            json["statements"][0]["conditions"][1]["context_values"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn context_keys_are_case_insensitive() {
        let ctx = RequestContext::new(Principal::Anonymous, "a:b")
            .with_key("AWS:SourceIp", "10.0.0.1")
            .with_multi_key("aws:TagKeys", ["a"]);
        assert_eq!(ctx.get("aws:sourceip"), Some(&s("10.0.0.1")));
        assert_eq!(ctx.get("AWS:TAGKEYS"), Some(&m(&["a"])));
        assert!(ctx.keys.contains_key("aws:sourceip"));
        let json = serde_json::to_value(&ctx).unwrap();
        assert_eq!(json["keys"]["aws:sourceip"], "10.0.0.1");
        assert_eq!(json["keys"]["aws:tagkeys"][0], "a");
    }
}
