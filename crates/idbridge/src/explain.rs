//! `idbridge explain`: why would (or wouldn't) AWS let this token assume this role?
//!
//! Evaluates the token's claims against a trust policy with the same engine the emulator uses,
//! prints every statement and condition (key, the claim it reads, the token's value, operator,
//! policy values, result), the decision, and warnings for known traps. The signature is not
//! verified unless `--verify` names a JWKS file, a JWKS URL or an issuer.

use std::io::IsTerminal;
use std::process::ExitCode;

use idbridge_core::jwt::UnverifiedJwt;
use idbridge_policy::aws::{
    Decision, PrincipalKind, PrincipalSet, PrincipalSpec, TrustPolicy, WebIdentityProvider,
    WebIdentityRequest, evaluate, lint, web_identity_context,
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

fn read_arg(value: &str, what: &str) -> Result<String, CliError> {
    match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("explain: cannot read {what} file {path}: {e}"))),
        None => Ok(value.to_owned()),
    }
}

pub(crate) async fn run(a: ExplainArgs) -> Result<ExitCode, CliError> {
    let token = read_arg(&a.token, "token")?;
    let token = token.trim();
    let jwt = UnverifiedJwt::parse(token)
        .map_err(|e| CliError::Usage(format!("explain: --token: {e}")))?;
    let policy_text = std::fs::read_to_string(&a.aws_trust_policy).map_err(|e| {
        CliError::Usage(format!(
            "explain: cannot read {}: {e}",
            a.aws_trust_policy.display()
        ))
    })?;
    let policy = TrustPolicy::parse(&policy_text).map_err(|e| {
        CliError::Usage(format!(
            "explain: {}: MalformedPolicyDocument: {e}",
            a.aws_trust_policy.display()
        ))
    })?;
    let verified = match &a.verify {
        Some(v) => Some(
            crate::verify::verify(token, v)
                .await
                .map_err(CliError::Failed)?,
        ),
        None => None,
    };
    let iss = jwt.str_claim("iss").unwrap_or_default().to_owned();
    let provider = WebIdentityProvider::from_issuer(&iss);
    let account = a
        .account
        .clone()
        .or_else(|| oidc_account(&policy, &provider))
        .unwrap_or_else(|| "000000000000".into());
    #[expect(
        clippy::disallowed_methods,
        reason = "explain evaluates at the current wall time"
    )]
    let now = time::OffsetDateTime::now_utc();
    let request = WebIdentityRequest::new(account, a.role_session_name.clone(), now);
    let ctx = web_identity_context(&provider, &jwt.claims, &request)
        .map_err(|e| CliError::Usage(format!("explain: token claim {}: {}", e.claim, e.reason)))?;
    let eval = evaluate(&policy, &ctx);

    let mut warnings: Vec<Value> = Vec::new();
    if verified.is_none() {
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
    for w in lint(&policy) {
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
    let report = json!({
        "decision": decision,
        "reason": format!("{:?}", eval.decision),
        "verified": verified.is_some(),
        "issuer": iss,
        "provider": provider.name(),
        "statements": statements,
        "warnings": warnings,
    });
    match a.format {
        ExplainFormat::Json => println!("{report}"),
        ExplainFormat::Table => print_table(&report, &jwt),
    }
    Ok(if eval.decision == Decision::Allow {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
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

fn print_table(report: &Value, jwt: &UnverifiedJwt) {
    let p = Paint(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none());
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
