//! `explain --aws-trust-policy` for callers that are not web identities: `--aws-arn` (a role
//! session calling `sts:AssumeRole`, role chaining) and `--trust-anchor` (IAM Roles Anywhere,
//! the certificate given by `--x509-uri` and `--x509-cn`). The context and the actions are the
//! emulator's ([`idbridge_policy::aws::assume_role_context`],
//! [`idbridge_policy::aws::roles_anywhere_context`]); every action is evaluated in turn and the
//! report shows the first one the policy refuses (or the last one).

use std::process::ExitCode;

use idbridge_policy::aws::{
    AssumeRoleRequest, CallerSession, Decision, Effect, ROLES_ANYWHERE_PRINCIPAL, RequestContext,
    RolesAnywhereRequest, TrustPolicy, assume_role_context, evaluate_actions, lint,
    roles_anywhere_context,
};
use serde::Serialize;

use super::super::report::{AwsStatement, Verdict, Warning};
use super::super::{exit_code, table};
use crate::cli::{ExplainArgs, ExplainFormat};
use crate::error::CliError;

/// The report on a role session or a Roles Anywhere certificate.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CallerReport {
    /// The action shown: the first one refused, else the last one evaluated.
    pub(crate) action: String,
    /// Every action evaluated, in order, up to the first one refused.
    pub(crate) actions: Vec<ActionVerdict>,
    /// The principal evaluated: the assumed-role session, or `rolesanywhere.amazonaws.com`.
    pub(crate) caller: String,
    pub(crate) decision: Verdict,
    /// `assume-role` or `roles-anywhere`.
    pub(crate) kind: &'static str,
    /// `Allow`, `ImplicitDeny` or `ExplicitDeny` (of `action`).
    pub(crate) reason: String,
    /// The statements, evaluated for `action`.
    pub(crate) statements: Vec<AwsStatement>,
    pub(crate) warnings: Vec<Warning>,
}

impl CallerReport {
    /// Whether every action of the request is allowed.
    pub(crate) fn allowed(&self) -> bool {
        self.decision == Verdict::Allow
    }
}

/// One action of the request and the policy's answer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ActionVerdict {
    pub(crate) action: String,
    pub(crate) decision: Verdict,
    pub(crate) reason: String,
}

fn verdict(d: Decision) -> Verdict {
    if d == Decision::Allow {
        Verdict::Allow
    } else {
        Verdict::Deny
    }
}

/// What a condition key reads, for a request of `kind`.
fn source_of(kind: &str, key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    let ra = kind == "roles-anywhere";
    let tag = |prefix: &str| {
        key.get(prefix.len()..)
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned()
    };
    match lower.as_str() {
        "sts:externalid" => "(request) ExternalId".into(),
        "sts:rolesessionname" => "(request) RoleSessionName".into(),
        "sts:transitivetagkeys" => "(request) TransitiveTagKeys".into(),
        "sts:sourceidentity" | "aws:sourceidentity" if ra => "(certificate) subject CN".into(),
        "sts:sourceidentity" => "(request) SourceIdentity".into(),
        "aws:sourceidentity" => "(caller) source identity".into(),
        "aws:principalarn" => "(caller) role".into(),
        "aws:principalaccount" => "(caller) account".into(),
        "aws:sourcearn" if ra => "(request) trust anchor".into(),
        "aws:sourceaccount" if ra => "(request) trust anchor's account".into(),
        "aws:tagkeys" if ra => "(certificate) attribute keys".into(),
        "aws:tagkeys" => "(request) tag keys".into(),
        k if k.starts_with("aws:principaltag/") && ra => {
            format!("(certificate) {}", tag("aws:PrincipalTag"))
        }
        k if k.starts_with("aws:requesttag/") && ra => {
            format!("(certificate) {}", tag("aws:RequestTag"))
        }
        k if k.starts_with("aws:principaltag/") => {
            format!("(caller) session tag {}", tag("aws:PrincipalTag"))
        }
        k if k.starts_with("aws:requesttag/") => {
            format!("(request) tag {}", tag("aws:RequestTag"))
        }
        k if k.starts_with("aws:") || k.starts_with("sts:") => "(request context)".into(),
        _ => "(not in this request)".into(),
    }
}

/// Whether any condition of the policy reads `key`.
fn policy_reads(policy: &TrustPolicy, key: &str) -> bool {
    policy.statements.iter().any(|st| {
        st.conditions
            .iter()
            .any(|c| c.key.eq_ignore_ascii_case(key))
    })
}

fn build(
    kind: &'static str,
    policy: &TrustPolicy,
    ctx: &RequestContext,
    actions: &[&'static str],
    mut warnings: Vec<Warning>,
) -> CallerReport {
    let caller = match &ctx.principal {
        idbridge_policy::aws::Principal::Aws(a) | idbridge_policy::aws::Principal::Service(a) => {
            a.clone()
        }
        other => format!("{other:?}"),
    };
    let trace = evaluate_actions(policy, ctx, actions);
    let Some((action, eval)) = trace.last() else {
        return CallerReport {
            action: String::new(),
            actions: Vec::new(),
            caller,
            decision: Verdict::Deny,
            kind,
            reason: "ImplicitDeny".into(),
            statements: Vec::new(),
            warnings,
        };
    };
    if !eval.is_allowed() {
        let allows = |st: &&idbridge_policy::aws::StatementTrace| st.effect == Effect::Allow;
        if !eval
            .statements
            .iter()
            .filter(allows)
            .any(|st| st.principal_matched)
        {
            let name = if kind == "roles-anywhere" {
                format!("{{\"Service\": \"{ROLES_ANYWHERE_PRINCIPAL}\"}}")
            } else {
                let role = ctx
                    .get("aws:PrincipalArn")
                    .and_then(|v| v.values().first().cloned())
                    .unwrap_or_else(|| caller.clone());
                format!("{{\"AWS\": \"{role}\"}} (the first role, or its session {caller})")
            };
            warnings.push(Warning::new(
                "principal-not-named",
                format!("no Allow statement names this caller: its Principal must be {name}"),
            ));
        } else if !eval
            .statements
            .iter()
            .filter(allows)
            .any(|st| st.principal_matched && st.action_matched)
        {
            warnings.push(Warning::new(
                "action-not-allowed",
                format!(
                    "the statements naming this caller do not allow {action}: add it to their Action"
                ),
            ));
        }
    }
    for w in lint(policy) {
        if !warnings.iter().any(|v| v.code == w.code) {
            warnings.push(Warning::new(w.code, w.message));
        }
    }
    CallerReport {
        action: (*action).to_owned(),
        actions: trace
            .iter()
            .map(|(a, e)| ActionVerdict {
                action: (*a).to_owned(),
                decision: verdict(e.decision),
                reason: format!("{:?}", e.decision),
            })
            .collect(),
        caller,
        decision: verdict(eval.decision),
        kind,
        reason: format!("{:?}", eval.decision),
        statements: super::statements(eval, |key| source_of(kind, key)),
        warnings,
    }
}

/// `sts:AssumeRole` of a role by another role's session, against the role's trust policy.
pub(crate) fn assume_role_report(
    policy: &TrustPolicy,
    request: &AssumeRoleRequest,
) -> CallerReport {
    let mut warnings = Vec::new();
    if request.external_id.is_none() && policy_reads(policy, "sts:ExternalId") {
        warnings.push(Warning::new(
            "missing-external-id",
            "the trust policy has a condition on sts:ExternalId and the request has none (pass --external-id; in a route, `external_id` on the aws-assume-role exchange)",
        ));
    }
    if request.source_identity.is_none() && policy_reads(policy, "sts:SourceIdentity") {
        warnings.push(Warning::new(
            "missing-source-identity",
            "the trust policy has a condition on sts:SourceIdentity and the request sets none (`source_identity` on the exchange)",
        ));
    }
    let ctx = assume_role_context(request);
    build("assume-role", policy, &ctx, &request.actions(), warnings)
}

/// IAM Roles Anywhere `CreateSession` with a certificate, against the role's trust policy.
pub(crate) fn roles_anywhere_report(
    policy: &TrustPolicy,
    request: &RolesAnywhereRequest,
) -> CallerReport {
    let mut warnings = Vec::new();
    let tagged = |k: &str| request.tags.iter().any(|(t, _)| t.eq_ignore_ascii_case(k));
    for (key, flag) in [
        ("x509SAN/URI", "--x509-uri"),
        ("x509Subject/CN", "--x509-cn"),
    ] {
        if !tagged(key) && policy_reads(policy, &format!("aws:PrincipalTag/{key}")) {
            warnings.push(Warning::new(
                "certificate-attribute-absent",
                format!(
                    "the trust policy reads aws:PrincipalTag/{key} and the certificate given has none (pass {flag})"
                ),
            ));
        }
    }
    let ctx = roles_anywhere_context(request);
    build("roles-anywhere", policy, &ctx, &request.actions(), warnings)
}

fn print(report: &CallerReport, format: ExplainFormat) {
    match format {
        ExplainFormat::Json => super::super::report::print_json(report),
        ExplainFormat::Table => {
            println!("caller: {} ({})", report.caller, report.kind);
            let actions: Vec<String> = report
                .actions
                .iter()
                .map(|a| format!("{} {}", a.action, a.reason))
                .collect();
            println!("actions: {}", actions.join(" · "));
            println!("statements for {}:", report.action);
            table::print_aws_statements(&report.statements, "request value");
            table::print_aws_verdict(report.decision, &report.reason, &report.warnings);
        }
    }
}

pub(super) fn run_assume_role(
    a: &ExplainArgs,
    policy_path: &std::path::Path,
    arn: &str,
) -> Result<ExitCode, CliError> {
    let policy = super::load_trust_policy(policy_path)?;
    let caller = CallerSession::from_arn(arn, &a.role_session_name).ok_or_else(|| {
        CliError::Usage(format!(
            "explain: --aws-arn {arn:?} is not a role (arn:aws:iam::ACCOUNT:role/NAME) or an assumed-role session (arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION)"
        ))
    })?;
    let request = AssumeRoleRequest {
        caller,
        session_name: a.role_session_name.clone(),
        external_id: a.external_id.clone(),
        source_identity: a.source_identity.clone(),
        tags: a.tags.clone(),
        transitive_tag_keys: Vec::new(),
    };
    let report = assume_role_report(&policy, &request);
    print(&report, a.format);
    Ok(exit_code(report.decision))
}

pub(super) fn run_roles_anywhere(
    a: &ExplainArgs,
    policy_path: &std::path::Path,
    anchor: &str,
) -> Result<ExitCode, CliError> {
    let parts: Vec<&str> = anchor.split(':').collect();
    if parts.len() != 6
        || parts[0] != "arn"
        || parts[2] != "rolesanywhere"
        || !parts[5].starts_with("trust-anchor/")
    {
        return Err(CliError::Usage(format!(
            "explain: --trust-anchor {anchor:?} is not arn:aws:rolesanywhere:REGION:ACCOUNT:trust-anchor/ID"
        )));
    }
    let policy = super::load_trust_policy(policy_path)?;
    let request =
        RolesAnywhereRequest::with_certificate(anchor, a.x509_uri.as_deref(), a.x509_cn.as_deref());
    let report = roles_anywhere_report(&policy, &request);
    print(&report, a.format);
    Ok(exit_code(report.decision))
}
