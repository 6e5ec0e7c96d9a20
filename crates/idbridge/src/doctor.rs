//! `idbridge doctor`: walk a route hop by hop against its endpoints, show what each hop
//! obtained (ID-token claims decoded unverified, the AWS caller ARN, the Google token's owner —
//! never a secret) and the time taken, and on a failure name the likely cause and the fix,
//! by hop and error code.

use std::process::ExitCode;

use idbridge_broker::config::RouteConfig;
use idbridge_broker::exchange::{aws_sts, entra as entra_exchange, google_sts, iam_credentials};
use idbridge_broker::step::Input;
use idbridge_broker::{BrokerError, Config, Context, ErrorKind, Route, StepOutcome};
use idbridge_broker::{Hop, proof};
use idbridge_core::Credential;
use idbridge_core::jwt::UnverifiedJwt;
use idbridge_core::timefmt::rfc3339_seconds;
use idbridge_policy::gcp::{AttributeMapping, ProviderName};
use serde_json::Value;

use crate::cli::{DoctorArgs, DoctorFormat};
use crate::commands::CliError;
use crate::explain::{self, EntraPrincipal, GcpProvider, GcpSubject};

mod aws;
mod aws_kinds;
mod entra;
mod google;
mod report;

use report::{
    Detail, Diagnosis, HopLine, Proof, Received, Report, SHOWN_CLAIMS, StepError, StepReport,
    fmt_unix,
};

pub(crate) async fn run(a: DoctorArgs) -> Result<ExitCode, CliError> {
    let config = Config::load(&a.route.config)?;
    let route_cfg = config.route(&a.route.route)?.clone();
    let policy = a
        .aws_trust_policy
        .as_deref()
        .map(explain::load_trust_policy)
        .transpose()?;
    // In a world file with several providers, the one the route's google-sts hop names.
    let select = route_cfg
        .exchange
        .iter()
        .find_map(|e| e.facts().google_sts)
        .and_then(|g| ProviderName::parse_audience(g.provider))
        .map(|n| format!("{}/{}", n.pool.pool, n.provider));
    let provider = a
        .gcp_provider
        .as_deref()
        .map(|p| explain::load_gcp_provider(p, select.as_deref()))
        .transpose()?;
    let entra_client = route_cfg
        .exchange
        .iter()
        .find_map(|e| e.facts().entra)
        .map(|e| e.client_id.to_owned());
    let entra = a
        .entra
        .as_deref()
        .map(|p| explain::load_entra(p, entra_client.as_deref()))
        .transpose()?;
    let ctx = Context::from_process(&config.endpoints)?;
    let outcomes = Route::new(route_cfg.clone()).run_steps(&ctx).await;

    let mut steps = Vec::new();
    for o in &outcomes {
        steps.push(step_json(&ctx, &route_cfg, o).await);
    }
    let failure = outcomes
        .iter()
        .find_map(|o| o.result.as_ref().err().map(|e| (o, e)));
    // A final credential that does not prove itself (GetCallerIdentity, tokeninfo) is a failure.
    let proof_error = steps
        .last()
        .and_then(|s: &StepReport| s.received.as_ref()?.proof_error())
        .map(str::to_owned);
    let diagnosis = match failure {
        Some((o, e)) => Some(
            diagnose(
                &ctx,
                &config,
                &route_cfg,
                &outcomes,
                o,
                e,
                (policy.as_ref(), provider.as_ref(), entra.as_ref()),
            )
            .await,
        ),
        None => proof_error.map(|m| Diagnosis {
            step: outcomes.len(),
            hop: Hop::named("proof"),
            code: None,
            error: m,
            cause: "the route's credential was issued but does not work: the endpoint that should accept it refused it".into(),
            fix: vec!["check that the endpoints the route used and the one checking the credential are the same cloud (or the same emulator)".into()],
            commands: Vec::new(),
            evaluation: None,
        }),
    };
    let ok = diagnosis.is_none();
    let total: f64 = outcomes
        .iter()
        .map(|o| o.elapsed.as_secs_f64() * 1000.0)
        .sum();
    let report = Report {
        route: route_cfg.name.clone(),
        config: config.path.clone(),
        ok,
        millis: round1(total),
        steps,
        diagnosis,
        note: "ID-token claims are decoded without verifying their signature; tokens, keys and secrets are never shown",
    };
    match a.format {
        DoctorFormat::Json => println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| CliError::Failed(e.to_string()))?
        ),
        DoctorFormat::Table => report::print_table(&report),
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn round1(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// What a step is about: the role, the provider, the account, or the source's token.
fn step_target(route: &RouteConfig, index: usize) -> String {
    route
        .steps()
        .nth(index)
        .map(|s| s.describe())
        .unwrap_or_default()
}

async fn step_json(ctx: &Context, route: &RouteConfig, o: &StepOutcome) -> StepReport {
    let hops = o
        .hops
        .iter()
        .map(|h| HopLine {
            hop: h.hop,
            endpoint: h.endpoint.clone(),
            identity: h.identity.clone(),
            millis: round1(h.elapsed.as_secs_f64() * 1000.0),
        })
        .collect();
    let (received, error) = match &o.result {
        Ok(c) => (Some(describe(ctx, c).await), None),
        Err(e) => (
            None,
            Some(StepError {
                hop: e.hop,
                kind: format!("{:?}", e.kind),
                code: e.code.clone(),
                message: e.message.clone(),
                line: e.to_string(),
            }),
        ),
    };
    StepReport {
        index: o.index,
        step: o.step.clone(),
        role: if o.index == 0 { "source" } else { "exchange" },
        target: step_target(route, o.index),
        ok: o.result.is_ok(),
        millis: round1(o.elapsed.as_secs_f64() * 1000.0),
        hops,
        received,
        error,
    }
}

/// The shown claims of an ID token (never the token).
fn claims_of(jwt: &UnverifiedJwt) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for k in SHOWN_CLAIMS {
        if let Some(v) = jwt.claims.get(k) {
            m.insert(k.to_owned(), v.clone());
        }
    }
    m
}

/// What a credential is, without its secrets: claims, the AWS caller, the Google token's owner.
async fn describe(ctx: &Context, c: &Credential) -> Received {
    let (kind, detail) = match c {
        Credential::IdToken(t) => (
            "id-token",
            match UnverifiedJwt::parse(t.token.expose_secret()) {
                Ok(jwt) => Detail::IdToken {
                    claims: claims_of(&jwt),
                    expires: rfc3339_seconds(t.expires_at),
                },
                Err(e) => Detail::Unreadable {
                    error: e.to_string(),
                },
            },
        ),
        Credential::Aws(creds) => {
            let mut proof = Proof::default();
            let mut arn = None;
            match proof::get_caller_identity(ctx, creds, None).await {
                Ok(h) => {
                    arn = Some(h.identity.trim_start_matches("caller: ").to_owned());
                    proof.proof = Some(format!("GetCallerIdentity at {}", h.endpoint));
                }
                Err(e) => proof.proof_error = Some(e.to_string()),
            }
            (
                "aws",
                Detail::Aws {
                    access_key_id: creds.access_key_id.clone(),
                    expires: creds.expiration.map(rfc3339_seconds),
                    arn,
                    proof,
                },
            )
        }
        Credential::GoogleAccessToken(t) => {
            let mut proof = Proof::default();
            let mut owner = None;
            match proof::tokeninfo(ctx, t).await {
                Ok(h) => {
                    owner = Some(h.identity.trim_start_matches("token of ").to_owned());
                    proof.proof = Some(format!("tokeninfo at {}", h.endpoint));
                }
                // Google's tokeninfo does not describe federated tokens: not a failure.
                Err(e)
                    if t.principal
                        .as_deref()
                        .is_some_and(|p| p.starts_with("federated")) =>
                {
                    proof.tokeninfo = Some(format!("not described ({e})"));
                }
                Err(e) => proof.proof_error = Some(e.to_string()),
            }
            (
                "google-access-token",
                Detail::Google {
                    principal: t.principal.clone(),
                    scopes: t.scopes.clone(),
                    expires: rfc3339_seconds(t.expires_at),
                    owner,
                    proof,
                },
            )
        }
        other => (other.kind(), Detail::Other {}),
    };
    Received { kind, detail }
}

/// The credential a step received as input (the previous step's output).
fn input_of<'a>(outcomes: &'a [StepOutcome], failed: &StepOutcome) -> Option<&'a Credential> {
    failed
        .index
        .checked_sub(1)
        .and_then(|i| outcomes.get(i))
        .and_then(|o| o.result.as_ref().ok())
}

fn input_jwt(input: Option<&Credential>) -> Option<UnverifiedJwt> {
    match input {
        Some(Credential::IdToken(t)) => UnverifiedJwt::parse(t.token.expose_secret()).ok(),
        _ => None,
    }
}

/// The AWS caller ARN behind the route's first AWS credential (GetCallerIdentity).
async fn aws_caller(ctx: &Context, outcomes: &[StepOutcome]) -> Option<String> {
    for o in outcomes {
        if let Ok(Credential::Aws(c)) = &o.result {
            if let Some(arn) = &c.arn {
                return Some(arn.clone());
            }
            return proof::get_caller_identity(ctx, c, None)
                .await
                .ok()
                .map(|h| h.identity.trim_start_matches("caller: ").to_owned());
        }
    }
    None
}

/// `arn:aws:sts::ACCOUNT:assumed-role/ROLE` of an assumed-role ARN (Google's `attribute.aws_role`).
pub(crate) fn aws_role_of(arn: &str) -> String {
    AttributeMapping::aws_default()
        .apply(&explain::aws_assertion(arn))
        .ok()
        .and_then(|m| m.attributes.get("aws_role").cloned())
        .unwrap_or_else(|| arn.to_owned())
}

pub(crate) fn quote_cel(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The issuer's name as IAM writes it in condition keys and OIDC provider ARNs.
pub(crate) fn iam_issuer_name(iss: &str) -> String {
    iss.trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned()
}

async fn diagnose(
    ctx: &Context,
    config: &Config,
    route: &RouteConfig,
    outcomes: &[StepOutcome],
    failed: &StepOutcome,
    e: &BrokerError,
    (policy, provider, entra): (
        Option<&idbridge_policy::aws::TrustPolicy>,
        Option<&GcpProvider>,
        Option<&EntraPrincipal>,
    ),
) -> Diagnosis {
    let failure = Failure {
        ctx,
        config,
        route,
        outcomes,
        e,
        code: e.code.as_deref().unwrap_or_default(),
        input: input_of(outcomes, failed),
        exchange: failed
            .index
            .checked_sub(1)
            .and_then(|i| route.exchange.get(i))
            .map(AsRef::as_ref),
        policy,
        provider,
        entra,
    };
    let mut advice = Advice::default();
    let cause: String = if e.kind == ErrorKind::Transient
        && (e.message.contains("could not connect") || e.message.contains("timed out"))
    {
        advice
            .fix
            .push(format!("check {}", e.hop.endpoint_variable()));
        advice.fix.push("against the emulator: `idbridge emulate --env-file emulator.env`, then `set -a; . ./emulator.env; set +a` in this shell".into());
        format!("the {} endpoint is unreachable: {}", e.hop, e.message)
    } else if let Some(cause) = aws_kinds::diagnose(&failure, &mut advice) {
        cause
    } else if e.hop == aws_sts::HOP {
        aws::aws_sts(&failure, &mut advice).await
    } else if e.hop == google_sts::HOP {
        google::google_sts(&failure, &mut advice).await
    } else if e.hop == entra_exchange::HOP {
        entra::entra(&failure, &mut advice)
    } else if e.hop == iam_credentials::HOP {
        google::impersonate(&failure, &mut advice).await
    } else if e.kind == ErrorKind::NotConfigured || e.kind == ErrorKind::InvalidConfiguration {
        advice
            .fix
            .push("fix the route config or the environment named in the error".into());
        "the route or its environment is not set up".into()
    } else if e.kind == ErrorKind::Io {
        advice
            .fix
            .push("check that the file exists and is readable by this user".into());
        "a local file could not be read".into()
    } else {
        advice
            .fix
            .push("run with IDBRIDGE_LOG=debug for the request details".into());
        format!("the {} hop failed", e.hop)
    };
    Diagnosis {
        step: failed.index + 1,
        hop: e.hop,
        code: e.code.clone(),
        error: e.to_string(),
        cause,
        fix: advice.fix,
        commands: advice.commands,
        evaluation: Some(advice.evaluation),
    }
}

/// What a diagnosis reads: the failed step, its input, the route, the policies given.
struct Failure<'a> {
    ctx: &'a Context,
    config: &'a Config,
    route: &'a RouteConfig,
    outcomes: &'a [StepOutcome],
    e: &'a BrokerError,
    /// The cloud's error code, or "".
    code: &'a str,
    /// The credential the failed step received.
    input: Option<&'a Credential>,
    /// The failed exchange (`None` when the source failed).
    exchange: Option<&'a dyn idbridge_broker::Step>,
    policy: Option<&'a idbridge_policy::aws::TrustPolicy>,
    provider: Option<&'a GcpProvider>,
    /// The Entra app given with `--entra`.
    entra: Option<&'a EntraPrincipal>,
}

impl Failure<'_> {
    /// The `setup` command line that prints the cloud side of this route.
    fn setup_cmd(&self, format: &str) -> String {
        format!(
            "idbridge setup --config {} --route {} --format {format}",
            self.config.path, self.route.name
        )
    }
}

/// What a diagnosis advises.
#[derive(Default)]
struct Advice {
    fix: Vec<String>,
    commands: Vec<String>,
    evaluation: Value,
}

/// The federated principal of a route that exchanged at Google STS: (description, member) pairs
/// to bind, most specific first.
async fn federated_principal(
    ctx: &Context,
    route: &RouteConfig,
    outcomes: &[StepOutcome],
    provider: Option<&GcpProvider>,
) -> Vec<(String, String)> {
    let audience = route
        .exchange
        .iter()
        .find_map(|e| e.facts().google_sts)
        .map(|g| g.provider.to_string());
    let Some(name) = audience.as_deref().and_then(ProviderName::parse_audience) else {
        return Vec::new();
    };
    let pool = name.pool.path();
    let mut out = Vec::new();
    if let Some(arn) = aws_caller(ctx, outcomes).await {
        let role = aws_role_of(&arn);
        out.push((
            format!("AWS role {role} (session {arn})"),
            format!("principalSet://{pool}/attribute.aws_role/{role}"),
        ));
        return out;
    }
    let jwt = outcomes.iter().find_map(|o| match &o.result {
        Ok(Credential::IdToken(t)) => UnverifiedJwt::parse(t.token.expose_secret()).ok(),
        _ => None,
    });
    if let Some(jwt) = jwt {
        if let Some(p) = provider {
            let r = explain::gcp_report(p, GcpSubject::Token(&jwt), &[], None, false, 0);
            if let Some(id) = r["principal"].as_str() {
                out.push((id.to_owned(), id.to_owned()));
                return out;
            }
        }
        if let Some(sub) = jwt.str_claim("sub") {
            let id = format!("principal://{pool}/subject/{sub}");
            out.push((format!("{id} (if google.subject = assertion.sub)"), id));
        }
    }
    out
}

/// The email of the caller of an impersonation: the previous hop's token owner, or the
/// impersonate source's caller (fetched again).
pub(crate) async fn caller_email(
    ctx: &Context,
    route: &RouteConfig,
    input: Option<&Credential>,
) -> Option<String> {
    if let Some(Credential::GoogleAccessToken(t)) = input {
        return t.principal.clone();
    }
    let caller = route.source.facts().caller?;
    let input = Input {
        credential: None,
        route: &route.name,
        region: None,
    };
    let mut hops = Vec::new();
    match caller.run(input, ctx, &mut hops).await {
        Ok(Credential::GoogleAccessToken(t)) => t.principal,
        _ => None,
    }
}
