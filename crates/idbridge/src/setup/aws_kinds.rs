//! `setup` for the AWS hops beyond web identity:
//!
//! * `aws-assume-role` (role chaining): the target role's trust policy names the previous
//!   hop's role (`{"AWS": "arn:aws:iam::…:role/FIRST"}`) for `sts:AssumeRole`, plus
//!   `sts:TagSession` when the hop passes tags and `sts:SetSourceIdentity` when it sets a source
//!   identity, with `StringEquals` `sts:ExternalId` when it sends one. Across accounts, the first
//!   role also needs an identity policy allowing `sts:AssumeRole` on the target.
//! * `roles-anywhere`: the trust anchor on a CA bundle (`--ca-bundle FILE`), the profile listing
//!   the role, and the role trusting `rolesanywhere.amazonaws.com` for `sts:AssumeRole`,
//!   `sts:TagSession` and `sts:SetSourceIdentity`, on the certificate's SAN URI (a SPIFFE ID:
//!   `aws:PrincipalTag/x509SAN/URI`) or else its subject CN (`aws:PrincipalTag/x509Subject/CN`),
//!   and `aws:SourceArn` = the trust anchor.
//! * `aws-web-identity-token` (outbound identity federation): the account's switch
//!   (`aws iam enable-outbound-web-identity-federation`; Terraform
//!   `aws_iam_outbound_web_identity_federation`) and the caller role's identity policy allowing
//!   `sts:GetWebIdentityToken` for the route's audiences and algorithm. The Google provider for
//!   the account's issuer is the `google-sts` hop's, as for any OIDC token.
//!
//! The certificate's attributes and the callers come from the flags or from running the route's
//! first hops (no secret is printed). Each generated trust policy is checked with the policy
//! engine (`explain`'s reports) against the request the route makes.

#[allow(
    unused_imports,
    reason = "the formats read the parent's plan and helpers"
)]
use super::*;

use std::path::PathBuf;

use idbridge_broker::step::{AssumeRoleFacts, Input, RolesAnywhereFacts};
use idbridge_policy::aws::{
    AssumeRoleRequest, CallerSession, ROLES_ANYWHERE_PRINCIPAL, RolesAnywhereRequest,
    certificate_request,
};

/// A role assumed with another role's session.
#[derive(Debug, Clone)]
pub(super) struct ChainedRolePlan {
    pub(super) role_arn: String,
    /// The previous hop's role, `arn:aws:iam::ACCOUNT:role/NAME`.
    pub(super) caller_role: String,
    pub(super) external_id: Option<String>,
    pub(super) source_identity: Option<String>,
    pub(super) tags: Vec<(String, String)>,
    pub(super) transitive_tag_keys: Vec<String>,
    pub(super) max_session: Option<u32>,
}

/// A role assumed through IAM Roles Anywhere.
#[derive(Debug, Clone)]
pub(super) struct RolesAnywherePlan {
    pub(super) role_arn: String,
    pub(super) trust_anchor_arn: String,
    pub(super) profile_arn: String,
    /// The certificate's SAN URI and subject CN the trust policy matches.
    pub(super) uri: Option<String>,
    pub(super) cn: Option<String>,
    /// The certificate's attributes as read from the route's certificate, for the check.
    pub(super) request: Option<RolesAnywhereRequest>,
    pub(super) ca_bundle: Option<PathBuf>,
    pub(super) duration: Option<u32>,
    pub(super) accept_session_name: bool,
}

/// AWS outbound identity federation for the route's source.
#[derive(Debug, Clone)]
pub(super) struct OutboundPlan {
    /// The caller's role, when known.
    pub(super) caller_role: Option<String>,
    pub(super) audience: Vec<String>,
    pub(super) signing_algorithm: String,
    /// The account's issuer, read from a token of the route.
    pub(super) issuer: Option<String>,
    /// The token's subject (the caller's role ARN), for an Entra federated credential.
    pub(super) subject: Option<String>,
    /// The route's next hop exchanges at Entra ID.
    pub(super) to_entra: bool,
}

/// The role ARN of a caller ARN (a role or an assumed-role session).
fn role_of_caller(arn: &str) -> String {
    CallerSession::from_arn(arn, "setup").map_or_else(|| arn.to_owned(), |c| c.role_arn)
}

fn account_of(arn: &str) -> String {
    arn.split(':').nth(4).unwrap_or_default().to_owned()
}

/// The AWS caller behind the credential `upto` hops into the route yield, by GetCallerIdentity.
async fn caller_arn(ctx: Option<&Context>, route: &RouteConfig, upto: usize) -> Option<String> {
    match probe(ctx, route, upto).await {
        Some(Credential::Aws(c)) => match (&c.arn, ctx) {
            (Some(arn), _) => Some(arn.clone()),
            (None, Some(ctx)) => aws_sts::get_caller_identity(ctx, &c, None)
                .await
                .ok()
                .map(|h| h.identity.trim_start_matches("caller: ").to_owned()),
            (None, None) => None,
        },
        _ => None,
    }
}

pub(super) async fn plan_chained(
    a: &SetupArgs,
    route: &RouteConfig,
    i: usize,
    role: &idbridge_broker::step::AwsRole<'_>,
    facts: &AssumeRoleFacts<'_>,
    ctx: Option<&Context>,
) -> Result<ChainedRolePlan, CliError> {
    let before = step_before(route, i).facts();
    let caller = match before.aws_role {
        Some(r) => Some(r.arn.to_string()),
        None => match &a.aws_caller_arn {
            Some(arn) => Some(arn.clone()),
            None => caller_arn(ctx, route, i).await,
        },
    }
    .ok_or_else(|| {
        CliError::Usage(format!(
            "setup: route {:?}: exchange[{i}]: the role whose session assumes {} is unknown: pass --aws-caller-arn arn:aws:iam::ACCOUNT:role/NAME, or run setup where the route's AWS source is reachable",
            route.name, role.arn
        ))
    })?;
    Ok(ChainedRolePlan {
        role_arn: role.arn.to_string(),
        caller_role: role_of_caller(&caller),
        external_id: facts.external_id.map(str::to_owned),
        source_identity: facts.source_identity.map(str::to_owned),
        tags: facts
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        transitive_tag_keys: facts.transitive_tag_keys.to_vec(),
        max_session: role.duration_seconds,
    })
}

pub(super) async fn plan_roles_anywhere(
    a: &SetupArgs,
    route: &RouteConfig,
    i: usize,
    role: &idbridge_broker::step::AwsRole<'_>,
    facts: &RolesAnywhereFacts<'_>,
    ctx: Option<&Context>,
) -> Result<RolesAnywherePlan, CliError> {
    let request = if a.x509_uri.is_some() || a.x509_cn.is_some() {
        None
    } else {
        match probe(ctx, route, i).await {
            Some(Credential::X509(x)) => certificate_request(facts.trust_anchor_arn, &x.chain_pem),
            _ => None,
        }
    };
    let tag = |k: &str| request.as_ref().and_then(|r| r.tag(k)).map(str::to_owned);
    let (uri, cn) = if a.x509_uri.is_some() || a.x509_cn.is_some() {
        (a.x509_uri.clone(), a.x509_cn.clone())
    } else {
        match tag("x509SAN/URI") {
            Some(uri) => (Some(uri), None),
            None => (None, tag("x509Subject/CN")),
        }
    };
    if uri.is_none() && cn.is_none() {
        return Err(CliError::Usage(format!(
            "setup: route {:?}: exchange[{i}]: the certificate's SAN URI and CN are unknown (the route's certificate could not be read): pass --x509-uri SPIFFE_ID or --x509-cn NAME",
            route.name
        )));
    }
    Ok(RolesAnywherePlan {
        role_arn: role.arn.to_string(),
        trust_anchor_arn: facts.trust_anchor_arn.to_owned(),
        profile_arn: facts.profile_arn.to_owned(),
        uri,
        cn,
        request,
        ca_bundle: a.ca_bundle.clone(),
        duration: role.duration_seconds,
        accept_session_name: role.session_name.is_some(),
    })
}

pub(super) async fn plan_outbound(
    a: &SetupArgs,
    route: &RouteConfig,
    ctx: Option<&Context>,
) -> Option<OutboundPlan> {
    let source = route.source.facts();
    let outbound = source.aws_outbound?;
    let caller = match (&a.aws_caller_arn, source.caller, ctx) {
        (Some(arn), _, _) => Some(arn.clone()),
        (None, Some(caller), Some(ctx)) => {
            let input = Input {
                credential: None,
                route: &route.name,
                region: None,
            };
            let mut hops = Vec::new();
            match caller.run(input, ctx, &mut hops).await {
                Ok(Credential::Aws(c)) => match &c.arn {
                    Some(arn) => Some(arn.clone()),
                    None => aws_sts::get_caller_identity(ctx, &c, None)
                        .await
                        .ok()
                        .map(|h| h.identity.trim_start_matches("caller: ").to_owned()),
                },
                _ => None,
            }
        }
        _ => None,
    };
    let token = jwt_of(probe(ctx, route, 0).await.as_ref());
    Some(OutboundPlan {
        caller_role: caller.as_deref().map(role_of_caller),
        audience: outbound.audience.to_vec(),
        signing_algorithm: outbound.signing_algorithm.to_owned(),
        issuer: token
            .as_ref()
            .and_then(|t| t.str_claim("iss").map(str::to_owned))
            .or_else(|| a.issuer.clone()),
        subject: token
            .as_ref()
            .and_then(|t| t.str_claim("sub").map(str::to_owned)),
        to_entra: route
            .exchange
            .first()
            .is_some_and(|x| x.facts().entra.is_some()),
    })
}

// ----- Policies ---------------------------------------------------------------------------------

fn actions(tags: bool, source_identity: bool) -> Vec<&'static str> {
    let mut v = vec!["sts:AssumeRole"];
    if tags {
        v.push("sts:TagSession");
    }
    if source_identity {
        v.push("sts:SetSourceIdentity");
    }
    v
}

pub(super) fn chained_trust_policy(c: &ChainedRolePlan) -> Value {
    let mut statement = json!({
        "Effect": "Allow",
        "Principal": {"AWS": c.caller_role},
        "Action": actions(
            !c.tags.is_empty() || !c.transitive_tag_keys.is_empty(),
            c.source_identity.is_some(),
        ),
    });
    if let Some(e) = &c.external_id {
        statement["Condition"] = json!({"StringEquals": {"sts:ExternalId": e}});
    }
    json!({"Version": "2012-10-17", "Statement": [statement]})
}

pub(super) fn roles_anywhere_trust_policy(r: &RolesAnywherePlan) -> Value {
    let mut equals = serde_json::Map::new();
    if let Some(uri) = &r.uri {
        equals.insert("aws:PrincipalTag/x509SAN/URI".into(), json!(uri));
    }
    if let Some(cn) = &r.cn {
        equals.insert("aws:PrincipalTag/x509Subject/CN".into(), json!(cn));
    }
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": ROLES_ANYWHERE_PRINCIPAL},
            "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
            "Condition": {
                "StringEquals": equals,
                "ArnEquals": {"aws:SourceArn": r.trust_anchor_arn},
            },
        }],
    })
}

/// The caller role's identity policy for `sts:GetWebIdentityToken`.
pub(super) fn outbound_identity_policy(o: &OutboundPlan) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "sts:GetWebIdentityToken",
            "Resource": "*",
            "Condition": {
                "ForAllValues:StringEquals": {"sts:IdentityTokenAudience": o.audience},
                "StringEquals": {"sts:SigningAlgorithm": o.signing_algorithm},
            },
        }],
    })
}

/// The identity policy a first role needs to assume a role of another account.
fn assume_identity_policy(c: &ChainedRolePlan) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": actions(
                !c.tags.is_empty() || !c.transitive_tag_keys.is_empty(),
                c.source_identity.is_some(),
            ),
            "Resource": c.role_arn,
        }],
    })
}

/// Every role trust policy setup writes for these hops: (role ARN, policy).
pub(super) fn trust_policies(plan: &Plan) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = plan
        .chained
        .iter()
        .map(|c| (c.role_arn.clone(), chained_trust_policy(c)))
        .collect();
    out.extend(
        plan.roles_anywhere
            .iter()
            .map(|r| (r.role_arn.clone(), roles_anywhere_trust_policy(r))),
    );
    out
}

pub(super) fn is_empty(plan: &Plan) -> bool {
    plan.chained.is_empty() && plan.roles_anywhere.is_empty() && plan.outbound.is_none()
}

/// The last path segment of a Roles Anywhere ARN (the resource id).
fn ra_id(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_owned()
}

/// A name for a Roles Anywhere resource: the role's name with a suffix.
fn ra_name(r: &RolesAnywherePlan, suffix: &str) -> String {
    let (role, _) = role_name_path(&r.role_arn);
    format!("{role}-{suffix}")
}

fn read_ca_bundle(path: &std::path::Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(pem),
        Ok(_) => {
            eprintln!(
                "idbridge setup: warning: {} holds no PEM CERTIFICATE block",
                path.display()
            );
            None
        }
        Err(e) => {
            eprintln!(
                "idbridge setup: warning: cannot read the CA bundle {}: {e}",
                path.display()
            );
            None
        }
    }
}

// ----- aws CLI ----------------------------------------------------------------------------------

pub(super) fn aws_cli(plan: &Plan, out: &mut String) {
    for c in &plan.chained {
        let _ = writeln!(
            out,
            "\n# The role {} and the role whose sessions assume it (role chaining: sessions of at most 1 hour):",
            c.role_arn
        );
        create_role(
            out,
            &c.role_arn,
            &chained_trust_policy(c),
            c.max_session.filter(|d| *d > 3600),
        );
        if account_of(&c.caller_role) != account_of(&c.role_arn) {
            let (first, _) = role_name_path(&c.caller_role);
            let file = format!("assume-{}.json", role_name_path(&c.role_arn).0);
            let _ = writeln!(
                out,
                "# Across accounts, {} also needs an identity policy allowing it (in account {}):",
                c.caller_role,
                account_of(&c.caller_role)
            );
            let _ = writeln!(
                out,
                "cat > {file} <<'EOF'\n{}\nEOF",
                pretty(&assume_identity_policy(c))
            );
            let _ = writeln!(
                out,
                "aws iam put-role-policy --role-name {} --policy-name idbridge-assume-{} --policy-document file://{file}",
                sh(&first),
                role_name_path(&c.role_arn).0
            );
        }
    }
    for r in &plan.roles_anywhere {
        let region = r.trust_anchor_arn.split(':').nth(3).unwrap_or("us-east-1");
        let anchor_name = ra_name(r, "anchor");
        let _ = writeln!(
            out,
            "\n# IAM Roles Anywhere for {}: the trust anchor on the CA that issues the workload's certificate.",
            r.role_arn
        );
        let pem = r.ca_bundle.as_deref().and_then(read_ca_bundle);
        let source_file = format!("trust-anchor-source-{anchor_name}.json");
        match pem {
            Some(pem) => {
                let source = json!({
                    "sourceType": "CERTIFICATE_BUNDLE",
                    "sourceData": {"x509CertificateData": pem},
                });
                let _ = writeln!(out, "cat > {source_file} <<'EOF'\n{}\nEOF", pretty(&source));
            }
            None => {
                let _ = writeln!(
                    out,
                    "# The CA bundle (pass --ca-bundle FILE to embed it): x509CertificateData is its PEM."
                );
                let _ = writeln!(
                    out,
                    "cat > {source_file} <<'EOF'\n{}\nEOF",
                    pretty(&json!({
                        "sourceType": "CERTIFICATE_BUNDLE",
                        "sourceData": {"x509CertificateData": "-----BEGIN CERTIFICATE-----\n(your CA)\n-----END CERTIFICATE-----\n"},
                    }))
                );
            }
        }
        let _ = writeln!(
            out,
            "aws rolesanywhere create-trust-anchor --region {} --name {} --enabled --source file://{source_file}",
            sh(region),
            sh(&anchor_name)
        );
        let _ = writeln!(
            out,
            "# The route names the trust anchor {} and the profile {}: put the ARNs these commands print in its config.",
            ra_id(&r.trust_anchor_arn),
            ra_id(&r.profile_arn)
        );
        let _ = writeln!(
            out,
            "\n# The role, assumable by Roles Anywhere for this certificate only:"
        );
        create_role(
            out,
            &r.role_arn,
            &roles_anywhere_trust_policy(r),
            r.duration.filter(|d| *d > 3600),
        );
        let mut profile = format!(
            "aws rolesanywhere create-profile --region {} --name {} --role-arns {} --enabled",
            sh(region),
            sh(&ra_name(r, "profile")),
            sh(&r.role_arn)
        );
        if let Some(d) = r.duration {
            let _ = write!(profile, " --duration-seconds {d}");
        }
        if r.accept_session_name {
            profile.push_str(" --accept-role-session-name");
        }
        let _ = writeln!(out, "\n# The profile that lists the role:\n{profile}");
    }
    if let Some(o) = &plan.outbound {
        let _ = writeln!(
            out,
            "\n# AWS outbound identity federation (once per account; prints the account's issuer URL):"
        );
        let _ = writeln!(out, "aws iam enable-outbound-web-identity-federation");
        let _ = writeln!(
            out,
            "aws iam get-outbound-web-identity-federation-info --query IssuerIdentifier --output text"
        );
        let role = o
            .caller_role
            .as_deref()
            .map_or_else(|| "CALLER_ROLE".to_owned(), |r| role_name_path(r).0);
        let _ = writeln!(
            out,
            "\n# The caller's role may ask for tokens for the route's audiences:"
        );
        let file = format!("get-web-identity-token-{role}.json");
        let _ = writeln!(
            out,
            "cat > {file} <<'EOF'\n{}\nEOF",
            pretty(&outbound_identity_policy(o))
        );
        let _ = writeln!(
            out,
            "aws iam put-role-policy --role-name {} --policy-name idbridge-get-web-identity-token --policy-document file://{file}",
            sh(&role)
        );
        entra_note(o, out);
    }
}

/// What an Entra app's federated credential names for the account's tokens.
fn entra_note(o: &OutboundPlan, out: &mut String) {
    if !o.to_entra {
        return;
    }
    let _ = writeln!(
        out,
        "# Entra ID: the app's federated identity credential names issuer {}, subject {} and audience {}.",
        o.issuer.as_deref().unwrap_or("(the issuer URL above)"),
        o.subject
            .as_deref()
            .or(o.caller_role.as_deref())
            .unwrap_or("(the caller's role ARN)"),
        o.audience
            .first()
            .map_or("api://AzureADTokenExchange", String::as_str)
    );
}

// ----- Terraform --------------------------------------------------------------------------------

fn tf_role(out: &mut String, role_arn: &str, policy: &Value, max_session: Option<u32>) -> String {
    let (name, path) = role_name_path(role_arn);
    let res = tf_name(&name);
    let policy = pretty(policy).replace("${", "$${").replace("%{", "%%{");
    let _ = writeln!(out, "\nresource \"aws_iam_role\" \"{res}\" {{");
    let _ = writeln!(out, "  name = {}", hcl(&name));
    if path != "/" {
        let _ = writeln!(out, "  path = {}", hcl(&path));
    }
    if let Some(d) = max_session.filter(|d| *d > 3600) {
        let _ = writeln!(out, "  max_session_duration = {d}");
    }
    let _ = writeln!(out, "  assume_role_policy = <<-EOT\n{policy}\n  EOT\n}}");
    res
}

pub(super) fn terraform(plan: &Plan, out: &mut String) {
    for c in &plan.chained {
        tf_role(out, &c.role_arn, &chained_trust_policy(c), c.max_session);
        if account_of(&c.caller_role) != account_of(&c.role_arn) {
            let (first, _) = role_name_path(&c.caller_role);
            let policy = pretty(&assume_identity_policy(c))
                .replace("${", "$${")
                .replace("%{", "%%{");
            let _ = writeln!(
                out,
                "\n# In account {} (another provider alias): the first role may assume the target.\nresource \"aws_iam_role_policy\" \"{}_assume\" {{\n  name   = \"idbridge-assume\"\n  role   = {}\n  policy = <<-EOT\n{policy}\n  EOT\n}}",
                account_of(&c.caller_role),
                tf_name(&first),
                hcl(&first)
            );
        }
    }
    for r in &plan.roles_anywhere {
        let anchor = tf_name(&ra_name(r, "anchor"));
        let bundle = match &r.ca_bundle {
            Some(p) => format!("file({})", hcl(&p.display().to_string())),
            None => "file(\"ca-bundle.pem\") # the CA that issues the workload's certificate (--ca-bundle FILE)".to_owned(),
        };
        let _ = writeln!(
            out,
            "\nresource \"aws_rolesanywhere_trust_anchor\" \"{anchor}\" {{\n  name    = {}\n  enabled = true\n  source {{\n    source_type = \"CERTIFICATE_BUNDLE\"\n    source_data {{\n      x509_certificate_data = {bundle}\n    }}\n  }}\n}}",
            hcl(&ra_name(r, "anchor"))
        );
        // The trust policy names the anchor this config creates, not the route's literal ARN.
        let mut policy = roles_anywhere_trust_policy(r);
        policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"] = json!("@@ANCHOR@@");
        let text = pretty(&policy)
            .replace("${", "$${")
            .replace("%{", "%%{")
            .replace(
                "@@ANCHOR@@",
                &format!("${{aws_rolesanywhere_trust_anchor.{anchor}.arn}}"),
            );
        let (name, path) = role_name_path(&r.role_arn);
        let role = tf_name(&name);
        let _ = writeln!(out, "\nresource \"aws_iam_role\" \"{role}\" {{");
        let _ = writeln!(out, "  name = {}", hcl(&name));
        if path != "/" {
            let _ = writeln!(out, "  path = {}", hcl(&path));
        }
        if let Some(d) = r.duration.filter(|d| *d > 3600) {
            let _ = writeln!(out, "  max_session_duration = {d}");
        }
        let _ = writeln!(out, "  assume_role_policy = <<-EOT\n{text}\n  EOT\n}}");
        let _ = writeln!(
            out,
            "\nresource \"aws_rolesanywhere_profile\" \"{}\" {{\n  name      = {}\n  enabled   = true\n  role_arns = [aws_iam_role.{role}.arn]",
            tf_name(&ra_name(r, "profile")),
            hcl(&ra_name(r, "profile"))
        );
        if let Some(d) = r.duration {
            let _ = writeln!(out, "  duration_seconds = {d}");
        }
        if r.accept_session_name {
            let _ = writeln!(out, "  accept_role_session_name = true");
        }
        let _ = writeln!(out, "}}");
    }
    if let Some(o) = &plan.outbound {
        let _ = writeln!(
            out,
            "\n# AWS outbound identity federation: a setting of the whole account.\nresource \"aws_iam_outbound_web_identity_federation\" \"this\" {{}}"
        );
        let role = o
            .caller_role
            .as_deref()
            .map_or_else(|| "CALLER_ROLE".to_owned(), |r| role_name_path(r).0);
        let policy = pretty(&outbound_identity_policy(o))
            .replace("${", "$${")
            .replace("%{", "%%{");
        let _ = writeln!(
            out,
            "\nresource \"aws_iam_role_policy\" \"{}_get_web_identity_token\" {{\n  name   = \"idbridge-get-web-identity-token\"\n  role   = {}\n  policy = <<-EOT\n{policy}\n  EOT\n}}",
            tf_name(&role),
            hcl(&role)
        );
    }
}

// ----- World ------------------------------------------------------------------------------------

/// The accounts of these hops' roles, and the outbound issuer of the route's account.
pub(super) fn accounts(plan: &Plan) -> Vec<String> {
    let mut v: Vec<String> = plan
        .chained
        .iter()
        .map(|c| account_of(&c.role_arn))
        .chain(plan.roles_anywhere.iter().map(|r| account_of(&r.role_arn)))
        .collect();
    if let Some(role) = plan
        .outbound
        .as_ref()
        .and_then(|o| o.caller_role.as_deref())
    {
        v.push(account_of(role));
    }
    v
}

/// The `[[aws_account]]` lines beyond `id` for `account`: the outbound issuer, switched on.
pub(super) fn account_extra(plan: &Plan, account: &str) -> String {
    match &plan.outbound {
        Some(OutboundPlan {
            caller_role: Some(role),
            issuer: Some(issuer),
            ..
        }) if account_of(role) == account => format!(
            "outbound_issuer = {}\noutbound_federation_enabled = true\n",
            toml_str(issuer)
        ),
        _ => String::new(),
    }
}

/// An `[[aws_role]]` of the world file: `role_arn` with trust policy `policy`.
pub(super) fn world_role(
    out: &mut String,
    role_arn: &str,
    policy: &Value,
    max_session: Option<u32>,
) {
    let policy = pretty(policy);
    let policy = if policy.contains("'''") {
        toml_str(&policy)
    } else {
        format!("'''\n{policy}\n'''")
    };
    let _ = writeln!(
        out,
        "\n[[aws_role]]\narn = {}\nmax_session_duration = {}\ntrust_policy = {policy}",
        toml_str(role_arn),
        max_session.unwrap_or(3600).max(3600)
    );
}

pub(super) fn world_fragment(plan: &Plan, out: &mut String) {
    for c in &plan.chained {
        world_role(out, &c.role_arn, &chained_trust_policy(c), c.max_session);
    }
    for r in &plan.roles_anywhere {
        world_role(
            out,
            &r.role_arn,
            &roles_anywhere_trust_policy(r),
            r.duration,
        );
    }
    for r in &plan.roles_anywhere {
        let _ = writeln!(
            out,
            "\n[[roles_anywhere.trust_anchor]]\narn = {}",
            toml_str(&r.trust_anchor_arn)
        );
        let spiffe_td = r
            .uri
            .as_deref()
            .and_then(|u| u.strip_prefix("spiffe://"))
            .and_then(|rest| rest.split('/').next());
        match (&r.ca_bundle, spiffe_td) {
            (Some(p), _) => {
                let _ = writeln!(
                    out,
                    "certificate_bundle_file = {}",
                    toml_str(&p.display().to_string())
                );
            }
            (None, Some(td)) => {
                let _ = writeln!(
                    out,
                    "# The world's SPIFFE CA (pass --ca-bundle FILE for another CA):\nspiffe_trust_domain = {}",
                    toml_str(td)
                );
            }
            (None, None) => {
                let _ = writeln!(
                    out,
                    "# The CA bundle is unknown: pass --ca-bundle FILE.\ncertificate_bundle_file = \"ca-bundle.pem\""
                );
            }
        }
        let _ = writeln!(
            out,
            "\n[[roles_anywhere.profile]]\narn = {}\nrole_arns = [{}]\nduration_seconds = {}",
            toml_str(&r.profile_arn),
            toml_str(&r.role_arn),
            r.duration.unwrap_or(3600)
        );
        if r.accept_session_name {
            let _ = writeln!(out, "accept_role_session_name = true");
        }
    }
    if let Some(o) = &plan.outbound
        && let Some(issuer) = &o.issuer
    {
        let _ = writeln!(
            out,
            "\n# The account's outbound issuer {issuer} must be an [[oidc_issuer]] of the world with generate_key = true."
        );
    }
}

// ----- Check ------------------------------------------------------------------------------------

/// Evaluates each generated trust policy against the request the route makes, and warns
/// (stderr) when the engine would refuse it.
pub(super) fn check(plan: &Plan) {
    let warn = |role: &str, report: &explain::CallerReport| {
        if !report.allowed() {
            eprintln!(
                "idbridge setup: warning: the trust policy of {role} would not allow {} ({})",
                report.action, report.reason
            );
        }
    };
    for c in &plan.chained {
        let Ok(policy) = TrustPolicy::parse(&chained_trust_policy(c).to_string()) else {
            continue;
        };
        let Some(caller) = CallerSession::from_arn(&c.caller_role, "idbridge-setup") else {
            continue;
        };
        let request = AssumeRoleRequest {
            caller,
            session_name: "idbridge-setup".into(),
            external_id: c.external_id.clone(),
            source_identity: c.source_identity.clone(),
            tags: c.tags.clone(),
            transitive_tag_keys: c.transitive_tag_keys.clone(),
        };
        warn(&c.role_arn, &explain::assume_role_report(&policy, &request));
    }
    for r in &plan.roles_anywhere {
        let Ok(policy) = TrustPolicy::parse(&roles_anywhere_trust_policy(r).to_string()) else {
            continue;
        };
        let request = r.request.clone().unwrap_or_else(|| {
            RolesAnywhereRequest::with_certificate(
                r.trust_anchor_arn.clone(),
                r.uri.as_deref(),
                r.cn.as_deref(),
            )
        });
        warn(
            &r.role_arn,
            &explain::roles_anywhere_report(&policy, &request),
        );
    }
}
