//! `setup`'s Google side: the pool, provider and bindings, as gcloud commands
//! (`--format gcloud`) and as Terraform (`--format terraform`).

#[allow(
    unused_imports,
    reason = "the formats read the parent's plan and helpers"
)]
use super::*;

/// The provider as `explain --gcp-provider` reads it (and as the emulator world declares it).
pub(super) fn provider_doc(g: &GcpPlan) -> Value {
    let mut doc = json!({
        "project_number": g.name.pool.project_number,
        "pool": g.name.pool.pool,
        "id": g.name.provider,
        "attribute_condition": g.condition,
    });
    match &g.source {
        GcpSource::Aws { account_id, .. } => doc["aws"] = json!({"account_id": account_id}),
        GcpSource::Oidc {
            issuer,
            allowed_audiences,
        } => {
            doc["oidc"] = json!({"issuer_uri": issuer, "allowed_audiences": allowed_audiences});
            doc["attribute_mapping"] = json!({"google.subject": "assertion.sub"});
        }
    }
    doc
}

pub(super) fn gcloud(
    plan: &Plan,
    route: &RouteConfig,
    org: Option<&str>,
) -> Result<String, CliError> {
    if plan.gcp.is_empty() && plan.creators.is_empty() {
        return Err(CliError::Usage(format!(
            "setup: route {:?} needs nothing on Google Cloud (no google-sts or impersonate hop): use --format aws-json, aws-cli, terraform or world",
            route.name
        )));
    }
    let mut out = header(route, "#");
    for g in &plan.gcp {
        let project = g
            .project_id
            .clone()
            .unwrap_or_else(|| g.name.pool.project_number.clone());
        let pool = &g.name.pool.pool;
        let prov = &g.name.provider;
        if let GcpSource::Aws { account_id, .. } = &g.source {
            let _ = writeln!(
                out,
                "\n# Allow AWS account {account_id} in workload identity pools (organization policy; once per account):"
            );
            let _ = writeln!(
                out,
                "gcloud resource-manager org-policies allow constraints/iam.workloadIdentityPoolAwsAccounts {account_id} --organization={}",
                sh(org.unwrap_or("ORGANIZATION_ID"))
            );
        }
        let admits = match &g.source {
            GcpSource::Aws { role, .. } => format!("AWS role {role}"),
            GcpSource::Oidc { issuer, .. } => format!("tokens of {issuer}"),
        };
        let _ = writeln!(out, "\n# The pool and its provider, admitting {admits}:");
        let _ = writeln!(
            out,
            "gcloud iam workload-identity-pools create {pool} --project={} --location=global",
            sh(&project)
        );
        match &g.source {
            GcpSource::Aws { account_id, .. } => {
                let _ = writeln!(
                    out,
                    "gcloud iam workload-identity-pools providers create-aws {prov} --project={} --location=global --workload-identity-pool={pool} --account-id={account_id} --attribute-condition={}",
                    sh(&project),
                    sh(&g.condition)
                );
            }
            GcpSource::Oidc {
                issuer,
                allowed_audiences,
            } => {
                let mut line = format!(
                    "gcloud iam workload-identity-pools providers create-oidc {prov} --project={} --location=global --workload-identity-pool={pool} --issuer-uri={} --attribute-mapping={} --attribute-condition={}",
                    sh(&project),
                    sh(issuer),
                    sh("google.subject=assertion.sub"),
                    sh(&g.condition)
                );
                if !allowed_audiences.is_empty() {
                    let _ = write!(
                        line,
                        " --allowed-audiences={}",
                        sh(&allowed_audiences.join(","))
                    );
                }
                let _ = writeln!(out, "{line}");
            }
        }
        match &g.service_account {
            Some(sa) => {
                let _ = writeln!(out, "\n# Let the federated identity impersonate {sa}:");
                let _ = writeln!(
                    out,
                    "gcloud iam service-accounts add-iam-policy-binding {} --role=roles/iam.workloadIdentityUser --member={}",
                    sh(sa),
                    sh(&g.member)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "\n# The route uses the federated token directly: grant roles on resources to {}",
                    g.member
                );
            }
        }
    }
    for c in &plan.creators {
        let _ = writeln!(out, "\n# Let the caller mint tokens of {}:", c.target);
        let member = match c.caller.as_deref() {
            // A policy member is an email: gcloud looks the unique id's email up when run.
            Some(id) if is_unique_id(id) => {
                let _ = writeln!(
                    out,
                    "# {id} is a unique id and a member must be an email: the command asks IAM for it (or write the email in its place)."
                );
                format!(
                    "\"serviceAccount:$(gcloud iam service-accounts describe {id} --format='value(email)')\""
                )
            }
            caller => sh(&format!(
                "serviceAccount:{}",
                caller.unwrap_or("CALLER_EMAIL")
            )),
        };
        let _ = writeln!(
            out,
            "gcloud iam service-accounts add-iam-policy-binding {} --role=roles/iam.serviceAccountTokenCreator --member={member}",
            sh(&c.target),
        );
    }
    if !plan.aws.is_empty() {
        let _ = writeln!(
            out,
            "\n# The AWS side: idbridge setup --config FILE --route {} --format aws-cli",
            route.name
        );
    }
    Ok(out)
}

/// An HCL string literal (JSON escapes, and no template sequences).
pub(super) fn hcl(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_default()
        .replace("${", "$${")
        .replace("%{", "%%{")
}

/// A Terraform resource name from any text.
pub(super) fn tf_name(s: &str) -> String {
    let mut n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if n.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        n.insert(0, 'r');
    }
    n
}

pub(super) fn terraform(
    plan: &Plan,
    route: &RouteConfig,
    org: Option<&str>,
) -> Result<String, CliError> {
    if plan.aws.is_empty()
        && plan.gcp.is_empty()
        && plan.creators.is_empty()
        && aws_kinds::is_empty(plan)
    {
        return Err(CliError::Usage(format!(
            "setup: route {:?} has no federation hop to configure",
            route.name
        )));
    }
    let mut out = header(route, "#");
    for r in &plan.aws {
        let (name, path) = role_name_path(&r.role_arn);
        if let AwsTrust::Oidc {
            issuer, audience, ..
        } = &r.trust
        {
            let _ = writeln!(
                out,
                "\nresource \"aws_iam_openid_connect_provider\" \"{}\" {{\n  url            = {}\n  client_id_list = [{}]\n}}",
                tf_name(&iam_issuer_name(issuer)),
                hcl(issuer),
                hcl(audience)
            );
        }
        let policy = pretty(&trust_policy(r))
            .replace("${", "$${")
            .replace("%{", "%%{");
        let _ = writeln!(out, "\nresource \"aws_iam_role\" \"{}\" {{", tf_name(&name));
        let _ = writeln!(out, "  name = {}", hcl(&name));
        if path != "/" {
            let _ = writeln!(out, "  path = {}", hcl(&path));
        }
        if let Some(d) = r.max_session {
            let _ = writeln!(out, "  max_session_duration = {d}");
        }
        let _ = writeln!(out, "  assume_role_policy = <<-EOT\n{policy}\n  EOT\n}}");
    }
    aws_kinds::terraform(plan, &mut out);
    for g in &plan.gcp {
        let project = g
            .project_id
            .clone()
            .unwrap_or_else(|| g.name.pool.project_number.clone());
        let pool_res = tf_name(&g.name.pool.pool);
        let prov_res = tf_name(&g.name.provider);
        if let GcpSource::Aws { account_id, .. } = &g.source {
            let org = org.unwrap_or("ORGANIZATION_ID");
            let _ = writeln!(
                out,
                "\nresource \"google_org_policy_policy\" \"wif_aws_accounts\" {{\n  name   = {}\n  parent = {}\n  spec {{\n    rules {{\n      values {{\n        allowed_values = [{}]\n      }}\n    }}\n  }}\n}}",
                hcl(&format!(
                    "organizations/{org}/policies/iam.workloadIdentityPoolAwsAccounts"
                )),
                hcl(&format!("organizations/{org}")),
                hcl(account_id)
            );
        }
        let _ = writeln!(
            out,
            "\nresource \"google_iam_workload_identity_pool\" \"{pool_res}\" {{\n  project                   = {}\n  workload_identity_pool_id = {}\n}}",
            hcl(&project),
            hcl(&g.name.pool.pool)
        );
        let _ = writeln!(
            out,
            "\nresource \"google_iam_workload_identity_pool_provider\" \"{prov_res}\" {{"
        );
        let _ = writeln!(
            out,
            "  project                            = {}",
            hcl(&project)
        );
        let _ = writeln!(
            out,
            "  workload_identity_pool_id          = google_iam_workload_identity_pool.{pool_res}.workload_identity_pool_id"
        );
        let _ = writeln!(
            out,
            "  workload_identity_pool_provider_id = {}",
            hcl(&g.name.provider)
        );
        let _ = writeln!(
            out,
            "  attribute_condition                = {}",
            hcl(&g.condition)
        );
        match &g.source {
            GcpSource::Aws { account_id, .. } => {
                let _ = writeln!(out, "  aws {{\n    account_id = {}\n  }}", hcl(account_id));
            }
            GcpSource::Oidc {
                issuer,
                allowed_audiences,
            } => {
                let _ = writeln!(
                    out,
                    "  attribute_mapping = {{\n    \"google.subject\" = \"assertion.sub\"\n  }}"
                );
                let _ = writeln!(out, "  oidc {{\n    issuer_uri = {}", hcl(issuer));
                if !allowed_audiences.is_empty() {
                    let auds: Vec<String> = allowed_audiences.iter().map(|a| hcl(a)).collect();
                    let _ = writeln!(out, "    allowed_audiences = [{}]", auds.join(", "));
                }
                let _ = writeln!(out, "  }}");
            }
        }
        let _ = writeln!(out, "}}");
        if let Some(sa) = &g.service_account {
            let sa_project = sa_project(sa).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "\nresource \"google_service_account_iam_member\" \"{prov_res}_workload_identity_user\" {{\n  service_account_id = {}\n  role               = \"roles/iam.workloadIdentityUser\"\n  member             = {}\n}}",
                hcl(&format!("projects/{sa_project}/serviceAccounts/{sa}")),
                hcl(&g.member)
            );
        }
    }
    for c in &plan.creators {
        let sa_project = sa_project(&c.target).unwrap_or_else(|| "-".into());
        let caller = match c.caller.as_deref() {
            Some(id) if is_unique_id(id) => {
                let _ = writeln!(
                    out,
                    "\n# {id} is a unique id and a member must be an email: replace EMAIL_OF_{id} below with the account's email (gcloud iam service-accounts describe {id} --format='value(email)')."
                );
                format!("EMAIL_OF_{id}")
            }
            caller => caller.unwrap_or("CALLER_EMAIL").to_owned(),
        };
        let _ = writeln!(
            out,
            "\nresource \"google_service_account_iam_member\" \"{}_token_creator\" {{\n  service_account_id = {}\n  role               = \"roles/iam.serviceAccountTokenCreator\"\n  member             = {}\n}}",
            tf_name(c.target.split('@').next().unwrap_or(&c.target)),
            hcl(&format!(
                "projects/{sa_project}/serviceAccounts/{}",
                c.target
            )),
            hcl(&format!("serviceAccount:{caller}"))
        );
    }
    Ok(out)
}
