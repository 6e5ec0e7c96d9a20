//! The reports `explain` produces, typed. Their serde form is `--format json` (fields in
//! alphabetical order, as the output has always had them); [`super::table`] renders the same
//! values as a table.

use serde::Serialize;

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    Allow,
    Deny,
}

/// A finding beside the decision: a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Warning {
    pub(crate) code: String,
    pub(crate) message: String,
}

impl Warning {
    pub(crate) fn new(code: &str, message: impl Into<String>) -> Warning {
        Warning {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// One value or several (a claim, a mapped attribute, an audience list), or a boolean (a
/// condition's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum Shown {
    Bool(bool),
    One(String),
    Many(Vec<String>),
}

impl From<&str> for Shown {
    fn from(s: &str) -> Shown {
        Shown::One(s.to_owned())
    }
}

impl From<String> for Shown {
    fn from(s: String) -> Shown {
        Shown::One(s)
    }
}

impl Shown {
    /// For the table: lists joined with `, `.
    pub(crate) fn text(&self) -> String {
        match self {
            Shown::Bool(b) => b.to_string(),
            Shown::One(s) => s.clone(),
            Shown::Many(v) => v.join(", "),
        }
    }
}

// ----- AWS ------------------------------------------------------------------------------------

/// `explain --aws-trust-policy`: the trust policy's verdict on a token.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AwsReport {
    pub(crate) decision: Verdict,
    /// The token's `iss`.
    pub(crate) issuer: String,
    /// The web-identity provider AWS takes the issuer for (`accounts.google.com`, …).
    pub(crate) provider: String,
    /// `Allow`, `ImplicitDeny` or `ExplicitDeny`.
    pub(crate) reason: String,
    pub(crate) statements: Vec<AwsStatement>,
    pub(crate) verified: bool,
    pub(crate) warnings: Vec<Warning>,
}

/// One statement of the trust policy, evaluated.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AwsStatement {
    pub(crate) action_matched: bool,
    pub(crate) conditions: Vec<AwsCondition>,
    /// `Allow` or `Deny`.
    pub(crate) effect: String,
    pub(crate) matched: bool,
    pub(crate) principal_matched: bool,
    pub(crate) sid: Option<String>,
}

/// One condition of a statement, evaluated.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AwsCondition {
    /// The claim (or request value) the key reads.
    pub(crate) claim: String,
    pub(crate) key: String,
    pub(crate) operator: String,
    pub(crate) policy_values: Vec<String>,
    pub(crate) result: bool,
    /// The token's value for the key; `null` when it has none.
    pub(crate) token_value: Option<Shown>,
}

// ----- GCP ------------------------------------------------------------------------------------

/// `explain --gcp-provider`: what Google STS and IAM make of a caller.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GcpReport {
    pub(crate) decision: Verdict,
    /// The `gcloud` command that adds the missing binding, when that is all that is missing.
    pub(crate) fix: Option<String>,
    /// The OIDC issuer, or `account N` for an AWS provider.
    pub(crate) issuer: String,
    /// The federated principal, when the mapping produced one.
    pub(crate) principal: Option<String>,
    /// The provider's canonical name.
    pub(crate) provider: String,
    /// `aws` or `oidc`.
    pub(crate) provider_kind: &'static str,
    /// The first failure in Google's terms (`invalid_grant: …`), or `Allow`.
    pub(crate) reason: String,
    pub(crate) service_account: Option<String>,
    pub(crate) steps: Vec<GcpStep>,
    pub(crate) verified: bool,
    pub(crate) warnings: Vec<Warning>,
}

/// One step of the exchange and impersonation.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GcpStep {
    pub(crate) expected: Shown,
    pub(crate) key: String,
    /// `None` for the principal, which is a result, not a check.
    pub(crate) result: Option<bool>,
    pub(crate) step: GcpStepKind,
    pub(crate) value: Shown,
}

/// The kinds of [`GcpStep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum GcpStepKind {
    Provider,
    Account,
    Issuer,
    Audience,
    Subject,
    Mapping,
    Condition,
    Principal,
    Binding,
}

impl GcpStepKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            GcpStepKind::Provider => "provider",
            GcpStepKind::Account => "account",
            GcpStepKind::Issuer => "issuer",
            GcpStepKind::Audience => "audience",
            GcpStepKind::Subject => "subject",
            GcpStepKind::Mapping => "mapping",
            GcpStepKind::Condition => "condition",
            GcpStepKind::Principal => "principal",
            GcpStepKind::Binding => "binding",
        }
    }
}

/// `--format json`: the report on one line.
pub(crate) fn print_json(report: &impl Serialize) {
    match serde_json::to_string(report) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("idbridge: error: cannot write the report: {e}"),
    }
}
