//! Known traps in web-identity trust policies.
//!
//! Each [`Warning`] has a stable code (see [`codes`]) and says what to change. The checks:
//!
//! * `google-aud-is-azp` — for Google service-account ID tokens AWS compares
//!   `accounts.google.com:aud` with the token's `azp` (the service account's numeric unique id or
//!   e-mail), not with its `aud`. A `:aud` value that looks like neither (nor like an OAuth client
//!   id) is most likely the target audience, which belongs in `accounts.google.com:oaud`.
//! * `no-subject-restriction` — an `Allow` for a federated provider without a condition that pins
//!   the workload: `:aud` or `:sub` for Google (else any Google account can assume the role),
//!   `:aud` (the identity pool) for Cognito, `:sub` for other OIDC providers (their `aud` is
//!   already checked against the IAM provider's client-id list, which does not tell workloads
//!   apart).
//! * `audience-not-acled` — (info) a Google statement whose only identity condition is on
//!   `:oaud`: any service account can mint an ID token for any audience, so an audience alone
//!   identifies nobody.
//! * `missing-null-check` — an `Allow` condition on a provider key that is true when the token
//!   lacks the key: `…IfExists`, negated operators (`StringNotEquals`, …) and `ForAllValues:`,
//!   without `"Null": {"<key>": "false"}` in the same statement. (A plain `StringEquals` or
//!   `StringLike` needs no null check, since an absent key already fails it; that is why
//!   `StringEquals` on `accounts.google.com:oaud` is not reported.)
//! * `bare-wildcard` — `StringLike`/`ArnLike`/`ArnEquals` with the value `*`: it only requires
//!   the key to be present.
//! * `principal-wildcard` — `"Principal": "*"` (or `{"AWS": "*"}`) on an `Allow`.
//! * `prohibited-resource` — `Resource`/`NotResource`: IAM rejects it in a role trust policy.
//! * `invalid-condition-value` — a value the operator cannot read (a non-number for `Numeric…`,
//!   a bad CIDR, an ARN pattern without six components, …); it never matches.
//! * `unsupported-provider-key` — a Google or Cognito key AWS does not set (e.g.
//!   `accounts.google.com:email`); it is always absent.
//! * `literal-variable` — `${…}` in a policy without `"Version": "2012-10-17"`, where it is
//!   literal text rather than a variable.

use serde::Serialize;

use super::condition::{self, OperatorKind, SetOperator};
use super::pattern;
use super::policy::{
    Condition, Effect, PolicyVersion, PrincipalKind, PrincipalSet, PrincipalSpec, Statement,
    TrustPolicy,
};

/// The stable codes of [`Warning`]s.
pub mod codes {
    /// `accounts.google.com:aud` holds something that is not an `azp` value.
    pub const GOOGLE_AUD_IS_AZP: &str = "google-aud-is-azp";
    /// A federated `Allow` without a condition that identifies the workload.
    pub const NO_SUBJECT_RESTRICTION: &str = "no-subject-restriction";
    /// The only Google restriction is on the (freely chosen) audience.
    pub const AUDIENCE_NOT_ACLED: &str = "audience-not-acled";
    /// A condition that an absent key satisfies, without a `Null` check.
    pub const MISSING_NULL_CHECK: &str = "missing-null-check";
    /// A `…Like` condition whose value is a lone `*`.
    pub const BARE_WILDCARD: &str = "bare-wildcard";
    /// `Principal: "*"` on an `Allow`.
    pub const PRINCIPAL_WILDCARD: &str = "principal-wildcard";
    /// `Resource` in a trust policy.
    pub const PROHIBITED_RESOURCE: &str = "prohibited-resource";
    /// A condition value the operator cannot read.
    pub const INVALID_CONDITION_VALUE: &str = "invalid-condition-value";
    /// A provider condition key AWS never sets.
    pub const UNSUPPORTED_PROVIDER_KEY: &str = "unsupported-provider-key";
    /// A policy variable in a policy where variables are not recognised.
    pub const LITERAL_VARIABLE: &str = "literal-variable";
}

/// How much a warning matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Severity {
    /// The policy probably does not do what its author meant, or is too open.
    Warning,
    /// Worth knowing; not necessarily wrong.
    Info,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// A stable code from [`codes`].
    pub code: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// What is wrong and what to do, in one or two sentences.
    pub message: String,
    /// The statement's index, when the finding is about one statement.
    pub statement: Option<usize>,
}

const GOOGLE: &str = "accounts.google.com";
const COGNITO: &str = "cognito-identity.amazonaws.com";

/// The keys AWS sets for the built-in providers.
const GOOGLE_KEYS: [&str; 3] = ["aud", "oaud", "sub"];
const COGNITO_KEYS: [&str; 3] = ["aud", "sub", "amr"];

/// A federated provider named by a statement's `Principal`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Provider<'a> {
    Google,
    Cognito,
    /// An IAM OIDC provider, by its name (the ARN's part after `oidc-provider/`).
    Oidc(&'a str),
}

impl Provider<'_> {
    fn name(&self) -> &str {
        match self {
            Provider::Google => GOOGLE,
            Provider::Cognito => COGNITO,
            Provider::Oidc(name) => name,
        }
    }
}

/// Checks `policy` for known traps. Findings come in statement order.
pub fn lint(policy: &TrustPolicy) -> Vec<Warning> {
    let mut out = Vec::new();
    for statement in &policy.statements {
        lint_statement(policy, statement, &mut out);
    }
    out
}

fn lint_statement(policy: &TrustPolicy, statement: &Statement, out: &mut Vec<Warning>) {
    let mut warn = |code: &'static str, severity: Severity, message: String| {
        out.push(Warning {
            code,
            severity,
            message,
            statement: Some(statement.index),
        });
    };
    let allow = statement.effect == Effect::Allow;
    let providers = providers(statement);

    if allow && has_wildcard_principal(statement) {
        warn(
            codes::PRINCIPAL_WILDCARD,
            Severity::Warning,
            "this Allow statement names every principal (\"*\"): only its conditions stand \
             between any caller and the role"
                .to_owned(),
        );
    }

    if let Some(resource) = &statement.resource {
        warn(
            codes::PROHIBITED_RESOURCE,
            Severity::Warning,
            format!(
                "IAM rejects {} in a role trust policy (\"Has prohibited field {}\"); remove it",
                resource.field_name(),
                resource.field_name()
            ),
        );
    }

    for condition in &statement.conditions {
        let kind = condition.parsed.kind;
        if matches!(
            kind,
            OperatorKind::StringLike | OperatorKind::ArnLike | OperatorKind::ArnEquals
        ) && condition.values.iter().any(|v| v == "*")
        {
            warn(
                codes::BARE_WILDCARD,
                Severity::Warning,
                format!(
                    "{} {} \"*\" matches any value: it only requires the key to be present",
                    condition.operator, condition.key
                ),
            );
        }
        for value in &condition.values {
            if !condition::value_is_well_formed(kind, value) {
                warn(
                    codes::INVALID_CONDITION_VALUE,
                    Severity::Warning,
                    format!(
                        "{} cannot read {value:?} (for {}); this value never matches",
                        kind.name(),
                        condition.key
                    ),
                );
            }
        }
        if policy.effective_version() != PolicyVersion::V2012_10_17
            && kind.takes_variables()
            && condition.values.iter().any(|v| pattern::has_variable(v))
        {
            warn(
                codes::LITERAL_VARIABLE,
                Severity::Warning,
                format!(
                    "{} uses a policy variable, but without \"Version\": \"2012-10-17\" it is \
                     compared as literal text",
                    condition.key
                ),
            );
        }
        if let Some(suffix) = key_suffix(&condition.key, GOOGLE)
            .filter(|s| !GOOGLE_KEYS.contains(&s.as_str()))
            .or_else(|| {
                key_suffix(&condition.key, COGNITO).filter(|s| !COGNITO_KEYS.contains(&s.as_str()))
            })
        {
            warn(
                codes::UNSUPPORTED_PROVIDER_KEY,
                Severity::Warning,
                format!(
                    "AWS does not set {} (no \"{suffix}\" key for this provider), so the key is \
                     always absent",
                    condition.key
                ),
            );
        }
    }

    if !allow {
        return;
    }

    for provider in &providers {
        let name = provider.name();
        let key = |suffix: &str| format!("{name}:{suffix}");
        match provider {
            Provider::Google => {
                for condition in statement.conditions.iter().filter(|c| {
                    c.key.eq_ignore_ascii_case(&key("aud")) && is_string_operator(c.parsed.kind)
                }) {
                    for value in condition.values.iter().filter(|v| !looks_like_azp(v)) {
                        warn(
                            codes::GOOGLE_AUD_IS_AZP,
                            Severity::Warning,
                            format!(
                                "{value:?} does not look like a Google azp (a service account's \
                                 numeric unique id or e-mail, or an OAuth client id). For \
                                 service-account ID tokens AWS compares accounts.google.com:aud \
                                 with azp, and the token's aud with accounts.google.com:oaud: \
                                 put the target audience under accounts.google.com:oaud and the \
                                 service account under accounts.google.com:aud"
                            ),
                        );
                    }
                }
                let pinned = restricts(statement, &key("aud")) || restricts(statement, &key("sub"));
                if !pinned {
                    warn(
                        codes::NO_SUBJECT_RESTRICTION,
                        Severity::Warning,
                        "no condition on accounts.google.com:aud or accounts.google.com:sub: any \
                         Google account or service account can assume this role"
                            .to_owned(),
                    );
                    if restricts(statement, &key("oaud")) {
                        warn(
                            codes::AUDIENCE_NOT_ACLED,
                            Severity::Info,
                            "the only identity condition is on accounts.google.com:oaud; Google \
                             does not restrict who may request an ID token for an audience, so \
                             any service account can present one. Pin the service account with \
                             accounts.google.com:aud (its unique id) or :sub"
                                .to_owned(),
                        );
                    }
                }
            }
            Provider::Cognito => {
                if !restricts(statement, &key("aud")) {
                    warn(
                        codes::NO_SUBJECT_RESTRICTION,
                        Severity::Warning,
                        "no condition on cognito-identity.amazonaws.com:aud: identities from any \
                         Cognito identity pool can assume this role"
                            .to_owned(),
                    );
                }
            }
            Provider::Oidc(name) => {
                if !restricts(statement, &key("sub")) {
                    warn(
                        codes::NO_SUBJECT_RESTRICTION,
                        Severity::Warning,
                        format!(
                            "no condition on {name}:sub: every identity this issuer signs tokens \
                             for (any workload, repository or service account) can assume this \
                             role"
                        ),
                    );
                }
            }
        }

        for condition in statement
            .conditions
            .iter()
            .filter(|c| key_suffix(&c.key, name).is_some())
        {
            let op = condition.parsed;
            let why = if op.if_exists {
                "is true when the token does not carry the key"
            } else if op.kind.is_negated() {
                "is a negated operator, true when the token does not carry the key"
            } else if op.set == Some(SetOperator::ForAllValues) {
                "uses ForAllValues, true when the key is absent or empty"
            } else {
                continue;
            };
            if !has_null_false(statement, &condition.key) {
                warn(
                    codes::MISSING_NULL_CHECK,
                    Severity::Warning,
                    format!(
                        "{} on {} {why}; add \"Null\": {{\"{}\": \"false\"}} to this statement",
                        condition.operator, condition.key, condition.key
                    ),
                );
            }
        }
    }
}

fn has_wildcard_principal(statement: &Statement) -> bool {
    match &statement.principal {
        PrincipalSpec::Principal(PrincipalSet::Wildcard) => true,
        PrincipalSpec::Principal(PrincipalSet::Listed(entries)) => entries
            .iter()
            .any(|e| e.kind == PrincipalKind::Aws && e.value == "*"),
        PrincipalSpec::NotPrincipal(_) => false,
    }
}

/// The federated providers a statement's `Principal` names.
fn providers(statement: &Statement) -> Vec<Provider<'_>> {
    let PrincipalSpec::Principal(PrincipalSet::Listed(entries)) = &statement.principal else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|e| e.kind == PrincipalKind::Federated)
        .filter_map(|e| {
            let value = e.value.as_str();
            if value.eq_ignore_ascii_case(GOOGLE) {
                Some(Provider::Google)
            } else if value.eq_ignore_ascii_case(COGNITO) {
                Some(Provider::Cognito)
            } else {
                value
                    .split_once(":oidc-provider/")
                    .filter(|(arn, _)| arn.starts_with("arn:"))
                    .map(|(_, name)| Provider::Oidc(name))
            }
        })
        .collect()
}

/// The part of `key` after `<provider>:`, lower-cased, when `key` belongs to that provider.
fn key_suffix(key: &str, provider: &str) -> Option<String> {
    let (prefix, suffix) = key.rsplit_once(':')?;
    prefix
        .eq_ignore_ascii_case(provider)
        .then(|| suffix.to_ascii_lowercase())
}

fn is_string_operator(kind: OperatorKind) -> bool {
    matches!(
        kind.positive(),
        OperatorKind::StringEquals
            | OperatorKind::StringEqualsIgnoreCase
            | OperatorKind::StringLike
    )
}

/// Whether some condition of the statement pins `key` to particular values: a positive string
/// operator, other than a `StringLike` whose values are all a bare `*`.
fn restricts(statement: &Statement, key: &str) -> bool {
    statement.conditions.iter().any(|c| {
        let kind = c.parsed.kind;
        let match_all = kind == OperatorKind::StringLike
            && c.values
                .iter()
                .all(|v| pattern::Pattern::glob(v).is_match_all());
        c.key.eq_ignore_ascii_case(key)
            && is_string_operator(kind)
            && !kind.is_negated()
            && !match_all
    })
}

fn has_null_false(statement: &Statement, key: &str) -> bool {
    statement.conditions.iter().any(|c: &Condition| {
        c.parsed.kind == OperatorKind::Null
            && c.key.eq_ignore_ascii_case(key)
            && c.values.iter().all(|v| v.eq_ignore_ascii_case("false"))
    })
}

/// Whether a `:aud` value could be a Google `azp`: a numeric unique id, an e-mail (service
/// account), an OAuth client id, or something computed (a variable) or patterned with `@`.
fn looks_like_azp(value: &str) -> bool {
    let numeric = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    numeric
        || value.contains('@')
        || value.ends_with(".apps.googleusercontent.com")
        || pattern::has_variable(value)
        || value == "*"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes_for(policy: &str) -> Vec<(&'static str, Option<usize>)> {
        let policy = TrustPolicy::parse(policy).unwrap();
        lint(&policy)
            .into_iter()
            .map(|w| (w.code, w.statement))
            .collect()
    }

    fn google(condition: &str) -> String {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow",
            "Principal":{{"Federated":"accounts.google.com"}},
            "Action":"sts:AssumeRoleWithWebIdentity","Condition":{condition}}}]}}"#
        )
    }

    const SA: &str = "myapp@my-project.iam.gserviceaccount.com";

    #[test]
    fn google_cases() {
        let cases: Vec<(String, Vec<&str>)> = vec![
            // Seed 002's naive policy: the target audience written into :aud.
            (
                google(
                    r#"{"StringEquals":{"accounts.google.com:sub":"10036718611111111111","accounts.google.com:aud":"aws-trust-1"}}"#,
                ),
                vec![codes::GOOGLE_AUD_IS_AZP],
            ),
            // Seed 002 corrected.
            (
                google(&format!(
                    r#"{{"StringEquals":{{"accounts.google.com:aud":"{SA}","accounts.google.com:oaud":"aws-trust-1","accounts.google.com:sub":"10036718611111111111"}}}}"#
                )),
                vec![],
            ),
            // Seed 004.
            (
                google(&format!(
                    r#"{{"StringEquals":{{"accounts.google.com:oaud":"https://myservice.aud.my-corp.net","accounts.google.com:aud":"{SA}"}},"Null":{{"accounts.google.com:oaud":"false","accounts.google.com:aud":"false"}}}}"#
                )),
                vec![],
            ),
            // Seed 000: numeric unique id.
            (
                google(
                    r#"{"StringEquals":{"accounts.google.com:aud":"12345678901234567890123456789"}}"#,
                ),
                vec![],
            ),
            (
                google(
                    r#"{"StringEquals":{"accounts.google.com:aud":"https://myservice.aud.my-corp.net"}}"#,
                ),
                vec![codes::GOOGLE_AUD_IS_AZP],
            ),
            (
                google(
                    r#"{"StringEquals":{"accounts.google.com:aud":"1234-abc.apps.googleusercontent.com"}}"#,
                ),
                vec![],
            ),
            (google("{}"), vec![codes::NO_SUBJECT_RESTRICTION]),
            (
                google(r#"{"StringEquals":{"accounts.google.com:oaud":"aws-trust-1"}}"#),
                vec![codes::NO_SUBJECT_RESTRICTION, codes::AUDIENCE_NOT_ACLED],
            ),
            (
                google(r#"{"StringLike":{"accounts.google.com:sub":"*"}}"#),
                vec![codes::BARE_WILDCARD, codes::NO_SUBJECT_RESTRICTION],
            ),
            (
                google(r#"{"StringNotEquals":{"accounts.google.com:sub":"1"}}"#),
                vec![codes::NO_SUBJECT_RESTRICTION, codes::MISSING_NULL_CHECK],
            ),
            (
                google(
                    r#"{"StringEquals":{"accounts.google.com:sub":"1"},"StringNotEqualsIfExists":{"accounts.google.com:oaud":"x"}}"#,
                ),
                vec![codes::MISSING_NULL_CHECK],
            ),
            (
                google(
                    r#"{"StringEquals":{"accounts.google.com:sub":"1"},"StringNotEquals":{"accounts.google.com:oaud":"x"},"Null":{"accounts.google.com:oaud":"false"}}"#,
                ),
                vec![],
            ),
            (
                google(r#"{"StringEqualsIfExists":{"accounts.google.com:sub":"1"}}"#),
                vec![codes::MISSING_NULL_CHECK],
            ),
            (
                google(r#"{"ForAllValues:StringEquals":{"accounts.google.com:aud":"1"}}"#),
                vec![codes::MISSING_NULL_CHECK],
            ),
            (
                google(
                    r#"{"StringEquals":{"accounts.google.com:sub":"1","accounts.google.com:email":"a@b.c"}}"#,
                ),
                vec![codes::UNSUPPORTED_PROVIDER_KEY],
            ),
        ];
        for (policy, want) in cases {
            let got: Vec<&str> = codes_for(&policy).into_iter().map(|(c, _)| c).collect();
            assert_eq!(got, want, "{policy}");
        }
    }

    #[test]
    fn oidc_and_cognito_cases() {
        let eks = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC";
        let stmt = |principal: &str, condition: &str| {
            format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow",
                "Principal":{{"Federated":"{principal}"}},
                "Action":"sts:AssumeRoleWithWebIdentity","Condition":{condition}}}]}}"#
            )
        };
        let cases: Vec<(String, Vec<&str>)> = vec![
            (
                stmt(
                    eks,
                    r#"{"StringEquals":{"oidc.eks.us-east-1.amazonaws.com/id/ABC:sub":"system:serviceaccount:default:my-app","oidc.eks.us-east-1.amazonaws.com/id/ABC:aud":"sts.amazonaws.com"}}"#,
                ),
                vec![],
            ),
            (
                stmt(
                    eks,
                    r#"{"StringEquals":{"oidc.eks.us-east-1.amazonaws.com/id/ABC:aud":"sts.amazonaws.com"}}"#,
                ),
                vec![codes::NO_SUBJECT_RESTRICTION],
            ),
            (
                stmt(
                    eks,
                    r#"{"StringLike":{"oidc.eks.us-east-1.amazonaws.com/id/ABC:sub":"system:serviceaccount:*"}}"#,
                ),
                vec![],
            ),
            (
                stmt(
                    "cognito-identity.amazonaws.com",
                    r#"{"ForAnyValue:StringLike":{"cognito-identity.amazonaws.com:amr":"authenticated"}}"#,
                ),
                vec![codes::NO_SUBJECT_RESTRICTION],
            ),
            (
                stmt(
                    "cognito-identity.amazonaws.com",
                    r#"{"StringEquals":{"cognito-identity.amazonaws.com:aud":"us-east-1:x"}}"#,
                ),
                vec![],
            ),
        ];
        for (policy, want) in cases {
            let got: Vec<&str> = codes_for(&policy).into_iter().map(|(c, _)| c).collect();
            assert_eq!(got, want, "{policy}");
        }
    }

    #[test]
    fn general_cases() {
        type Found = Vec<(&'static str, Option<usize>)>;
        let cases: Vec<(&str, Found)> = vec![
            (
                r#"{"Version":"2012-10-17","Statement":[
                    {"Effect":"Deny","Principal":"*","Action":"*"},
                    {"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole"}]}"#,
                vec![(codes::PRINCIPAL_WILDCARD, Some(1))],
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[
                    {"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole","Resource":"*"}]}"#,
                vec![
                    (codes::PRINCIPAL_WILDCARD, Some(0)),
                    (codes::PROHIBITED_RESOURCE, Some(0)),
                ],
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[
                    {"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"sts:AssumeRole",
                     "Condition":{"ArnLike":{"aws:PrincipalArn":"*"},
                                  "NumericLessThan":{"aws:MultiFactorAuthAge":"an hour"},
                                  "IpAddress":{"aws:SourceIp":["10.0.0.0/8","10.0.0.0/40"]},
                                  "Bool":{"aws:SecureTransport":"yes"},
                                  "DateLessThan":{"aws:CurrentTime":"tomorrow"},
                                  "ArnEquals":{"aws:SourceArn":"arn:aws:sns:*"}}}]}"#,
                vec![
                    (codes::BARE_WILDCARD, Some(0)),
                    (codes::INVALID_CONDITION_VALUE, Some(0)),
                    (codes::INVALID_CONDITION_VALUE, Some(0)),
                    (codes::INVALID_CONDITION_VALUE, Some(0)),
                    (codes::INVALID_CONDITION_VALUE, Some(0)),
                    (codes::INVALID_CONDITION_VALUE, Some(0)),
                ],
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"sts:AssumeRole",
                    "Condition":{"StringEquals":{"sts:RoleSessionName":"${aws:username}"}}}]}"#,
                vec![(codes::LITERAL_VARIABLE, Some(0))],
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"sts:AssumeRole",
                    "Condition":{"StringEquals":{"sts:RoleSessionName":"${aws:username}"}}}]}"#,
                vec![],
            ),
        ];
        for (policy, want) in cases {
            assert_eq!(codes_for(policy), want, "{policy}");
        }
    }

    #[test]
    fn warnings_serialize() {
        let policy = TrustPolicy::parse(&google("{}")).unwrap();
        let json = serde_json::to_value(lint(&policy)).unwrap();
        assert_eq!(json[0]["code"], "no-subject-restriction");
        assert_eq!(json[0]["severity"], "Warning");
        assert_eq!(json[0]["statement"], 0);
        assert!(json[0]["message"].as_str().unwrap().contains("any"));
    }
}
