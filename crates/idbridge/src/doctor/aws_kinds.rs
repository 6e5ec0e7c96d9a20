//! `doctor`'s diagnosis of the AWS hops beyond web identity: role chaining (`aws-assume-role`),
//! IAM Roles Anywhere (`roles-anywhere`) and AWS outbound identity federation
//! (`aws-web-identity-token`). `None` when the failure is not one of theirs.
//!
//! Roles Anywhere refusals are told apart by AWS's message: an untrusted CA, an expired or
//! revoked certificate, a profile that does not list the role, a trust policy that refuses one
//! of the session's actions. For a trust-policy refusal (of a chained role or a Roles Anywhere
//! role) with `--aws-trust-policy`, the request the route made (the caller's ARN, external id,
//! tags, source identity; the certificate's attributes) is evaluated against it as `explain`
//! does, and the failing condition is the cause.

use idbridge_broker::exchange::roles_anywhere;
use idbridge_policy::aws::{AssumeRoleRequest, CallerSession, certificate_request};

use super::{Advice, Failure, aws_sts};

/// The cause and fix of a failed chained role, Roles Anywhere session or AWS JWT.
pub(super) fn diagnose(f: &Failure<'_>, advice: &mut Advice) -> Option<String> {
    let facts = match f.exchange {
        Some(x) => x.facts(),
        None => f.route.source.facts(),
    };
    if facts.assume_role.is_some() && f.e.hop == aws_sts::HOP {
        Some(assume_role(f, advice))
    } else if facts.roles_anywhere.is_some() && f.e.hop == roles_anywhere::HOP {
        Some(roles_anywhere(f, advice))
    } else if facts.aws_outbound.is_some() && f.e.hop == aws_sts::HOP {
        Some(web_identity_token(f, advice))
    } else {
        None
    }
}

fn role_of(f: &Failure<'_>) -> (String, String) {
    let arn = f
        .exchange
        .and_then(|x| x.facts().aws_role)
        .map_or_else(|| "the role".to_owned(), |r| r.arn.to_string());
    let name = arn.rsplit('/').next().unwrap_or("ROLE").to_owned();
    (arn, name)
}

/// The chained hop's request as `explain` evaluates it, when the caller's ARN is known.
fn chained_request(f: &Failure<'_>, caller: &str) -> Option<AssumeRoleRequest> {
    let facts = f.exchange?.facts();
    let ar = facts.assume_role?;
    let session = facts
        .aws_role
        .and_then(|r| r.session_name)
        .map_or_else(|| format!("idbridge-{}", f.route.name), str::to_owned);
    Some(AssumeRoleRequest {
        caller: CallerSession::from_arn(caller, &session)?,
        session_name: session,
        external_id: ar.external_id.map(str::to_owned),
        source_identity: ar.source_identity.map(str::to_owned),
        tags: ar
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        transitive_tag_keys: ar.transitive_tag_keys.to_vec(),
    })
}

fn assume_role(f: &Failure<'_>, advice: &mut Advice) -> String {
    let (role, name) = role_of(f);
    let caller_arn = match f.input {
        Some(idbridge_core::Credential::Aws(c)) => c.arn.clone(),
        _ => None,
    };
    let caller = caller_arn
        .clone()
        .unwrap_or_else(|| "the previous hop's role".to_owned());
    let facts = f.exchange.and_then(|x| x.facts().assume_role);
    match f.code {
        "AccessDenied" => {
            let first_role = caller_arn
                .as_deref()
                .and_then(|a| CallerSession::from_arn(a, "s"))
                .map_or_else(|| "<the first role's ARN>".to_owned(), |c| c.role_arn);
            advice.fix.push(format!(
                "the trust policy of {role} must allow sts:AssumeRole (and sts:TagSession with \
                 tags, sts:SetSourceIdentity with a source identity) to Principal \
                 {{\"AWS\": \"{first_role}\"}}"
            ));
            match facts.and_then(|a| a.external_id) {
                Some(id) => advice.fix.push(format!(
                    "the route sends external id {id:?}: a condition on it is StringEquals sts:ExternalId = {id:?}"
                )),
                None => advice.fix.push(
                    "the route sends no external id: if the trust policy has a condition on sts:ExternalId, set `external_id` on the aws-assume-role exchange".into(),
                ),
            }
            advice.commands.push(format!(
                "aws iam get-role --role-name {name} --query Role.AssumeRolePolicyDocument"
            ));
            advice.commands.push(f.setup_cmd("aws-json"));
            let request = caller_arn.as_deref().and_then(|c| chained_request(f, c));
            if let Some(req) = &request {
                let mut cmd = format!(
                    "idbridge explain --aws-trust-policy trust.json --aws-arn {} --role-session-name {}",
                    req.caller.assumed_role_arn, req.session_name
                );
                if let Some(e) = &req.external_id {
                    cmd.push_str(&format!(" --external-id {e}"));
                }
                if let Some(si) = &req.source_identity {
                    cmd.push_str(&format!(" --source-identity {si}"));
                }
                for (k, v) in &req.tags {
                    cmd.push_str(&format!(" --tag {k}={v}"));
                }
                advice.commands.push(cmd);
            }
            advice.commands.push(format!(
                "aws iam update-assume-role-policy --role-name {name} --policy-document file://trust.json"
            ));
            if let (Some(policy), Some(req)) = (f.policy, &request) {
                let report = crate::explain::assume_role_report(policy, req);
                let cause = format!(
                    "the trust policy given refuses {} for {} ({})",
                    report.action, report.caller, report.reason
                );
                let detail: Vec<String> =
                    report.warnings.iter().map(|w| w.message.clone()).collect();
                advice.evaluation = serde_json::to_value(&report).unwrap_or_default();
                if !report.allowed() {
                    return if detail.is_empty() {
                        cause
                    } else {
                        format!("{cause}: {}", detail.join("; "))
                    };
                }
                return format!(
                    "AWS STS refused {caller} assuming {role}, although the trust policy given allows it: the role's policy in AWS is another one (or the caller's identity policy, a permissions boundary or an SCP denies sts:AssumeRole)"
                );
            }
            format!(
                "AWS STS refused {caller} assuming {role} (role chaining): its trust policy does not name the first role, or does not allow its external id, tags or source identity (pass --aws-trust-policy FILE to evaluate it)"
            )
        }
        "ValidationError" if f.e.message.contains("1 hour") => {
            advice
                .fix
                .push("set `duration_seconds` to 3600 or less on the aws-assume-role hop".into());
            "a role assumed with another role's credentials (role chaining) gets at most one hour, whatever its maximum session duration".into()
        }
        "ValidationError" if f.e.message.contains("MaxSessionDuration") => {
            advice.fix.push(format!(
                "lower `duration_seconds`, or raise the role's maximum: aws iam update-role --role-name {name} --max-session-duration SECONDS"
            ));
            format!("the session asked for is longer than the maximum session duration of {role}")
        }
        "ValidationError" => {
            advice.fix.push(
                "check session_name, source_identity, tags and transitive_tag_keys against AWS's limits"
                    .into(),
            );
            format!("AWS STS refused the AssumeRole parameters: {}", f.e.message)
        }
        "ExpiredToken" | "InvalidClientTokenId" => {
            advice.fix.push(
                "the previous hop's credentials are no longer valid: run the route again".into(),
            );
            "the credentials that signed AssumeRole were refused".into()
        }
        _ => {
            advice
                .fix
                .push("run with IDBRIDGE_LOG=debug for the request details".into());
            format!("AssumeRole of {role} failed: {}", f.e.message)
        }
    }
}

/// The Roles Anywhere hop's trust anchor and profile, as the route names them.
fn anchor_and_profile(f: &Failure<'_>) -> (String, String) {
    match f.exchange.and_then(|x| x.facts().roles_anywhere) {
        Some(ra) => (ra.trust_anchor_arn.to_owned(), ra.profile_arn.to_owned()),
        None => ("the trust anchor".into(), "the profile".into()),
    }
}

/// The id at the end of a Roles Anywhere ARN.
fn ra_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn roles_anywhere(f: &Failure<'_>, advice: &mut Advice) -> String {
    let (role, name) = role_of(f);
    let (anchor, profile) = anchor_and_profile(f);
    let msg = f.e.message.as_str();
    let cert = match f.input {
        Some(idbridge_core::Credential::X509(x)) => Some(x),
        _ => None,
    };
    let subject = cert.map_or_else(|| "the certificate".to_owned(), |c| c.subject.clone());
    let get_anchor = format!(
        "aws rolesanywhere get-trust-anchor --trust-anchor-id {}",
        ra_id(&anchor)
    );
    let openssl = "openssl x509 -in CERT.pem -noout -subject -issuer -dates -ext subjectAltName";
    match f.code {
        "AccessDeniedException" if msg.contains("expired") || msg.contains("not yet valid") => {
            let when = cert.map(|c| {
                format!(
                    " (notAfter {})",
                    idbridge_core::timefmt::rfc3339_seconds(c.expires_at)
                )
            });
            advice.fix.push(format!(
                "renew the certificate{}: a SPIFFE X.509-SVID rotates by itself (is the agent running?), a certificate file must be replaced before notAfter",
                when.unwrap_or_default()
            ));
            advice.commands.push(openssl.into());
            format!(
                "IAM Roles Anywhere refused {subject}: {msg} (it checks notBefore/notAfter of every certificate in the chain)"
            )
        }
        "AccessDeniedException" if msg.contains("revoked") => {
            advice.fix.push(format!(
                "issue a new certificate: this one is on a CRL imported for {anchor}"
            ));
            advice.commands.push(format!(
                "aws rolesanywhere list-crls --query \"crls[?trustAnchorArn=='{anchor}']\""
            ));
            format!("{subject} is revoked: a CRL of the trust anchor lists its serial")
        }
        "AccessDeniedException" if msg.contains("Untrusted") || msg.contains("certificate") => {
            advice.fix.push(format!(
                "the trust anchor {anchor} must exist in the request's region, be enabled, and its CA bundle hold the CA that issued the certificate; intermediates go in the certificate file (or X.509-SVID bundle) after the leaf"
            ));
            advice.commands.push(get_anchor);
            advice.commands.push(openssl.into());
            advice.commands.push(
                "openssl verify -CAfile CA-BUNDLE.pem -untrusted INTERMEDIATES.pem CERT.pem".into(),
            );
            format!(
                "IAM Roles Anywhere does not trust the signing certificate ({subject}): its CA is not in the trust anchor's bundle, or the anchor is disabled or of another region: {msg}"
            )
        }
        "AccessDeniedException"
            if msg.contains("ignature")
                || msg.contains("Authorization")
                || msg.contains("Credential should be scoped to correct service")
                || msg.contains("serial number") =>
        {
            advice.fix.push("check the clock (requests are valid for 15 minutes) and that the private key belongs to the certificate; idbridge signs as the Roles Anywhere credential helper does".into());
            format!("IAM Roles Anywhere refused the request's signature: {msg}")
        }
        "AccessDeniedException" if msg.contains("region") => {
            advice.fix.push(format!(
                "sign in the trust anchor's region: set `region` on the roles-anywhere hop to the region in {anchor} (or leave it unset)"
            ));
            format!("the request was signed for another region than the trust anchor's: {msg}")
        }
        "AccessDeniedException"
            if msg.contains("profile's list of roles") || msg.contains("different accounts") =>
        {
            advice.fix.push(format!(
                "the profile {profile} must list {role}, and be in the trust anchor's account"
            ));
            advice.commands.push(format!(
                "aws rolesanywhere get-profile --profile-id {} --query profile.roleArns",
                ra_id(&profile)
            ));
            advice.commands.push(format!(
                "aws rolesanywhere update-profile --profile-id {} --role-arns {role}",
                ra_id(&profile)
            ));
            format!("the profile and the role do not match: {msg}")
        }
        "AccessDeniedException" => {
            let action = msg
                .rsplit("perform ")
                .next()
                .filter(|a| a.starts_with("sts:"))
                .unwrap_or("sts:AssumeRole");
            advice.fix.push(format!(
                "the trust policy of {role} must allow sts:AssumeRole, sts:TagSession and \
                 sts:SetSourceIdentity to Principal {{\"Service\": \"rolesanywhere.amazonaws.com\"}}, \
                 with conditions the certificate meets (aws:PrincipalTag/x509SAN/URI for a SPIFFE ID, \
                 aws:PrincipalTag/x509Subject/CN, aws:SourceArn = {anchor})"
            ));
            advice.commands.push(format!(
                "aws iam get-role --role-name {name} --query Role.AssumeRolePolicyDocument"
            ));
            advice.commands.push(f.setup_cmd("aws-json"));
            let request = cert.and_then(|c| certificate_request(&anchor, &c.chain_pem));
            if let Some(req) = &request {
                let tag = |k: &str| req.tag(k).map(str::to_owned);
                let mut cmd = format!(
                    "idbridge explain --aws-trust-policy trust.json --trust-anchor {anchor}"
                );
                if let Some(uri) = tag("x509SAN/URI") {
                    cmd.push_str(&format!(" --x509-uri {uri}"));
                }
                if let Some(cn) = tag("x509Subject/CN") {
                    cmd.push_str(&format!(" --x509-cn {cn}"));
                }
                advice.commands.push(cmd);
            }
            if let (Some(policy), Some(req)) = (f.policy, &request) {
                let report = crate::explain::roles_anywhere_report(policy, req);
                advice.evaluation = serde_json::to_value(&report).unwrap_or_default();
                if !report.allowed() {
                    let failing: Vec<String> = report
                        .statements
                        .iter()
                        .flat_map(|st| &st.conditions)
                        .filter(|c| !c.result)
                        .map(|c| {
                            format!(
                                "{} {} {:?} (certificate: {})",
                                c.key,
                                c.operator,
                                c.policy_values,
                                c.token_value
                                    .as_ref()
                                    .map_or_else(|| "none".to_owned(), |v| v.text())
                            )
                        })
                        .collect();
                    return format!(
                        "the trust policy of {role} refuses {} for {subject}{}",
                        report.action,
                        if failing.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", failing.join("; "))
                        }
                    );
                }
            }
            format!(
                "the trust policy of {role} does not allow {action} for {subject} through Roles Anywhere: {msg}"
            )
        }
        "ResourceNotFoundException" => {
            advice.fix.push(format!(
                "check `profile_arn` ({profile}: it must exist, be enabled and be in the request's region) and that {role} exists"
            ));
            advice.commands.push(format!(
                "aws rolesanywhere get-profile --profile-id {}",
                ra_id(&profile)
            ));
            format!(
                "IAM Roles Anywhere does not know the profile or role: {}",
                f.e.message
            )
        }
        "ValidationException" => {
            advice.fix.push("keep `duration_seconds` within the profile's and the role's maximum; set `session_name` only when the profile accepts role session names".into());
            format!("IAM Roles Anywhere refused the request: {}", f.e.message)
        }
        _ => {
            advice
                .fix
                .push(format!("check {}", roles_anywhere::HOP.endpoint_variable()));
            format!("the Roles Anywhere hop failed: {}", f.e.message)
        }
    }
}

fn web_identity_token(f: &Failure<'_>, advice: &mut Advice) -> String {
    match f.code {
        "OutboundWebIdentityFederationDisabledException" => {
            advice.fix.push(
                "turn on the account's outbound identity federation (once per account, with IAM permission iam:EnableOutboundWebIdentityFederation)"
                    .into(),
            );
            advice
                .commands
                .push("aws iam enable-outbound-web-identity-federation".into());
            advice
                .commands
                .push("aws iam get-outbound-web-identity-federation-info".into());
            "AWS outbound identity federation is off for this account: STS mints no web identity tokens".into()
        }
        "AccessDenied" | "AccessDeniedException" => {
            advice.fix.push(
                "the caller's role needs an identity policy allowing sts:GetWebIdentityToken"
                    .into(),
            );
            format!("AWS STS refused GetWebIdentityToken: {}", f.e.message)
        }
        "ValidationError" => {
            advice.fix.push(
                "check `audience` (1–10), `signing_algorithm` (RS256 or ES384) and `duration_seconds` (60–3600)"
                    .into(),
            );
            format!(
                "AWS STS refused the GetWebIdentityToken parameters: {}",
                f.e.message
            )
        }
        _ => {
            advice
                .fix
                .push("run with IDBRIDGE_LOG=debug for the request details".into());
            format!("GetWebIdentityToken failed: {}", f.e.message)
        }
    }
}
