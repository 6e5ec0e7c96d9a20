//! The IAM JSON policy grammar, as users write role trust policies.
//!
//! Accepted shape:
//!
//! ```text
//! { "Version": "2012-10-17" | "2008-10-17",        (optional; absent means 2008-10-17)
//!   "Id": "…",                                      (optional)
//!   "Statement": <statement> | [<statement>, …] }
//! <statement> = { "Sid": "…", "Effect": "Allow" | "Deny",
//!                 "Principal" | "NotPrincipal": "*" | { "AWS" | "Federated" | "Service"
//!                                                       | "CanonicalUser": "…" | ["…", …] },
//!                 "Action" | "NotAction": "…" | ["…", …],
//!                 "Resource" | "NotResource": "…" | ["…", …],   (accepted, not evaluated)
//!                 "Condition": { "<operator>": { "<key>": <value> | [<value>, …] } } }
//! ```
//!
//! Condition values may be strings, numbers or booleans; like AWS, they are kept as strings.
//! Element names are case-sensitive. A member given twice in the same object, an unknown element,
//! an empty list, `Principal` together with `NotPrincipal` (likewise `Action`/`NotAction`,
//! `Resource`/`NotResource`) are errors. Where the error AWS reports is known, [`MalformedPolicy`]
//! carries that message (`Syntax errors in policy.`, `The policy failed legacy parsing`,
//! `Invalid principal in policy: "AWS":"…"`, …); the detail always names the statement and field.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;

use super::condition::ConditionOperator;
use super::json::{self, Json};

/// A parsed role trust policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrustPolicy {
    /// The `Version` element as given; `None` when the document has none.
    pub version: Option<PolicyVersion>,
    /// The optional `Id` element.
    pub id: Option<String>,
    /// The statements, in document order.
    pub statements: Vec<Statement>,
}

/// The policy language version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PolicyVersion {
    /// `2008-10-17`: policy variables are not recognised (`${…}` is literal text).
    #[serde(rename = "2008-10-17")]
    V2008_10_17,
    /// `2012-10-17`: the current version, with policy variables.
    #[serde(rename = "2012-10-17")]
    V2012_10_17,
}

impl PolicyVersion {
    /// The version string as written in a policy.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyVersion::V2008_10_17 => "2008-10-17",
            PolicyVersion::V2012_10_17 => "2012-10-17",
        }
    }
}

/// One statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statement {
    /// Position in the policy's statement list, from 0.
    pub index: usize,
    /// The `Sid`, when given.
    pub sid: Option<String>,
    /// `Allow` or `Deny`.
    pub effect: Effect,
    /// `Principal` or `NotPrincipal`.
    pub principal: PrincipalSpec,
    /// `Action` or `NotAction`.
    pub action: ActionSpec,
    /// `Resource` or `NotResource`, when given. Not evaluated: a role trust policy's resource is
    /// the role itself. See [`TrustPolicy::validate_as_role_trust_policy`].
    pub resource: Option<ResourceSpec>,
    /// The conditions, flattened in document order (operator blocks, then keys within a block).
    pub conditions: Vec<Condition>,
}

/// A statement's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Effect {
    /// `"Effect": "Allow"`.
    Allow,
    /// `"Effect": "Deny"`.
    Deny,
}

/// The `Principal` or `NotPrincipal` element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PrincipalSpec {
    /// `"Principal": …` — the statement applies to these principals.
    Principal(PrincipalSet),
    /// `"NotPrincipal": …` — the statement applies to every principal except these.
    NotPrincipal(PrincipalSet),
}

/// The principals named by a `Principal` or `NotPrincipal` element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PrincipalSet {
    /// `"*"`: everyone, including anonymous callers.
    Wildcard,
    /// `{ "AWS": …, "Federated": …, … }`, flattened in document order.
    Listed(Vec<PrincipalEntry>),
}

/// One principal value with its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrincipalEntry {
    /// The key it was listed under.
    pub kind: PrincipalKind,
    /// The value as written.
    pub value: String,
}

/// The principal types of the `Principal` element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PrincipalKind {
    /// `"AWS"`: accounts, IAM users and roles, assumed-role sessions.
    Aws,
    /// `"Federated"`: web identity, OIDC and SAML providers.
    Federated,
    /// `"Service"`: AWS service principals such as `ec2.amazonaws.com`.
    Service,
    /// `"CanonicalUser"`: S3 canonical user ids.
    CanonicalUser,
}

impl PrincipalKind {
    /// The key as written in a policy.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Aws => "AWS",
            PrincipalKind::Federated => "Federated",
            PrincipalKind::Service => "Service",
            PrincipalKind::CanonicalUser => "CanonicalUser",
        }
    }

    fn from_key(key: &str) -> Option<PrincipalKind> {
        [
            PrincipalKind::Aws,
            PrincipalKind::Federated,
            PrincipalKind::Service,
            PrincipalKind::CanonicalUser,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == key)
    }
}

/// The `Action` or `NotAction` element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ActionSpec {
    /// `"Action": …` — the statement applies to these actions (wildcards allowed).
    Action(Vec<String>),
    /// `"NotAction": …` — the statement applies to every action except these.
    NotAction(Vec<String>),
}

/// The `Resource` or `NotResource` element (kept, not evaluated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ResourceSpec {
    /// `"Resource": …`.
    Resource(Vec<String>),
    /// `"NotResource": …`.
    NotResource(Vec<String>),
}

impl ResourceSpec {
    /// The element name as written.
    pub fn field_name(&self) -> &'static str {
        match self {
            ResourceSpec::Resource(_) => "Resource",
            ResourceSpec::NotResource(_) => "NotResource",
        }
    }
}

/// One condition: an operator applied to one key with one or more values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Condition {
    /// The operator name as written, e.g. `ForAnyValue:StringLike`.
    pub operator: String,
    /// The operator as parsed.
    pub parsed: ConditionOperator,
    /// The condition key as written, e.g. `accounts.google.com:aud`.
    pub key: String,
    /// The policy values, stringified as AWS does (`true`, `3600`).
    pub values: Vec<String>,
}

/// Why a policy document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum MalformedKind {
    /// The text is not JSON.
    InvalidJson,
    /// The JSON does not follow the policy grammar.
    Syntax,
    /// The `Version` element is not a known version.
    LegacyParsing,
    /// A required element is missing.
    MissingField(&'static str),
    /// An element a role trust policy must not have (see
    /// [`TrustPolicy::validate_as_role_trust_policy`]).
    ProhibitedField(&'static str),
    /// A principal value that cannot name a principal; holds `"Type":"value"`.
    InvalidPrincipal(String),
    /// An action or condition key without a `service:` prefix.
    VendorPrefix,
    /// A `Sid` with characters other than ASCII letters and digits.
    SidNotAlphanumeric,
    /// Two statements with the same `Sid`.
    DuplicateSid,
}

/// A policy document that IAM would reject with `MalformedPolicyDocument`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MalformedPolicy {
    kind: MalformedKind,
    detail: String,
}

impl MalformedPolicy {
    fn new(kind: MalformedKind, detail: impl Into<String>) -> Self {
        MalformedPolicy {
            kind,
            detail: detail.into(),
        }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> &MalformedKind {
        &self.kind
    }

    /// The message in the style IAM returns with `MalformedPolicyDocument`.
    pub fn aws_message(&self) -> String {
        match &self.kind {
            MalformedKind::InvalidJson => "This policy contains invalid Json".to_owned(),
            MalformedKind::Syntax => "Syntax errors in policy.".to_owned(),
            MalformedKind::LegacyParsing => "The policy failed legacy parsing".to_owned(),
            MalformedKind::MissingField(field) => format!("Missing required field {field}"),
            MalformedKind::ProhibitedField(field) => format!("Has prohibited field {field}"),
            MalformedKind::InvalidPrincipal(principal) => {
                format!("Invalid principal in policy: {principal}")
            }
            MalformedKind::VendorPrefix => {
                "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc."
                    .to_owned()
            }
            MalformedKind::SidNotAlphanumeric => {
                "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the \
                 regular expression [0-9A-Za-z]*"
                    .to_owned()
            }
            MalformedKind::DuplicateSid => {
                "Statement IDs (SID) in a single policy must be unique.".to_owned()
            }
        }
    }

    /// Where and what exactly, e.g. `statement 1 (Sid "Google"): unknown field "Conditions"`.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for MalformedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.aws_message(), self.detail)
    }
}

impl std::error::Error for MalformedPolicy {}

fn syntax(detail: impl Into<String>) -> MalformedPolicy {
    MalformedPolicy::new(MalformedKind::Syntax, detail)
}

impl TrustPolicy {
    /// Parses a trust policy document. Never panics, whatever the input.
    pub fn parse(text: &str) -> Result<TrustPolicy, MalformedPolicy> {
        let doc = json::parse(text)
            .map_err(|err| MalformedPolicy::new(MalformedKind::InvalidJson, err.to_string()))?;
        let Json::Object(members) = &doc else {
            return Err(syntax(format!(
                "the policy document is {} instead of an object",
                doc.type_name()
            )));
        };
        let mut version = None;
        let mut id = None;
        let mut statement = None;
        for (name, value) in unique_fields(members, &"the policy document")? {
            match name {
                "Version" => version = Some(parse_version(value)?),
                "Id" => {
                    let Json::String(text) = value else {
                        return Err(syntax(format!("Id is {}, not a string", value.type_name())));
                    };
                    id = Some(text.clone());
                }
                "Statement" => statement = Some(value),
                other => return Err(syntax(format!("unknown top-level field {other:?}"))),
            }
        }
        let Some(statement) = statement else {
            return Err(MalformedPolicy::new(
                MalformedKind::MissingField("Statement"),
                "the policy document has no Statement",
            ));
        };
        let items: Vec<&Json> = match statement {
            Json::Array(items) => items.iter().collect(),
            one @ Json::Object(_) => vec![one],
            other => {
                return Err(syntax(format!(
                    "Statement is {}, not an object or a list of objects",
                    other.type_name()
                )));
            }
        };
        if items.is_empty() {
            return Err(syntax("Statement is an empty list"));
        }
        let statements = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| parse_statement(index, item))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sids = HashSet::new();
        for statement in &statements {
            if let Some(sid) = statement.sid.as_deref().filter(|sid| !sid.is_empty())
                && !sids.insert(sid)
            {
                return Err(MalformedPolicy::new(
                    MalformedKind::DuplicateSid,
                    format!("{}: Sid {sid:?} is used twice", Loc::of(statement)),
                ));
            }
        }
        Ok(TrustPolicy {
            version,
            id,
            statements,
        })
    }

    /// The version the policy is evaluated under: the `Version` element, or `2008-10-17` when the
    /// document has none.
    pub fn effective_version(&self) -> PolicyVersion {
        self.version.unwrap_or(PolicyVersion::V2008_10_17)
    }

    /// The checks IAM adds when the document is set as a role's trust policy
    /// (`CreateRole`/`UpdateAssumeRolePolicy`) beyond the general grammar: a trust policy must
    /// not have `Resource` or `NotResource` (`Has prohibited field Resource`). [`TrustPolicy::parse`]
    /// accepts them so that a document can still be explained.
    pub fn validate_as_role_trust_policy(&self) -> Result<(), MalformedPolicy> {
        for statement in &self.statements {
            if let Some(resource) = &statement.resource {
                return Err(MalformedPolicy::new(
                    MalformedKind::ProhibitedField(resource.field_name()),
                    format!(
                        "{}: a role trust policy must not have {}",
                        Loc::of(statement),
                        resource.field_name()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A statement's position, for messages: `statement 2` or `statement 2 (Sid "Google")`.
struct Loc<'a> {
    index: usize,
    sid: Option<&'a str>,
}

impl<'a> Loc<'a> {
    fn of(statement: &'a Statement) -> Self {
        Loc {
            index: statement.index,
            sid: statement.sid.as_deref(),
        }
    }
}

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sid {
            Some(sid) => write!(f, "statement {} (Sid {sid:?})", self.index),
            None => write!(f, "statement {}", self.index),
        }
    }
}

/// The members of an object, refusing a member name given twice.
fn unique_fields<'a>(
    members: &'a [(String, Json)],
    whose: &dyn fmt::Display,
) -> Result<Vec<(&'a str, &'a Json)>, MalformedPolicy> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(members.len());
    for (name, value) in members {
        if !seen.insert(name.as_str()) {
            return Err(syntax(format!(
                "{whose} has the field {name:?} more than once"
            )));
        }
        out.push((name.as_str(), value));
    }
    Ok(out)
}

fn parse_version(value: &Json) -> Result<PolicyVersion, MalformedPolicy> {
    match value {
        Json::String(v) if v == "2012-10-17" => Ok(PolicyVersion::V2012_10_17),
        Json::String(v) if v == "2008-10-17" => Ok(PolicyVersion::V2008_10_17),
        other => Err(MalformedPolicy::new(
            MalformedKind::LegacyParsing,
            format!(
                "Version must be \"2012-10-17\" or \"2008-10-17\", not {}",
                describe(other)
            ),
        )),
    }
}

/// A short description of a JSON value for messages: strings quoted, others by type.
fn describe(value: &Json) -> String {
    match value {
        Json::String(s) => format!("{s:?}"),
        Json::Number(n) => n.clone(),
        other => other.type_name().to_owned(),
    }
}

fn parse_statement(index: usize, item: &Json) -> Result<Statement, MalformedPolicy> {
    let Json::Object(members) = item else {
        return Err(syntax(format!(
            "statement {index} is {} instead of an object",
            item.type_name()
        )));
    };
    let fields = unique_fields(members, &format!("statement {index}"))?;
    let sid = match fields.iter().find(|(name, _)| *name == "Sid") {
        None => None,
        Some((_, Json::String(sid))) => Some(sid.clone()),
        Some((_, other)) => {
            return Err(syntax(format!(
                "statement {index}: Sid is {}, not a string",
                other.type_name()
            )));
        }
    };
    let loc = Loc {
        index,
        sid: sid.as_deref(),
    };
    if let Some(sid) = &sid
        && !sid.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(MalformedPolicy::new(
            MalformedKind::SidNotAlphanumeric,
            format!("{loc}: Sid may only contain ASCII letters and digits"),
        ));
    }

    let mut effect = None;
    let mut principal = None;
    let mut action = None;
    let mut resource = None;
    let mut conditions = Vec::new();
    let conflict = |a: &str, b: &str| syntax(format!("{loc} has both {a} and {b}"));
    for (name, value) in fields {
        match name {
            "Sid" => {}
            "Effect" => effect = Some(parse_effect(value, &loc)?),
            "Principal" | "NotPrincipal" => {
                if principal.is_some() {
                    return Err(conflict("Principal", "NotPrincipal"));
                }
                let set = parse_principal(value, name, &loc)?;
                principal = Some(if name == "Principal" {
                    PrincipalSpec::Principal(set)
                } else {
                    PrincipalSpec::NotPrincipal(set)
                });
            }
            "Action" | "NotAction" => {
                if action.is_some() {
                    return Err(conflict("Action", "NotAction"));
                }
                let actions = string_list(value, name, &loc)?;
                for action in &actions {
                    check_action(action, name, &loc)?;
                }
                action = Some(if name == "Action" {
                    ActionSpec::Action(actions)
                } else {
                    ActionSpec::NotAction(actions)
                });
            }
            "Resource" | "NotResource" => {
                if resource.is_some() {
                    return Err(conflict("Resource", "NotResource"));
                }
                let resources = string_list(value, name, &loc)?;
                resource = Some(if name == "Resource" {
                    ResourceSpec::Resource(resources)
                } else {
                    ResourceSpec::NotResource(resources)
                });
            }
            "Condition" => conditions = parse_conditions(value, &loc)?,
            other => return Err(syntax(format!("{loc}: unknown field {other:?}"))),
        }
    }
    let missing = |field: &'static str| {
        MalformedPolicy::new(
            MalformedKind::MissingField(field),
            format!("{loc} has no {field}"),
        )
    };
    Ok(Statement {
        index,
        effect: effect.ok_or_else(|| missing("Effect"))?,
        principal: principal.ok_or_else(|| missing("Principal"))?,
        action: action.ok_or_else(|| missing("Action"))?,
        resource,
        conditions,
        sid,
    })
}

fn parse_effect(value: &Json, loc: &Loc<'_>) -> Result<Effect, MalformedPolicy> {
    match value {
        Json::String(v) if v == "Allow" => Ok(Effect::Allow),
        Json::String(v) if v == "Deny" => Ok(Effect::Deny),
        other => Err(syntax(format!(
            "{loc}: Effect must be \"Allow\" or \"Deny\", not {}",
            describe(other)
        ))),
    }
}

/// A string or a non-empty list of strings.
fn string_list(value: &Json, field: &str, loc: &Loc<'_>) -> Result<Vec<String>, MalformedPolicy> {
    match value {
        Json::String(s) => Ok(vec![s.clone()]),
        Json::Array(items) if items.is_empty() => {
            Err(syntax(format!("{loc}: {field} is an empty list")))
        }
        Json::Array(items) => items
            .iter()
            .map(|item| match item {
                Json::String(s) => Ok(s.clone()),
                other => Err(syntax(format!(
                    "{loc}: {field} lists {}, not a string",
                    other.type_name()
                ))),
            })
            .collect(),
        other => Err(syntax(format!(
            "{loc}: {field} is {}, not a string or a list of strings",
            other.type_name()
        ))),
    }
}

fn check_action(action: &str, field: &str, loc: &Loc<'_>) -> Result<(), MalformedPolicy> {
    let prefixed = action
        .split_once(':')
        .is_some_and(|(service, name)| !service.is_empty() && !name.is_empty());
    if action == "*" || prefixed {
        Ok(())
    } else {
        Err(MalformedPolicy::new(
            MalformedKind::VendorPrefix,
            format!("{loc}: {field} {action:?} has no service prefix"),
        ))
    }
}

fn parse_principal(
    value: &Json,
    field: &str,
    loc: &Loc<'_>,
) -> Result<PrincipalSet, MalformedPolicy> {
    let members = match value {
        Json::String(s) if s == "*" => return Ok(PrincipalSet::Wildcard),
        Json::Object(members) => members,
        Json::String(s) => {
            return Err(MalformedPolicy::new(
                MalformedKind::InvalidPrincipal(format!("{s:?}")),
                format!("{loc}: {field} must be \"*\" or an object such as {{\"AWS\": \"…\"}}"),
            ));
        }
        other => {
            return Err(syntax(format!(
                "{loc}: {field} is {}, not \"*\" or an object",
                other.type_name()
            )));
        }
    };
    if members.is_empty() {
        return Err(syntax(format!("{loc}: {field} is an empty object")));
    }
    let mut entries = Vec::new();
    for (key, values) in unique_fields(members, &format!("{loc}: {field}"))? {
        let Some(kind) = PrincipalKind::from_key(key) else {
            return Err(MalformedPolicy::new(
                MalformedKind::InvalidPrincipal(format!("{key:?}:{}", describe(values))),
                format!(
                    "{loc}: {field} has the principal type {key:?}; \
                     expected AWS, Federated, Service or CanonicalUser"
                ),
            ));
        };
        for value in string_list(values, &format!("{field}.{key}"), loc)? {
            if !principal_value_is_valid(kind, &value) {
                return Err(MalformedPolicy::new(
                    MalformedKind::InvalidPrincipal(format!("{key:?}:{value:?}")),
                    format!("{loc}: {field}.{key} {value:?} is not a valid {key} principal"),
                ));
            }
            entries.push(PrincipalEntry { kind, value });
        }
    }
    Ok(PrincipalSet::Listed(entries))
}

/// Syntactic validity of a principal value. IAM also checks that named users and roles exist;
/// that cannot be done here.
fn principal_value_is_valid(kind: PrincipalKind, value: &str) -> bool {
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        return false;
    }
    match kind {
        PrincipalKind::Aws => value == "*" || is_account_id(value) || is_principal_arn(value),
        PrincipalKind::Federated | PrincipalKind::Service | PrincipalKind::CanonicalUser => true,
    }
}

pub(crate) fn is_account_id(value: &str) -> bool {
    value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit())
}

/// `arn:<partition>:iam|sts::<account>:<resource>` without wildcards (IAM rejects wildcards in
/// principal ARNs; `"*"` alone is the only wildcard principal).
fn is_principal_arn(value: &str) -> bool {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    matches!(
        parts.as_slice(),
        ["arn", partition, "iam" | "sts", "", account, resource]
            if !partition.is_empty() && is_account_id(account) && !resource.is_empty()
    ) && !value.contains(['*', '?'])
}

fn parse_conditions(value: &Json, loc: &Loc<'_>) -> Result<Vec<Condition>, MalformedPolicy> {
    let Json::Object(blocks) = value else {
        return Err(syntax(format!(
            "{loc}: Condition is {}, not an object",
            value.type_name()
        )));
    };
    let mut conditions = Vec::new();
    for (operator, body) in unique_fields(blocks, &format!("{loc}: Condition"))? {
        let parsed = ConditionOperator::parse(operator)
            .map_err(|why| syntax(format!("{loc}: Condition: {why}")))?;
        let Json::Object(keys) = body else {
            return Err(syntax(format!(
                "{loc}: Condition.{operator} is {}, not an object of keys and values",
                body.type_name()
            )));
        };
        for (key, values) in unique_fields(keys, &format!("{loc}: Condition.{operator}"))? {
            let prefixed = key
                .split_once(':')
                .is_some_and(|(vendor, name)| !vendor.is_empty() && !name.is_empty());
            if !prefixed {
                return Err(MalformedPolicy::new(
                    MalformedKind::VendorPrefix,
                    format!("{loc}: condition key {key:?} has no service prefix"),
                ));
            }
            let where_ = format!("{loc}: Condition.{operator}.{key}");
            conditions.push(Condition {
                operator: operator.to_owned(),
                parsed,
                key: key.to_owned(),
                values: condition_values(values, &where_)?,
            });
        }
    }
    Ok(conditions)
}

/// A scalar or a non-empty list of scalars, each stringified.
fn condition_values(value: &Json, where_: &str) -> Result<Vec<String>, MalformedPolicy> {
    let scalar = |item: &Json| match item {
        Json::String(s) | Json::Number(s) => Ok(s.clone()),
        Json::Bool(b) => Ok(b.to_string()),
        other => Err(syntax(format!(
            "{where_}: a condition value cannot be {}",
            other.type_name()
        ))),
    };
    match value {
        Json::Array(items) if items.is_empty() => {
            Err(syntax(format!("{where_}: the value list is empty")))
        }
        Json::Array(items) => items.iter().map(scalar).collect(),
        other => Ok(vec![scalar(other)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::condition::OperatorKind;

    const GOOGLE: &str = r#"{
        "Version": "2012-10-17",
        "Id": "trust",
        "Statement": [
            {
                "Sid": "Google",
                "Effect": "Allow",
                "Principal": {"Federated": "accounts.google.com"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        "accounts.google.com:aud": "123",
                        "accounts.google.com:sub": ["1", "2"]
                    },
                    "NumericLessThan": {"aws:MultiFactorAuthAge": 3600},
                    "Bool": {"aws:SecureTransport": true}
                }
            },
            {
                "Effect": "Deny",
                "NotPrincipal": {"AWS": ["123456789012", "arn:aws:iam::123456789012:role/x"]},
                "NotAction": ["sts:TagSession"]
            }
        ]
    }"#;

    #[test]
    fn parses_full_document() {
        let policy = TrustPolicy::parse(GOOGLE).unwrap();
        assert_eq!(policy.version, Some(PolicyVersion::V2012_10_17));
        assert_eq!(policy.id.as_deref(), Some("trust"));
        assert_eq!(policy.statements.len(), 2);
        let first = &policy.statements[0];
        assert_eq!(first.index, 0);
        assert_eq!(first.sid.as_deref(), Some("Google"));
        assert_eq!(first.effect, Effect::Allow);
        assert_eq!(
            first.principal,
            PrincipalSpec::Principal(PrincipalSet::Listed(vec![PrincipalEntry {
                kind: PrincipalKind::Federated,
                value: "accounts.google.com".into()
            }]))
        );
        assert_eq!(
            first.action,
            ActionSpec::Action(vec!["sts:AssumeRoleWithWebIdentity".into()])
        );
        let summary: Vec<(&str, OperatorKind, &str, Vec<&str>)> = first
            .conditions
            .iter()
            .map(|c| {
                (
                    c.operator.as_str(),
                    c.parsed.kind,
                    c.key.as_str(),
                    c.values.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "StringEquals",
                    OperatorKind::StringEquals,
                    "accounts.google.com:aud",
                    vec!["123"]
                ),
                (
                    "StringEquals",
                    OperatorKind::StringEquals,
                    "accounts.google.com:sub",
                    vec!["1", "2"]
                ),
                (
                    "NumericLessThan",
                    OperatorKind::NumericLessThan,
                    "aws:MultiFactorAuthAge",
                    vec!["3600"]
                ),
                (
                    "Bool",
                    OperatorKind::Bool,
                    "aws:SecureTransport",
                    vec!["true"]
                ),
            ]
        );
        let second = &policy.statements[1];
        assert_eq!(second.sid, None);
        assert_eq!(second.effect, Effect::Deny);
        assert!(matches!(
            &second.principal,
            PrincipalSpec::NotPrincipal(PrincipalSet::Listed(entries)) if entries.len() == 2
        ));
        assert_eq!(
            second.action,
            ActionSpec::NotAction(vec!["sts:TagSession".into()])
        );
    }

    #[test]
    fn statement_as_object_and_missing_version() {
        let policy = TrustPolicy::parse(
            r#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*"}}"#,
        )
        .unwrap();
        assert_eq!(policy.version, None);
        assert_eq!(policy.effective_version(), PolicyVersion::V2008_10_17);
        assert_eq!(policy.statements.len(), 1);
        assert_eq!(
            policy.statements[0].principal,
            PrincipalSpec::Principal(PrincipalSet::Wildcard)
        );
    }

    #[test]
    fn statement_order_is_kept() {
        let policy = TrustPolicy::parse(
            r#"{"Version":"2012-10-17","Statement":[
                {"Sid":"c","Effect":"Allow","Principal":"*","Action":"*"},
                {"Sid":"a","Effect":"Allow","Principal":"*","Action":"*"},
                {"Sid":"b","Effect":"Allow","Principal":"*","Action":"*"}]}"#,
        )
        .unwrap();
        let sids: Vec<_> = policy
            .statements
            .iter()
            .map(|s| (s.index, s.sid.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(sids, [(0, "c"), (1, "a"), (2, "b")]);
    }

    #[test]
    fn resource_is_accepted_but_prohibited_for_roles() {
        let policy = TrustPolicy::parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*",
                "Action":"sts:AssumeRole","Resource":"*"}]}"#,
        )
        .unwrap();
        let err = policy.validate_as_role_trust_policy().unwrap_err();
        assert_eq!(err.kind(), &MalformedKind::ProhibitedField("Resource"));
        assert_eq!(err.aws_message(), "Has prohibited field Resource");
        TrustPolicy::parse(GOOGLE)
            .unwrap()
            .validate_as_role_trust_policy()
            .unwrap();
    }

    /// Wraps a statement body in a valid document.
    fn doc(statement: &str) -> String {
        format!(r#"{{"Version":"2012-10-17","Statement":[{statement}]}}"#)
    }

    const OK: &str = r#""Effect":"Allow","Principal":{"Federated":"accounts.google.com"},"Action":"sts:AssumeRoleWithWebIdentity""#;

    #[test]
    fn malformed_documents() {
        let stmt = |extra: &str| doc(&format!("{{{OK}{extra}}}"));
        let cases: Vec<(String, MalformedKind, &str)> = vec![
            ("".into(), MalformedKind::InvalidJson, ""),
            ("{".into(), MalformedKind::InvalidJson, ""),
            ("[]".into(), MalformedKind::Syntax, "instead of an object"),
            (
                r#"{"Version":"2012-10-17"}"#.into(),
                MalformedKind::MissingField("Statement"),
                "no Statement",
            ),
            (
                r#"{"Version":"2012-10-18","Statement":[]}"#.into(),
                MalformedKind::LegacyParsing,
                "2012-10-18",
            ),
            (
                r#"{"Version":2012,"Statement":[]}"#.into(),
                MalformedKind::LegacyParsing,
                "not 2012",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[]}"#.into(),
                MalformedKind::Syntax,
                "empty list",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":"x"}"#.into(),
                MalformedKind::Syntax,
                "Statement is a string",
            ),
            (
                r#"{"Version":"2012-10-17","Extra":1,"Statement":[]}"#.into(),
                MalformedKind::Syntax,
                "unknown top-level field \"Extra\"",
            ),
            (
                r#"{"Version":"2012-10-17","Version":"2012-10-17","Statement":[]}"#.into(),
                MalformedKind::Syntax,
                "\"Version\" more than once",
            ),
            (doc("1"), MalformedKind::Syntax, "statement 0 is a number"),
            (
                stmt(r#","Sid":"a b""#),
                MalformedKind::SidNotAlphanumeric,
                "statement 0",
            ),
            (
                stmt(r#","Sid":7"#),
                MalformedKind::Syntax,
                "Sid is a number",
            ),
            (
                doc(&format!(r#"{{"Sid":"x",{OK}}},{{"Sid":"x",{OK}}}"#)),
                MalformedKind::DuplicateSid,
                "statement 1 (Sid \"x\")",
            ),
            (
                stmt(r#","Conditon":{}"#),
                MalformedKind::Syntax,
                "unknown field \"Conditon\"",
            ),
            (
                stmt(r#","Effect":"Allow""#),
                MalformedKind::Syntax,
                "\"Effect\" more than once",
            ),
            (
                doc(r#"{"Principal":"*","Action":"*"}"#),
                MalformedKind::MissingField("Effect"),
                "statement 0 has no Effect",
            ),
            (
                doc(r#"{"Effect":"allow","Principal":"*","Action":"*"}"#),
                MalformedKind::Syntax,
                "Effect must be",
            ),
            (
                doc(r#"{"Effect":"Allow","Action":"*"}"#),
                MalformedKind::MissingField("Principal"),
                "no Principal",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":"*"}"#),
                MalformedKind::MissingField("Action"),
                "no Action",
            ),
            (
                stmt(r#","NotPrincipal":"*""#),
                MalformedKind::Syntax,
                "both Principal and NotPrincipal",
            ),
            (
                stmt(r#","NotAction":"*""#),
                MalformedKind::Syntax,
                "both Action and NotAction",
            ),
            (
                stmt(r#","Resource":"*","NotResource":"*""#),
                MalformedKind::Syntax,
                "both Resource and NotResource",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":"accounts.google.com","Action":"*"}"#),
                MalformedKind::InvalidPrincipal("\"accounts.google.com\"".into()),
                "must be \"*\" or an object",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":{"Google":"x"},"Action":"*"}"#),
                MalformedKind::InvalidPrincipal("\"Google\":\"x\"".into()),
                "principal type \"Google\"",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"*"}"#),
                MalformedKind::InvalidPrincipal("\"AWS\":\"alice\"".into()),
                "not a valid AWS principal",
            ),
            (
                doc(
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/*"},"Action":"*"}"#,
                ),
                MalformedKind::InvalidPrincipal(
                    "\"AWS\":\"arn:aws:iam::123456789012:role/*\"".into(),
                ),
                "not a valid AWS principal",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:s3:::bucket"},"Action":"*"}"#),
                MalformedKind::InvalidPrincipal("\"AWS\":\"arn:aws:s3:::bucket\"".into()),
                "not a valid AWS principal",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":{"Federated":""},"Action":"*"}"#),
                MalformedKind::InvalidPrincipal("\"Federated\":\"\"".into()),
                "not a valid Federated principal",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":{},"Action":"*"}"#),
                MalformedKind::Syntax,
                "Principal is an empty object",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":{"AWS":[]},"Action":"*"}"#),
                MalformedKind::Syntax,
                "Principal.AWS is an empty list",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":{"AWS":"*","AWS":"*"},"Action":"*"}"#),
                MalformedKind::Syntax,
                "\"AWS\" more than once",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":7,"Action":"*"}"#),
                MalformedKind::Syntax,
                "Principal is a number",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":"*","Action":"AssumeRole"}"#),
                MalformedKind::VendorPrefix,
                "\"AssumeRole\" has no service prefix",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":"*","Action":["sts:AssumeRole", 1]}"#),
                MalformedKind::Syntax,
                "Action lists a number",
            ),
            (
                doc(r#"{"Effect":"Allow","Principal":"*","Action":[]}"#),
                MalformedKind::Syntax,
                "Action is an empty list",
            ),
            (
                stmt(r#","Condition":[]"#),
                MalformedKind::Syntax,
                "Condition is a list",
            ),
            (
                stmt(r#","Condition":{"StringEqual":{"a:b":"c"}}"#),
                MalformedKind::Syntax,
                "unknown condition operator \"StringEqual\"",
            ),
            (
                stmt(r#","Condition":{"NullIfExists":{"a:b":"true"}}"#),
                MalformedKind::Syntax,
                "IfExists",
            ),
            (
                stmt(r#","Condition":{"StringEquals":"a:b"}"#),
                MalformedKind::Syntax,
                "Condition.StringEquals is a string",
            ),
            (
                stmt(r#","Condition":{"StringEquals":{"a:b":"c"},"StringEquals":{"a:b":"d"}}"#),
                MalformedKind::Syntax,
                "\"StringEquals\" more than once",
            ),
            (
                stmt(r#","Condition":{"StringEquals":{"a:b":"c","a:b":"d"}}"#),
                MalformedKind::Syntax,
                "\"a:b\" more than once",
            ),
            (
                stmt(r#","Condition":{"StringEquals":{"aud":"c"}}"#),
                MalformedKind::VendorPrefix,
                "condition key \"aud\"",
            ),
            (
                stmt(r#","Condition":{"StringEquals":{"a:b":null}}"#),
                MalformedKind::Syntax,
                "cannot be null",
            ),
            (
                stmt(r#","Condition":{"StringEquals":{"a:b":{"c":"d"}}}"#),
                MalformedKind::Syntax,
                "cannot be an object",
            ),
            (
                stmt(r#","Condition":{"StringEquals":{"a:b":[["c"]]}}"#),
                MalformedKind::Syntax,
                "cannot be a list",
            ),
            (
                stmt(r#","Condition":{"StringEquals":{"a:b":[]}}"#),
                MalformedKind::Syntax,
                "value list is empty",
            ),
        ];
        for (text, kind, detail) in cases {
            let err = TrustPolicy::parse(&text).unwrap_err();
            assert_eq!(err.kind(), &kind, "{text}: {err}");
            assert!(
                err.detail().contains(detail),
                "{text}: {:?} lacks {detail:?}",
                err.detail()
            );
        }
    }

    #[test]
    fn condition_values_are_stringified() {
        let policy = TrustPolicy::parse(&doc(&format!(
            r#"{{{OK},"Condition":{{"StringEquals":{{"a:b":[1, -2, 1.5, true, false, "x"]}}}}}}"#
        )))
        .unwrap();
        assert_eq!(
            policy.statements[0].conditions[0].values,
            ["1", "-2", "1.5", "true", "false", "x"]
        );
    }

    #[test]
    fn error_display_is_one_line() {
        let err = TrustPolicy::parse(&doc(
            r#"{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"*"}"#,
        ))
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(
            text,
            "Invalid principal in policy: \"AWS\":\"bob\" (statement 0: Principal.AWS \"bob\" is \
             not a valid AWS principal)"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn valid_principal_values() {
        let ok = [
            (PrincipalKind::Aws, "*"),
            (PrincipalKind::Aws, "123456789012"),
            (PrincipalKind::Aws, "arn:aws:iam::123456789012:root"),
            (
                PrincipalKind::Aws,
                "arn:aws:iam::123456789012:role/path/name",
            ),
            (
                PrincipalKind::Aws,
                "arn:aws-cn:iam::123456789012:user/alice",
            ),
            (
                PrincipalKind::Aws,
                "arn:aws:sts::123456789012:assumed-role/r/session",
            ),
            (PrincipalKind::Federated, "accounts.google.com"),
            (
                PrincipalKind::Federated,
                "arn:aws:iam::123456789012:oidc-provider/example.com",
            ),
            (PrincipalKind::Service, "ec2.amazonaws.com"),
        ];
        for (kind, value) in ok {
            assert!(principal_value_is_valid(kind, value), "{value}");
        }
        let bad = [
            (PrincipalKind::Aws, "12345678901"),
            (
                PrincipalKind::Aws,
                "arn:aws:iam:us-east-1:123456789012:root",
            ),
            (PrincipalKind::Aws, "arn:aws:iam::123456789012:"),
            (PrincipalKind::Aws, "arn:aws:iam::12345678901x:root"),
            (PrincipalKind::Aws, "arn:aws:iam::123456789012:role/a?"),
            (PrincipalKind::Service, "ec2 .amazonaws.com"),
        ];
        for (kind, value) in bad {
            assert!(!principal_value_is_valid(kind, value), "{value}");
        }
    }
}
