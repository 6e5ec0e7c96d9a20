//! `setup`'s AWS side: the role's trust policy, as IAM JSON (`--format aws-json`) and as
//! AWS CLI commands (`--format aws-cli`).

#[allow(
    unused_imports,
    reason = "the formats read the parent's plan and helpers"
)]
use super::*;

/// The trust policy of a role, as IAM JSON.
pub(super) fn trust_policy(r: &AwsRolePlan) -> Value {
    match &r.trust {
        AwsTrust::Google {
            unique_id,
            audience,
            has_azp,
            azp,
        } => {
            let (equals, nulls) = if *has_azp {
                (
                    json!({
                        "accounts.google.com:aud": azp,
                        "accounts.google.com:oaud": audience,
                        "accounts.google.com:sub": unique_id,
                    }),
                    json!({
                        "accounts.google.com:aud": "false",
                        "accounts.google.com:oaud": "false",
                        "accounts.google.com:sub": "false",
                    }),
                )
            } else {
                (
                    json!({"accounts.google.com:aud": audience, "accounts.google.com:sub": unique_id}),
                    json!({"accounts.google.com:aud": "false", "accounts.google.com:sub": "false"}),
                )
            };
            json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Federated": GOOGLE_ISSUER},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {"StringEquals": equals, "Null": nulls},
                }],
            })
        }
        AwsTrust::Oidc {
            issuer,
            audience,
            subject,
        } => {
            let host = iam_issuer_name(issuer);
            let account = r.role_arn.split(':').nth(4).unwrap_or_default();
            let partition = r.role_arn.split(':').nth(1).unwrap_or("aws");
            let mut equals = serde_json::Map::new();
            equals.insert(format!("{host}:aud"), json!(audience));
            equals.insert(format!("{host}:sub"), json!(subject));
            json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Federated": format!("arn:{partition}:iam::{account}:oidc-provider/{host}")},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {"StringEquals": equals},
                }],
            })
        }
    }
}

pub(super) fn no_aws(route: &RouteConfig) -> CliError {
    CliError::Usage(format!(
        "setup: route {:?} assumes no AWS role (no aws-sts, aws-assume-role or roles-anywhere exchange): use --format gcloud, terraform, external-account or world",
        route.name
    ))
}

pub(super) fn aws_json(plan: &Plan, route: &RouteConfig) -> Result<String, CliError> {
    let mut all: Vec<(String, Value)> = plan
        .aws
        .iter()
        .map(|r| (r.role_arn.clone(), trust_policy(r)))
        .collect();
    all.extend(aws_kinds::trust_policies(plan));
    match all.as_slice() {
        [] => match &plan.outbound {
            // Outbound federation alone: the caller's identity policy.
            Some(o) => Ok(format!(
                "{}\n",
                pretty(&aws_kinds::outbound_identity_policy(o))
            )),
            None => Err(no_aws(route)),
        },
        [(_, one)] => Ok(format!("{}\n", pretty(one))),
        many => {
            let by_role: serde_json::Map<String, Value> = many.iter().cloned().collect();
            Ok(format!("{}\n", pretty(&Value::Object(by_role))))
        }
    }
}

pub(super) fn role_name_path(arn: &str) -> (String, String) {
    let resource = arn.splitn(6, ':').nth(5).unwrap_or_default();
    let path_name = resource.strip_prefix("role/").unwrap_or(resource);
    match path_name.rsplit_once('/') {
        Some((path, name)) => (name.to_owned(), format!("/{path}/")),
        None => (path_name.to_owned(), "/".to_owned()),
    }
}

/// The aws CLI lines creating `role_arn` with trust policy `policy` (and `max_session`, when
/// given), or updating an existing role's.
pub(super) fn create_role(
    out: &mut String,
    role_arn: &str,
    policy: &Value,
    max_session: Option<u32>,
) {
    let (name, path) = role_name_path(role_arn);
    let file = format!("trust-policy-{name}.json");
    let _ = writeln!(out, "cat > {file} <<'EOF'\n{}\nEOF", pretty(policy));
    let mut create = format!(
        "aws iam create-role --role-name {} --assume-role-policy-document file://{file}",
        sh(&name)
    );
    if path != "/" {
        let _ = write!(create, " --path {}", sh(&path));
    }
    if let Some(d) = max_session {
        let _ = write!(create, " --max-session-duration {d}");
    }
    let _ = writeln!(out, "{create}");
    let _ = writeln!(
        out,
        "# or, for an existing role:\n# aws iam update-assume-role-policy --role-name {} --policy-document file://{file}",
        sh(&name)
    );
}

pub(super) fn aws_cli(plan: &Plan, route: &RouteConfig) -> Result<String, CliError> {
    if plan.aws.is_empty() && aws_kinds::is_empty(plan) {
        return Err(no_aws(route));
    }
    let mut out = header(route, "#");
    for r in &plan.aws {
        if let AwsTrust::Oidc {
            issuer, audience, ..
        } = &r.trust
        {
            let _ = writeln!(
                out,
                "\n# The issuer {issuer} as an IAM OIDC provider (once per account; Google, Cognito and Amazon are built in):"
            );
            let _ = writeln!(
                out,
                "aws iam create-open-id-connect-provider --url {} --client-id-list {}",
                sh(issuer),
                sh(audience)
            );
        }
        let _ = writeln!(out, "\n# The role {} and whom it trusts:", r.role_arn);
        create_role(&mut out, &r.role_arn, &trust_policy(r), r.max_session);
    }
    aws_kinds::aws_cli(plan, &mut out);
    Ok(out)
}
