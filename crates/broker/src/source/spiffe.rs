//! Source `spiffe`: a JWT-SVID from the SPIFFE Workload API (SPIRE agent), through the `spiffe`
//! crate. The socket is the route's `socket`, else `SPIFFE_ENDPOINT_SOCKET` from idbridge's
//! environment (`unix:///path` or `tcp://IP:port`).

use idbridge_core::Credential;
use spiffe::{SpiffeId, WorkloadApiClient};
use tokio::time::Instant;

use crate::{BrokerError, Context, ErrorKind, HopReport};

const HOP: &str = "spiffe";

/// Fetches a JWT-SVID for `audience`.
pub async fn fetch(
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
    let (tok, parsed) = super::id_token_from_jwt(HOP, &token)?;
    hops.push(HopReport::new(
        HOP,
        socket,
        format!("JWT-SVID: {}", super::describe_claims(&parsed)),
        Some(tok.expires_at),
        started,
    ));
    Ok(Credential::IdToken(tok))
}
