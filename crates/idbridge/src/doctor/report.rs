//! `doctor`'s report: the typed document `--format json` prints, and its table rendering.
//! Field names are the JSON's; a field that is `null` in the JSON is an `Option` here, one that
//! may be absent is skipped when `None`.

use idbridge_broker::Hop;
use serde::Serialize;
use serde_json::Value;

/// The whole report.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) route: String,
    pub(crate) config: String,
    pub(crate) ok: bool,
    pub(crate) millis: f64,
    pub(crate) steps: Vec<StepReport>,
    pub(crate) diagnosis: Option<Diagnosis>,
    pub(crate) note: &'static str,
}

/// One step of the route.
#[derive(Debug, Serialize)]
pub(crate) struct StepReport {
    pub(crate) index: usize,
    pub(crate) step: String,
    pub(crate) role: &'static str,
    pub(crate) target: String,
    pub(crate) ok: bool,
    pub(crate) millis: f64,
    pub(crate) hops: Vec<HopLine>,
    pub(crate) received: Option<Received>,
    pub(crate) error: Option<StepError>,
}

/// One network hop of a step.
#[derive(Debug, Serialize)]
pub(crate) struct HopLine {
    pub(crate) hop: Hop,
    pub(crate) endpoint: String,
    pub(crate) identity: String,
    pub(crate) millis: f64,
}

/// Why a step failed.
#[derive(Debug, Serialize)]
pub(crate) struct StepError {
    pub(crate) hop: Hop,
    pub(crate) kind: String,
    pub(crate) code: Option<String>,
    pub(crate) message: String,
    pub(crate) line: String,
}

/// What a step obtained, without its secrets.
#[derive(Debug, Serialize)]
pub(crate) struct Received {
    pub(crate) kind: &'static str,
    #[serde(flatten)]
    pub(crate) detail: Detail,
}

/// The kind-specific part of [`Received`].
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Detail {
    /// An ID token's shown claims (unverified).
    IdToken {
        claims: serde_json::Map<String, Value>,
        expires: String,
    },
    /// An ID token that does not parse.
    Unreadable { error: String },
    /// AWS credentials and their GetCallerIdentity proof.
    Aws {
        access_key_id: String,
        expires: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        arn: Option<String>,
        #[serde(flatten)]
        proof: Proof,
    },
    /// A Google access token and its tokeninfo proof.
    Google {
        principal: Option<String>,
        scopes: Vec<String>,
        expires: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        #[serde(flatten)]
        proof: Proof,
    },
    /// A credential `doctor` does not describe further.
    Other {},
}

/// Whether a credential proved itself.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Proof {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) proof: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) proof_error: Option<String>,
    /// Why tokeninfo did not describe a federated token (not a failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tokeninfo: Option<String>,
}

impl Received {
    /// The proof error of the credential, when it has one.
    pub(crate) fn proof_error(&self) -> Option<&str> {
        match &self.detail {
            Detail::Aws { proof, .. } | Detail::Google { proof, .. } => {
                proof.proof_error.as_deref()
            }
            _ => None,
        }
    }
}

/// The failure, its likely cause and the fix.
#[derive(Debug, Serialize)]
pub(crate) struct Diagnosis {
    pub(crate) step: usize,
    pub(crate) hop: Hop,
    pub(crate) code: Option<String>,
    pub(crate) error: String,
    pub(crate) cause: String,
    pub(crate) fix: Vec<String>,
    pub(crate) commands: Vec<String>,
    /// The policy evaluation (`explain`'s report), when one was made; absent for a failed proof.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) evaluation: Option<Value>,
}

/// The claims `doctor` shows of an ID token.
pub(crate) const SHOWN_CLAIMS: [&str; 7] = ["iss", "sub", "aud", "azp", "email", "exp", "iat"];

pub(crate) fn fmt_unix(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .map(idbridge_core::timefmt::rfc3339_seconds)
        .unwrap_or_else(|_| t.to_string())
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(show).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Milliseconds as the JSON writes them (`12.0`, not `12`).
fn ms(millis: f64) -> String {
    Value::from(millis).to_string()
}

fn or_dash(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}

/// One line describing what a step obtained.
fn received_line(r: &Received) -> String {
    match &r.detail {
        Detail::IdToken { claims, .. } => {
            let shown: Vec<String> = SHOWN_CLAIMS
                .iter()
                .filter_map(|k| {
                    let v = claims.get(*k).filter(|v| !v.is_null())?;
                    Some(match (*k, v.as_i64()) {
                        ("exp" | "iat", Some(t)) => format!("{k}={}", fmt_unix(t)),
                        _ => format!("{k}={}", show(v)),
                    })
                })
                .collect();
            format!("ID token (claims unverified): {}", shown.join("  "))
        }
        Detail::Unreadable { .. } => "ID token (claims unverified): ".to_owned(),
        Detail::Aws {
            access_key_id,
            expires,
            arn,
            proof,
        } => format!(
            "AWS credentials {access_key_id}: {} ({}), expires {}",
            arn.as_deref().unwrap_or("caller unknown"),
            or_dash(proof.proof.as_deref().or(proof.proof_error.as_deref())),
            or_dash(expires.as_deref())
        ),
        Detail::Google {
            principal,
            expires,
            owner,
            proof,
            ..
        } => format!(
            "Google access token of {} ({}), expires {expires}",
            owner.as_deref().or(principal.as_deref()).unwrap_or("?"),
            or_dash(
                proof
                    .proof
                    .as_deref()
                    .or(proof.proof_error.as_deref())
                    .or(proof.tokeninfo.as_deref())
            ),
        ),
        Detail::Other {} => format!("{{\"kind\":{:?}}}", r.kind),
    }
}

/// Prints the report as readable text.
pub(crate) fn print_table(report: &Report) {
    println!(
        "idbridge doctor: route {} ({})",
        report.route, report.config
    );
    println!("{}\n", report.note);
    for s in &report.steps {
        println!(
            "step {}  {} {}: {}   {}  {} ms",
            s.index + 1,
            s.role,
            s.step,
            s.target,
            if s.ok { "ok" } else { "FAILED" },
            ms(s.millis)
        );
        for h in &s.hops {
            println!(
                "    hop {} ({} ms) {}\n        → {}",
                h.hop,
                ms(h.millis),
                h.endpoint,
                h.identity
            );
        }
        if let Some(r) = &s.received {
            println!("    received: {}", received_line(r));
        }
        if let Some(e) = &s.error {
            println!("    error: {}", e.line);
        }
        println!();
    }
    match &report.diagnosis {
        None => println!("result: the route works ({} ms)", ms(report.millis)),
        Some(d) => {
            println!("result: FAILED at step {}", d.step);
            println!("cause: {}", d.cause);
            for f in &d.fix {
                println!("  - {f}");
            }
            for c in &d.commands {
                println!("  $ {c}");
            }
        }
    }
}
