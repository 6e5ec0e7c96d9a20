//! `setup`'s Azure side: for an `entra` hop, the federated identity credential the app
//! registration (or user-assigned managed identity) needs for the token the route hands it —
//! `az` commands (`--format az-cli`) and Terraform (`azuread_application_federated_identity_credential`,
//! `azurerm_federated_identity_credential`). For routes that start from an Entra token and go
//! to AWS or Google, the AWS OIDC provider and trust policy and the Google provider are the
//! generic OIDC ones of the other formats, written for the Entra issuer.

use idbridge_broker::step::EntraFederation;
use idbridge_policy::azure::{DEFAULT_AUDIENCE, FederatedCredential, Signature};

#[allow(
    unused_imports,
    reason = "the formats read the parent's plan and helpers"
)]
use super::*;
use crate::explain::{EntraPrincipal, PrincipalKind};

/// The federated credential an `entra` hop needs.
#[derive(Debug, Clone)]
pub(crate) struct AzurePlan {
    pub(crate) tenant: String,
    pub(crate) client_id: String,
    /// The user-assigned managed identity's ARM id (`--managed-identity`); an app
    /// registration when absent.
    pub(crate) managed_identity: Option<String>,
    pub(crate) credential: FederatedCredential,
    /// The claims of the token read from the route, to check the credential against.
    pub(crate) token: Option<UnverifiedJwt>,
}

impl AzurePlan {
    fn principal(&self) -> EntraPrincipal {
        EntraPrincipal {
            kind: if self.managed_identity.is_some() {
                PrincipalKind::ManagedIdentity
            } else {
                PrincipalKind::App
            },
            client_id: Some(self.client_id.clone()),
            name: None,
            resource_id: self.managed_identity.clone(),
            credentials: vec![self.credential.clone()],
        }
    }
}

/// The plan of `entra` exchange `i`: the issuer, subject and audience of the token it is
/// handed (flags, else the token read by running the route up to it, else the configured
/// audience).
pub(super) async fn plan_entra(
    a: &SetupArgs,
    route: &RouteConfig,
    ctx: Option<&Context>,
    i: usize,
    entra: EntraFederation<'_>,
) -> Result<AzurePlan, CliError> {
    let usage = |m: String| CliError::Usage(format!("setup: route {:?}: {m}", route.name));
    let token = if a.issuer.is_none() || a.subject.is_none() || a.audience.is_none() {
        jwt_of(probe(ctx, route, i).await.as_ref())
    } else {
        None
    };
    let missing = |what: &str| {
        usage(format!(
            "exchange[{i}] (entra): the assertion's {what} is unknown (the token could not be read): pass --{what}"
        ))
    };
    let claim = |k: &str| {
        token
            .as_ref()
            .and_then(|t| t.str_claim(k))
            .map(str::to_owned)
    };
    let issuer = a
        .issuer
        .clone()
        .or_else(|| claim("iss"))
        .ok_or_else(|| missing("issuer"))?;
    let subject = a
        .subject
        .clone()
        .or_else(|| claim("sub"))
        .ok_or_else(|| missing("subject"))?;
    let audience = a
        .audience
        .clone()
        .or_else(|| {
            token.as_ref().and_then(|t| {
                let all = idbridge_policy::azure::audiences(&t.claims);
                all.iter()
                    .find(|a| *a == DEFAULT_AUDIENCE)
                    .or(all.first())
                    .cloned()
            })
        })
        .or_else(|| configured_audience(route, i))
        .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
    if audience != DEFAULT_AUDIENCE {
        eprintln!(
            "idbridge setup: note: exchange[{i}] (entra): the assertion's audience is {audience}, not {DEFAULT_AUDIENCE} (Entra's recommended value); the credential is written for {audience}"
        );
    }
    if let Some(id) = &a.managed_identity
        && !id.starts_with("/subscriptions/")
    {
        return Err(usage(format!(
            "--managed-identity {id:?} is not an ARM resource id (/subscriptions/…/resourceGroups/RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME)"
        )));
    }
    Ok(AzurePlan {
        tenant: entra.tenant.to_owned(),
        client_id: entra.client_id.to_owned(),
        managed_identity: a.managed_identity.clone(),
        credential: FederatedCredential {
            name: explain::suggested_name(&issuer),
            issuer,
            subject,
            audiences: vec![audience],
        },
        token,
    })
}

/// Checks each generated credential with the Entra decision against the token read, and says
/// so on stderr when it would not take it.
pub(super) fn check_azure(plan: &Plan) {
    #[expect(
        clippy::disallowed_methods,
        reason = "the check evaluates at the wall time"
    )]
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for z in &plan.azure {
        let Some(jwt) = &z.token else { continue };
        let report = explain::entra_report(&z.principal(), jwt, Signature::Unchecked, now);
        if report.matched.is_none() {
            eprintln!(
                "idbridge setup: warning: the generated federated credential of {} would not take the token the route's source gave ({})",
                z.client_id, report.reason
            );
        }
    }
}

/// A JSON body for `az ad app federated-credential create --parameters`.
fn parameters(c: &FederatedCredential) -> String {
    json!({
        "name": c.name,
        "issuer": c.issuer,
        "subject": c.subject,
        "audiences": c.audiences,
    })
    .to_string()
}

/// The `az` command that adds `c` to `p`: `az identity federated-credential create` for a
/// user-assigned managed identity, `az ad app federated-credential create` for an app.
pub(crate) fn az_create(p: &EntraPrincipal, c: &FederatedCredential) -> String {
    match (p.kind, p.identity_group_and_name()) {
        (PrincipalKind::ManagedIdentity, Some((group, name))) => format!(
            "az identity federated-credential create --name {} --identity-name {} --resource-group {} --issuer {} --subject {} --audiences {}",
            sh(&c.name),
            sh(&name),
            sh(&group),
            sh(&c.issuer),
            sh(&c.subject),
            c.audiences
                .iter()
                .map(|a| sh(a))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        _ => format!(
            "az ad app federated-credential create --id {} --parameters {}",
            sh(p.client_id.as_deref().unwrap_or("APP_CLIENT_ID")),
            sh(&parameters(c))
        ),
    }
}

/// `--format az-cli`.
pub(super) fn az_cli(plan: &Plan, route: &RouteConfig) -> Result<String, CliError> {
    if plan.azure.is_empty() {
        return Err(CliError::Usage(format!(
            "setup: route {:?} needs nothing on Azure (no entra hop): use --format aws-json, aws-cli, gcloud, terraform or world",
            route.name
        )));
    }
    let mut out = header(route, "#");
    for z in &plan.azure {
        let c = &z.credential;
        let _ = writeln!(
            out,
            "\n# Tenant {}: let {} ({}) accept tokens of {} for {}.",
            z.tenant,
            z.client_id,
            if z.managed_identity.is_some() {
                "user-assigned managed identity"
            } else {
                "app registration"
            },
            c.issuer,
            c.subject
        );
        if z.managed_identity.is_none() {
            let _ = writeln!(
                out,
                "# (For a user-assigned managed identity, pass --managed-identity ARM_ID.)"
            );
        }
        let _ = writeln!(out, "{}", az_create(&z.principal(), c));
    }
    Ok(out)
}

/// The Terraform of the `entra` hops, appended to the AWS and Google resources.
pub(super) fn terraform_azure(plan: &Plan, route: &RouteConfig, base: String) -> String {
    let mut out = if base.is_empty() {
        header(route, "#")
    } else {
        base
    };
    for z in &plan.azure {
        let c = &z.credential;
        let name = tf_name(&format!("{}_{}", c.name, z.client_id));
        let audiences = c
            .audiences
            .iter()
            .map(|a| hcl(a))
            .collect::<Vec<_>>()
            .join(", ");
        match &z.managed_identity {
            Some(id) => {
                let _ = writeln!(
                    out,
                    "\nresource \"azurerm_federated_identity_credential\" \"{name}\" {{\n  name                      = {}\n  user_assigned_identity_id = {}\n  audience                  = [{audiences}]\n  issuer                    = {}\n  subject                   = {}\n}}",
                    hcl(&c.name),
                    hcl(id),
                    hcl(&c.issuer),
                    hcl(&c.subject),
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "\ndata \"azuread_application\" \"{name}\" {{\n  client_id = {}\n}}\n\nresource \"azuread_application_federated_identity_credential\" \"{name}\" {{\n  application_id = data.azuread_application.{name}.id\n  display_name   = {}\n  audiences      = [{audiences}]\n  issuer         = {}\n  subject        = {}\n}}",
                    hcl(&z.client_id),
                    hcl(&c.name),
                    hcl(&c.issuer),
                    hcl(&c.subject),
                );
            }
        }
    }
    out
}

/// The issuer of Entra's tokens (v1 `https://sts.windows.net/{tid}/`, v2
/// `https://login.microsoftonline.com/{tid}/v2.0`), when `iss` is one.
pub(super) fn entra_tenant_of(iss: &str) -> Option<&str> {
    let rest = iss
        .strip_prefix("https://sts.windows.net/")
        .map(|r| r.trim_end_matches('/'))
        .or_else(|| {
            iss.strip_prefix("https://login.microsoftonline.com/")
                .and_then(|r| r.strip_suffix("/v2.0"))
        })?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// On stderr, what an Entra token as the subject of an AWS or Google hop implies.
pub(super) fn note_entra_source(issuer: &str, target: &str) {
    if let Some(tid) = entra_tenant_of(issuer) {
        eprintln!(
            "idbridge setup: note: the {target} trusts Entra tenant {tid} ({issuer}): its tokens' aud is the app ID URI (or client id) the managed identity or app asked a token for, and sub is the caller's service principal object id"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_issuers_are_recognised() {
        let tid = "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
        assert_eq!(
            entra_tenant_of(&format!("https://sts.windows.net/{tid}/")),
            Some(tid)
        );
        assert_eq!(
            entra_tenant_of(&format!("https://login.microsoftonline.com/{tid}/v2.0")),
            Some(tid)
        );
        assert_eq!(entra_tenant_of("https://accounts.google.com"), None);
    }

    #[test]
    fn commands_quote_for_the_shell() {
        let c = FederatedCredential {
            name: "idbridge-accounts-google-com".into(),
            issuer: "https://accounts.google.com".into(),
            subject: "1234".into(),
            audiences: vec![DEFAULT_AUDIENCE.into()],
        };
        let mut p = EntraPrincipal {
            kind: PrincipalKind::App,
            client_id: Some("c1".into()),
            name: None,
            resource_id: None,
            credentials: Vec::new(),
        };
        let app = az_create(&p, &c);
        assert_eq!(
            app,
            r#"az ad app federated-credential create --id c1 --parameters '{"audiences":["api://AzureADTokenExchange"],"issuer":"https://accounts.google.com","name":"idbridge-accounts-google-com","subject":"1234"}'"#
        );
        p.kind = PrincipalKind::ManagedIdentity;
        p.resource_id = Some("/subscriptions/s/resourceGroups/rg-1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi-1".into());
        assert_eq!(
            az_create(&p, &c),
            "az identity federated-credential create --name idbridge-accounts-google-com --identity-name mi-1 --resource-group rg-1 --issuer https://accounts.google.com --subject 1234 --audiences api://AzureADTokenExchange"
        );
    }
}
