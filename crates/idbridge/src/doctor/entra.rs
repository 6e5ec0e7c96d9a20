//! `doctor`'s diagnosis of a failed `entra` hop: the AADSTS code's cause and fix, with the
//! token compared to the app's federated credentials (`explain --entra`'s report) when
//! `--entra` names the app or world file, and the `az` command that adds the missing
//! credential.

use idbridge_policy::azure::{DEFAULT_AUDIENCE, FederatedCredential, Signature};

use super::*;
use crate::explain::{EntraPrincipal, PrincipalKind};

/// The AADSTS number of an error code (`AADSTS700213` → 700213).
fn aadsts(code: &str) -> Option<u32> {
    code.strip_prefix("AADSTS")?.parse().ok()
}

/// Why Entra refused, and the fix.
pub(super) fn entra(f: &Failure<'_>, advice: &mut Advice) -> String {
    let Failure {
        ctx,
        code,
        input,
        exchange,
        entra,
        ..
    } = *f;
    let Some(number) = aadsts(code) else {
        advice
            .fix
            .push("run with IDBRIDGE_LOG=debug for Entra's answer".into());
        return "Entra refused the request without an AADSTS code".into();
    };
    let facts = exchange.and_then(|x| x.facts().entra);
    let client_id = facts.map_or("CLIENT_ID", |e| e.client_id);
    let tenant = facts.map_or("TENANT", |e| e.tenant);
    let scope = facts.map_or("SCOPE", |e| e.scope);
    let jwt = input_jwt(input);
    let claim = |k: &str| {
        jwt.as_ref()
            .and_then(|j| j.str_claim(k))
            .unwrap_or("(unknown)")
            .to_owned()
    };
    let audiences = jwt
        .as_ref()
        .map(|j| idbridge_policy::azure::audiences(&j.claims))
        .unwrap_or_default();
    // The app as --entra declares it, else as the route names it.
    let principal = entra.cloned().unwrap_or_else(|| EntraPrincipal {
        kind: PrincipalKind::App,
        client_id: Some(client_id.to_owned()),
        name: None,
        resource_id: None,
        credentials: Vec::new(),
    });
    if let (Some(p), Some(j)) = (entra, &jwt) {
        let report =
            explain::entra_report(p, j, Signature::Unchecked, ctx.clock.now().unix_timestamp());
        for c in &report.credentials {
            for field in c
                .fields
                .iter()
                .filter(|x| !x.result && (c.fields[0].result || x.why.is_some()))
            {
                advice.fix.push(format!(
                    "credential {}: {} is {} in the token, {} in the credential{}",
                    c.name,
                    field.field,
                    field.token.text(),
                    field.credential.text(),
                    field
                        .why
                        .as_ref()
                        .map(|w| format!(" ({w})"))
                        .unwrap_or_default()
                ));
            }
        }
        if let Some(fix) = &report.fix {
            advice.commands.push(fix.clone());
        }
        advice.evaluation = serde_json::to_value(&report).unwrap_or_default();
    }
    let add_credential = |advice: &mut Advice| {
        if advice.commands.is_empty() && jwt.is_some() {
            let audience = audiences
                .iter()
                .find(|a| *a == DEFAULT_AUDIENCE)
                .or(audiences.first())
                .cloned()
                .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
            let c = FederatedCredential {
                name: explain::suggested_name(&claim("iss")),
                issuer: claim("iss"),
                subject: claim("sub"),
                audiences: vec![audience],
            };
            advice
                .commands
                .push(crate::setup::azure::az_create(&principal, &c));
        }
        advice.commands.push(f.setup_cmd("az-cli"));
    };
    let who = principal.label();
    match number {
        700211 | 70021 => {
            add_credential(advice);
            format!(
                "no federated identity credential of {who} names the token's issuer {} (Entra compares it exactly, trailing slash included)",
                claim("iss")
            )
        }
        700213 | 7002137 | 7002138 => {
            advice.fix.push(format!(
                "the token's sub is {}; a credential with issuer {} must have exactly that subject (case-sensitive)",
                claim("sub"),
                claim("iss")
            ));
            add_credential(advice);
            format!(
                "no federated identity credential of {who} with the token's issuer has its subject"
            )
        }
        700212 => {
            advice.fix.push(format!(
                "the token's aud is {}; ask the source for audience {DEFAULT_AUDIENCE} (the source's `audience`), or give the credential the token's audience",
                if audiences.is_empty() { "(none)".to_owned() } else { audiences.join(", ") }
            ));
            add_credential(advice);
            format!(
                "the federated credential of {who} for this issuer and subject has another audience than the token"
            )
        }
        700024 => {
            advice.fix.push(format!(
                "the token is valid from {} to {} (Entra allows five minutes of skew): check this machine's clock and that the source hands a fresh token",
                jwt.as_ref().and_then(|j| j.int_claim("nbf")).map_or_else(|| "-".into(), fmt_unix),
                jwt.as_ref().and_then(|j| j.int_claim("exp")).map_or_else(|| "-".into(), fmt_unix),
            ));
            "the client assertion is expired or not yet valid".into()
        }
        700027 => {
            advice.fix.push(format!(
                "Entra verifies the token with the keys of {}'s OpenID configuration (jwks_uri): they must be reachable from Entra and hold the token's kid",
                claim("iss")
            ));
            "the client assertion's signature does not verify with the issuer's keys".into()
        }
        50166 => {
            advice.fix.push(format!(
                "Entra fetches {}/.well-known/openid-configuration and its jwks_uri: both must be reachable from the internet over https, with no firewall or private endpoint in the way",
                claim("iss")
            ));
            "Entra could not fetch the OpenID discovery document or keys of the token's issuer"
                .into()
        }
        50027 => {
            advice.fix.push("Entra takes RS256/384/512 or ES256/384 JWTs: the source must hand a signed JWT (an ID token), not an opaque token".into());
            "the client assertion is not a JWT Entra accepts".into()
        }
        700016 => {
            advice.fix.push(format!(
                "check the exchange's client_id ({client_id}) and tenant ({tenant}): `az ad app show --id {client_id}` or `az identity show --ids ARM_ID`"
            ));
            format!("no app or managed identity with client id {client_id} in tenant {tenant}")
        }
        90002 => {
            advice.fix.push(format!(
                "check the exchange's tenant ({tenant}) and authority (AZURE_AUTHORITY_HOST)"
            ));
            format!("the tenant {tenant} does not exist")
        }
        70011 | 1002012 => {
            advice.fix.push(format!(
                "the exchange's scope ({scope}) must be one resource followed by /.default, e.g. api://APP/.default or https://management.azure.com/.default"
            ));
            "the scope is not a client-credentials scope".into()
        }
        500011 => {
            advice.fix.push(format!(
                "the resource of scope {scope} must be an app ID URI (or client id) of an app in tenant {tenant}, or a Microsoft API"
            ));
            "the resource the scope names is not in the tenant".into()
        }
        7000215 | 7000218 | 7000216 => {
            advice.fix.push("the entra exchange sends the previous hop's JWT as client_assertion: check that the route has a hop before it that yields an ID token".into());
            "Entra got no usable client assertion".into()
        }
        other => {
            advice.fix.push(format!(
                "look up AADSTS{other} at https://login.microsoftonline.com/error?code={other}"
            ));
            format!("Entra refused the exchange (AADSTS{other})")
        }
    }
}
