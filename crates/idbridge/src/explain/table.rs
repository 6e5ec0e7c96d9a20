//! `--format table`: the reports of [`super::report`] as readable tables, coloured on a
//! terminal (unless `NO_COLOR` is set).

use std::io::IsTerminal;

use idbridge_core::jwt::UnverifiedJwt;
use serde_json::Value;

use super::report::{AwsReport, AwsStatement, GcpReport, GcpStepKind, Shown, Verdict, Warning};

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

/// A claim's value: strings bare, lists joined with `, `.
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
fn print_token_line(verified: bool, jwt: &UnverifiedJwt) {
    let claims: Vec<String> = ["iss", "sub", "aud", "azp", "email"]
        .iter()
        .filter_map(|k| jwt.claims.get(*k).map(|v| format!("{k}={}", show(v))))
        .collect();
    println!(
        "token ({}): {}",
        if verified {
            "signature verified"
        } else {
            "signature NOT verified"
        },
        claims.join("  ")
    );
}

fn print_decision(p: &Paint, decision: Verdict, reason: &str) {
    println!(
        "\ndecision: {} ({reason})",
        match decision {
            Verdict::Allow => p.c("1;32", "ALLOW"),
            Verdict::Deny => p.c("1;31", "DENY"),
        },
    );
}

fn print_warnings(p: &Paint, warnings: &[Warning]) {
    for w in warnings {
        println!("{} [{}] {}", p.c("33", "warning"), w.code, w.message);
    }
}

fn tick(b: bool) -> &'static str {
    if b { "✓" } else { "✗" }
}

/// The table form of an AWS report.
pub(crate) fn print_aws(report: &AwsReport, jwt: &UnverifiedJwt) {
    print_token_line(report.verified, jwt);
    println!("provider: {}", report.provider);
    print_aws_statements(&report.statements, "token value");
    print_aws_verdict(report.decision, &report.reason, &report.warnings);
}

/// The decision, its reason and the warnings of an AWS report.
pub(crate) fn print_aws_verdict(decision: Verdict, reason: &str, warnings: &[Warning]) {
    let p = Paint::stdout();
    print_decision(&p, decision, reason);
    print_warnings(&p, warnings);
}

/// Each statement of an evaluated trust policy, its conditions as a table whose value column
/// is headed `value_header`.
pub(crate) fn print_aws_statements(statements: &[AwsStatement], value_header: &str) {
    let p = Paint::stdout();
    for (i, st) in statements.iter().enumerate() {
        let sid = st.sid.as_ref().map(|s| format!(" {s}")).unwrap_or_default();
        println!(
            "\nstatement {i}{sid} ({}): {}   principal {} · action {}",
            st.effect,
            if st.matched {
                p.c("32", "MATCHED")
            } else {
                p.c("31", "not matched")
            },
            tick(st.principal_matched),
            tick(st.action_matched),
        );
        let rows: Vec<[String; 6]> = st
            .conditions
            .iter()
            .map(|c| {
                [
                    c.operator.clone(),
                    c.key.clone(),
                    c.claim.clone(),
                    c.token_value
                        .as_ref()
                        .map_or_else(|| "(absent)".to_owned(), Shown::text),
                    c.policy_values.join(", "),
                    if c.result { "pass" } else { "FAIL" }.to_owned(),
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
            value_header,
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
}

/// The table form of a GCP report.
pub(crate) fn print_gcp(report: &GcpReport, jwt: Option<&UnverifiedJwt>, aws_arn: Option<&str>) {
    let p = Paint::stdout();
    match (jwt, aws_arn) {
        (Some(jwt), _) => print_token_line(report.verified, jwt),
        (None, Some(arn)) => println!("AWS caller (GetCallerIdentity): {arn}"),
        (None, None) => {}
    }
    println!(
        "provider: {} ({}, {})",
        report.provider, report.provider_kind, report.issuer
    );
    println!();
    for s in &report.steps {
        let result = match s.result {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "    ",
        };
        let (key, value, expected) = (&s.key, s.value.text(), s.expected.text());
        let detail = match s.step {
            GcpStepKind::Mapping
                if report.provider_kind == "aws"
                    && matches!(&s.expected, Shown::One(e) if e.contains("extract(")) =>
            {
                format!("{key} = {value}   (Google's default AWS mapping)")
            }
            GcpStepKind::Mapping => format!("{key} = {value}   ← {expected}"),
            GcpStepKind::Condition => format!("{expected}   → {value}"),
            GcpStepKind::Principal => value,
            GcpStepKind::Binding => format!("{key}   {value}"),
            _ => format!("{key} = {value}   (expected {expected})"),
        };
        let line = format!("  {result}  {:<9}  {detail}", s.step.name());
        if result == "FAIL" {
            println!("{}", p.c("31", &line));
        } else {
            println!("{line}");
        }
    }
    print_decision(&p, report.decision, &report.reason);
    if let Some(fix) = &report.fix {
        println!("fix: {fix}");
    }
    print_warnings(&p, &report.warnings);
}
