//! `explain --aws-trust-policy`: a token's claims against an IAM role trust policy, with the
//! engine the emulator's STS uses (`idbridge_policy::aws`).

use std::process::ExitCode;

use idbridge_core::jwt::UnverifiedJwt;
use idbridge_policy::aws::{
    Decision, Evaluation, PrincipalKind, PrincipalSet, PrincipalSpec, TrustPolicy,
    WebIdentityProvider, WebIdentityRequest, evaluate, lint, web_identity_context,
};
use serde_json::Value;

use super::report::{AwsCondition, AwsReport, AwsStatement, Shown, Verdict, Warning};
use super::{UNVERIFIED, exit_code, fmt_unix, read_arg, table};
use crate::cli::{ExplainArgs, ExplainFormat};
use crate::error::CliError;

mod caller;

pub(crate) use caller::{CallerReport, assume_role_report, roles_anywhere_report};

pub(super) async fn run(
    a: &ExplainArgs,
    policy_path: &std::path::Path,
) -> Result<ExitCode, CliError> {
    if let Some(arn) = &a.aws_arn {
        return caller::run_assume_role(a, policy_path, arn);
    }
    if let Some(anchor) = &a.trust_anchor {
        return caller::run_roles_anywhere(a, policy_path, anchor);
    }
    let Some(token_arg) = &a.token else {
        return Err(CliError::Usage(
            "explain: --aws-trust-policy needs --token JWT|@FILE".into(),
        ));
    };
    let token = read_arg(token_arg, "token")?;
    let token = token.expose_secret().trim();
    let jwt = UnverifiedJwt::parse(token)
        .map_err(|e| CliError::Usage(format!("explain: --token: {e}")))?;
    let policy = load_trust_policy(policy_path)?;
    let verified = match &a.verify {
        Some(v) => Some(
            crate::verify::verify(token, v)
                .await
                .map_err(CliError::Failed)?,
        ),
        None => None,
    };
    #[expect(
        clippy::disallowed_methods,
        reason = "explain evaluates at the current wall time"
    )]
    let now = time::OffsetDateTime::now_utc();
    let report = report(
        &policy,
        &jwt,
        a.account.as_deref(),
        &a.role_session_name,
        verified.is_some(),
        now,
    )?;
    match a.format {
        ExplainFormat::Json => super::report::print_json(&report),
        ExplainFormat::Table => table::print_aws(&report, &jwt),
    }
    Ok(exit_code(report.decision))
}

/// Reads and parses an IAM trust policy file.
pub(crate) fn load_trust_policy(path: &std::path::Path) -> Result<TrustPolicy, CliError> {
    let policy_text = idbridge_core::file::read_config_file(path)
        .map_err(|e| CliError::Usage(format!("explain: cannot read {}: {e}", path.display())))?;
    TrustPolicy::parse(&policy_text).map_err(|e| {
        CliError::Usage(format!(
            "explain: {}: MalformedPolicyDocument: {e}",
            path.display()
        ))
    })
}

/// [`report`] as JSON (`decision`, `statements`, `warnings`, …).
pub(crate) fn aws_report(
    policy: &TrustPolicy,
    jwt: &UnverifiedJwt,
    account: Option<&str>,
    role_session_name: &str,
    verified: bool,
    now: time::OffsetDateTime,
) -> Result<Value, CliError> {
    let report = report(policy, jwt, account, role_session_name, verified, now)?;
    serde_json::to_value(report).map_err(|e| CliError::Failed(e.to_string()))
}

/// Evaluates `jwt`'s claims against a trust policy: the report `explain` prints.
pub(crate) fn report(
    policy: &TrustPolicy,
    jwt: &UnverifiedJwt,
    account: Option<&str>,
    role_session_name: &str,
    verified: bool,
    now: time::OffsetDateTime,
) -> Result<AwsReport, CliError> {
    let iss = jwt.str_claim("iss").unwrap_or_default().to_owned();
    let provider = WebIdentityProvider::from_issuer(&iss);
    let account = account
        .map(str::to_owned)
        .or_else(|| oidc_account(policy, &provider))
        .unwrap_or_else(|| "000000000000".into());
    let request = WebIdentityRequest::new(account, role_session_name.to_owned(), now);
    let ctx = web_identity_context(&provider, &jwt.claims, &request)
        .map_err(|e| CliError::Usage(format!("explain: token claim {}: {}", e.claim, e.reason)))?;
    let eval = evaluate(policy, &ctx);

    let mut warnings: Vec<Warning> = Vec::new();
    if !verified {
        warnings.push(Warning::new("unverified", UNVERIFIED));
    }
    if let Some(exp) = jwt.exp()
        && exp <= now.unix_timestamp()
    {
        warnings.push(Warning::new("expired", format!("the token expired at {} — AWS would answer ExpiredTokenException before looking at the policy", fmt_unix(exp))));
    }
    // Token-specific trap: the policy's :aud value equals the token's aud while AWS reads azp.
    if matches!(provider, WebIdentityProvider::Google)
        && let (Some(azp), Some(aud)) = (jwt.str_claim("azp"), jwt.str_claim("aud"))
    {
        for st in &eval.statements {
            for c in &st.conditions {
                if c.key.eq_ignore_ascii_case("accounts.google.com:aud")
                    && !c.result
                    && c.policy_values.iter().any(|v| v == aud)
                {
                    warnings.push(Warning::new("google-aud-is-azp", format!(
                        "accounts.google.com:aud is compared with the token's azp ({azp}), not its aud ({aud}): put {aud:?} under accounts.google.com:oaud and {azp:?} under accounts.google.com:aud"
                    )));
                }
            }
        }
    }
    // The other azp form of the same account (numeric id vs email, by client): say so when the
    // policy's accounts.google.com:aud admits only one of them.
    if matches!(provider, WebIdentityProvider::Google)
        && let (Some(form), Some((unique_id, email))) =
            (crate::azp::Azp::of(jwt), crate::azp::both_forms(jwt))
    {
        let aud_values: Vec<&String> = eval
            .statements
            .iter()
            .flat_map(|st| &st.conditions)
            .filter(|c| c.key.eq_ignore_ascii_case("accounts.google.com:aud"))
            .flat_map(|c| &c.policy_values)
            .collect();
        let admits = |v: &str| aud_values.iter().any(|p| p.as_str() == v);
        if !aud_values.is_empty() && admits(&unique_id) != admits(&email) {
            warnings.push(Warning::new(
                "google-azp-forms",
                crate::azp::clients_differ(&form, &unique_id, &email),
            ));
        }
    }
    for w in lint(policy) {
        // A token-specific finding above says the same thing with the token's own values.
        if !warnings.iter().any(|v| v.code == w.code) {
            warnings.push(Warning::new(w.code, w.message));
        }
    }

    let statements = statements(&eval, |key| claim_for_key(key, &provider, &jwt.claims));
    Ok(AwsReport {
        decision: if eval.decision == Decision::Allow {
            Verdict::Allow
        } else {
            Verdict::Deny
        },
        reason: format!("{:?}", eval.decision),
        verified,
        issuer: iss,
        provider: provider.name().to_owned(),
        statements,
        warnings,
    })
}

/// The statements of an evaluation as the report shows them; `source` names what each
/// condition key reads (a claim, a request parameter, a certificate attribute).
pub(super) fn statements(eval: &Evaluation, source: impl Fn(&str) -> String) -> Vec<AwsStatement> {
    eval.statements
        .iter()
        .map(|st| AwsStatement {
            sid: st.sid.clone(),
            effect: format!("{:?}", st.effect),
            principal_matched: st.principal_matched,
            action_matched: st.action_matched,
            matched: st.matched,
            conditions: st
                .conditions
                .iter()
                .map(|c| AwsCondition {
                    operator: c.operator.clone(),
                    key: c.key.clone(),
                    claim: source(&c.key),
                    token_value: match c.context_values.as_deref() {
                        None => None,
                        Some([one]) => Some(Shown::One(one.clone())),
                        Some(many) => Some(Shown::Many(many.to_vec())),
                    },
                    policy_values: c.policy_values.clone(),
                    result: c.result,
                })
                .collect(),
        })
        .collect()
}

/// The claim an AWS web-identity condition key reads, for display.
fn claim_for_key(
    key: &str,
    provider: &WebIdentityProvider,
    claims: &serde_json::Map<String, Value>,
) -> String {
    let lower = key.to_ascii_lowercase();
    let prefix = format!("{}:", provider.name().to_ascii_lowercase());
    let Some(suffix) = lower.strip_prefix(&prefix) else {
        return match lower.as_str() {
            "sts:rolesessionname" => "(request) RoleSessionName".into(),
            k if k.starts_with("aws:") || k.starts_with("sts:") => "(request context)".into(),
            _ => "(not from this token)".into(),
        };
    };
    match (provider, suffix) {
        (WebIdentityProvider::Google, "aud") if claims.contains_key("azp") => "azp".into(),
        (WebIdentityProvider::Google, "oaud") => "aud".into(),
        (_, s) => s.to_owned(),
    }
}

/// For generic OIDC, the account of the policy's matching `oidc-provider` ARN.
fn oidc_account(policy: &TrustPolicy, provider: &WebIdentityProvider) -> Option<String> {
    policy.statements.iter().find_map(|st| {
        let (PrincipalSpec::Principal(PrincipalSet::Listed(entries))
        | PrincipalSpec::NotPrincipal(PrincipalSet::Listed(entries))) = &st.principal
        else {
            return None;
        };
        entries.iter().find_map(|e| {
            (e.kind == PrincipalKind::Federated
                && e.value
                    .ends_with(&format!("oidc-provider/{}", provider.name())))
            .then(|| e.value.split(':').nth(4).map(str::to_owned))
            .flatten()
        })
    })
}
