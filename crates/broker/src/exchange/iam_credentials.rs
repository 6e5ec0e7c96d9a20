//! Exchange `impersonate`: IAM Credentials `generateIdToken` / `generateAccessToken`, with the
//! previous hop's Google access token as the caller.
//!
//! `POST {iamcredentials}/v1/projects/-/serviceAccounts/{sa}:generateIdToken` with
//! `Authorization: Bearer <caller access token>` and `{"audience","delegates","includeEmail"}`;
//! or `:generateAccessToken` with `{"scope":[…],"lifetime":"3600s","delegates"}`. The caller
//! needs `roles/iam.serviceAccountTokenCreator` on the target, or
//! `roles/iam.workloadIdentityUser` for a federated caller. With `delegates = ["sa@…", …]`
//! (emails or unique ids, checked when the config is read, sent as
//! `projects/-/serviceAccounts/…`) the request is delegated: the caller needs the token creator
//! role on the first delegate, each delegate on the next, and the last on the target.
//!
//! The base URL comes from the exchange's `endpoint`, then `endpoints.google_iamcredentials`,
//! then `IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL`, then `https://iamcredentials.googleapis.com`.
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
/// `scopes` (access token; default cloud-platform), `delegates` (the delegation chain, caller
/// side first: emails or unique ids), `include_email` (default true), `lifetime_seconds`
/// (1–43200), `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonate {
    service_account: ServiceAccount,
    mint: Mint,
    delegates: Vec<ServiceAccount>,
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
        let delegates = target
            .delegates
            .iter()
            .enumerate()
            .map(|(i, d)| {
                ServiceAccount::parse(d).map_err(|m| p.invalid(&format!("delegates[{i}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(l) = target.lifetime_seconds
            && !(1..=43200).contains(&l)
        {
            return Err(p.invalid("lifetime_seconds", "must be 1..=43200"));
        }
        Ok(Impersonate {
            service_account,
            mint,
            delegates,
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
            Mint::IdToken(a) => {
                format!("ID token of {}{} for {a}", self.service_account, self.via())
            }
            Mint::AccessToken(_) => {
                format!("access token of {}{}", self.service_account, self.via())
            }
        }
    }

    /// The request body: `generateIdToken`'s or `generateAccessToken`'s message, `delegates`
    /// as resource names (absent when there are none).
    fn request_body(&self) -> Result<serde_json::Value, serde_json::Error> {
        let delegates: Option<Vec<String>> = (!self.delegates.is_empty()).then(|| {
            self.delegates
                .iter()
                .map(ServiceAccount::resource_name)
                .collect()
        });
        match self.mint.audience() {
            Some(aud) => serde_json::to_value(GenerateIdTokenRequest {
                audience: aud.to_owned(),
                delegates,
                include_email: Some(self.include_email),
                use_email_azp: None,
            }),
            None => serde_json::to_value(GenerateAccessTokenRequest {
                delegates,
                scope: self.mint.scopes().unwrap_or_default().to_vec(),
                lifetime: self.lifetime_seconds.map(|s| format!("{s}s")),
            }),
        }
    }

    /// ` via a → b` for a delegated request, empty otherwise.
    fn via(&self) -> String {
        if self.delegates.is_empty() {
            return String::new();
        }
        let chain: Vec<&str> = self.delegates.iter().map(|d| d.as_str()).collect();
        format!(" via {}", chain.join(" → "))
    }

    pub(crate) fn impersonation(&self) -> Impersonation<'_> {
        Impersonation {
            service_account: &self.service_account,
            delegates: &self.delegates,
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
    let body = req
        .request_body()
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
            e.message = format!(
                "{} (as {who} on {}{})",
                e.message,
                req.service_account,
                req.via()
            );
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
        format!("access token: {}{}", req.service_account, req.via()),
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::step::Registry;

    fn exchange(fields: &str) -> Result<Impersonate, KindError> {
        let table: toml::Value = toml::from_str(fields).unwrap();
        let p = Parse {
            at: None,
            base: None,
            registry: &Registry::builtin(),
        };
        let raw: Raw = p.table(table)?;
        let mint = match raw.audience {
            Some(a) => Mint::IdToken(a),
            None => Mint::AccessToken(raw.scopes.unwrap_or_else(|| vec![CLOUD_PLATFORM.into()])),
        };
        let target = Target {
            service_account: raw.service_account,
            delegates: raw.delegates,
            include_email: raw.include_email,
            lifetime_seconds: raw.lifetime_seconds,
        };
        Impersonate::new(target, mint, raw.endpoint, &p)
    }

    #[test]
    fn delegates_go_out_as_resource_names() {
        let x = exchange(
            r#"service_account = "t@p.iam.gserviceaccount.com"
delegates = ["d1@p.iam.gserviceaccount.com", "1234567890"]
lifetime_seconds = 600"#,
        )
        .unwrap();
        assert_eq!(
            x.request_body().unwrap(),
            json!({
                "delegates": [
                    "projects/-/serviceAccounts/d1@p.iam.gserviceaccount.com",
                    "projects/-/serviceAccounts/1234567890",
                ],
                "scope": [CLOUD_PLATFORM],
                "lifetime": "600s",
            })
        );
        assert_eq!(
            x.describe_target(),
            "access token of t@p.iam.gserviceaccount.com via d1@p.iam.gserviceaccount.com → 1234567890"
        );
        let id = exchange(
            r#"service_account = "t@p.iam.gserviceaccount.com"
audience = "https://svc"
delegates = ["d1@p.iam.gserviceaccount.com"]"#,
        )
        .unwrap();
        assert_eq!(
            id.request_body().unwrap(),
            json!({
                "audience": "https://svc",
                "delegates": ["projects/-/serviceAccounts/d1@p.iam.gserviceaccount.com"],
                "includeEmail": true,
            })
        );
        // No delegates: no `delegates` member at all.
        let plain = exchange(r#"service_account = "t@p.iam.gserviceaccount.com""#).unwrap();
        assert!(plain.request_body().unwrap().get("delegates").is_none());
        assert_eq!(
            plain.describe_target(),
            "access token of t@p.iam.gserviceaccount.com"
        );
    }

    #[test]
    fn bad_delegates_name_the_field_and_index() {
        for (bad, want) in [
            (
                "\"d1\"",
                "field `delegates[1]` \"d1\" must be an email or a numeric unique id",
            ),
            (
                "\"projects/-/serviceAccounts/d1@p.iam.gserviceaccount.com\"",
                "field `delegates[1]` \"projects/-/serviceAccounts/d1@p.iam.gserviceaccount.com\": give the account's email or unique id",
            ),
            ("\"\"", "field `delegates[1]` \"\" must be an email"),
        ] {
            let e = exchange(&format!(
                "service_account = \"t@p.iam.gserviceaccount.com\"\ndelegates = [\"ok@p.iam.gserviceaccount.com\", {bad}]"
            ))
            .unwrap_err();
            let KindError::Invalid(m) = e else {
                panic!("{e:?}")
            };
            assert!(m.starts_with(want), "{m}");
        }
        // Not a list of strings: a shape error.
        assert!(matches!(
            exchange("service_account = \"t@p.iam.gserviceaccount.com\"\ndelegates = \"one@p\""),
            Err(KindError::Shape(_))
        ));
    }

    #[test]
    fn config_errors_name_file_line_and_field() {
        let text = r#"
[[route]]
name = "chain"
source = { kind = "impersonate", service_account = "t@p.iam.gserviceaccount.com", audience = "x", delegates = ["mid"] }

[[route]]
name = "exchange"
source = { kind = "gce-metadata", scopes = ["https://www.googleapis.com/auth/cloud-platform"] }
exchange = [
  { kind = "impersonate", service_account = "t@p.iam.gserviceaccount.com", delegates = ["a@p.iam.gserviceaccount.com", "b/c@p"] },
]
"#;
        let e = crate::Config::parse(text, "chain.toml", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("chain.toml") && e.contains("line 2"), "{e}");
        assert!(e.contains("field `source.delegates[0]`"), "{e}");

        let only_second = text.replace(
            "delegates = [\"mid\"]",
            "delegates = [\"mid@p.iam.gserviceaccount.com\"]",
        );
        let e = crate::Config::parse(&only_second, "chain.toml", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("chain.toml") && e.contains("line 6"), "{e}");
        assert!(
            e.contains("exchange[0]") && e.contains("delegates[1]"),
            "{e}"
        );
    }
}
