//! `idbridge explain`: why would (or wouldn't) AWS let this token assume this role?
//!
//! Evaluates the token's claims against a trust policy with the same engine the emulator uses,
//! prints every statement and condition (key, the claim it reads, the token's value, operator,
//! policy values, result), the decision, and warnings for known traps. The signature is not
//! verified unless `--verify` names a JWKS file, a JWKS URL or an issuer.

use std::io::IsTerminal;
use std::process::ExitCode;

use idbridge_core::SecretString;
use idbridge_core::jwt::UnverifiedJwt;
use idbridge_emulator::world::WorkloadIdentityProvider;
use idbridge_policy::aws::{
    Decision, PrincipalKind, PrincipalSet, PrincipalSpec, TrustPolicy, WebIdentityProvider,
    WebIdentityRequest, evaluate, lint, web_identity_context,
};
use idbridge_policy::gcp::{
    FederatedPrincipal, Member as GcpMember, PoolName, Principal as GcpPrincipal, ProviderKind,
    ProviderName,
};
use serde_json::{Value, json};

use crate::cli::{ExplainArgs, ExplainFormat};
use crate::commands::CliError;

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

fn read_arg(value: &SecretString, what: &str) -> Result<SecretString, CliError> {
    match value.expose_secret().strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map(SecretString::new)
            .map_err(|e| CliError::Usage(format!("explain: cannot read {what} file {path}: {e}"))),
        None => Ok(value.clone()),
    }
}

pub(crate) async fn run(a: ExplainArgs) -> Result<ExitCode, CliError> {
    if let Some(provider) = &a.gcp_provider {
        return run_gcp(&a, provider).await;
    }
    let Some(policy_path) = &a.aws_trust_policy else {
        return Err(CliError::Usage(
            "explain: give --aws-trust-policy FILE or --gcp-provider FILE".into(),
        ));
    };
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
    let report = aws_report(
        &policy,
        &jwt,
        a.account.as_deref(),
        &a.role_session_name,
        verified.is_some(),
        now,
    )?;
    match a.format {
        ExplainFormat::Json => println!("{report}"),
        ExplainFormat::Table => print_table(&report, &jwt),
    }
    Ok(if report["decision"] == "allow" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
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

/// Evaluates `jwt`'s claims against a trust policy: the JSON report `explain` prints
/// (`decision`, `statements`, `warnings`, …).
pub(crate) fn aws_report(
    policy: &TrustPolicy,
    jwt: &UnverifiedJwt,
    account: Option<&str>,
    role_session_name: &str,
    verified: bool,
    now: time::OffsetDateTime,
) -> Result<Value, CliError> {
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

    let mut warnings: Vec<Value> = Vec::new();
    if !verified {
        warnings.push(json!({"code": "unverified", "message": "the token's signature was not verified (pass --verify JWKS|URL|ISSUER to check it); claims are taken as they are"}));
    }
    if let Some(exp) = jwt.exp()
        && exp <= now.unix_timestamp()
    {
        warnings.push(json!({"code": "expired", "message": format!("the token expired at {} — AWS would answer ExpiredTokenException before looking at the policy", fmt_unix(exp))}));
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
                    warnings.push(json!({"code": "google-aud-is-azp", "message": format!(
                        "accounts.google.com:aud is compared with the token's azp ({azp}), not its aud ({aud}): put {aud:?} under accounts.google.com:oaud and {azp:?} under accounts.google.com:aud"
                    )}));
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
            warnings.push(json!({"code": "google-azp-forms", "message": crate::azp::clients_differ(&form, &unique_id, &email)}));
        }
    }
    for w in lint(policy) {
        // A token-specific finding above says the same thing with the token's own values.
        if !warnings.iter().any(|v| v["code"] == w.code) {
            warnings.push(json!({"code": w.code, "message": w.message}));
        }
    }

    let statements: Vec<Value> = eval
        .statements
        .iter()
        .map(|st| {
            json!({
                "sid": st.sid,
                "effect": format!("{:?}", st.effect),
                "principal_matched": st.principal_matched,
                "action_matched": st.action_matched,
                "matched": st.matched,
                "conditions": st.conditions.iter().map(|c| json!({
                    "operator": c.operator,
                    "key": c.key,
                    "claim": claim_for_key(&c.key, &provider, &jwt.claims),
                    "token_value": match c.context_values.as_deref() {
                        None => Value::Null,
                        Some([one]) => Value::String(one.clone()),
                        Some(many) => json!(many),
                    },
                    "policy_values": c.policy_values,
                    "result": c.result,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let decision = if eval.decision == Decision::Allow {
        "allow"
    } else {
        "deny"
    };
    Ok(json!({
        "decision": decision,
        "reason": format!("{:?}", eval.decision),
        "verified": verified,
        "issuer": iss,
        "provider": provider.name(),
        "statements": statements,
        "warnings": warnings,
    }))
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

fn fmt_unix(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .map(idbridge_core::timefmt::rfc3339_seconds)
        .unwrap_or_else(|_| t.to_string())
}

struct Paint(bool);

impl Paint {
    /// Colours when stdout is a terminal and `NO_COLOR` is unset.
    fn stdout() -> Paint {
        Paint(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
    }

    fn c(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "(absent)".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(show).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// `token (signature verified): iss=…  sub=…`: whether the report verified the token, and its
/// identifying claims.
fn print_token_line(report: &Value, jwt: &UnverifiedJwt) {
    let claims: Vec<String> = ["iss", "sub", "aud", "azp", "email"]
        .iter()
        .filter_map(|k| jwt.claims.get(*k).map(|v| format!("{k}={}", show(v))))
        .collect();
    println!(
        "token ({}): {}",
        if report["verified"] == true {
            "signature verified"
        } else {
            "signature NOT verified"
        },
        claims.join("  ")
    );
}

pub(crate) fn print_table(report: &Value, jwt: &UnverifiedJwt) {
    let p = Paint::stdout();
    print_token_line(report, jwt);
    println!("provider: {}", show(&report["provider"]));
    for (i, st) in report["statements"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let sid = st["sid"]
            .as_str()
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        let matched = st["matched"] == true;
        println!(
            "\nstatement {i}{sid} ({}): {}   principal {} · action {}",
            show(&st["effect"]),
            if matched {
                p.c("32", "MATCHED")
            } else {
                p.c("31", "not matched")
            },
            if st["principal_matched"] == true {
                "✓"
            } else {
                "✗"
            },
            if st["action_matched"] == true {
                "✓"
            } else {
                "✗"
            },
        );
        let rows: Vec<[String; 6]> = st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                [
                    show(&c["operator"]),
                    show(&c["key"]),
                    show(&c["claim"]),
                    show(&c["token_value"]),
                    show(&c["policy_values"]),
                    if c["result"] == true {
                        "pass".into()
                    } else {
                        "FAIL".into()
                    },
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("  (no conditions)");
            continue;
        }
        let header = [
            "operator",
            "key",
            "claim",
            "token value",
            "policy values",
            "result",
        ]
        .map(String::from);
        let mut w = header.clone().map(|h| h.chars().count());
        for r in &rows {
            for (j, c) in r.iter().enumerate() {
                w[j] = w[j].max(c.chars().count());
            }
        }
        let fmt = |r: &[String; 6], color: bool| {
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(j, c)| format!("{c:<width$}", width = w[j]))
                .collect();
            let line = cells.join("  ");
            if color && r[5] == "FAIL" {
                p.c("31", &line)
            } else {
                line
            }
        };
        println!("  {}", fmt(&header, false));
        for r in &rows {
            println!("  {}", fmt(r, true));
        }
    }
    let decision = show(&report["decision"]);
    println!(
        "\ndecision: {} ({})",
        if decision == "allow" {
            p.c("1;32", "ALLOW")
        } else {
            p.c("1;31", "DENY")
        },
        show(&report["reason"])
    );
    for w in report["warnings"].as_array().into_iter().flatten() {
        println!(
            "{} [{}] {}",
            p.c("33", "warning"),
            show(&w["code"]),
            show(&w["message"])
        );
    }
}

// ---------------------------------------------------------------------------------------------
// GCP: a workload identity pool provider, its attribute mapping and condition, and IAM bindings
// ---------------------------------------------------------------------------------------------

/// The format of `--gcp-provider`, shown in `idbridge explain --help` and the README.
pub(crate) const GCP_PROVIDER_HELP: &str = "\
A workload identity pool provider, as TOML or JSON (a file ending in .json, or starting with \
`{`, is JSON). Either one provider table in the emulator world's format plus the pool and \
project number that form its principals:

    project_number = \"836192731250\"
    pool = \"aws-pool\"
    id = \"aws-test-account\"
    aws = { account_id = \"111122223333\" }        # or: oidc = { issuer_uri = \"https://…\", allowed_audiences = [\"…\"] }
    attribute_mapping = { \"google.subject\" = \"assertion.arn\" }   # optional for AWS providers
    attribute_condition = \"attribute.aws_role == 'arn:aws:sts::111122223333:assumed-role/gcp-caller'\"

or a world file (or the `idbridge setup --format world` fragment) with [[project]] and \
[[workload_identity_pool]] tables: its only provider is used, or the one --provider POOL/PROVIDER \
names.";

/// A provider read from `--gcp-provider`, with the pool it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct GcpProvider {
    /// The provider's resource name (pool, project number, provider id).
    pub(crate) name: ProviderName,
    /// Whether the pool is disabled.
    pub(crate) pool_disabled: bool,
    /// The provider as the emulator world declares it.
    pub(crate) provider: WorkloadIdentityProvider,
}

/// Reads `--gcp-provider` (see [`GCP_PROVIDER_HELP`]).
pub(crate) fn load_gcp_provider(
    path: &std::path::Path,
    select: Option<&str>,
) -> Result<GcpProvider, CliError> {
    let bad = |m: String| CliError::Usage(format!("--gcp-provider {}: {m}", path.display()));
    let text = idbridge_core::file::read_config_file(path)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    let is_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    let doc: Value = if is_json {
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?
    } else {
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| bad(format!("not TOML: {}", e.to_string().trim_end())))?;
        serde_json::to_value(table).map_err(|e| bad(e.to_string()))?
    };
    parse_gcp_provider(&doc, select).map_err(bad)
}

/// A provider from a parsed `--gcp-provider` document.
pub(crate) fn parse_gcp_provider(doc: &Value, select: Option<&str>) -> Result<GcpProvider, String> {
    let Some(obj) = doc.as_object() else {
        return Err("expected a table".into());
    };
    let text_of = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let mut found = Vec::new();
    if let Some(pools) = obj.get("workload_identity_pool") {
        let projects = obj
            .get("project")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for pool in pools.as_array().into_iter().flatten() {
            let pool_id = pool["id"].as_str().unwrap_or_default().to_owned();
            let project = pool["project"].as_str().unwrap_or_default();
            let number = projects
                .iter()
                .find(|p| p["id"].as_str() == Some(project))
                .and_then(|p| text_of(&p["number"]))
                .ok_or_else(|| {
                    format!("pool {pool_id:?}: no [[project]] with id {project:?} gives its project number")
                })?;
            for provider in pool
                .get("provider")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let id = provider["id"].as_str().unwrap_or_default();
                let wanted = match select {
                    None => true,
                    Some(s) => s == id || s == format!("{pool_id}/{id}"),
                };
                if wanted {
                    found.push((
                        number.clone(),
                        pool_id.clone(),
                        pool["disabled"] == true,
                        provider.clone(),
                    ));
                }
            }
        }
        if found.len() != 1 {
            return Err(match (found.len(), select) {
                (0, Some(s)) => format!("no provider {s:?} (give --provider POOL/PROVIDER)"),
                (0, None) => "no [[workload_identity_pool.provider]]".into(),
                _ => "several providers: choose one with --provider POOL/PROVIDER".into(),
            });
        }
    } else {
        let mut provider = obj.clone();
        let number = provider
            .remove("project_number")
            .as_ref()
            .and_then(text_of)
            .ok_or("field `project_number` (the pool's project number) is missing")?;
        let pool = provider
            .remove("pool")
            .as_ref()
            .and_then(text_of)
            .ok_or("field `pool` (the pool id) is missing")?;
        let disabled = provider.remove("pool_disabled") == Some(Value::Bool(true));
        found.push((number, pool, disabled, Value::Object(provider)));
    }
    let Some((number, pool, pool_disabled, provider)) = found.pop() else {
        return Err("no provider".into());
    };
    let provider: WorkloadIdentityProvider =
        serde_json::from_value(provider).map_err(|e| format!("provider: {e}"))?;
    if provider.aws.is_some() == provider.oidc.is_some() {
        return Err(format!(
            "provider {:?}: set exactly one of `aws` and `oidc`",
            provider.id
        ));
    }
    provider
        .mapping()
        .map_err(|e| format!("provider {:?}: attribute_mapping: {e}", provider.id))?;
    provider
        .condition()
        .map_err(|e| format!("provider {:?}: attribute_condition: {e}", provider.id))?;
    Ok(GcpProvider {
        name: ProviderName {
            pool: PoolName {
                project_number: number,
                pool,
            },
            provider: provider.id.clone(),
        },
        pool_disabled,
        provider,
    })
}

/// What is presented to Google STS.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GcpSubject<'a> {
    /// An OIDC token's claims.
    Token(&'a UnverifiedJwt),
    /// An AWS caller, by the ARN `GetCallerIdentity` returns for it.
    AwsArn(&'a str),
}

/// The assertion Google STS builds from an AWS caller's `GetCallerIdentity` result.
pub(crate) fn aws_assertion(arn: &str) -> Value {
    let account = arn.split(':').nth(4).unwrap_or_default();
    let session = arn
        .split_once(":assumed-role/")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, session)| session);
    let userid = match session {
        Some(s) => format!("AROA…:{s}"),
        None => "AIDA…".to_owned(),
    };
    json!({"arn": arn, "account": account, "userid": userid})
}

/// Records the first reason for a denial.
fn fail(slot: &mut Option<String>, reason: String) {
    if slot.is_none() {
        *slot = Some(reason);
    }
}

fn step(
    name: &str,
    key: &str,
    value: impl Into<Value>,
    expected: impl Into<Value>,
    result: Option<bool>,
) -> Value {
    json!({"step": name, "key": key, "value": value.into(), "expected": expected.into(), "result": result})
}

/// Evaluates what Google STS and IAM make of `subject` under `p`: provider state, issuer and
/// audience (OIDC) or account (AWS), the attribute mapping, the condition, the federated
/// principal and each binding member. Returns the JSON report `explain --gcp-provider` prints
/// (`decision`, `reason`, `steps`, `warnings`, …).
pub(crate) fn gcp_report(
    p: &GcpProvider,
    subject: GcpSubject<'_>,
    bindings: &[String],
    service_account: Option<&str>,
    verified: bool,
    now: i64,
) -> Value {
    let canonical = p.name.canonical();
    let mut steps: Vec<Value> = Vec::new();
    let mut warnings: Vec<Value> = Vec::new();
    let mut reason: Option<String> = None;
    let enabled = !p.pool_disabled && !p.provider.disabled;
    steps.push(step(
        "provider",
        "state",
        if enabled { "enabled" } else { "disabled" },
        "enabled",
        Some(enabled),
    ));
    if !enabled {
        fail(
            &mut reason,
            "invalid_target: the pool or provider is disabled".into(),
        );
    }
    let assertion = match (subject, &p.provider.aws, &p.provider.oidc) {
        (GcpSubject::AwsArn(arn), Some(aws), _) => {
            let a = aws_assertion(arn);
            let account = a["account"].as_str().unwrap_or_default().to_owned();
            let ok = account == aws.account_id;
            steps.push(step(
                "account",
                "assertion.account",
                account,
                aws.account_id.clone(),
                Some(ok),
            ));
            if !ok {
                fail(
                    &mut reason,
                    "invalid_grant: the caller's AWS account is not the provider's account".into(),
                );
            }
            Some(a)
        }
        (GcpSubject::Token(jwt), None, Some(oidc)) => {
            let iss = jwt.str_claim("iss").unwrap_or_default();
            let ok = iss == oidc.issuer_uri;
            steps.push(step(
                "issuer",
                "iss",
                iss,
                oidc.issuer_uri.clone(),
                Some(ok),
            ));
            if !ok {
                fail(
                    &mut reason,
                    "invalid_grant: the token's issuer is not the provider's issuer_uri".into(),
                );
            }
            let auds: Vec<String> = match jwt.claims.get("aud") {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            let (ok, expected) = if oidc.allowed_audiences.is_empty() {
                (
                    auds.iter().any(|a| p.name.is_audience(a)),
                    json!([canonical.clone(), format!("https:{canonical}")]),
                )
            } else {
                (
                    auds.iter().any(|a| oidc.allowed_audiences.contains(a)),
                    json!(oidc.allowed_audiences),
                )
            };
            steps.push(step("audience", "aud", json!(auds), expected, Some(ok)));
            if !ok {
                fail(
                    &mut reason,
                    if oidc.allowed_audiences.is_empty() {
                        "invalid_grant: the token's aud is not the provider's canonical name (allowed_audiences is empty)".to_owned()
                    } else {
                        "invalid_grant: the token's aud is none of the provider's allowed_audiences"
                            .to_owned()
                    },
                );
            }
            if !verified {
                warnings.push(json!({"code": "unverified", "message": "the token's signature was not verified (pass --verify JWKS|URL|ISSUER to check it); claims are taken as they are"}));
            }
            if let Some(exp) = jwt.exp()
                && exp <= now
            {
                warnings.push(json!({"code": "expired", "message": format!("the token expired at {}: Google STS would answer invalid_grant before mapping it", fmt_unix(exp))}));
            }
            Some(Value::Object(jwt.claims.clone()))
        }
        (GcpSubject::Token(_), _, _) => {
            steps.push(step(
                "subject",
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:jwt",
                "urn:ietf:params:aws:token-type:aws4_request",
                Some(false),
            ));
            fail(&mut reason, "invalid_request: an AWS provider takes a signed GetCallerIdentity request, not a JWT (pass --aws-arn ARN)".into());
            None
        }
        (GcpSubject::AwsArn(_), _, _) => {
            steps.push(step(
                "subject",
                "subject_token_type",
                "urn:ietf:params:aws:token-type:aws4_request",
                "urn:ietf:params:oauth:token-type:jwt",
                Some(false),
            ));
            fail(
                &mut reason,
                "invalid_request: an OIDC provider takes a JWT (pass --token), not an AWS caller"
                    .into(),
            );
            None
        }
    };
    let mut principal = None;
    if let (Some(assertion), Ok(mapping)) = (&assertion, p.provider.mapping()) {
        for (target, expression) in mapping.entries() {
            let subject_expr = target == idbridge_policy::gcp::GOOGLE_SUBJECT;
            if subject_expr {
                let unique = match p.provider.kind() {
                    ProviderKind::Aws => expression.contains("arn"),
                    ProviderKind::Oidc => expression.contains("sub"),
                };
                if !unique {
                    warnings.push(json!({"code": "subject-not-unique", "message": format!(
                        "google.subject is mapped from `{expression}`, not from the caller's unique {}: different workloads may share one principal, and a principal:// binding then grants all of them",
                        if p.provider.kind() == ProviderKind::Aws { "ARN" } else { "`sub`" }
                    )}));
                }
            }
        }
        match mapping.apply(assertion) {
            Ok(mapped) => {
                let mut shown = vec![(
                    idbridge_policy::gcp::GOOGLE_SUBJECT.to_owned(),
                    json!(mapped.subject),
                )];
                if !mapped.groups.is_empty() {
                    shown.push((
                        idbridge_policy::gcp::GOOGLE_GROUPS.to_owned(),
                        json!(mapped.groups),
                    ));
                }
                for (k, v) in &mapped.attributes {
                    shown.push((format!("attribute.{k}"), json!(v)));
                }
                let expressions: std::collections::BTreeMap<String, String> =
                    mapping.entries().map(|(t, e)| (t, e.to_owned())).collect();
                for (target, value) in shown {
                    let expr = expressions.get(&target).cloned().unwrap_or_default();
                    steps.push(step("mapping", &target, value, expr, Some(true)));
                }
                match p.provider.condition() {
                    Ok(Some(c)) => match c.evaluate(assertion, &mapped) {
                        Ok(b) => {
                            steps.push(step(
                                "condition",
                                "attribute_condition",
                                b,
                                c.source(),
                                Some(b),
                            ));
                            if !b {
                                fail(
                                    &mut reason,
                                    "unauthorized_client: the attribute condition is false".into(),
                                );
                            }
                        }
                        Err(e) => {
                            steps.push(step(
                                "condition",
                                "attribute_condition",
                                e.to_string(),
                                c.source(),
                                Some(false),
                            ));
                            fail(&mut reason, format!("unauthorized_client: {e}"));
                        }
                    },
                    Ok(None) => {
                        steps.push(step(
                            "condition",
                            "attribute_condition",
                            "(none)",
                            "(none)",
                            Some(true),
                        ));
                        warnings.push(json!({"code": "no-condition", "message": match p.provider.kind() {
                            ProviderKind::Aws => format!("the provider has no attribute condition: every identity of AWS account {} can exchange tokens here; restrict it, e.g. attribute.aws_role == 'arn:aws:sts::ACCOUNT:assumed-role/ROLE'", p.provider.aws.as_ref().map(|a| a.account_id.as_str()).unwrap_or_default()),
                            ProviderKind::Oidc => format!("the provider has no attribute condition: any identity the issuer {} signs a token for can exchange it here; restrict it, e.g. assertion.sub == '…'", p.provider.oidc.as_ref().map(|o| o.issuer_uri.as_str()).unwrap_or_default()),
                        }}));
                    }
                    Err(e) => {
                        steps.push(step(
                            "condition",
                            "attribute_condition",
                            e.to_string(),
                            "",
                            Some(false),
                        ));
                        fail(&mut reason, format!("unauthorized_client: {e}"));
                    }
                }
                let fp = FederatedPrincipal::from_mapped(&p.name.pool, &mapped);
                steps.push(step("principal", "principal", fp.identifier(), "", None));
                principal = Some(fp);
            }
            Err(e) => {
                steps.push(step(
                    "mapping",
                    "attribute_mapping",
                    e.to_string(),
                    "",
                    Some(false),
                ));
                fail(&mut reason, format!("invalid_request: {e}"));
            }
        }
    }
    let mut any_binding = bindings.is_empty();
    for member in bindings {
        let parsed = GcpMember::parse(member);
        let matched = match (&parsed, &principal) {
            (Ok(m), Some(fp)) => m.matches(&GcpPrincipal::Federated(fp.clone())),
            _ => false,
        };
        any_binding |= matched;
        let expected = match &parsed {
            Ok(_) => "matches the principal".to_owned(),
            Err(e) => e.to_string(),
        };
        steps.push(step(
            "binding",
            member,
            if matched { "matches" } else { "does not match" },
            expected,
            Some(matched),
        ));
        if member.ends_with("/*") && member.starts_with("principalSet://") {
            warnings.push(json!({"code": "principalset-all", "message": format!("{member} grants every identity of the pool, whatever its subject or attributes")}));
        }
        if let (Ok(GcpMember::Subject { subject, .. }), ProviderKind::Aws) =
            (&parsed, p.provider.kind())
            && subject.contains(":assumed-role/")
        {
            warnings.push(json!({"code": "aws-session-subject", "message": format!("{member} names one role session (the ARN's last part is the session name, e.g. an instance id): bind principalSet://{}/attribute.aws_role/ROLE_ARN instead", p.name.pool.path())}));
        }
        if let Ok(
            GcpMember::Subject { pool, .. }
            | GcpMember::PoolGroup { pool, .. }
            | GcpMember::PoolAttribute { pool, .. }
            | GcpMember::AllInPool { pool },
        ) = &parsed
            && *pool != p.name.pool
        {
            warnings.push(json!({"code": "binding-other-pool", "message": format!("{member} names pool {} of project {}, not this provider's pool {} of project {}", pool.pool, pool.project_number, p.name.pool.pool, p.name.pool.project_number)}));
        }
    }
    let mut fix = None;
    if !any_binding {
        let exchanged = reason.is_none();
        fail(
            &mut reason,
            "PERMISSION_DENIED: no binding member matches the federated principal".into(),
        );
        if let (true, Some(fp)) = (exchanged, &principal) {
            let sa = service_account.unwrap_or("SERVICE_ACCOUNT_EMAIL");
            fix = Some(format!(
                "gcloud iam service-accounts add-iam-policy-binding {sa} --role=roles/iam.workloadIdentityUser --member={}",
                fp.identifier()
            ));
        }
    }
    if p.provider.kind() == ProviderKind::Aws {
        warnings.push(json!({"code": "aws-org-policy", "message": format!(
            "AWS providers also need the organization policy constraints/iam.workloadIdentityPoolAwsAccounts to allow account {}: gcloud resource-manager org-policies allow constraints/iam.workloadIdentityPoolAwsAccounts {} --organization=ORGANIZATION_ID",
            p.provider.aws.as_ref().map(|a| a.account_id.as_str()).unwrap_or_default(),
            p.provider.aws.as_ref().map(|a| a.account_id.as_str()).unwrap_or_default(),
        )}));
    }
    let decision = if reason.is_none() { "allow" } else { "deny" };
    let (issuer, kind) = match (&p.provider.aws, &p.provider.oidc) {
        (Some(a), _) => (format!("account {}", a.account_id), "aws"),
        (_, Some(o)) => (o.issuer_uri.clone(), "oidc"),
        _ => (String::new(), ""),
    };
    json!({
        "decision": decision,
        "reason": reason.unwrap_or_else(|| "Allow".into()),
        "verified": verified,
        "issuer": issuer,
        "provider": canonical,
        "provider_kind": kind,
        "principal": principal.map(|fp| fp.identifier()),
        "service_account": service_account,
        "steps": steps,
        "fix": fix,
        "warnings": warnings,
    })
}

async fn run_gcp(a: &ExplainArgs, path: &std::path::Path) -> Result<ExitCode, CliError> {
    let p = load_gcp_provider(path, a.provider.as_deref())?;
    #[expect(
        clippy::disallowed_methods,
        reason = "explain evaluates at the current wall time"
    )]
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (report, jwt) = match (&a.token, &a.aws_arn) {
        (Some(t), None) => {
            let token = read_arg(t, "token")?;
            let token = token.expose_secret().trim();
            let jwt = UnverifiedJwt::parse(token)
                .map_err(|e| CliError::Usage(format!("explain: --token: {e}")))?;
            let verified = match &a.verify {
                Some(v) => {
                    crate::verify::verify(token, v)
                        .await
                        .map_err(CliError::Failed)?;
                    true
                }
                None => false,
            };
            (
                gcp_report(
                    &p,
                    GcpSubject::Token(&jwt),
                    &a.bindings,
                    a.service_account.as_deref(),
                    verified,
                    now,
                ),
                Some(jwt),
            )
        }
        (None, Some(arn)) => (
            gcp_report(
                &p,
                GcpSubject::AwsArn(arn),
                &a.bindings,
                a.service_account.as_deref(),
                false,
                now,
            ),
            None,
        ),
        _ => {
            return Err(CliError::Usage(
                "explain: --gcp-provider needs --token JWT|@FILE (OIDC providers) or --aws-arn ARN (AWS providers)".into(),
            ));
        }
    };
    match a.format {
        ExplainFormat::Json => println!("{report}"),
        ExplainFormat::Table => print_gcp_table(&report, jwt.as_ref(), a.aws_arn.as_deref()),
    }
    Ok(if report["decision"] == "allow" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The table form of a [`gcp_report`].
pub(crate) fn print_gcp_table(report: &Value, jwt: Option<&UnverifiedJwt>, aws_arn: Option<&str>) {
    let p = Paint::stdout();
    match (jwt, aws_arn) {
        (Some(jwt), _) => print_token_line(report, jwt),
        (None, Some(arn)) => println!("AWS caller (GetCallerIdentity): {arn}"),
        (None, None) => {}
    }
    println!(
        "provider: {} ({}, {})",
        show(&report["provider"]),
        show(&report["provider_kind"]),
        show(&report["issuer"])
    );
    println!();
    for s in report["steps"].as_array().into_iter().flatten() {
        let result = match s["result"].as_bool() {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "    ",
        };
        let (key, value, expected) = (show(&s["key"]), show(&s["value"]), show(&s["expected"]));
        let detail = match s["step"].as_str().unwrap_or_default() {
            "mapping"
                if report["provider_kind"] == "aws"
                    && s["expected"]
                        .as_str()
                        .is_some_and(|e| e.contains("extract(")) =>
            {
                format!("{key} = {value}   (Google's default AWS mapping)")
            }
            "mapping" => format!("{key} = {value}   ← {expected}"),
            "condition" => format!("{expected}   → {value}"),
            "principal" => value,
            "binding" => format!("{key}   {value}"),
            _ => format!("{key} = {value}   (expected {expected})"),
        };
        let line = format!("  {result}  {:<9}  {detail}", show(&s["step"]));
        if result == "FAIL" {
            println!("{}", p.c("31", &line));
        } else {
            println!("{line}");
        }
    }
    let decision = show(&report["decision"]);
    println!(
        "\ndecision: {} ({})",
        if decision == "allow" {
            p.c("1;32", "ALLOW")
        } else {
            p.c("1;31", "DENY")
        },
        show(&report["reason"])
    );
    if let Some(fix) = report["fix"].as_str() {
        println!("fix: {fix}");
    }
    for w in report["warnings"].as_array().into_iter().flatten() {
        println!(
            "{} [{}] {}",
            p.c("33", "warning"),
            show(&w["code"]),
            show(&w["message"])
        );
    }
}
