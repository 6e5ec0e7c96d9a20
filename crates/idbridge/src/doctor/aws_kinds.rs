//! `doctor`'s diagnosis of the AWS hops beyond web identity: role chaining (`aws-assume-role`),
//! IAM Roles Anywhere (`roles-anywhere`) and AWS outbound identity federation
//! (`aws-web-identity-token`). `None` when the failure is not one of theirs.

use idbridge_broker::exchange::roles_anywhere;

use super::{Advice, Failure, aws_sts};

/// The cause and fix of a failed chained role, Roles Anywhere session or AWS JWT.
pub(super) fn diagnose(f: &Failure<'_>, advice: &mut Advice) -> Option<String> {
    let kind = match f.exchange {
        Some(x) => x.kind(),
        None => f.route.source.kind(),
    };
    match kind {
        "aws-assume-role" if f.e.hop == aws_sts::HOP => Some(assume_role(f, advice)),
        "roles-anywhere" if f.e.hop == roles_anywhere::HOP => Some(roles_anywhere(f, advice)),
        "aws-web-identity-token" if f.e.hop == aws_sts::HOP => Some(web_identity_token(f, advice)),
        _ => None,
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

fn assume_role(f: &Failure<'_>, advice: &mut Advice) -> String {
    let (role, name) = role_of(f);
    let caller = match f.input {
        Some(idbridge_core::Credential::Aws(c)) => c.arn.clone(),
        _ => None,
    }
    .unwrap_or_else(|| "the previous hop's role".to_owned());
    match f.code {
        "AccessDenied" => {
            advice.fix.push(format!(
                "the trust policy of {role} must allow sts:AssumeRole (and sts:TagSession with \
                 tags, sts:SetSourceIdentity with a source identity) to Principal \
                 {{\"AWS\": \"<the role ARN of {caller}>\"}}"
            ));
            advice.fix.push(
                "with an `external_id`, its condition is StringEquals sts:ExternalId = that value"
                    .into(),
            );
            advice.commands.push(format!(
                "aws iam get-role --role-name {name} --query Role.AssumeRolePolicyDocument"
            ));
            advice.commands.push(format!(
                "aws iam update-assume-role-policy --role-name {name} --policy-document file://trust.json"
            ));
            format!(
                "AWS STS refused {caller} assuming {role} (role chaining): its trust policy does not allow this caller, external id, tags or source identity"
            )
        }
        "ValidationError" if f.e.message.contains("1 hour") => {
            advice
                .fix
                .push("set `duration_seconds` to 3600 or less on the aws-assume-role hop".into());
            "a role assumed with another role's credentials (role chaining) gets at most one hour, whatever its maximum session duration".into()
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

fn roles_anywhere(f: &Failure<'_>, advice: &mut Advice) -> String {
    let (role, name) = role_of(f);
    match f.code {
        "AccessDeniedException" if f.e.message.contains("certificate") => {
            advice.fix.push("the certificate must chain to a CA of the trust anchor's bundle (intermediates in the certificate file after the leaf), be valid now, and not be on an enabled CRL of the anchor".into());
            advice
                .commands
                .push("aws rolesanywhere get-trust-anchor --trust-anchor-id ID".into());
            advice
                .commands
                .push("openssl x509 -in CERT.pem -noout -issuer -dates -ext subjectAltName".into());
            "IAM Roles Anywhere does not trust the signing certificate".into()
        }
        "AccessDeniedException" => {
            advice.fix.push(format!(
                "the trust policy of {role} must allow sts:AssumeRole, sts:TagSession and \
                 sts:SetSourceIdentity to Principal {{\"Service\": \"rolesanywhere.amazonaws.com\"}}, \
                 with conditions the certificate meets (aws:PrincipalTag/x509SAN/URI for a SPIFFE ID, \
                 aws:PrincipalTag/x509Subject/CN, aws:SourceArn = the trust anchor)"
            ));
            advice.commands.push(format!(
                "aws iam get-role --role-name {name} --query Role.AssumeRolePolicyDocument"
            ));
            format!("IAM Roles Anywhere refused the session: {}", f.e.message)
        }
        "ResourceNotFoundException" => {
            advice.fix.push(format!("check `profile_arn`, and that the profile lists {role} (aws rolesanywhere get-profile --profile-id ID)"));
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
