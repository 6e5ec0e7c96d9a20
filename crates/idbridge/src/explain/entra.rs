//! `explain --entra`: which federated identity credential of an Entra app registration or
//! user-assigned managed identity takes a token, or why none does. The decision is
//! `idbridge_policy::azure::federate`'s (the emulator's Entra answers with the same); this
//! module reads the app (or the world file), renders the trace as a report, and adds the
//! warnings and the command that adds the missing credential.

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

use idbridge_core::jwt::UnverifiedJwt;
use idbridge_policy::azure::{
    self, DEFAULT_AUDIENCE, FederatedCredential, Rejection, Signature, Trace,
};
use serde::Serialize;
use serde_json::Value;

use super::report::{Shown, Verdict, Warning};
use super::{UNVERIFIED, exit_code, fmt_unix, read_arg};
use crate::cli::{ExplainArgs, ExplainFormat};
use crate::error::CliError;

/// The format of `--entra`, shown in `idbridge explain --help` and the README.
pub(crate) const ENTRA_HELP: &str = "\
An Entra app registration or user-assigned managed identity with its federated identity \
credentials, as TOML or JSON: either the emulator's world file (its [[entra_app]] and \
[[azure_managed_identity]] tables; --client-id picks one when several have credentials), or one \
app:

    client_id = \"c1111111-0000-4000-8000-000000000011\"   # optional
    display_name = \"billing-caller\"                      # optional
    resource_id = \"/subscriptions/…/resourceGroups/RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME\"   # a managed identity
    [[federated_credential]]
    name = \"kubernetes\"
    issuer = \"https://oidc.example\"
    subject = \"system:serviceaccount:default:my-app\"
    audiences = [\"api://AzureADTokenExchange\"]            # the default";

/// Whose credentials they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PrincipalKind {
    /// An app registration (`az ad app federated-credential`).
    App,
    /// A user-assigned managed identity (`az identity federated-credential`).
    ManagedIdentity,
}

/// An app or managed identity and its federated credentials, as `--entra` declares it.
#[derive(Debug, Clone)]
pub(crate) struct EntraPrincipal {
    pub(crate) kind: PrincipalKind,
    /// The client id (`None` when the app file does not say).
    pub(crate) client_id: Option<String>,
    /// Display name (app) or name (managed identity).
    pub(crate) name: Option<String>,
    /// The managed identity's ARM id.
    pub(crate) resource_id: Option<String>,
    pub(crate) credentials: Vec<FederatedCredential>,
}

impl EntraPrincipal {
    /// `billing-caller (c111…)`, or whichever of the two is known.
    pub(crate) fn label(&self) -> String {
        match (&self.name, &self.client_id) {
            (Some(n), Some(c)) => format!("{n} ({c})"),
            (Some(n), None) => n.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => "the app".into(),
        }
    }

    /// The managed identity's resource group and name, from its ARM id.
    pub(crate) fn identity_group_and_name(&self) -> Option<(String, String)> {
        let id = self.resource_id.as_deref()?;
        let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
        let group = parts
            .iter()
            .position(|p| p.eq_ignore_ascii_case("resourceGroups"))
            .and_then(|i| parts.get(i + 1))?;
        let name = parts.last()?;
        Some(((*group).to_owned(), (*name).to_owned()))
    }
}

/// Reads `--entra` (see [`ENTRA_HELP`]); `client_id` picks the principal in a world file.
pub(crate) fn load_entra(path: &Path, client_id: Option<&str>) -> Result<EntraPrincipal, CliError> {
    let bad = |m: String| CliError::Usage(format!("--entra {}: {m}", path.display()));
    let doc = super::load_document(path).map_err(bad)?;
    parse_entra(&doc, client_id).map_err(bad)
}

/// A principal from a parsed `--entra` document.
pub(crate) fn parse_entra(doc: &Value, client_id: Option<&str>) -> Result<EntraPrincipal, String> {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let credentials = |v: &Value, at: &str| -> Result<Vec<FederatedCredential>, String> {
        let list = match v.get("federated_credential") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(j, item)| {
                    serde_json::from_value::<FederatedCredential>(item.clone())
                        .map_err(|e| format!("{at}federated_credential[{j}]: {e}"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("{at}federated_credential: not a list of tables")),
        };
        azure::validate(&list).map_err(|e| format!("{at}{e}"))?;
        Ok(list)
    };
    let world = doc.get("entra_app").is_some() || doc.get("azure_managed_identity").is_some();
    if !world {
        if doc.get("federated_credential").is_none() {
            return Err("no [[federated_credential]] (and no [[entra_app]] or [[azure_managed_identity]] of a world file)".into());
        }
        let resource_id = text(doc, "resource_id");
        let p = EntraPrincipal {
            kind: if resource_id.is_some() {
                PrincipalKind::ManagedIdentity
            } else {
                PrincipalKind::App
            },
            client_id: text(doc, "client_id"),
            name: text(doc, "display_name").or_else(|| text(doc, "name")),
            resource_id,
            credentials: credentials(doc, "")?,
        };
        if let (Some(want), Some(have)) = (client_id, &p.client_id)
            && want != have
        {
            return Err(format!(
                "field `client_id`: the file declares {have}, not {want}"
            ));
        }
        return Ok(p);
    }
    let mut all = Vec::new();
    for (table, kind, name_key) in [
        ("entra_app", PrincipalKind::App, "display_name"),
        (
            "azure_managed_identity",
            PrincipalKind::ManagedIdentity,
            "name",
        ),
    ] {
        let items = match doc.get(table) {
            None => continue,
            Some(Value::Array(items)) => items,
            Some(_) => return Err(format!("{table}: not a list of tables")),
        };
        for (i, item) in items.iter().enumerate() {
            let name = text(item, name_key);
            let at = format!("{table}[{i}] ({}).", name.as_deref().unwrap_or("?"));
            all.push(EntraPrincipal {
                kind,
                client_id: text(item, "client_id"),
                name,
                resource_id: text(item, "resource_id"),
                credentials: credentials(item, &at)?,
            });
        }
    }
    let with_credentials: Vec<&EntraPrincipal> =
        all.iter().filter(|p| !p.credentials.is_empty()).collect();
    match client_id {
        Some(id) => all
            .iter()
            .find(|p| p.client_id.as_deref() == Some(id))
            .cloned()
            .ok_or_else(|| format!("no entra_app or azure_managed_identity has client_id {id}")),
        None => match with_credentials.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err("no entra_app or azure_managed_identity has a federated_credential".into()),
            several => Err(format!(
                "{} apps and identities have federated credentials: pick one with --client-id ({})",
                several.len(),
                several
                    .iter()
                    .map(|p| p.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
    }
}

/// `explain --entra`: Entra's decision on a token for an app.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EntraReport {
    /// The first failure's AADSTS code.
    pub(crate) code: Option<u32>,
    /// The token's checks that do not depend on a credential: algorithm, signature, time.
    pub(crate) checks: Vec<EntraCheck>,
    pub(crate) client_id: Option<String>,
    /// Each credential compared with the token.
    pub(crate) credentials: Vec<EntraCredential>,
    pub(crate) decision: Verdict,
    /// The `az` command that adds a credential for this token, when one is missing.
    pub(crate) fix: Option<String>,
    /// The matching credential's name.
    pub(crate) matched: Option<String>,
    /// The app's or identity's name.
    pub(crate) principal: Option<String>,
    pub(crate) principal_kind: PrincipalKind,
    /// `AADSTS<code>: <message>` as Entra answers, or `Allow`.
    pub(crate) reason: String,
    pub(crate) verified: bool,
    pub(crate) warnings: Vec<Warning>,
}

/// A check of the token itself.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EntraCheck {
    pub(crate) check: &'static str,
    pub(crate) expected: Shown,
    pub(crate) result: bool,
    pub(crate) value: Shown,
}

/// One credential compared with the token.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EntraCredential {
    pub(crate) fields: Vec<EntraField>,
    pub(crate) matched: bool,
    pub(crate) name: String,
}

/// One field of a credential against the token's claim.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EntraField {
    /// The credential's value.
    pub(crate) credential: Shown,
    /// `issuer`, `subject` or `audience`.
    pub(crate) field: &'static str,
    pub(crate) result: bool,
    /// The token's claim.
    pub(crate) token: Shown,
    /// Why it differs, when a likely reason is seen.
    pub(crate) why: Option<String>,
}

/// Why two strings differ, when it is one of the usual slips.
fn why_differs(token: &str, credential: &str) -> Option<String> {
    if token == credential {
        None
    } else if token.is_empty() {
        Some("the token has no such claim".into())
    } else if token.eq_ignore_ascii_case(credential) {
        Some("only the letter case differs (Entra compares case-sensitively)".into())
    } else if token.trim_end_matches('/') == credential.trim_end_matches('/') {
        Some("only a trailing slash differs (Entra compares exactly)".into())
    } else if token.trim() == credential.trim() {
        Some("only whitespace differs".into())
    } else {
        None
    }
}

/// Entra's decision on `jwt` for `p` at `now`, as a report.
pub(crate) fn entra_report(
    p: &EntraPrincipal,
    jwt: &UnverifiedJwt,
    signature: Signature,
    now: i64,
) -> EntraReport {
    let alg = jwt
        .header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let verified = signature == Signature::Valid;
    let trace = azure::federate(&p.credentials, alg, &jwt.claims, signature, now);
    report_of(p, &trace, verified)
}

fn report_of(p: &EntraPrincipal, trace: &Trace, verified: bool) -> EntraReport {
    let v = &trace.validity;
    let window = format!(
        "{} … {}",
        v.not_before.map_or_else(|| "-".into(), fmt_unix),
        v.expires.map_or_else(|| "(no exp)".into(), fmt_unix)
    );
    let mut checks = vec![
        EntraCheck {
            check: "algorithm",
            value: trace.algorithm.0.clone().into(),
            expected: Shown::Many(
                azure::ACCEPTED_ALGORITHMS
                    .iter()
                    .map(|a| (*a).to_owned())
                    .collect(),
            ),
            result: trace.algorithm.1,
        },
        EntraCheck {
            check: "time",
            value: window.into(),
            expected: format!("now {} (± {} s)", fmt_unix(v.now), azure::CLOCK_SKEW_SECS).into(),
            result: v.ok,
        },
    ];
    if verified || trace.signature != Signature::Unchecked {
        checks.push(EntraCheck {
            check: "signature",
            value: format!("{:?}", trace.signature).to_lowercase().into(),
            expected: "valid".into(),
            result: matches!(trace.signature, Signature::Valid),
        });
    }
    let credentials = trace
        .credentials
        .iter()
        .map(|c| {
            let cred = &c.credential;
            let audience_why = if c.audience {
                None
            } else if trace.audiences.is_empty() {
                Some("the token has no aud".into())
            } else {
                trace
                    .audiences
                    .iter()
                    .find_map(|a| cred.audiences.first().and_then(|b| why_differs(a, b)))
            };
            EntraCredential {
                name: cred.name.clone(),
                matched: c.matches(),
                fields: vec![
                    EntraField {
                        field: "issuer",
                        token: trace.issuer.clone().into(),
                        credential: cred.issuer.clone().into(),
                        result: c.issuer,
                        why: why_differs(&trace.issuer, &cred.issuer),
                    },
                    EntraField {
                        field: "subject",
                        token: trace.subject.clone().into(),
                        credential: cred.subject.clone().into(),
                        result: c.subject,
                        why: why_differs(&trace.subject, &cred.subject),
                    },
                    EntraField {
                        field: "audience",
                        token: Shown::Many(trace.audiences.clone()),
                        credential: Shown::Many(cred.audiences.clone()),
                        result: c.audience,
                        why: audience_why,
                    },
                ],
            }
        })
        .collect();
    let mut warnings = Vec::new();
    if !verified {
        warnings.push(Warning::new("unverified", UNVERIFIED));
    }
    if p.credentials.is_empty() {
        warnings.push(Warning::new(
            "no-credentials",
            format!("{} has no federated identity credential", p.label()),
        ));
    }
    if trace.credentials.iter().any(|c| c.subject_case_only) {
        warnings.push(Warning::new(
            "subject-case",
            "a credential's subject differs from the token's only in letter case: Entra compares subjects case-sensitively",
        ));
    }
    if !trace.audiences.iter().any(|a| a == DEFAULT_AUDIENCE) {
        warnings.push(Warning::new(
            "audience",
            format!(
                "the token's aud is not {DEFAULT_AUDIENCE}, the audience Entra recommends (the token's issuer must be asked for that audience)"
            ),
        ));
    }
    let fix = match &trace.rejection {
        Some(Rejection::Issuer(_) | Rejection::Subject(_) | Rejection::Audience(_)) => {
            let audience = trace
                .audiences
                .iter()
                .find(|a| *a == DEFAULT_AUDIENCE)
                .or(trace.audiences.first())
                .cloned()
                .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
            let credential = FederatedCredential {
                name: suggested_name(&trace.issuer),
                issuer: trace.issuer.clone(),
                subject: trace.subject.clone(),
                audiences: vec![audience],
            };
            Some(crate::setup::azure::az_create(p, &credential))
        }
        _ => None,
    };
    let (decision, reason, code) = match &trace.rejection {
        None => (Verdict::Allow, "Allow".to_owned(), None),
        Some(r) => (
            Verdict::Deny,
            format!("AADSTS{}: {}", r.code(), r.message()),
            Some(r.code()),
        ),
    };
    EntraReport {
        code,
        checks,
        client_id: p.client_id.clone(),
        credentials,
        decision,
        fix,
        matched: trace.matched().map(|c| c.name.clone()),
        principal: p.name.clone(),
        principal_kind: p.kind,
        reason,
        verified,
        warnings,
    }
}

/// A credential name for an issuer: its host, in the characters Entra allows.
pub(crate) fn suggested_name(issuer: &str) -> String {
    let host = issuer
        .trim_start_matches("https://")
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    let name: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(100)
        .collect();
    if name.is_empty() {
        "idbridge".into()
    } else {
        format!("idbridge-{name}")
    }
}

pub(super) async fn run(a: &ExplainArgs, path: &Path) -> Result<ExitCode, CliError> {
    let p = load_entra(path, a.client_id.as_deref())?;
    #[expect(
        clippy::disallowed_methods,
        reason = "explain evaluates at the current wall time"
    )]
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let Some(t) = &a.token else {
        return Err(CliError::Usage(
            "explain: --entra needs --token JWT|@FILE".into(),
        ));
    };
    let token = read_arg(t, "token")?;
    let token = token.expose_secret().trim();
    let jwt = UnverifiedJwt::parse(token)
        .map_err(|e| CliError::Usage(format!("explain: --token: {e}")))?;
    let signature = match &a.verify {
        Some(v) => {
            crate::verify::verify(token, v)
                .await
                .map_err(CliError::Failed)?;
            Signature::Valid
        }
        None => Signature::Unchecked,
    };
    let report = entra_report(&p, &jwt, signature, now);
    match a.format {
        ExplainFormat::Json => super::report::print_json(&report),
        ExplainFormat::Table => print_table(&report, &jwt),
    }
    Ok(exit_code(report.decision))
}

/// The table form of an Entra report.
fn print_table(report: &EntraReport, jwt: &UnverifiedJwt) {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let red = |s: &str| {
        if colour {
            format!("\x1b[31m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    };
    let show = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
        None => "(absent)".into(),
    };
    println!(
        "token ({}): iss={}  sub={}  aud={}",
        if report.verified {
            "signature verified"
        } else {
            "signature NOT verified"
        },
        show(jwt.claims.get("iss")),
        show(jwt.claims.get("sub")),
        show(jwt.claims.get("aud")),
    );
    let kind = match report.principal_kind {
        PrincipalKind::App => "app registration",
        PrincipalKind::ManagedIdentity => "user-assigned managed identity",
    };
    println!(
        "{kind}: {} — {} federated credential(s)\n",
        match (&report.principal, &report.client_id) {
            (Some(n), Some(c)) => format!("{n} ({c})"),
            (Some(n), None) => n.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => "(unnamed)".into(),
        },
        report.credentials.len()
    );
    let line = |ok: bool, text: String| {
        let l = format!("  {}  {text}", if ok { "pass" } else { "FAIL" });
        println!("{}", if ok { l } else { red(&l) });
    };
    for c in &report.checks {
        line(
            c.result,
            format!(
                "{:<9}  {}   (expected {})",
                c.check,
                c.value.text(),
                c.expected.text()
            ),
        );
    }
    for c in &report.credentials {
        println!(
            "\n  credential {}: {}",
            c.name,
            if c.matched { "MATCHED" } else { "not matched" }
        );
        for f in &c.fields {
            let why = f
                .why
                .as_ref()
                .map(|w| format!("   ← {w}"))
                .unwrap_or_default();
            line(
                f.result,
                format!(
                    "  {:<8}  token {}   credential {}{why}",
                    f.field,
                    f.token.text(),
                    f.credential.text()
                ),
            );
        }
    }
    println!(
        "\ndecision: {} ({})",
        match report.decision {
            Verdict::Allow => "ALLOW",
            Verdict::Deny => "DENY",
        },
        report.reason
    );
    if let Some(fix) = &report.fix {
        println!("fix: {fix}");
    }
    for w in &report.warnings {
        println!("warning [{}] {}", w.code, w.message);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn jwt(claims: Value) -> UnverifiedJwt {
        UnverifiedJwt {
            header: json!({"alg": "RS256", "kid": "k"})
                .as_object()
                .cloned()
                .unwrap(),
            claims: claims.as_object().cloned().unwrap(),
        }
    }

    fn app() -> EntraPrincipal {
        parse_entra(
            &json!({
                "client_id": "c1", "display_name": "caller",
                "federated_credential": [
                    {"name": "k8s", "issuer": "https://k8s.example", "subject": "system:serviceaccount:default:app"}
                ]
            }),
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_matching_token_is_allowed_and_names_the_credential() {
        let r = entra_report(
            &app(),
            &jwt(
                json!({"iss": "https://k8s.example", "sub": "system:serviceaccount:default:app",
                "aud": DEFAULT_AUDIENCE, "exp": 2_000_000_000}),
            ),
            Signature::Unchecked,
            1_900_000_000,
        );
        assert_eq!(r.decision, Verdict::Allow);
        assert_eq!(r.matched.as_deref(), Some("k8s"));
        assert!(r.fix.is_none());
    }

    #[test]
    fn a_subject_slip_is_explained_with_a_fix() {
        let r = entra_report(
            &app(),
            &jwt(
                json!({"iss": "https://k8s.example/", "sub": "system:serviceaccount:default:App",
                "aud": DEFAULT_AUDIENCE, "exp": 2_000_000_000}),
            ),
            Signature::Unchecked,
            1_900_000_000,
        );
        assert_eq!(r.code, Some(700211));
        let issuer = &r.credentials[0].fields[0];
        assert!(issuer.why.as_deref().unwrap().contains("trailing slash"));
        let subject = &r.credentials[0].fields[1];
        assert!(subject.why.as_deref().unwrap().contains("letter case"));
        let fix = r.fix.unwrap();
        assert!(
            fix.starts_with("az ad app federated-credential create --id c1"),
            "{fix}"
        );
    }

    #[test]
    fn world_files_need_a_client_id_when_several_apps_have_credentials() {
        let world = json!({
            "entra_app": [
                {"client_id": "a", "display_name": "A", "federated_credential": [{"name": "n", "issuer": "i", "subject": "s"}]},
                {"client_id": "b", "display_name": "B", "federated_credential": [{"name": "n", "issuer": "i", "subject": "s"}]}
            ],
            "azure_managed_identity": [
                {"client_id": "m", "name": "mi", "resource_id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi"}
            ]
        });
        assert!(
            parse_entra(&world, None)
                .unwrap_err()
                .contains("--client-id")
        );
        assert_eq!(
            parse_entra(&world, Some("b")).unwrap().name.as_deref(),
            Some("B")
        );
        let mi = parse_entra(&world, Some("m")).unwrap();
        assert_eq!(mi.kind, PrincipalKind::ManagedIdentity);
        assert_eq!(
            mi.identity_group_and_name(),
            Some(("rg".into(), "mi".into()))
        );
        let broken = json!({"entra_app": [{"display_name": "A", "federated_credential": [
            {"name": "n", "issuer": "i", "subject": "s", "audiences": ["x", "y"]}]}]});
        let e = parse_entra(&broken, None).unwrap_err();
        assert!(
            e.contains("entra_app[0] (A).federated_credential[0]") && e.contains("audiences"),
            "{e}"
        );
    }
}
