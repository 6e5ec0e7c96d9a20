//! Source `spiffe`: a JWT-SVID from the SPIFFE Workload API (SPIRE agent), through the `spiffe`
//! crate. The socket is the route's `socket`, else `SPIFFE_ENDPOINT_SOCKET` from idbridge's
//! environment (`unix:///path` or `tcp://IP:port`).

use idbridge_core::Credential;
use spiffe::{SpiffeId, WorkloadApiClient};
use tokio::time::Instant;

use serde::Deserialize;

use crate::step::{Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::token::{describe_claims, id_token_from_jwt};
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport, Overrides};

/// The hop.
pub const HOP: Hop = Hop::new(
    "spiffe",
    "SPIFFE_ENDPOINT_SOCKET (or the source's `socket`)",
);

/// `source = { kind = "spiffe", … }`: `audience`, `spiffe_id` (default: the workload's first
/// identity), `socket` (default `SPIFFE_ENDPOINT_SOCKET`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spiffe {
    audience: String,
    #[serde(default)]
    spiffe_id: Option<String>,
    #[serde(default)]
    socket: Option<String>,
}

impl Spiffe {
    /// Reads `source = { kind = "spiffe", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Spiffe = p.table(table)?;
        if raw.audience.is_empty() {
            return Err(p.invalid("audience", "is empty"));
        }
        if let Some(id) = &raw.spiffe_id
            && !id.starts_with("spiffe://")
        {
            return Err(p.invalid("spiffe_id", "must start with spiffe://"));
        }
        Ok(Box::new(raw))
    }
}

impl Step for Spiffe {
    fn kind(&self) -> &'static str {
        "spiffe"
    }

    fn yields(&self) -> Yields {
        Yields::IdToken
    }

    fn describe(&self) -> String {
        format!("JWT-SVID for {}", self.audience)
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            audience: Some(&self.audience),
            ..Facts::default()
        }
    }

    fn with_overrides(&self, overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        Some(match &overrides.audience {
            Some(a) => Ok(Box::new(Spiffe {
                audience: a.clone(),
                ..self.clone()
            })),
            None => Err("a SPIFFE source yields JWT-SVIDs; scopes do not apply".to_owned()),
        })
    }

    fn run<'a>(
        &'a self,
        _input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(fetch(
            ctx,
            &self.audience,
            self.spiffe_id.as_deref(),
            self.socket.as_deref(),
            hops,
        ))
    }
}

/// Fetches a JWT-SVID for `audience`.
async fn fetch(
    ctx: &Context,
    audience: &str,
    spiffe_id: Option<&str>,
    socket: Option<&str>,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    let socket = socket
        .map(str::to_owned)
        .or_else(|| ctx.env.get(idbridge_core::env::SPIFFE_ENDPOINT_SOCKET))
        .ok_or_else(|| {
            BrokerError::new(
                ErrorKind::NotConfigured,
                HOP,
                "no Workload API socket: set `socket` or SPIFFE_ENDPOINT_SOCKET",
            )
        })?;
    let id = spiffe_id
        .map(|s| {
            SpiffeId::new(s).map_err(|e| {
                BrokerError::new(
                    ErrorKind::InvalidConfiguration,
                    HOP,
                    format!("bad spiffe_id {s:?}: {e}"),
                )
            })
        })
        .transpose()?;
    let client = WorkloadApiClient::connect_to(&socket).await.map_err(|e| {
        BrokerError::new(
            ErrorKind::Transient,
            HOP,
            format!("cannot connect to the Workload API at {socket}: {e}"),
        )
    })?;
    let token = client
        .fetch_jwt_token([audience], id.as_ref())
        .await
        .map_err(|e| {
            let msg = e.to_string();
            let kind = if msg.contains("PermissionDenied") || msg.contains("permission") {
                ErrorKind::Rejected
            } else {
                ErrorKind::Transient
            };
            BrokerError::new(
                kind,
                HOP,
                format!("FetchJWTSVID at {socket}: {}", msg.replace('\n', " ")),
            )
        })?;
    let token = zeroize::Zeroizing::new(token);
    let (tok, parsed) = id_token_from_jwt(HOP, &token)?;
    hops.push(HopReport::new(
        HOP,
        socket,
        format!("JWT-SVID: {}", describe_claims(&parsed)),
        Some(tok.expires_at),
        started,
    ));
    Ok(Credential::IdToken(tok))
}
