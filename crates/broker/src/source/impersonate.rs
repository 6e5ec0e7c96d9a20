//! Source `impersonate`: a caller source, then the `impersonate` exchange
//! ([`crate::exchange::iam_credentials`]) as that caller — one step, so a route written with it
//! reads (and reports) as before.
//!
//! The caller is `caller`, a source yielding a Google access token; by default the metadata
//! server's `default` account with the cloud-platform scope.

use idbridge_core::Credential;
use serde::Deserialize;

pub use crate::exchange::iam_credentials::CLOUD_PLATFORM;
use crate::exchange::iam_credentials::{HOP, Impersonate, Target};
pub use crate::proof::tokeninfo;
use crate::source::gce_metadata::GceMetadata;
use crate::step::{Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::values::Mint;
use crate::{BrokerError, Context, ErrorKind, HopReport, Overrides};

/// `source = { kind = "impersonate", … }`: `service_account`, `audience` or `scopes`,
/// `delegates`, `include_email` (default true), `lifetime_seconds`; `caller` is the source of
/// the caller's access token (default: the metadata server's token).
#[derive(Debug, Clone)]
pub struct ImpersonateSource {
    caller: Box<dyn Step>,
    exchange: Impersonate,
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
    caller: Option<toml::Value>,
}

fn yes() -> bool {
    true
}

impl ImpersonateSource {
    /// Reads `source = { kind = "impersonate", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Raw = p.table(table)?;
        let mint = Mint::exactly_one(
            raw.audience,
            raw.scopes,
            &p.field("audience"),
            &p.field("scopes"),
        )
        .map_err(KindError::Invalid)?;
        let target = Target {
            service_account: raw.service_account,
            delegates: raw.delegates,
            include_email: raw.include_email,
            lifetime_seconds: raw.lifetime_seconds,
        };
        let exchange = Impersonate::new(target, mint, None, p)?;
        let caller: Box<dyn Step> = match raw.caller {
            None => Box::new(GceMetadata::default_caller()),
            Some(table) => {
                let at = p.field("caller");
                let caller = p.registry.source(table, &at, p.base)?;
                if caller.yields() != Yields::AccessToken {
                    return Err(p.invalid("caller", "must yield an access token (set `scopes`)"));
                }
                caller
            }
        };
        Ok(Box::new(ImpersonateSource { caller, exchange }))
    }

    async fn fetch(
        &self,
        input: Input<'_>,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let caller = self.caller.run(input, ctx, hops).await?;
        let Credential::GoogleAccessToken(caller) = caller else {
            return Err(BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                "the caller source must yield a Google access token",
            ));
        };
        self.exchange.as_caller(ctx, &caller, hops).await
    }
}

impl Step for ImpersonateSource {
    fn kind(&self) -> &'static str {
        "impersonate"
    }

    fn yields(&self) -> Yields {
        self.exchange.mint().yields()
    }

    fn describe(&self) -> String {
        self.exchange.describe_target()
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            caller: Some(self.caller.as_ref()),
            google_id_token: true,
            ..self.exchange.facts()
        }
    }

    fn with_overrides(&self, overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        let mint = Mint::overridden(overrides)?;
        Some(Ok(Box::new(ImpersonateSource {
            caller: self.caller.clone(),
            exchange: self.exchange.with_mint(mint),
        })))
    }

    fn run<'a>(
        &'a self,
        input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(self.fetch(input, ctx, hops))
    }
}
