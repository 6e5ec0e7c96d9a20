//! `idbridge setup`: the cloud-side configuration a route needs, written for the tool the user
//! applies it with.
//!
//! For each federation hop of the route:
//!
//! * `aws-sts` after a Google token (metadata, key, impersonation): a role trust policy on
//!   `accounts.google.com` with `:aud` = the service account's numeric id (AWS reads it from the
//!   token's `azp`), `:oaud` = the requested audience, `:sub`, and `Null` checks;
//! * `aws-sts` after another OIDC token (file, URL, program, SPIFFE): an IAM OIDC provider and a
//!   trust policy on `<issuer>:aud` and `<issuer>:sub`;
//! * `google-sts` after AWS credentials or an OIDC token: the org policy that allows the AWS
//!   account (AWS only), the pool, the provider with its mapping and condition, and the
//!   `roles/iam.workloadIdentityUser` binding on the impersonated service account;
//! * `impersonate` by a service account: its `roles/iam.serviceAccountTokenCreator` binding;
//! * `entra`: the federated identity credential of the app registration (or, with
//!   `--managed-identity`, the user-assigned managed identity) for the token the hop is handed
//!   ([`azure`]).
//!
//! Values the config does not hold (the numeric id, the caller's ARN, the token's subject) come
//! from flags, or from running the route's first hops against the configured endpoints (claims
//! and ARNs only: no secret is printed). Every generated trust policy and provider is checked
//! with the policy engine against the credential that was read, when there is one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use idbridge_broker::config::RouteConfig;
use idbridge_broker::exchange::aws_sts;
use idbridge_broker::{Config, Context, Route};
use idbridge_broker::{Step, Yields};
use idbridge_core::Credential;
use idbridge_core::jwt::UnverifiedJwt;
use idbridge_policy::aws::TrustPolicy;
use idbridge_policy::gcp::ProviderName;
use serde_json::{Value, json};

use crate::cli::{SetupArgs, SetupEndpoints, SetupFormat};
use crate::commands::CliError;
use crate::doctor::{aws_role_of, caller_email, iam_issuer_name, quote_cel};
use crate::explain::{self, GcpSubject};

const GOOGLE_ISSUER: &str = "accounts.google.com";
const DEFAULT_IMDS: &str = "http://169.254.169.254";
const DEFAULT_STS_URL: &str = "https://sts.googleapis.com/v1/token";
const DEFAULT_IAMCREDENTIALS: &str = "https://iamcredentials.googleapis.com";
const AWS4_REQUEST: &str = "urn:ietf:params:aws:token-type:aws4_request";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

mod aws;
mod aws_kinds;
pub(crate) mod azure;
mod external_account;
mod gcp;
mod world;

use aws::*;
use azure::*;
use external_account::*;
use gcp::*;
use world::*;

/// An AWS role the route assumes, and whom it must trust.
#[derive(Debug, Clone)]
struct AwsRolePlan {
    role_arn: String,
    max_session: Option<u32>,
    trust: AwsTrust,
}

#[derive(Debug, Clone)]
enum AwsTrust {
    /// Google ID tokens: `:aud` reads `azp` when the token has one.
    Google {
        unique_id: String,
        audience: String,
        has_azp: bool,
        /// What the route's own tokens carry in `azp`: the unique id, or the email when the
        /// token read says so (`generateIdToken` with `useEmailAzp`).
        azp: String,
    },
    /// Any other OIDC issuer, through an IAM OIDC provider.
    Oidc {
        issuer: String,
        audience: String,
        subject: String,
    },
}

/// A Google workload identity pool provider the route exchanges at.
#[derive(Debug, Clone)]
struct GcpPlan {
    exchange_index: usize,
    name: ProviderName,
    project_id: Option<String>,
    source: GcpSource,
    condition: String,
    member: String,
    service_account: Option<String>,
    sa_unique_id: Option<String>,
    /// What the condition and member were computed from, for the engine check.
    subject: Option<ProbeSubject>,
}

#[derive(Debug, Clone)]
enum GcpSource {
    Aws {
        account_id: String,
        role: String,
    },
    Oidc {
        issuer: String,
        allowed_audiences: Vec<String>,
    },
}

#[derive(Debug, Clone)]
enum ProbeSubject {
    AwsArn(String),
    Token(String),
}

/// `roles/iam.serviceAccountTokenCreator` for a caller on a target account.
#[derive(Debug, Clone)]
struct TokenCreator {
    target: String,
    target_unique_id: Option<String>,
    caller: Option<String>,
}

#[derive(Debug, Default)]
struct Plan {
    aws: Vec<AwsRolePlan>,
    gcp: Vec<GcpPlan>,
    creators: Vec<TokenCreator>,
    /// The probed token of each aws-sts hop, to check the generated policy.
    aws_tokens: Vec<Option<UnverifiedJwt>>,
    /// The federated credentials of the `entra` hops.
    azure: Vec<AzurePlan>,
    /// Roles chained from another role, assumed through Roles Anywhere, and outbound
    /// federation ([`aws_kinds`]).
    chained: Vec<aws_kinds::ChainedRolePlan>,
    roles_anywhere: Vec<aws_kinds::RolesAnywherePlan>,
    outbound: Option<aws_kinds::OutboundPlan>,
}

pub(crate) async fn run(a: SetupArgs) -> Result<ExitCode, CliError> {
    let config = Config::load(&a.route.config)?;
    let route = config.route(&a.route.route)?.clone();
    let ctx = if a.offline {
        None
    } else {
        Some(Context::from_process(&config.endpoints)?)
    };
    let plan = plan(&a, &route, ctx.as_ref()).await?;
    check(&plan);
    check_azure(&plan);
    let text = match a.format {
        SetupFormat::AzCli => az_cli(&plan, &route)?,
        SetupFormat::Terraform if !plan.azure.is_empty() => {
            let base = if plan.aws.is_empty() && plan.gcp.is_empty() && plan.creators.is_empty() {
                String::new()
            } else {
                terraform(&plan, &route, a.organization.as_deref())?
            };
            terraform_azure(&plan, &route, base)
        }
        SetupFormat::AwsJson => aws_json(&plan, &route)?,
        SetupFormat::AwsCli => aws_cli(&plan, &route)?,
        SetupFormat::Gcloud => gcloud(&plan, &route, a.organization.as_deref())?,
        SetupFormat::Terraform => terraform(&plan, &route, a.organization.as_deref())?,
        SetupFormat::ExternalAccount => {
            let endpoints = match a.endpoints {
                SetupEndpoints::Production => EndpointUrls::production(),
                SetupEndpoints::Effective => {
                    EndpointUrls::effective(&Context::from_process(&config.endpoints)?)
                }
            };
            external_account(&plan, &route, &endpoints)?
        }
        SetupFormat::World => world(&plan, &route, &config.path),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The service account whose `generateIdToken` makes the ID token that aws-sts hop `i` sends,
/// when it is made that way (an `impersonate` source or exchange with an audience).
fn id_token_from_generate_id_token(route: &RouteConfig, i: usize) -> Option<&str> {
    fn minted_by(step: &dyn Step) -> Option<&str> {
        let f = step.facts();
        f.service_account.filter(|_| f.generate_id_token)
    }
    route.exchange[..i]
        .iter()
        .rev()
        .find_map(|ex| minted_by(ex.as_ref()))
        .or_else(|| minted_by(route.source.as_ref()))
}

/// Warns (stderr) where clients of the same account get the other `azp` form than the one the
/// trust policy is written for: the ID token comes from `generateIdToken`, whose `azp` is the
/// numeric id for idbridge and the email for clients that send `useEmailAzp` (Node's
/// google-auth-library by default).
fn warn_azp_forms(
    route: &RouteConfig,
    i: usize,
    token: Option<&UnverifiedJwt>,
    unique_id: &str,
    azp: &str,
) {
    let Some(account) = id_token_from_generate_id_token(route, i) else {
        return;
    };
    let email = token
        .and_then(|t| t.str_claim("email"))
        .filter(|e| e.contains('@'))
        .unwrap_or(account);
    let form = if azp.contains('@') {
        crate::azp::Azp::Email(azp.to_owned())
    } else {
        crate::azp::Azp::UniqueId(azp.to_owned())
    };
    eprintln!(
        "idbridge setup: warning [google-azp-forms]: the trust policy admits azp = {azp} (what this route gets); {}",
        crate::azp::clients_differ(&form, unique_id, email)
    );
}

/// Runs the route's source and its first `upto` exchanges; the credential they end in.
async fn probe(ctx: Option<&Context>, route: &RouteConfig, upto: usize) -> Option<Credential> {
    let ctx = ctx?;
    let mut cfg = route.clone();
    cfg.exchange.truncate(upto);
    let outcomes = Route::new(cfg).run_steps(ctx).await;
    match outcomes.last().map(|o| &o.result) {
        Some(Ok(c)) if outcomes.len() == upto + 1 => Some(c.clone()),
        Some(Err(e)) => {
            eprintln!(
                "idbridge setup: note: could not run the route up to its hop {}: {e}",
                upto + 1
            );
            None
        }
        _ => None,
    }
}

fn jwt_of(c: Option<&Credential>) -> Option<UnverifiedJwt> {
    match c {
        Some(Credential::IdToken(t)) => UnverifiedJwt::parse(t.token.expose_secret()).ok(),
        _ => None,
    }
}

fn first_aud(jwt: &UnverifiedJwt) -> Option<String> {
    match jwt.claims.get("aud") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The step before exchange `i`.
fn step_before(route: &RouteConfig, i: usize) -> &dyn Step {
    match i.checked_sub(1).and_then(|j| route.exchange.get(j)) {
        Some(ex) => ex.as_ref(),
        None => route.source.as_ref(),
    }
}

/// Whether the step before exchange `i` yields a Google-issued ID token.
fn google_token_before(route: &RouteConfig, i: usize) -> bool {
    step_before(route, i).facts().google_id_token
}

/// The audience the route asks for in the token handed to exchange `i`.
fn configured_audience(route: &RouteConfig, i: usize) -> Option<String> {
    step_before(route, i).facts().audience.map(str::to_owned)
}

/// The project id in a service account's email (`NAME@PROJECT.iam.gserviceaccount.com`).
fn sa_project(email: &str) -> Option<String> {
    email
        .split_once('@')?
        .1
        .strip_suffix(".iam.gserviceaccount.com")
        .map(str::to_owned)
}

/// `arn:aws:sts::ACCOUNT:assumed-role/ROLE` for a role, assumed-role or other caller ARN.
fn assumed_role(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if let [_, partition, "iam", _, account, resource] = parts.as_slice()
        && let Some(path_name) = resource.strip_prefix("role/")
    {
        let name = path_name.rsplit('/').next().unwrap_or(path_name);
        return format!("arn:{partition}:sts::{account}:assumed-role/{name}");
    }
    aws_role_of(arn)
}

async fn plan(a: &SetupArgs, route: &RouteConfig, ctx: Option<&Context>) -> Result<Plan, CliError> {
    let usage = |m: String| CliError::Usage(format!("setup: route {:?}: {m}", route.name));
    let mut plan = Plan::default();
    for (i, ex) in route.exchange.iter().enumerate() {
        let facts = ex.facts();
        if let (Some(role), Some(ar)) = (&facts.aws_role, &facts.assume_role) {
            plan.chained
                .push(aws_kinds::plan_chained(a, route, i, role, ar, ctx).await?);
            continue;
        }
        if let (Some(role), Some(ra)) = (&facts.aws_role, &facts.roles_anywhere) {
            plan.roles_anywhere
                .push(aws_kinds::plan_roles_anywhere(a, route, i, role, ra, ctx).await?);
            continue;
        }
        if let Some(role) = facts.aws_role {
            {
                let google = google_token_before(route, i);
                let need_probe = if google {
                    a.sa_unique_id.is_none()
                } else {
                    a.issuer.is_none() || a.subject.is_none() || a.audience.is_none()
                };
                let token = if need_probe {
                    jwt_of(probe(ctx, route, i).await.as_ref())
                } else {
                    None
                };
                let is_google = token
                    .as_ref()
                    .and_then(|t| t.str_claim("iss"))
                    .map_or(google, |iss| {
                        iss.trim_start_matches("https://") == GOOGLE_ISSUER
                    });
                let audience = a
                    .audience
                    .clone()
                    .or_else(|| token.as_ref().and_then(first_aud))
                    .or_else(|| configured_audience(route, i));
                let trust = if is_google {
                    let unique_id = a
                        .sa_unique_id
                        .clone()
                        .or_else(|| {
                            token.as_ref().and_then(|t| {
                                t.str_claim("azp")
                                    .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                                    .or(t.str_claim("sub"))
                                    .map(str::to_owned)
                            })
                        })
                        .ok_or_else(|| {
                            usage("the service account's numeric unique id is unknown: pass --sa-unique-id (gcloud iam service-accounts describe EMAIL --format='value(uniqueId)'), or run setup where the route's source is reachable".into())
                        })?;
                    let azp = token
                        .as_ref()
                        .and_then(|t| t.str_claim("azp"))
                        .map_or_else(|| unique_id.clone(), str::to_owned);
                    warn_azp_forms(route, i, token.as_ref(), &unique_id, &azp);
                    AwsTrust::Google {
                        unique_id,
                        audience: audience.ok_or_else(|| {
                            usage("the token's audience is unknown: pass --audience".into())
                        })?,
                        has_azp: token.as_ref().is_none_or(|t| t.claims.contains_key("azp")),
                        azp,
                    }
                } else {
                    let missing = |what: &str, flag: &str| {
                        usage(format!(
                            "the token's {what} is unknown (the source's token could not be read): pass --{flag}"
                        ))
                    };
                    AwsTrust::Oidc {
                        issuer: a
                            .issuer
                            .clone()
                            .or_else(|| {
                                token
                                    .as_ref()
                                    .and_then(|t| t.str_claim("iss").map(str::to_owned))
                            })
                            .ok_or_else(|| missing("issuer", "issuer"))?,
                        audience: audience.ok_or_else(|| missing("audience", "audience"))?,
                        subject: a
                            .subject
                            .clone()
                            .or_else(|| {
                                token
                                    .as_ref()
                                    .and_then(|t| t.str_claim("sub").map(str::to_owned))
                            })
                            .ok_or_else(|| missing("subject", "subject"))?,
                    }
                };
                plan.aws.push(AwsRolePlan {
                    role_arn: role.arn.to_string(),
                    max_session: role.duration_seconds.filter(|d| *d > 3600),
                    trust,
                });
                plan.aws_tokens.push(token);
            }
        } else if let Some(sts) = facts.google_sts {
            {
                let audience = sts.provider.as_str();
                let name = ProviderName::parse_audience(audience).ok_or_else(|| {
                    usage(format!("exchange[{i}]: audience {audience:?} is not //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER"))
                })?;
                let service_account = route
                    .exchange
                    .get(i + 1)
                    .and_then(|x| x.facts().impersonation)
                    .map(|imp| imp.service_account.to_owned());
                let project_id = a
                    .project_id
                    .clone()
                    .or_else(|| service_account.as_deref().and_then(sa_project));
                let aws_source = route.source.yields() == Yields::AwsCredentials && i == 0;
                let (source, condition, member, subject) = if aws_source {
                    let arn = match &a.aws_caller_arn {
                        Some(arn) => arn.clone(),
                        None => match probe(ctx, route, i).await {
                            Some(Credential::Aws(c)) => match (&c.arn, ctx) {
                                (Some(arn), _) => arn.clone(),
                                (None, Some(ctx)) => aws_sts::get_caller_identity(ctx, &c, None)
                                    .await
                                    .map_err(|e| usage(format!("cannot read the AWS caller ({e}): pass --aws-caller-arn")))?
                                    .identity
                                    .trim_start_matches("caller: ")
                                    .to_owned(),
                                (None, None) => String::new(),
                            },
                            _ => String::new(),
                        },
                    };
                    if arn.is_empty() {
                        return Err(usage("the AWS caller is unknown: pass --aws-caller-arn arn:aws:iam::ACCOUNT:role/NAME, or run setup where the route's AWS source is reachable".into()));
                    }
                    let role = assumed_role(&arn);
                    let account_id = arn.split(':').nth(4).unwrap_or_default().to_owned();
                    let condition = format!("attribute.aws_role == {}", quote_cel(&role));
                    let member = format!(
                        "principalSet://{}/attribute.aws_role/{role}",
                        name.pool.path()
                    );
                    (
                        GcpSource::Aws { account_id, role },
                        condition,
                        member,
                        Some(ProbeSubject::AwsArn(arn)),
                    )
                } else {
                    let token = if a.issuer.is_none() || a.subject.is_none() || a.audience.is_none()
                    {
                        jwt_of(probe(ctx, route, i).await.as_ref())
                    } else {
                        None
                    };
                    let missing = |what: &str, flag: &str| {
                        usage(format!(
                            "the subject token's {what} is unknown (it could not be read): pass --{flag}"
                        ))
                    };
                    // The flag's value, else the token's string claim.
                    let flag_or_claim = |flag: Option<&str>, claim: &str, what: &str| {
                        flag.map(str::to_owned)
                            .or_else(|| {
                                token
                                    .as_ref()
                                    .and_then(|t| t.str_claim(claim).map(str::to_owned))
                            })
                            .ok_or_else(|| missing(what, what))
                    };
                    let issuer = flag_or_claim(a.issuer.as_deref(), "iss", "issuer")?;
                    let subject = flag_or_claim(a.subject.as_deref(), "sub", "subject")?;
                    let aud = a
                        .audience
                        .clone()
                        .or_else(|| token.as_ref().and_then(first_aud))
                        .or_else(|| configured_audience(route, i))
                        .ok_or_else(|| missing("audience", "audience"))?;
                    let allowed_audiences = if name.is_audience(&aud) {
                        Vec::new()
                    } else {
                        vec![aud]
                    };
                    let condition = match subject
                        .strip_prefix("spiffe://")
                        .and_then(|r| r.split('/').next())
                    {
                        Some(td) => format!(
                            "assertion.sub.startsWith({})",
                            quote_cel(&format!("spiffe://{td}/"))
                        ),
                        None => format!("assertion.sub == {}", quote_cel(&subject)),
                    };
                    let member = format!("principal://{}/subject/{subject}", name.pool.path());
                    let probe_subject = token.map(|t| {
                        ProbeSubject::Token(serde_json::to_string(&t.claims).unwrap_or_default())
                    });
                    (
                        GcpSource::Oidc {
                            issuer,
                            allowed_audiences,
                        },
                        condition,
                        member,
                        probe_subject,
                    )
                };
                plan.gcp.push(GcpPlan {
                    exchange_index: i,
                    name,
                    project_id,
                    source,
                    condition,
                    member,
                    service_account,
                    sa_unique_id: a.sa_unique_id.clone(),
                    subject,
                });
            }
        } else if let Some(entra) = facts.entra {
            plan.azure.push(plan_entra(a, route, ctx, i, entra).await?);
        } else if let Some(imp) = facts.impersonation {
            {
                let service_account = imp.service_account;
                let federated = i > 0
                    && route
                        .exchange
                        .get(i - 1)
                        .is_some_and(|x| x.facts().google_sts.is_some());
                if !federated {
                    let caller = match probe(ctx, route, i).await {
                        Some(Credential::GoogleAccessToken(t)) => t.principal,
                        _ => None,
                    };
                    plan.creators.extend(chain_grants(
                        caller,
                        imp.delegates,
                        service_account,
                        None,
                    ));
                }
            }
        }
    }
    for r in &plan.aws {
        if let AwsTrust::Oidc { issuer, .. } = &r.trust {
            note_entra_source(issuer, &format!("role {}", r.role_arn));
        }
    }
    for g in &plan.gcp {
        if let GcpSource::Oidc { issuer, .. } = &g.source {
            note_entra_source(issuer, &format!("provider {}", g.name.canonical()));
        }
    }
    plan.outbound = aws_kinds::plan_outbound(a, route, ctx).await;
    if let Some(imp) = route.source.facts().impersonation {
        let service_account = imp.service_account;
        let caller = match ctx {
            Some(ctx) => caller_email(ctx, route, None).await,
            None => None,
        };
        // The first aws-sts hop's token, when read, is this account's: its numeric id.
        let target_unique_id = plan.aws.iter().find_map(|r| match &r.trust {
            AwsTrust::Google { unique_id, .. } => Some(unique_id.clone()),
            AwsTrust::Oidc { .. } => None,
        });
        let grants = chain_grants(caller, imp.delegates, service_account, target_unique_id);
        plan.creators.splice(0..0, grants);
    }
    Ok(plan)
}

/// The token creator grants of caller → delegates… → target: one per link, each account on
/// the next (a delegation chain needs every one of them).
fn chain_grants(
    caller: Option<String>,
    delegates: &[idbridge_broker::values::ServiceAccount],
    target: &str,
    target_unique_id: Option<String>,
) -> Vec<TokenCreator> {
    let mut grants = Vec::with_capacity(delegates.len() + 1);
    let mut previous = caller;
    for d in delegates {
        grants.push(TokenCreator {
            target: d.to_string(),
            target_unique_id: None,
            caller: previous,
        });
        previous = Some(d.to_string());
    }
    grants.push(TokenCreator {
        target: target.to_owned(),
        target_unique_id,
        caller: previous,
    });
    grants
}

/// The order keys are printed in (serde_json's maps sort them): IAM's and Google's usual order.
const KEY_ORDER: [&str; 16] = [
    "type",
    "audience",
    "subject_token_type",
    "token_url",
    "service_account_impersonation_url",
    "service_account_impersonation",
    "credential_source",
    "Version",
    "Statement",
    "Sid",
    "Effect",
    "Principal",
    "Action",
    "Condition",
    "StringEquals",
    "Null",
];

fn key_rank(k: &str) -> usize {
    KEY_ORDER
        .iter()
        .position(|o| *o == k)
        .unwrap_or(KEY_ORDER.len())
}

/// Pretty JSON (two-space indents, as serde_json writes it) with keys in [`KEY_ORDER`].
fn pretty(v: &Value) -> String {
    fn write(v: &Value, indent: usize, out: &mut String) {
        let pad = "  ".repeat(indent + 1);
        match v {
            Value::Object(m) if !m.is_empty() => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_by_key(|k| key_rank(k));
                out.push_str("{\n");
                for (i, k) in keys.iter().enumerate() {
                    out.push_str(&pad);
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push_str(": ");
                    write(&m[k.as_str()], indent + 1, out);
                    out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
                }
                out.push_str(&"  ".repeat(indent));
                out.push('}');
            }
            Value::Array(a) if !a.is_empty() => {
                out.push_str("[\n");
                for (i, item) in a.iter().enumerate() {
                    out.push_str(&pad);
                    write(item, indent + 1, out);
                    out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
                }
                out.push_str(&"  ".repeat(indent));
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, 0, &mut out);
    out
}

/// Checks what was generated with the policy engine against the credential it was made from,
/// and says so on stderr when they disagree.
fn check(plan: &Plan) {
    #[expect(
        clippy::disallowed_methods,
        reason = "the check evaluates at the wall time"
    )]
    let now = time::OffsetDateTime::now_utc();
    for (r, token) in plan.aws.iter().zip(&plan.aws_tokens) {
        let Some(jwt) = token else { continue };
        let Ok(policy) = TrustPolicy::parse(&trust_policy(r).to_string()) else {
            continue;
        };
        let account = r.role_arn.split(':').nth(4);
        if let Ok(report) = explain::aws_report(&policy, jwt, account, "idbridge-setup", false, now)
            && report["decision"] != "allow"
        {
            eprintln!(
                "idbridge setup: warning: the trust policy of {} would not admit the token the route's source gave ({})",
                r.role_arn, report["reason"]
            );
        }
    }
    aws_kinds::check(plan);
    for g in &plan.gcp {
        let Ok(p) = explain::parse_gcp_provider(&provider_doc(g), None) else {
            eprintln!(
                "idbridge setup: warning: the generated provider {} does not parse",
                g.name.canonical()
            );
            continue;
        };
        let claims;
        let subject = match &g.subject {
            Some(ProbeSubject::AwsArn(arn)) => GcpSubject::AwsArn(arn),
            Some(ProbeSubject::Token(c)) => {
                let Ok(Value::Object(map)) = serde_json::from_str::<Value>(c) else {
                    continue;
                };
                claims = UnverifiedJwt {
                    header: serde_json::Map::new(),
                    claims: map,
                };
                GcpSubject::Token(&claims)
            }
            None => continue,
        };
        let report = explain::gcp_report(
            &p,
            subject,
            std::slice::from_ref(&g.member),
            None,
            true,
            now.unix_timestamp(),
        );
        if report["decision"] != "allow" {
            eprintln!(
                "idbridge setup: warning: the generated provider and binding would not admit the route's caller ({})",
                report["reason"]
            );
        }
    }
}

fn header(route: &RouteConfig, comment: &str) -> String {
    format!(
        "{comment} Generated by `idbridge setup` for route {:?}{}.\n",
        route.name,
        route
            .description
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    )
}

/// Whether a service account is named by its numeric unique id rather than its email: IAM
/// policy members (`serviceAccount:…`) take only the email.
fn is_unique_id(account: &str) -> bool {
    !account.is_empty() && account.bytes().all(|b| b.is_ascii_digit())
}

/// A word for the shell: bare when safe, else quoted.
fn sh(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b));
    if safe {
        s.to_owned()
    } else if !s.contains(['"', '$', '`', '\\', '!']) {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
