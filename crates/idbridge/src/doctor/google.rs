//! `doctor`'s diagnosis of a failed Google hop: `google-sts` (the provider's mapping and
//! condition) and `impersonate` (IAM Credentials bindings).

use super::*;

/// Why Google STS refused, and the fix (the provider evaluated when given).
pub(super) async fn google_sts(f: &Failure<'_>, advice: &mut Advice) -> String {
    let Failure {
        ctx,
        outcomes,
        e,
        code,
        input,
        exchange,
        provider,
        ..
    } = *f;
    let Advice {
        fix,
        commands,
        evaluation,
    } = advice;
    let setup_cmd = |format: &str| f.setup_cmd(format);
    {
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
                *evaluation = r;
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
    }
}

/// Why IAM Credentials refused, and the binding that fixes it.
pub(super) async fn impersonate(f: &Failure<'_>, advice: &mut Advice) -> String {
    let Failure {
        ctx,
        route,
        outcomes,
        e,
        code,
        input,
        exchange,
        provider,
        ..
    } = *f;
    let Advice { fix, commands, .. } = advice;
    let setup_cmd = |format: &str| f.setup_cmd(format);
    {
        let step = exchange.unwrap_or(route.source.as_ref());
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
                    let delegates = step
                        .facts()
                        .impersonation
                        .map(|i| i.delegates)
                        .unwrap_or_default();
                    if delegates.is_empty() {
                        let member = caller
                            .as_deref()
                            .map(|c| format!("serviceAccount:{c}"))
                            .unwrap_or_else(|| "serviceAccount:CALLER_EMAIL".into());
                        commands.push(format!("gcloud iam service-accounts add-iam-policy-binding {sa} --role=roles/iam.serviceAccountTokenCreator --member={member}"));
                        format!(
                            "{} may not mint tokens of {sa}: it lacks roles/iam.serviceAccountTokenCreator on the account",
                            caller.as_deref().unwrap_or("the caller")
                        )
                    } else {
                        // Any link of the chain may be the missing one: each account needs the
                        // role on the next.
                        let mut previous = caller.clone().unwrap_or_else(|| "CALLER_EMAIL".into());
                        for next in delegates.iter().map(|d| d.as_str()).chain([sa.as_str()]) {
                            commands.push(format!("gcloud iam service-accounts add-iam-policy-binding {next} --role=roles/iam.serviceAccountTokenCreator --member=serviceAccount:{previous}"));
                            previous = next.to_owned();
                        }
                        let chain: Vec<&str> = delegates.iter().map(|d| d.as_str()).collect();
                        format!(
                            "a link of the delegation chain {} → {} → {sa} lacks roles/iam.serviceAccountTokenCreator on the next account",
                            caller.as_deref().unwrap_or("the caller"),
                            chain.join(" → ")
                        )
                    }
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
    }
}
