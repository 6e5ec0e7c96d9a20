//! `explain --gcp-provider`: what Google STS and IAM make of a caller at a workload identity
//! pool provider. The decision is `idbridge_policy::gcp::federate`'s (the emulator's STS
//! answers with the same); this module reads the provider, renders the trace as report steps,
//! checks the binding members against the principal, and adds the warnings.

use std::process::ExitCode;

use idbridge_core::jwt::UnverifiedJwt;
pub(crate) use idbridge_policy::gcp::PoolProvider as GcpProvider;
use idbridge_policy::gcp::{
    Assertion, CallerIdentity, Member as GcpMember, PoolName, Principal as GcpPrincipal,
    ProviderKind, ProviderName, Rejection, Step, WorkloadIdentityProvider, federate,
};
use idbridge_wire::google::{AWS4_REQUEST_TOKEN_TYPE, JWT_TOKEN_TYPE};
use serde_json::Value;

use super::report::{GcpReport, GcpStep, GcpStepKind, Shown, Verdict, Warning};
use super::{UNVERIFIED, exit_code, fmt_unix, read_arg, table};
use crate::cli::ExplainArgs;
use crate::cli::ExplainFormat;
use crate::error::CliError;

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

/// Reads `--gcp-provider` (see [`GCP_PROVIDER_HELP`]).
pub(crate) fn load_gcp_provider(
    path: &std::path::Path,
    select: Option<&str>,
) -> Result<GcpProvider, CliError> {
    let bad = |m: String| CliError::Usage(format!("--gcp-provider {}: {m}", path.display()));
    let doc = super::load_document(path).map_err(bad)?;
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

/// The assertion Google STS builds from an AWS caller's `GetCallerIdentity` result, when only
/// the caller's ARN is known.
pub(crate) fn aws_assertion(arn: &str) -> Value {
    Assertion::Aws(CallerIdentity::from_arn(arn)).to_value()
}

pub(super) async fn run(a: &ExplainArgs, path: &std::path::Path) -> Result<ExitCode, CliError> {
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
                report(
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
            report(
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
        ExplainFormat::Json => super::report::print_json(&report),
        ExplainFormat::Table => table::print_gcp(&report, jwt.as_ref(), a.aws_arn.as_deref()),
    }
    Ok(exit_code(report.decision))
}

/// [`report`] as JSON (`decision`, `reason`, `steps`, `warnings`, …).
pub(crate) fn gcp_report(
    p: &GcpProvider,
    subject: GcpSubject<'_>,
    bindings: &[String],
    service_account: Option<&str>,
    verified: bool,
    now: i64,
) -> Value {
    serde_json::to_value(report(p, subject, bindings, service_account, verified, now))
        .unwrap_or_default()
}

fn step(
    kind: GcpStepKind,
    key: &str,
    value: impl Into<Shown>,
    expected: impl Into<Shown>,
    result: Option<bool>,
) -> GcpStep {
    GcpStep {
        step: kind,
        key: key.to_owned(),
        value: value.into(),
        expected: expected.into(),
        result,
    }
}

fn token_type(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Aws => AWS4_REQUEST_TOKEN_TYPE,
        ProviderKind::Oidc => JWT_TOKEN_TYPE,
    }
}

/// The report's step for one step of the decision.
fn render(trace_step: &Step) -> GcpStep {
    match trace_step {
        Step::State { enabled } => step(
            GcpStepKind::Provider,
            "state",
            if *enabled { "enabled" } else { "disabled" },
            "enabled",
            Some(*enabled),
        ),
        Step::SubjectKind {
            presented,
            expected,
        } => step(
            GcpStepKind::Subject,
            "subject_token_type",
            token_type(*presented),
            token_type(*expected),
            Some(false),
        ),
        Step::Account { account, expected } => step(
            GcpStepKind::Account,
            "assertion.account",
            account.as_str(),
            expected.as_str(),
            trace_step.passed(),
        ),
        Step::Issuer { issuer, expected } => step(
            GcpStepKind::Issuer,
            "iss",
            issuer.as_str(),
            expected.as_str(),
            trace_step.passed(),
        ),
        Step::Audience {
            audiences,
            expected,
            ok,
        } => step(
            GcpStepKind::Audience,
            "aud",
            Shown::Many(audiences.clone()),
            Shown::Many(expected.clone()),
            Some(*ok),
        ),
        Step::Mapped {
            target,
            value,
            expression,
        } => step(
            GcpStepKind::Mapping,
            target,
            match value {
                idbridge_policy::gcp::MappedValue::Text(s) => Shown::One(s.clone()),
                idbridge_policy::gcp::MappedValue::List(l) => Shown::Many(l.clone()),
            },
            expression.as_str(),
            Some(true),
        ),
        Step::MappingFailed { error } => step(
            GcpStepKind::Mapping,
            "attribute_mapping",
            error.to_string(),
            "",
            Some(false),
        ),
        Step::Condition { source, result } => match (source, result) {
            (Some(source), Ok(b)) => step(
                GcpStepKind::Condition,
                "attribute_condition",
                Shown::Bool(*b),
                source.as_str(),
                Some(*b),
            ),
            (None, Ok(_)) => step(
                GcpStepKind::Condition,
                "attribute_condition",
                "(none)",
                "(none)",
                Some(true),
            ),
            (source, Err(e)) => step(
                GcpStepKind::Condition,
                "attribute_condition",
                e.to_string(),
                source.as_deref().unwrap_or_default(),
                Some(false),
            ),
        },
        Step::Principal { principal } => step(
            GcpStepKind::Principal,
            "principal",
            principal.identifier(),
            "",
            None,
        ),
    }
}

/// The report's reason for the decision's rejection.
fn reason(rejection: &Rejection) -> String {
    match rejection {
        Rejection::Disabled => "invalid_target: the pool or provider is disabled".into(),
        Rejection::SubjectKind {
            expected: ProviderKind::Aws,
        } => "invalid_request: an AWS provider takes a signed GetCallerIdentity request, not a JWT (pass --aws-arn ARN)".into(),
        Rejection::SubjectKind {
            expected: ProviderKind::Oidc,
        } => "invalid_request: an OIDC provider takes a JWT (pass --token), not an AWS caller".into(),
        Rejection::Account { .. } => {
            "invalid_grant: the caller's AWS account is not the provider's account".into()
        }
        Rejection::Issuer { .. } => {
            "invalid_grant: the token's issuer is not the provider's issuer_uri".into()
        }
        Rejection::Audience { allowed, .. } if allowed.is_empty() => "invalid_grant: the token's aud is not the provider's canonical name (allowed_audiences is empty)".into(),
        Rejection::Audience { .. } => {
            "invalid_grant: the token's aud is none of the provider's allowed_audiences".into()
        }
        Rejection::InvalidMapping(e) | Rejection::Mapping(e) => format!("invalid_request: {e}"),
        Rejection::ConditionFalse => {
            "unauthorized_client: the attribute condition is false".into()
        }
        Rejection::InvalidCondition(e) | Rejection::Condition(e) => {
            format!("unauthorized_client: {e}")
        }
    }
}

/// Evaluates what Google STS and IAM make of `subject` under `p`: the decision of
/// [`federate`] (provider state, issuer and audience or account, mapping, condition,
/// principal), then each binding member. The report `explain --gcp-provider` prints.
pub(crate) fn report(
    p: &GcpProvider,
    subject: GcpSubject<'_>,
    bindings: &[String],
    service_account: Option<&str>,
    verified: bool,
    now: i64,
) -> GcpReport {
    let assertion = match subject {
        GcpSubject::AwsArn(arn) => Assertion::Aws(CallerIdentity::from_arn(arn)),
        GcpSubject::Token(jwt) => Assertion::Oidc(jwt.claims.clone()),
    };
    let trace = federate(p, &assertion);
    let kind = p.provider.kind();
    let mut steps: Vec<GcpStep> = Vec::new();
    let mut warnings: Vec<Warning> = Vec::new();
    let kinds_fit = !trace
        .steps
        .iter()
        .any(|s| matches!(s, Step::SubjectKind { .. }));
    for s in &trace.steps {
        steps.push(render(s));
        match s {
            Step::Audience { .. } => {
                if let GcpSubject::Token(jwt) = subject {
                    token_warnings(jwt, verified, now, &mut warnings);
                }
            }
            Step::Condition {
                source: None,
                result: Ok(_),
            } => {
                warnings.push(no_condition(&p.provider));
            }
            _ => {}
        }
        // Before the mapping's steps: whether its subject tells workloads apart.
        if matches!(s, Step::Audience { .. } | Step::Account { .. }) && kinds_fit {
            subject_warning(&p.provider, &mut warnings);
        }
    }
    let mut reason = trace.rejection.as_ref().map(reason);
    let principal = trace.principal;

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
            GcpStepKind::Binding,
            member,
            if matched { "matches" } else { "does not match" },
            expected,
            Some(matched),
        ));
        if member.ends_with("/*") && member.starts_with("principalSet://") {
            warnings.push(Warning::new(
                "principalset-all",
                format!(
                    "{member} grants every identity of the pool, whatever its subject or attributes"
                ),
            ));
        }
        if let (Ok(GcpMember::Subject { subject, .. }), ProviderKind::Aws) = (&parsed, kind)
            && subject.contains(":assumed-role/")
        {
            warnings.push(Warning::new("aws-session-subject", format!("{member} names one role session (the ARN's last part is the session name, e.g. an instance id): bind principalSet://{}/attribute.aws_role/ROLE_ARN instead", p.name.pool.path())));
        }
        if let Ok(
            GcpMember::Subject { pool, .. }
            | GcpMember::PoolGroup { pool, .. }
            | GcpMember::PoolAttribute { pool, .. }
            | GcpMember::AllInPool { pool },
        ) = &parsed
            && *pool != p.name.pool
        {
            warnings.push(Warning::new("binding-other-pool", format!("{member} names pool {} of project {}, not this provider's pool {} of project {}", pool.pool, pool.project_number, p.name.pool.pool, p.name.pool.project_number)));
        }
    }
    let mut fix = None;
    if !any_binding {
        let exchanged = reason.is_none();
        if reason.is_none() {
            reason =
                Some("PERMISSION_DENIED: no binding member matches the federated principal".into());
        }
        if let (true, Some(fp)) = (exchanged, &principal) {
            let sa = service_account.unwrap_or("SERVICE_ACCOUNT_EMAIL");
            fix = Some(format!(
                "gcloud iam service-accounts add-iam-policy-binding {sa} --role=roles/iam.workloadIdentityUser --member={}",
                fp.identifier()
            ));
        }
    }
    let account = p
        .provider
        .aws
        .as_ref()
        .map(|a| a.account_id.as_str())
        .unwrap_or_default();
    if kind == ProviderKind::Aws {
        warnings.push(Warning::new("aws-org-policy", format!(
            "AWS providers also need the organization policy constraints/iam.workloadIdentityPoolAwsAccounts to allow account {account}: gcloud resource-manager org-policies allow constraints/iam.workloadIdentityPoolAwsAccounts {account} --organization=ORGANIZATION_ID",
        )));
    }
    let (issuer, provider_kind) = match (&p.provider.aws, &p.provider.oidc) {
        (Some(a), _) => (format!("account {}", a.account_id), "aws"),
        (_, Some(o)) => (o.issuer_uri.clone(), "oidc"),
        _ => (String::new(), ""),
    };
    GcpReport {
        decision: if reason.is_none() {
            Verdict::Allow
        } else {
            Verdict::Deny
        },
        reason: reason.unwrap_or_else(|| "Allow".into()),
        verified,
        issuer,
        provider: p.name.canonical(),
        provider_kind,
        principal: principal.map(|fp| fp.identifier()),
        service_account: service_account.map(str::to_owned),
        steps,
        fix,
        warnings,
    }
}

/// An OIDC token's own findings: unverified, expired.
fn token_warnings(jwt: &UnverifiedJwt, verified: bool, now: i64, warnings: &mut Vec<Warning>) {
    if !verified {
        warnings.push(Warning::new("unverified", UNVERIFIED));
    }
    if let Some(exp) = jwt.exp()
        && exp <= now
    {
        warnings.push(Warning::new(
            "expired",
            format!(
                "the token expired at {}: Google STS would answer invalid_grant before mapping it",
                fmt_unix(exp)
            ),
        ));
    }
}

/// `subject-not-unique`: `google.subject` is not mapped from the caller's unique ARN or `sub`.
fn subject_warning(provider: &WorkloadIdentityProvider, warnings: &mut Vec<Warning>) {
    let Ok(mapping) = provider.mapping() else {
        return;
    };
    for (target, expression) in mapping.entries() {
        if target != idbridge_policy::gcp::GOOGLE_SUBJECT {
            continue;
        }
        let unique = match provider.kind() {
            ProviderKind::Aws => expression.contains("arn"),
            ProviderKind::Oidc => expression.contains("sub"),
        };
        if !unique {
            warnings.push(Warning::new("subject-not-unique", format!(
                "google.subject is mapped from `{expression}`, not from the caller's unique {}: different workloads may share one principal, and a principal:// binding then grants all of them",
                if provider.kind() == ProviderKind::Aws { "ARN" } else { "`sub`" }
            )));
        }
    }
}

/// `no-condition`: the provider admits every identity of its account or issuer.
fn no_condition(provider: &WorkloadIdentityProvider) -> Warning {
    Warning::new(
        "no-condition",
        match provider.kind() {
            ProviderKind::Aws => format!(
                "the provider has no attribute condition: every identity of AWS account {} can exchange tokens here; restrict it, e.g. attribute.aws_role == 'arn:aws:sts::ACCOUNT:assumed-role/ROLE'",
                provider
                    .aws
                    .as_ref()
                    .map(|a| a.account_id.as_str())
                    .unwrap_or_default()
            ),
            ProviderKind::Oidc => format!(
                "the provider has no attribute condition: any identity the issuer {} signs a token for can exchange it here; restrict it, e.g. assertion.sub == '…'",
                provider
                    .oidc
                    .as_ref()
                    .map(|o| o.issuer_uri.as_str())
                    .unwrap_or_default()
            ),
        },
    )
}
