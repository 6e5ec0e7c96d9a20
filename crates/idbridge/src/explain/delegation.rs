//! `explain --gcp-delegation FILE --caller C [--delegate D]… --target T`: a Google delegation
//! chain checked link by link against the accounts' IAM policies, with the decision the
//! emulator's IAM Credentials takes ([`idbridge_policy::gcp::check_chain`]).

use std::path::Path;
use std::process::ExitCode;

use idbridge_policy::gcp::{AccountPolicy, ChainCheck, Principal, TOKEN_CREATOR, check_chain};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::report::Verdict;
use crate::cli::{ExplainArgs, ExplainFormat};
use crate::error::CliError;

/// `--gcp-delegation`'s help.
pub(crate) const GCP_DELEGATION_HELP: &str = "\
The service accounts of a delegation chain and who holds roles on them, as TOML or JSON: the \
emulator's world file, or only its [[service_account]] tables, each with `email`, optionally \
`unique_id`, `token_creators` (members holding roles/iam.serviceAccountTokenCreator) and \
`workload_identity_users` (roles/iam.workloadIdentityUser). With --caller, --delegate \
(repeatable, caller side first) and --target, each given by email or unique id.";

#[derive(Debug, Deserialize)]
struct Account {
    email: String,
    #[serde(default)]
    unique_id: Option<String>,
    #[serde(default)]
    token_creators: Vec<String>,
    #[serde(default)]
    workload_identity_users: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Accounts {
    #[serde(default)]
    service_account: Vec<Account>,
}

fn load(path: &Path) -> Result<Vec<Account>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::Usage(format!(
            "explain: cannot read --gcp-delegation file {}: {e}",
            path.display()
        ))
    })?;
    let doc: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str(&text).map_err(|e| e.to_string())
    }
    .map_err(|e| CliError::Usage(format!("explain: {}: {e}", path.display())))?;
    let accounts: Accounts = serde_json::from_value(doc)
        .map_err(|e| CliError::Usage(format!("explain: {}: {e}", path.display())))?;
    if accounts.service_account.is_empty() {
        return Err(CliError::Usage(format!(
            "explain: {}: no [[service_account]]",
            path.display()
        )));
    }
    Ok(accounts.service_account)
}

fn find<'a>(accounts: &'a [Account], name: &str, role: &str) -> Result<&'a Account, CliError> {
    accounts
        .iter()
        .find(|a| a.email.eq_ignore_ascii_case(name) || a.unique_id.as_deref() == Some(name))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "explain: {role} {name} is not a [[service_account]] of the file (Google answers 404 \"Gaia id not found\")"
            ))
        })
}

fn policy(a: &Account) -> AccountPolicy<'_> {
    AccountPolicy {
        email: &a.email,
        token_creators: &a.token_creators,
        workload_identity_users: &a.workload_identity_users,
    }
}

#[derive(Serialize)]
struct Report<'a> {
    decision: Verdict,
    chain: Vec<String>,
    #[serde(flatten)]
    check: &'a ChainCheck,
    first_missing: Option<usize>,
    fix: Option<String>,
}

/// The chain's check for `caller` (an email, a caller outside the file allowed) through
/// `delegates` to `target`.
fn explain(
    accounts: &[Account],
    caller: &str,
    delegates: &[String],
    target: &str,
) -> Result<(Vec<String>, ChainCheck), CliError> {
    let caller = find(accounts, caller, "caller")
        .map(|a| a.email.clone())
        .or_else(|e| {
            if caller.contains('@') {
                Ok(caller.to_owned())
            } else {
                Err(e)
            }
        })?;
    let target = find(accounts, target, "target")?;
    let delegates = delegates
        .iter()
        .map(|d| find(accounts, d, "delegate"))
        .collect::<Result<Vec<_>, _>>()?;
    let chain = std::iter::once(caller.clone())
        .chain(delegates.iter().map(|d| d.email.clone()))
        .chain(std::iter::once(target.email.clone()))
        .collect();
    let policies: Vec<_> = delegates.iter().map(|d| policy(d)).collect();
    let check = check_chain(
        &Principal::ServiceAccount(caller),
        &policies,
        &policy(target),
    );
    Ok((chain, check))
}

pub(super) fn run(a: &ExplainArgs, path: &Path) -> Result<ExitCode, CliError> {
    let (Some(caller), Some(target)) = (&a.caller, &a.target) else {
        return Err(CliError::Usage(
            "explain: --gcp-delegation needs --caller and --target (and --delegate for each intermediate account)".into(),
        ));
    };
    let accounts = load(path)?;
    let (chain, check) = explain(&accounts, caller, &a.delegates, target)?;
    let missing = check.links.iter().position(|l| !l.granted());
    let fix = missing.map(|i| {
        let l = &check.links[i];
        format!(
            "gcloud iam service-accounts add-iam-policy-binding {} --role={TOKEN_CREATOR} --member={}",
            l.account, l.caller
        )
    });
    let decision = if missing.is_none() {
        Verdict::Allow
    } else {
        Verdict::Deny
    };
    match a.format {
        ExplainFormat::Json => {
            let report = Report {
                decision,
                chain,
                check: &check,
                first_missing: missing,
                fix,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
        ExplainFormat::Table => {
            println!("Delegation chain: {}", chain.join(" → "));
            for (i, l) in check.links.iter().enumerate() {
                let what = if l.target { "target" } else { "delegate" };
                match l.granted_by {
                    Some(role) => println!(
                        "  ✓ link {}: {} holds {role} on {what} {}",
                        i + 1,
                        l.caller,
                        l.account
                    ),
                    None => println!(
                        "  ✗ link {}: {} holds no {TOKEN_CREATOR} on {what} {}",
                        i + 1,
                        l.caller,
                        l.account
                    ),
                }
            }
            match (missing, &fix) {
                (Some(i), Some(fix)) => {
                    println!(
                        "DENY: link {} is the first missing one (IAM Credentials answers 403 PERMISSION_DENIED for the whole chain).",
                        i + 1
                    );
                    println!("  fix: {fix}");
                }
                _ => println!("ALLOW: every link holds."),
            }
        }
    }
    Ok(super::exit_code(decision))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Vec<Account> {
        let doc: Accounts = toml::from_str(
            r#"
[[service_account]]
email = "hop@p.iam.gserviceaccount.com"
unique_id = "111"
token_creators = ["serviceAccount:vm@p.iam.gserviceaccount.com"]
[[service_account]]
email = "t@p.iam.gserviceaccount.com"
token_creators = ["serviceAccount:vm@p.iam.gserviceaccount.com"]
"#,
        )
        .unwrap();
        doc.service_account
    }

    #[test]
    fn names_the_first_missing_link() {
        let a = accounts();
        let (chain, check) = explain(
            &a,
            "vm@p.iam.gserviceaccount.com",
            &["111".to_owned()],
            "t@p.iam.gserviceaccount.com",
        )
        .unwrap();
        assert_eq!(chain.len(), 3);
        assert!(check.links[0].granted());
        let m = check.first_missing().unwrap();
        assert_eq!(m.caller, "serviceAccount:hop@p.iam.gserviceaccount.com");
        assert!(
            explain(&a, "vm@p.iam.gserviceaccount.com", &[], "nope@p").is_err(),
            "unknown target"
        );
    }
}
