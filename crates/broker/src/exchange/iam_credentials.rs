//! Exchange `impersonate`: IAM Credentials `generateIdToken` / `generateAccessToken`, with the
//! previous hop's Google access token as the caller.
//!
//! `POST {iamcredentials}/v1/projects/-/serviceAccounts/{sa}:generateIdToken` with
//! `Authorization: Bearer <caller access token>` and `{"audience","delegates","includeEmail"}`;
//! or `:generateAccessToken` with `{"scope":[…],"lifetime":"3600s","delegates"}`. The caller
//! needs `roles/iam.serviceAccountTokenCreator` on the target (and on each delegate in turn),
//! or `roles/iam.workloadIdentityUser` for a federated caller. The base URL comes from the
//! exchange's `endpoint`, then `endpoints.google_iamcredentials`, then
//! `IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL`, then `https://iamcredentials.googleapis.com`.
//!
//! The `impersonate` source ([`crate::source::impersonate`]) is this exchange behind a caller
//! source of its own.

use idbridge_core::{Credential, GoogleAccessToken, SecretString};
use idbridge_wire::google::{
    GenerateAccessTokenRequest, GenerateAccessTokenResponse, GenerateIdTokenRequest,
    GenerateIdTokenResponse,
};
use serde::Deserialize;
use tokio::time::Instant;

use crate::source::gce_metadata::urlencode;
use crate::step::{Facts, Impersonation, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::token::{describe_claims, id_token_from_jwt};
use crate::values::{Mint, ServiceAccount};
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport, Overrides};

/// The hop.
pub const HOP: Hop = Hop::new(
    "impersonate",
    "IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL (or [endpoints] google_iamcredentials, or the hop's `endpoint`)",
);
/// The scope a caller needs to call IAM Credentials, and the default scope of the access
/// tokens minted.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// `exchange = [{ kind = "impersonate", … }]`: `service_account`, `audience` (ID token) or
/// `scopes` (access token; default cloud-platform), `delegates`, `include_email` (default
/// true), `lifetime_seconds` (1–43200), `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonate {
    service_account: ServiceAccount,
    mint: Mint,
    delegates: Vec<String>,
    include_email: bool,
    lifetime_seconds: Option<u32>,
    endpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    service_account: String,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    delegates: Vec<String>,
    #[serde(default = "yes")]
    include_email: bool,
    #[serde(default)]
    lifetime_seconds: Option<u32>,
    #[serde(default)]
    endpoint: Option<String>,
}

fn yes() -> bool {
    true
}

/// The fields the `impersonate` source shares with the exchange.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) service_account: String,
    pub(crate) delegates: Vec<String>,
    pub(crate) include_email: bool,
    pub(crate) lifetime_seconds: Option<u32>,
}

impl Impersonate {
    /// Reads `{ kind = "impersonate", … }` in `exchange`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Raw = p.table(table)?;
        let mint = match (raw.audience, raw.scopes) {
            (Some(_), Some(_)) => {
                return Err(KindError::Invalid(format!(
                    "set only one of `{}` and `{}`",
                    p.field("audience"),
                    p.field("scopes")
                )));
            }
            (Some(a), None) => Mint::IdToken(a),
            (None, s) => Mint::AccessToken(s.unwrap_or_else(|| vec![CLOUD_PLATFORM.to_owned()])),
        };
        let target = Target {
            service_account: raw.service_account,
            delegates: raw.delegates,
            include_email: raw.include_email,
            lifetime_seconds: raw.lifetime_seconds,
        };
        Ok(Box::new(Self::new(target, mint, raw.endpoint, p)?))
    }

    /// The exchange for `target`, checked.
    pub(crate) fn new(
        target: Target,
        mint: Mint,
        endpoint: Option<String>,
        p: &Parse<'_>,
    ) -> Result<Self, KindError> {
        let service_account = ServiceAccount::parse(&target.service_account)
            .map_err(|m| p.invalid("service_account", m))?;
        if let Some(l) = target.lifetime_seconds
            && !(1..=43200).contains(&l)
        {
            return Err(p.invalid("lifetime_seconds", "must be 1..=43200"));
        }
        Ok(Impersonate {
            service_account,
            mint,
            delegates: target.delegates,
            include_email: target.include_email,
            lifetime_seconds: target.lifetime_seconds,
            endpoint,
        })
    }

    /// The target account.
    pub fn service_account(&self) -> &ServiceAccount {
        &self.service_account
    }

    pub(crate) fn mint(&self) -> &Mint {
        &self.mint
    }

    pub(crate) fn with_mint(&self, mint: Mint) -> Self {
        Impersonate {
            mint,
            ..self.clone()
        }
    }

    /// Mints the target's token as `caller`.
    pub(crate) async fn as_caller(
        &self,
        ctx: &Context,
        caller: &GoogleAccessToken,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        match &self.endpoint {
            Some(base) => {
                let mut ctx = ctx.clone();
                ctx.endpoints.google_iamcredentials = base.trim_end_matches('/').to_owned();
                call(&ctx, caller, self, hops).await
            }
            None => call(ctx, caller, self, hops).await,
        }
    }

    async fn exchange(
        &self,
        input: Input<'_>,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let Some(Credential::GoogleAccessToken(caller)) = input.credential else {
            return Err(BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                "needs a Google access token from the previous hop",
            ));
        };
        self.as_caller(ctx, caller, hops).await
    }

    pub(crate) fn describe_target(&self) -> String {
        match &self.mint {
            Mint::IdToken(a) => format!("ID token of {} for {a}", self.service_account),
            Mint::AccessToken(_) => format!("access token of {}", self.service_account),
        }
    }

    pub(crate) fn impersonation(&self) -> Impersonation<'_> {
        Impersonation {
            service_account: &self.service_account,
            lifetime_seconds: self.lifetime_seconds,
            endpoint: self.endpoint.as_deref(),
        }
    }
}

impl Step for Impersonate {
    fn kind(&self) -> &'static str {
        "impersonate"
    }

    fn takes(&self) -> &'static [Yields] {
        &[Yields::AccessToken]
    }

    fn refuses(&self, _got: Yields) -> String {
        "impersonate needs a Google access token from the previous hop".to_owned()
    }

    fn yields(&self) -> Yields {
        self.mint.yields()
    }

    fn describe(&self) -> String {
        self.describe_target()
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            audience: self.mint.audience(),
            scopes: self.mint.scopes(),
            service_account: Some(&self.service_account),
            google_id_token: self.mint.audience().is_some(),
            generate_id_token: self.mint.audience().is_some(),
            impersonation: Some(self.impersonation()),
            ..Facts::default()
        }
    }

    fn with_overrides(&self, overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        let mint = Mint::overridden(overrides)?;
        Some(Ok(Box::new(self.with_mint(mint))))
    }

    fn run<'a>(
        &'a self,
        input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(self.exchange(input, ctx, hops))
    }
}

/// Calls IAM Credentials as `caller`.
async fn call(
    ctx: &Context,
    caller: &GoogleAccessToken,
    req: &Impersonate,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    let delegates: Option<Vec<String>> = (!req.delegates.is_empty()).then(|| {
        req.delegates
            .iter()
            .map(|d| format!("projects/-/serviceAccounts/{d}"))
            .collect()
    });
    let method = if req.mint.audience().is_some() {
        "generateIdToken"
    } else {
        "generateAccessToken"
    };
    let url = format!(
        "{}/v1/projects/-/serviceAccounts/{}:{method}",
        ctx.endpoints.google_iamcredentials,
        urlencode(&req.service_account)
    );
    let body = match req.mint.audience() {
        Some(aud) => serde_json::to_value(GenerateIdTokenRequest {
            audience: aud.to_owned(),
            delegates,
            include_email: Some(req.include_email),
            use_email_azp: None,
        }),
        None => serde_json::to_value(GenerateAccessTokenRequest {
            delegates,
            scope: req.mint.scopes().unwrap_or_default().to_vec(),
            lifetime: req.lifetime_seconds.map(|s| format!("{s}s")),
        }),
    }
    .map_err(|e| BrokerError::new(ErrorKind::InvalidConfiguration, HOP, e.to_string()))?;
    let who = caller.principal.as_deref().unwrap_or("the caller");
    let text = crate::google::send_google(
        ctx,
        HOP,
        &url,
        ctx.http
            .post(&url)
            .bearer_auth(caller.token.expose_secret())
            .json(&body),
    )
    .await
    .map_err(|mut e| {
        if e.kind == ErrorKind::Rejected {
            e.message = format!("{} (as {who} on {})", e.message, req.service_account);
        }
        e
    })?;
    if req.mint.audience().is_some() {
        let parsed: GenerateIdTokenResponse = serde_json::from_str(&text).map_err(|_| {
            BrokerError::unparsable(
                HOP,
                format!("unparsable generateIdToken response from {url}"),
            )
        })?;
        let jwt = zeroize::Zeroizing::new(parsed.token);
        let (tok, claims) = id_token_from_jwt(HOP, &jwt)?;
        hops.push(HopReport::new(
            HOP,
            url,
            format!("ID token: {}", describe_claims(&claims)),
            Some(tok.expires_at),
            started,
        ));
        return Ok(Credential::IdToken(tok));
    }
    let parsed: GenerateAccessTokenResponse = serde_json::from_str(&text).map_err(|_| {
        BrokerError::unparsable(
            HOP,
            format!("unparsable generateAccessToken response from {url}"),
        )
    })?;
    let expires_at = idbridge_core::timefmt::parse_rfc3339(&parsed.expire_time)
        .ok_or_else(|| BrokerError::unparsable(HOP, "unparsable expireTime"))?;
    hops.push(HopReport::new(
        HOP,
        url,
        format!("access token: {}", req.service_account),
        Some(expires_at),
        started,
    ));
    Ok(Credential::GoogleAccessToken(GoogleAccessToken {
        token: SecretString::new(parsed.access_token),
        expires_at,
        principal: Some(req.service_account.to_string()),
        scopes: req.mint.scopes().unwrap_or_default().to_vec(),
    }))
}
