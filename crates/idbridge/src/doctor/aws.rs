//! `doctor`'s diagnosis of a failed AWS hop: `aws-sts` (AssumeRoleWithWebIdentity).

use super::*;

/// Why AWS STS refused, and the fix (the trust policy evaluated when given).
pub(super) async fn aws_sts(f: &Failure<'_>, advice: &mut Advice) -> String {
    let Failure {
        ctx,
        route,
        code,
        input,
        exchange,
        policy,
        ..
    } = *f;
    let Advice {
        fix,
        commands,
        evaluation,
    } = advice;
    let setup_cmd = |format: &str| f.setup_cmd(format);
    {
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
                        *evaluation = r;
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
    }
}
