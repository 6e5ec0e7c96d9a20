//! `setup --format external-account`: the Google credential file Google's libraries read for
//! the route's source and first exchanges.

#[allow(
    unused_imports,
    reason = "the formats read the parent's plan and helpers"
)]
use super::*;

/// The base URLs an external-account file points at when the route does not name its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EndpointUrls {
    sts_token_url: String,
    iamcredentials: String,
    imds: String,
}

impl EndpointUrls {
    pub(super) fn production() -> Self {
        EndpointUrls {
            sts_token_url: DEFAULT_STS_URL.to_owned(),
            iamcredentials: DEFAULT_IAMCREDENTIALS.to_owned(),
            imds: DEFAULT_IMDS.to_owned(),
        }
    }

    /// What idbridge itself uses here: the same variables and `[endpoints]` the route runs with.
    pub(super) fn effective(ctx: &Context) -> Self {
        let var = |name: &str| {
            ctx.env
                .get(name)
                .map(|v| v.trim().trim_end_matches('/').to_owned())
                .filter(|v| !v.is_empty())
        };
        EndpointUrls {
            sts_token_url: var(idbridge_core::env::IDBRIDGE_GOOGLE_STS_URL)
                .unwrap_or_else(|| DEFAULT_STS_URL.to_owned()),
            iamcredentials: ctx.endpoints.google_iamcredentials.clone(),
            imds: var(idbridge_core::env::AWS_EC2_METADATA_SERVICE_ENDPOINT)
                .unwrap_or_else(|| DEFAULT_IMDS.to_owned()),
        }
    }
}

pub(super) fn external_account(
    plan: &Plan,
    route: &RouteConfig,
    urls: &EndpointUrls,
) -> Result<String, CliError> {
    let usage = |m: String| CliError::Usage(format!("setup: route {:?}: {m}", route.name));
    let Some(g) = plan.gcp.first() else {
        return Err(usage(
            "an external_account file describes a Google STS exchange, and the route has none"
                .into(),
        ));
    };
    if g.exchange_index != 0 {
        return Err(usage("an external_account file starts at Google STS: the route must begin with its subject token's source".into()));
    }
    let sts = route.exchange.first().and_then(|x| x.facts().google_sts);
    let token_url = sts.and_then(|g| g.token_url).map(str::to_owned);
    let sts_type = sts.and_then(|g| g.subject_token_type).map(str::to_owned);
    let Some(source) = route.source.credential_source(&urls.imds) else {
        return Err(usage(format!(
            "a {} source has no external_account credential_source (aws, file, url and executable do): give Google's libraries a route that ends in the subject token through an executable source running `idbridge token --format google-executable`",
            route.source.kind()
        )));
    };
    if let Some(note) = source.note {
        eprintln!("idbridge setup: note: {note}");
    }
    let subject_token_type = if source.aws {
        AWS4_REQUEST.to_owned()
    } else {
        sts_type.unwrap_or_else(|| JWT_TYPE.into())
    };
    let credential_source = source.credential_source;
    let mut doc = json!({
        "type": "external_account",
        "audience": g.name.canonical(),
        "subject_token_type": subject_token_type,
        "token_url": token_url.unwrap_or_else(|| urls.sts_token_url.clone()),
        "credential_source": credential_source,
    });
    let impersonation = route
        .exchange
        .get(1)
        .map(|x| x.facts())
        .filter(|f| f.audience.is_none())
        .and_then(|f| f.impersonation);
    if let Some(imp) = impersonation {
        if !imp.delegates.is_empty() {
            return Err(usage("an external_account file's service_account_impersonation_url has no delegates: give Google's libraries the route's token through an executable source instead".into()));
        }
        let (service_account, lifetime_seconds) = (imp.service_account, imp.lifetime_seconds);
        let base = imp
            .endpoint
            .unwrap_or(&urls.iamcredentials)
            .trim_end_matches('/');
        doc["service_account_impersonation_url"] = json!(format!(
            "{base}/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken"
        ));
        if let Some(l) = lifetime_seconds {
            doc["service_account_impersonation"] = json!({"token_lifetime_seconds": l});
        }
    }
    Ok(format!("{}\n", pretty(&doc)))
}
