//! `idbridge doctor`: walk a route hop by hop against its endpoints, show what each hop
//! obtained (ID-token claims decoded unverified, the AWS caller ARN, the Google token's owner —
//! never a secret) and the time taken, and on a failure name the likely cause and the fix,
//! by hop and error code.

use std::process::ExitCode;

use idbridge_broker::config::RouteConfig;
use idbridge_broker::exchange::{aws_sts, google_sts, iam_credentials};
use idbridge_broker::proof;
use idbridge_broker::step::Input;
use idbridge_broker::{BrokerError, Config, Context, ErrorKind, Route, StepOutcome};
use idbridge_core::Credential;
use idbridge_core::jwt::UnverifiedJwt;
use idbridge_core::timefmt::rfc3339_seconds;
use idbridge_policy::gcp::{AttributeMapping, ProviderName};
use serde_json::{Value, json};

use crate::cli::{DoctorArgs, DoctorFormat};
use crate::commands::CliError;
use crate::explain::{self, GcpProvider, GcpSubject};

/// The claims `doctor` shows of an ID token.
const SHOWN_CLAIMS: [&str; 7] = ["iss", "sub", "aud", "azp", "email", "exp", "iat"];

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
        .and_then(|s| s["received"]["proof_error"].as_str())
        .map(str::to_owned);
    let diagnosis = match failure {
        Some((o, e)) => Some(
            diagnose(&ctx, &config, &route_cfg, &outcomes, o, e, policy.as_ref(), provider.as_ref())
                .await,
        ),
        None => proof_error.as_ref().map(|m| {
            json!({"step": outcomes.len(), "hop": "proof", "code": Value::Null, "error": m,
                "cause": "the route's credential was issued but does not work: the endpoint that should accept it refused it",
                "fix": ["check that the endpoints the route used and the one checking the credential are the same cloud (or the same emulator)"],
                "commands": []})
        }),
    };
    let ok = diagnosis.is_none();
    let total: f64 = outcomes
        .iter()
        .map(|o| o.elapsed.as_secs_f64() * 1000.0)
        .sum();
    let report = json!({
        "route": route_cfg.name,
        "config": config.path,
        "ok": ok,
        "millis": round1(total),
        "steps": steps,
        "diagnosis": diagnosis,
        "note": "ID-token claims are decoded without verifying their signature; tokens, keys and secrets are never shown",
    });
    match a.format {
        DoctorFormat::Json => println!("{report}"),
        DoctorFormat::Table => print_report(&report),
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

async fn step_json(ctx: &Context, route: &RouteConfig, o: &StepOutcome) -> Value {
    let hops: Vec<Value> = o
        .hops
        .iter()
        .map(|h| {
            json!({"hop": h.hop, "endpoint": h.endpoint, "identity": h.identity,
                "millis": round1(h.elapsed.as_secs_f64() * 1000.0)})
        })
        .collect();
    let (received, error) = match &o.result {
        Ok(c) => (describe(ctx, c).await, Value::Null),
        Err(e) => (
            Value::Null,
            json!({"hop": e.hop, "kind": format!("{:?}", e.kind), "code": e.code, "message": e.message, "line": e.to_string()}),
        ),
    };
    json!({
        "index": o.index,
        "step": o.step,
        "role": if o.index == 0 { "source" } else { "exchange" },
        "target": step_target(route, o.index),
        "ok": o.result.is_ok(),
        "millis": round1(o.elapsed.as_secs_f64() * 1000.0),
        "hops": hops,
        "received": received,
        "error": error,
    })
}

/// The shown claims of an ID token (never the token).
fn claims_of(jwt: &UnverifiedJwt) -> Value {
    let mut m = serde_json::Map::new();
    for k in SHOWN_CLAIMS {
        if let Some(v) = jwt.claims.get(k) {
            m.insert(k.to_owned(), v.clone());
        }
    }
    Value::Object(m)
}

/// What a credential is, without its secrets: claims, the AWS caller, the Google token's owner.
async fn describe(ctx: &Context, c: &Credential) -> Value {
    match c {
        Credential::IdToken(t) => match UnverifiedJwt::parse(t.token.expose_secret()) {
            Ok(jwt) => {
                json!({"kind": "id-token", "claims": claims_of(&jwt), "expires": rfc3339_seconds(t.expires_at)})
            }
            Err(e) => json!({"kind": "id-token", "error": e.to_string()}),
        },
        Credential::Aws(creds) => {
            let mut v = json!({"kind": "aws", "access_key_id": creds.access_key_id,
                "expires": creds.expiration.map(rfc3339_seconds)});
            match proof::get_caller_identity(ctx, creds, None).await {
                Ok(h) => {
                    v["arn"] = json!(h.identity.trim_start_matches("caller: "));
                    v["proof"] = json!(format!("GetCallerIdentity at {}", h.endpoint));
                }
                Err(e) => v["proof_error"] = json!(e.to_string()),
            }
            v
        }
        Credential::GoogleAccessToken(t) => {
            let mut v = json!({"kind": "google-access-token", "principal": t.principal,
                "scopes": t.scopes, "expires": rfc3339_seconds(t.expires_at)});
            match proof::tokeninfo(ctx, t).await {
                Ok(h) => {
                    v["owner"] = json!(h.identity.trim_start_matches("token of "));
                    v["proof"] = json!(format!("tokeninfo at {}", h.endpoint));
                }
                // Google's tokeninfo does not describe federated tokens: not a failure.
                Err(e)
                    if t.principal
                        .as_deref()
                        .is_some_and(|p| p.starts_with("federated")) =>
                {
                    v["tokeninfo"] = json!(format!("not described ({e})"));
                }
                Err(e) => v["proof_error"] = json!(e.to_string()),
            }
            v
        }
        other => json!({"kind": other.kind()}),
    }
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

#[expect(clippy::too_many_arguments, reason = "everything a diagnosis may read")]
async fn diagnose(
    ctx: &Context,
    config: &Config,
    route: &RouteConfig,
    outcomes: &[StepOutcome],
    failed: &StepOutcome,
    e: &BrokerError,
    policy: Option<&idbridge_policy::aws::TrustPolicy>,
    provider: Option<&GcpProvider>,
) -> Value {
    let mut fix: Vec<String> = Vec::new();
    let mut commands: Vec<String> = Vec::new();
    let mut evaluation = Value::Null;
    let code = e.code.as_deref().unwrap_or_default();
    let input = input_of(outcomes, failed);
    let exchange = failed
        .index
        .checked_sub(1)
        .and_then(|i| route.exchange.get(i));
    let setup_cmd = |format: &str| {
        format!(
            "idbridge setup --config {} --route {} --format {format}",
            config.path, route.name
        )
    };
    let cause: String = if e.kind == ErrorKind::Transient
        && (e.message.contains("could not connect") || e.message.contains("timed out"))
    {
        fix.push(format!("check {}", e.hop.endpoint_variable()));
        fix.push("against the emulator: `idbridge emulate --env-file emulator.env`, then `set -a; . ./emulator.env; set +a` in this shell".into());
        format!("the {} endpoint is unreachable: {}", e.hop, e.message)
    } else if e.hop == aws_sts::HOP {
        let aws_role = exchange.and_then(|x| x.facts().aws_role);
        let role = aws_role.map_or_else(|| "the role".to_owned(), |r| r.arn.to_string());
        let account = role.split(':').nth(4).unwrap_or("ACCOUNT").to_owned();
        let jwt = input_jwt(input);
        match code {
            "AccessDenied" => {
                if let (Some(policy), Some(jwt)) = (policy, &jwt) {
                    let session = aws_role
                        .and_then(|r| r.session_name)
                        .map_or_else(|| format!("idbridge-{}", route.name), str::to_owned);
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "doctor evaluates at the wall time"
                    )]
                    let now = time::OffsetDateTime::now_utc();
                    if let Ok(r) =
                        explain::aws_report(policy, jwt, Some(&account), &session, false, now)
                    {
                        for st in r["statements"].as_array().into_iter().flatten() {
                            for c in st["conditions"].as_array().into_iter().flatten() {
                                if c["result"] == false {
                                    fix.push(format!(
                                        "condition {} {} {} is false: the token's {} is {}",
                                        c["operator"].as_str().unwrap_or_default(),
                                        c["key"].as_str().unwrap_or_default(),
                                        c["policy_values"],
                                        c["claim"].as_str().unwrap_or_default(),
                                        c["token_value"]
                                    ));
                                }
                            }
                        }
                        for w in r["warnings"].as_array().into_iter().flatten() {
                            if w["code"] != "unverified" {
                                fix.push(format!(
                                    "[{}] {}",
                                    w["code"].as_str().unwrap_or_default(),
                                    w["message"].as_str().unwrap_or_default()
                                ));
                            }
                        }
                        evaluation = r;
                    }
                }
                match &jwt {
                    Some(jwt)
                        if jwt.str_claim("iss").is_some_and(|i| {
                            i.trim_end_matches('/').ends_with("accounts.google.com")
                        }) =>
                    {
                        let azp = jwt.str_claim("azp").unwrap_or("(absent)");
                        let aud = jwt.str_claim("aud").unwrap_or("(absent)");
                        let sub = jwt.str_claim("sub").unwrap_or("(absent)");
                        let form = match crate::azp::Azp::of(jwt) {
                            Some(crate::azp::Azp::Email(_)) => {
                                "here the service account's email: generateIdToken with useEmailAzp"
                            }
                            _ => "the service account's numeric id",
                        };
                        fix.push(format!(
                            "the token has azp={azp} and aud={aud}: for a Google token with azp, AWS compares accounts.google.com:aud with azp ({form}) and accounts.google.com:oaud with aud (the requested audience)"
                        ));
                        if let (Some(f), Some((unique_id, email))) =
                            (crate::azp::Azp::of(jwt), crate::azp::both_forms(jwt))
                        {
                            fix.push(crate::azp::clients_differ(&f, &unique_id, &email));
                        }
                        fix.push(format!(
                            "write in the trust policy of {role}: \"StringEquals\": {{\"accounts.google.com:aud\": \"{azp}\", \"accounts.google.com:oaud\": \"{aud}\", \"accounts.google.com:sub\": \"{sub}\"}}, \"Null\": {{\"accounts.google.com:oaud\": \"false\"}}"
                        ));
                        if policy.is_none() {
                            fix.push("pass --aws-trust-policy FILE to evaluate the role's policy condition by condition".into());
                        }
                        commands.push(setup_cmd("aws-json"));
                        format!(
                            "AWS STS refused to let this Google token assume {role}: a condition of the role's trust policy is false (usually accounts.google.com:aud written with the audience instead of azp)"
                        )
                    }
                    Some(jwt) => {
                        let iss = jwt.str_claim("iss").unwrap_or_default();
                        let host = iam_issuer_name(iss);
                        let aud = match jwt.claims.get("aud") {
                            Some(Value::String(s)) => s.clone(),
                            Some(Value::Array(a)) => a
                                .first()
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            _ => String::new(),
                        };
                        let sub = jwt.str_claim("sub").unwrap_or_default();
                        fix.push(format!(
                            "the token has iss={iss} sub={sub} aud={aud}: the role must trust \"Federated\": \"arn:aws:iam::{account}:oidc-provider/{host}\" with \"StringEquals\": {{\"{host}:aud\": \"{aud}\", \"{host}:sub\": \"{sub}\"}}"
                        ));
                        if policy.is_none() {
                            fix.push("pass --aws-trust-policy FILE to evaluate the role's policy condition by condition".into());
                        }
                        commands.push(setup_cmd("aws-json"));
                        format!(
                            "AWS STS refused to let this token assume {role}: the trust policy does not trust this issuer, subject or audience"
                        )
                    }
                    None => format!("AWS STS refused to let the token assume {role}"),
                }
            }
            "InvalidIdentityToken" => {
                let iss = jwt
                    .as_ref()
                    .and_then(|j| j.str_claim("iss"))
                    .unwrap_or("(unknown)")
                    .to_owned();
                let kid = jwt
                    .as_ref()
                    .and_then(|j| j.header.get("kid"))
                    .and_then(Value::as_str)
                    .unwrap_or("(none)")
                    .to_owned();
                if !iss.ends_with("accounts.google.com") {
                    let aud = jwt
                        .as_ref()
                        .and_then(|j| match j.claims.get("aud") {
                            Some(Value::String(s)) => Some(s.clone()),
                            Some(Value::Array(a)) => {
                                a.first().and_then(Value::as_str).map(str::to_owned)
                            }
                            _ => None,
                        })
                        .unwrap_or_else(|| "AUDIENCE".into());
                    fix.push(format!("register the issuer in account {account} (Google, Cognito and Amazon are built in; every other issuer needs an IAM OIDC provider)"));
                    commands.push(format!(
                        "aws iam create-open-id-connect-provider --url {iss} --client-id-list {aud}"
                    ));
                }
                fix.push(format!("check that the issuer's JWKS ({iss}/.well-known/openid-configuration → jwks_uri) is reachable from AWS and holds the key with kid {kid}"));
                format!(
                    "AWS STS could not validate the token of {iss}: the issuer is not registered as an IAM OIDC provider in account {account}, its keys cannot be fetched, or no key has kid {kid}"
                )
            }
            "ExpiredTokenException" => {
                let exp = jwt.as_ref().and_then(UnverifiedJwt::exp);
                fix.push(format!(
                    "the token's exp is {}; now is {}: check this machine's clock, and for a token file that the file is refreshed (the kubelet rotates projected tokens)",
                    exp.map(fmt_unix).unwrap_or_else(|| "(absent)".into()),
                    rfc3339_seconds(ctx.clock.now())
                ));
                "AWS STS says the token has expired".into()
            }
            "ValidationError" => {
                fix.push("check the exchange's session_name (2–64 characters of [\\w+=,.@-]) and duration_seconds (900 up to the role's maximum session duration)".into());
                "AWS STS refused a request parameter".into()
            }
            "IDPRejectedClaim" => {
                fix.push("check the token's session tag claims (https://aws.amazon.com/tags) and the role's sts:TagSession permission".into());
                "AWS STS rejected a claim of the token".into()
            }
            _ => format!(
                "AWS STS refused the exchange ({})",
                if code.is_empty() {
                    "no error code"
                } else {
                    code
                }
            ),
        }
    } else if e.hop == google_sts::HOP {
        let audience = exchange
            .and_then(|x| x.facts().google_sts)
            .map(|g| g.provider.to_string())
            .unwrap_or_default();
        let name = ProviderName::parse_audience(&audience);
        let aws_input = matches!(input, Some(Credential::Aws(_)));
        let arn = if aws_input {
            aws_caller(ctx, outcomes).await
        } else {
            None
        };
        let jwt = input_jwt(input);
        let (n, pool, prov) = match &name {
            Some(n) => (
                n.pool.project_number.clone(),
                n.pool.pool.clone(),
                n.provider.clone(),
            ),
            None => ("PROJECT_NUMBER".into(), "POOL".into(), "PROVIDER".into()),
        };
        if let Some(p) = provider {
            let subject = match (&arn, &jwt) {
                (Some(arn), _) => Some(GcpSubject::AwsArn(arn)),
                (None, Some(j)) => Some(GcpSubject::Token(j)),
                _ => None,
            };
            if let Some(subject) = subject {
                let r = explain::gcp_report(
                    p,
                    subject,
                    &[],
                    None,
                    false,
                    ctx.clock.now().unix_timestamp(),
                );
                for s in r["steps"].as_array().into_iter().flatten() {
                    if s["result"] == false {
                        fix.push(format!(
                            "{} {} is {} (expected {})",
                            s["step"].as_str().unwrap_or_default(),
                            s["key"].as_str().unwrap_or_default(),
                            s["value"],
                            s["expected"]
                        ));
                    }
                }
                evaluation = r;
            }
        }
        match code {
            "unauthorized_client" => {
                let (update, condition) = match (&arn, &jwt) {
                    (Some(arn), _) => {
                        let role = aws_role_of(arn);
                        fix.push(format!("the caller is {arn}; with the default AWS mapping its attribute.aws_role is {role}"));
                        (
                            "update-aws",
                            format!("attribute.aws_role == {}", quote_cel(&role)),
                        )
                    }
                    (None, Some(j)) => {
                        let sub = j.str_claim("sub").unwrap_or_default();
                        fix.push(format!(
                            "the token has iss={} sub={sub}",
                            j.str_claim("iss").unwrap_or_default()
                        ));
                        (
                            "update-oidc",
                            format!("assertion.sub == {}", quote_cel(sub)),
                        )
                    }
                    _ => ("update-oidc", "…".to_owned()),
                };
                fix.push(format!("a condition that admits this caller: {condition}"));
                if provider.is_none() {
                    fix.push("pass --gcp-provider FILE to evaluate the provider's mapping and condition step by step".into());
                }
                commands.push(format!(
                    "gcloud iam workload-identity-pools providers {update} {prov} --workload-identity-pool={pool} --location=global --project={n} --attribute-condition=\"{condition}\""
                ));
                if aws_input {
                    let account = arn
                        .as_deref()
                        .and_then(|a| a.split(':').nth(4))
                        .unwrap_or("AWS_ACCOUNT_ID")
                        .to_owned();
                    fix.push(format!("if the condition is right, check the organization policy: an AWS provider only works for accounts that constraints/iam.workloadIdentityPoolAwsAccounts allows ({account})"));
                    commands.push(format!("gcloud resource-manager org-policies allow constraints/iam.workloadIdentityPoolAwsAccounts {account} --organization=ORGANIZATION_ID"));
                }
                format!(
                    "Google STS refused the credential: the attribute condition of provider {prov} (pool {pool}) is false for this caller"
                )
            }
            "invalid_target" => {
                match &name {
                    Some(_) => {
                        fix.push(format!("the audience names project number {n}, pool {pool}, provider {prov}: the project must be given by number, not id, and the pool and provider must exist and be enabled"));
                        commands.push(format!("gcloud iam workload-identity-pools providers describe {prov} --workload-identity-pool={pool} --location=global --project={n}"));
                        commands.push("gcloud projects describe PROJECT_ID --format='value(projectNumber)'".into());
                    }
                    None => fix.push(format!("the audience {audience:?} is not //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER")),
                }
                commands.push(setup_cmd("gcloud"));
                "Google STS does not know the provider the audience names (wrong project number, pool or provider, or disabled or deleted)".into()
            }
            "invalid_grant" if e.message.contains("SignatureDoesNotMatch") => {
                fix.push(format!("compare this machine's clock (now {}) with real time: the signed request's x-amz-date must be within 15 minutes", rfc3339_seconds(ctx.clock.now())));
                fix.push("check that the AWS credentials of the source are current (not revoked or expired) and that nothing rewrites the signed headers".into());
                "AWS rejected the signed GetCallerIdentity request Google STS replayed: clock skew, or wrong or expired AWS credentials".into()
            }
            "invalid_grant" => {
                if let Some(j) = &jwt {
                    fix.push(format!(
                        "the token has iss={} aud={}: the provider's issuer_uri must be the iss exactly, and aud must be one of its allowed audiences (when none are set: https://iam.googleapis.com/projects/{n}/locations/global/workloadIdentityPools/{pool}/providers/{prov})",
                        j.str_claim("iss").unwrap_or_default(),
                        j.claims.get("aud").map(Value::to_string).unwrap_or_default()
                    ));
                }
                if aws_input {
                    fix.push("the caller's AWS account must be the provider's account id".into());
                }
                "Google STS did not accept the subject token (issuer, audience, signature, expiry or AWS account)".into()
            }
            "invalid_request" => {
                fix.push("check the provider's attribute mapping against the token (explain --gcp-provider shows each target's value) and the exchange's subject_token_type".into());
                "Google STS could not map the credential, or the request does not fit the provider"
                    .into()
            }
            _ => format!(
                "Google STS refused the exchange ({})",
                if code.is_empty() {
                    "no error code"
                } else {
                    code
                }
            ),
        }
    } else if e.hop == iam_credentials::HOP {
        let step = exchange.map_or(route.source.as_ref(), AsRef::as_ref);
        let sa = step.facts().impersonation.map_or_else(
            || "SERVICE_ACCOUNT".to_owned(),
            |i| i.service_account.to_owned(),
        );
        match code {
            "PERMISSION_DENIED" if e.message.contains("scopes") => {
                fix.push("the caller's access token lacks the cloud-platform scope: request https://www.googleapis.com/auth/cloud-platform (on a VM, the instance's scopes must include it)".into());
                "the caller's token cannot call IAM Credentials".into()
            }
            "PERMISSION_DENIED" => {
                let federated = matches!(input, Some(Credential::GoogleAccessToken(t)) if t.principal.as_deref().is_some_and(|p| p.starts_with("federated")));
                if federated {
                    let principal = federated_principal(ctx, route, outcomes, provider).await;
                    for (what, member) in &principal {
                        fix.push(format!("the federated caller is {what}"));
                        commands.push(format!("gcloud iam service-accounts add-iam-policy-binding {sa} --role=roles/iam.workloadIdentityUser --member={member}"));
                    }
                    commands.push(setup_cmd("gcloud"));
                    format!(
                        "the federated identity may not impersonate {sa}: it lacks roles/iam.workloadIdentityUser on the account"
                    )
                } else {
                    let caller = caller_email(ctx, route, input).await;
                    let member = caller
                        .as_deref()
                        .map(|c| format!("serviceAccount:{c}"))
                        .unwrap_or_else(|| "serviceAccount:CALLER_EMAIL".into());
                    commands.push(format!("gcloud iam service-accounts add-iam-policy-binding {sa} --role=roles/iam.serviceAccountTokenCreator --member={member}"));
                    format!(
                        "{} may not mint tokens of {sa}: it lacks roles/iam.serviceAccountTokenCreator on the account",
                        caller.as_deref().unwrap_or("the caller")
                    )
                }
            }
            "NOT_FOUND" => {
                fix.push(format!("check the spelling of {sa} and that it exists: gcloud iam service-accounts describe {sa}"));
                format!("the service account {sa} does not exist")
            }
            "UNAUTHENTICATED" => {
                fix.push(
                    "the caller's access token is invalid or expired; check the previous hop"
                        .into(),
                );
                "IAM Credentials did not accept the caller's token".into()
            }
            _ => format!(
                "IAM Credentials refused ({})",
                if code.is_empty() {
                    "no error code"
                } else {
                    code
                }
            ),
        }
    } else if e.kind == ErrorKind::NotConfigured || e.kind == ErrorKind::InvalidConfiguration {
        fix.push("fix the route config or the environment named in the error".into());
        "the route or its environment is not set up".into()
    } else if e.kind == ErrorKind::Io {
        fix.push("check that the file exists and is readable by this user".into());
        "a local file could not be read".into()
    } else {
        fix.push("run with IDBRIDGE_LOG=debug for the request details".into());
        format!("the {} hop failed", e.hop)
    };
    json!({
        "step": failed.index + 1,
        "hop": e.hop,
        "code": e.code,
        "error": e.to_string(),
        "cause": cause,
        "fix": fix,
        "commands": commands,
        "evaluation": evaluation,
    })
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

fn fmt_unix(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .map(rfc3339_seconds)
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

/// One line describing what a step obtained.
fn received_line(r: &Value) -> String {
    match r["kind"].as_str() {
        Some("id-token") => {
            let claims: Vec<String> = SHOWN_CLAIMS
                .iter()
                .filter_map(|k| {
                    let v = &r["claims"][*k];
                    (!v.is_null()).then(|| match (*k, v.as_i64()) {
                        ("exp" | "iat", Some(t)) => format!("{k}={}", fmt_unix(t)),
                        _ => format!("{k}={}", show(v)),
                    })
                })
                .collect();
            format!("ID token (claims unverified): {}", claims.join("  "))
        }
        Some("aws") => format!(
            "AWS credentials {}: {} ({}), expires {}",
            show(&r["access_key_id"]),
            r["arn"].as_str().unwrap_or("caller unknown"),
            r["proof"]
                .as_str()
                .or(r["proof_error"].as_str())
                .unwrap_or("-"),
            show(&r["expires"])
        ),
        Some("google-access-token") => format!(
            "Google access token of {} ({}), expires {}",
            r["owner"]
                .as_str()
                .or(r["principal"].as_str())
                .unwrap_or("?"),
            r["proof"]
                .as_str()
                .or(r["proof_error"].as_str())
                .or(r["tokeninfo"].as_str())
                .unwrap_or("-"),
            show(&r["expires"])
        ),
        _ => show(r),
    }
}

fn print_report(report: &Value) {
    println!(
        "idbridge doctor: route {} ({})",
        show(&report["route"]),
        show(&report["config"])
    );
    println!("{}\n", show(&report["note"]));
    for s in report["steps"].as_array().into_iter().flatten() {
        let idx = s["index"].as_u64().unwrap_or(0) + 1;
        println!(
            "step {idx}  {} {}: {}   {}  {} ms",
            show(&s["role"]),
            show(&s["step"]),
            show(&s["target"]),
            if s["ok"] == true { "ok" } else { "FAILED" },
            show(&s["millis"])
        );
        for h in s["hops"].as_array().into_iter().flatten() {
            println!(
                "    hop {} ({} ms) {}\n        → {}",
                show(&h["hop"]),
                show(&h["millis"]),
                show(&h["endpoint"]),
                show(&h["identity"])
            );
        }
        if !s["received"].is_null() {
            println!("    received: {}", received_line(&s["received"]));
        }
        if let Some(e) = s["error"]["line"].as_str() {
            println!("    error: {e}");
        }
        println!();
    }
    match report["diagnosis"].as_object() {
        None => println!("result: the route works ({} ms)", show(&report["millis"])),
        Some(d) => {
            println!("result: FAILED at step {}", show(&d["step"]));
            println!("cause: {}", show(&d["cause"]));
            for f in d["fix"].as_array().into_iter().flatten() {
                println!("  - {}", show(f));
            }
            for c in d["commands"].as_array().into_iter().flatten() {
                println!("  $ {}", show(c));
            }
        }
    }
}
