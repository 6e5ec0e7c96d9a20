//! `idbridge explain`: why would (or wouldn't) AWS let this token assume this role, or Google
//! let this caller exchange and impersonate through a workload identity pool provider?
//!
//! One module per side, deciding with the same engine as the emulator: [`aws`] evaluates a
//! token's claims against a trust policy (every statement and condition: key, the claim it
//! reads, the token's value, operator, policy values, result), [`gcp`] renders
//! `idbridge_policy::gcp::federate`'s trace and checks binding members, [`entra`] renders
//! `idbridge_policy::azure::federate`'s (which federated credential of an Entra app takes the
//! token: issuer, subject, audience). Each builds a typed
//! report ([`report`]); `--format json` prints it as it serialises, [`table`] as a table. The
//! signature is not verified unless `--verify` names a JWKS file, a JWKS URL or an issuer.
//! Exits 0 on allow, 2 ([`crate::error::DENY`]) on deny.

mod aws;
mod delegation;
mod entra;
mod gcp;
mod report;
mod table;

use std::process::ExitCode;

use idbridge_core::SecretString;

pub(crate) use aws::{
    CallerReport, assume_role_report, aws_report, load_trust_policy, roles_anywhere_report,
};
pub(crate) use entra::{
    ENTRA_HELP, EntraPrincipal, PrincipalKind, entra_report, load_entra, suggested_name,
};
pub(crate) use gcp::{
    GCP_PROVIDER_HELP, GcpProvider, GcpSubject, aws_assertion, gcp_report, load_gcp_provider,
    parse_gcp_provider,
};

use crate::cli::ExplainArgs;
use crate::error::CliError;

/// The warning of a report on a token whose signature was not checked.
const UNVERIFIED: &str = "the token's signature was not verified (pass --verify JWKS|URL|ISSUER to check it); claims are taken as they are";

pub(crate) use delegation::GCP_DELEGATION_HELP;

pub(crate) async fn run(a: ExplainArgs) -> Result<ExitCode, CliError> {
    if let Some(chain) = &a.gcp_delegation {
        return delegation::run(&a, chain);
    }
    if let Some(app) = &a.entra {
        return entra::run(&a, app).await;
    }
    if let Some(provider) = &a.gcp_provider {
        return gcp::run(&a, provider).await;
    }
    let Some(policy_path) = &a.aws_trust_policy else {
        return Err(CliError::Usage(
            "explain: give --aws-trust-policy FILE, --gcp-provider FILE, --entra FILE or --gcp-delegation FILE".into(),
        ));
    };
    aws::run(&a, policy_path).await
}

/// 0 on allow, 2 on deny.
fn exit_code(decision: report::Verdict) -> ExitCode {
    match decision {
        report::Verdict::Allow => ExitCode::SUCCESS,
        report::Verdict::Deny => ExitCode::from(crate::error::DENY),
    }
}

/// A `--token` value, or the file it names with `@FILE`.
fn read_arg(value: &SecretString, what: &str) -> Result<SecretString, CliError> {
    match value.expose_secret().strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map(SecretString::new)
            .map_err(|e| CliError::Usage(format!("explain: cannot read {what} file {path}: {e}"))),
        None => Ok(value.clone()),
    }
}

fn fmt_unix(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .map(idbridge_core::timefmt::rfc3339_seconds)
        .unwrap_or_else(|_| t.to_string())
}

/// A document given by a flag: JSON (a `.json` file, or text starting with `{`) or TOML, as a
/// JSON value. The error does not name the flag or file: the caller prefixes both.
fn load_document(path: &std::path::Path) -> Result<serde_json::Value, String> {
    let text =
        idbridge_core::file::read_config_file(path).map_err(|e| format!("cannot read: {e}"))?;
    let is_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    if is_json {
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
    } else {
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| format!("not TOML: {}", e.to_string().trim_end()))?;
        serde_json::to_value(table).map_err(|e| e.to_string())
    }
}
