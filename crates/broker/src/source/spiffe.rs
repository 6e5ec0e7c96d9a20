//! Source `spiffe`: a JWT-SVID (or, with `svid = "x509"`, an X.509-SVID and its key) from the
//! SPIFFE Workload API (SPIRE agent), through the `spiffe` crate. The socket is the route's `socket`, else `SPIFFE_ENDPOINT_SOCKET` from idbridge's
//! environment (`unix:///path` or `tcp://IP:port`).

use idbridge_core::Credential;
use spiffe::{SpiffeId, WorkloadApiClient};
use tokio::time::Instant;

use serde::Deserialize;

use crate::step::{Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::token::id_token_hop;
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport, Overrides};

/// The hop.
pub const HOP: Hop = Hop::new(
    "spiffe",
    "SPIFFE_ENDPOINT_SOCKET (or the source's `socket`)",
);

/// `source = { kind = "spiffe", … }`: `svid` (`jwt`, default, or `x509`), `audience` (JWT-SVIDs
/// only, required for them), `spiffe_id` (default: the workload's first identity), `socket`
/// (default `SPIFFE_ENDPOINT_SOCKET`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spiffe {
    #[serde(default)]
    svid: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    spiffe_id: Option<String>,
    #[serde(default)]
    socket: Option<String>,
}

impl Spiffe {
    /// Reads `source = { kind = "spiffe", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Spiffe = p.table(table)?;
        match (raw.svid.as_deref(), raw.audience.as_deref()) {
            (None | Some("jwt"), None) => {
                return Err(p.invalid("audience", "is required for a JWT-SVID"));
            }
            (None | Some("jwt"), Some("")) => return Err(p.invalid("audience", "is empty")),
            (None | Some("jwt"), Some(_)) | (Some("x509"), None) => {}
            (Some("x509"), Some(_)) => {
                return Err(p.invalid("audience", "does not apply to an X.509-SVID"));
            }
            (Some(other), _) => {
                return Err(p.invalid("svid", format!("{other:?} is not `jwt` or `x509`")));
            }
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
        if self.x509() {
            Yields::X509
        } else {
            Yields::IdToken
        }
    }

    fn describe(&self) -> String {
        match (&self.audience, &self.spiffe_id) {
            (Some(a), _) => format!("JWT-SVID for {a}"),
            (None, Some(id)) => format!("X.509-SVID {id}"),
            (None, None) => "X.509-SVID".to_owned(),
        }
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            audience: self.audience.as_deref(),
            ..Facts::default()
        }
    }

    fn with_overrides(&self, overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        if self.x509() {
            return Some(Err(
                "a SPIFFE source with svid = \"x509\" yields certificates; audience/scopes do not apply"
                    .to_owned(),
            ));
        }
        Some(match &overrides.audience {
            Some(a) => Ok(Box::new(Spiffe {
                audience: Some(a.clone()),
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
        if self.x509() {
            return Box::pin(fetch_x509(
                ctx,
                self.spiffe_id.as_deref(),
                self.socket.as_deref(),
                hops,
            ));
        }
        Box::pin(fetch(
            ctx,
            self.audience.as_deref().unwrap_or_default(),
            self.spiffe_id.as_deref(),
            self.socket.as_deref(),
            hops,
        ))
    }
}

impl Spiffe {
    fn x509(&self) -> bool {
        self.svid.as_deref() == Some("x509")
    }
}

/// The Workload API socket and a client connected to it.
async fn connect(
    ctx: &Context,
    socket: Option<&str>,
) -> Result<(String, WorkloadApiClient), BrokerError> {
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
    let client = WorkloadApiClient::connect_to(&socket).await.map_err(|e| {
        BrokerError::new(
            ErrorKind::Transient,
            HOP,
            format!("cannot connect to the Workload API at {socket}: {e}"),
        )
    })?;
    Ok((socket, client))
}

/// The workload API's error, classified.
fn api_error(call: &str, socket: &str, e: impl std::fmt::Display) -> BrokerError {
    let msg = e.to_string();
    let kind = if msg.contains("PermissionDenied") || msg.contains("permission") {
        ErrorKind::Rejected
    } else {
        ErrorKind::Transient
    };
    BrokerError::new(
        kind,
        HOP,
        format!("{call} at {socket}: {}", msg.replace('\n', " ")),
    )
}

/// Fetches the workload's X.509-SVID (`spiffe_id`'s, else the first) and its key.
async fn fetch_x509(
    ctx: &Context,
    spiffe_id: Option<&str>,
    socket: Option<&str>,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    let (socket, client) = connect(ctx, socket).await?;
    let svids = client
        .fetch_all_x509_svids()
        .await
        .map_err(|e| api_error("FetchX509SVID", &socket, e))?;
    let svid = match spiffe_id {
        Some(id) => svids.iter().find(|s| s.spiffe_id().to_string() == id),
        None => svids.first(),
    }
    .ok_or_else(|| {
        BrokerError::new(
            ErrorKind::Rejected,
            HOP,
            format!(
                "FetchX509SVID at {socket}: no X.509-SVID{} for this workload",
                spiffe_id.map(|i| format!(" {i}")).unwrap_or_default()
            ),
        )
    })?;
    let mut chain = String::new();
    for cert in svid.cert_chain() {
        chain.push_str(&crate::source::x509_file::pem_block(
            "CERTIFICATE",
            cert.as_ref(),
        ));
    }
    let key = crate::source::x509_file::pem_block("PRIVATE KEY", svid.private_key().as_ref());
    let cred = crate::source::x509_file::credential_from_pem(chain, &key).map_err(|m| {
        BrokerError::unparsable(
            HOP,
            format!("the X.509-SVID from {socket} is unusable: {m}"),
        )
    })?;
    hops.push(HopReport::new(
        HOP,
        socket,
        format!("X.509-SVID: {}", svid.spiffe_id()),
        Some(cred.expires_at),
        started,
    ));
    Ok(Credential::X509(cred))
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
    let (socket, client) = connect(ctx, socket).await?;
    let token = client
        .fetch_jwt_token([audience], id.as_ref())
        .await
        .map_err(|e| api_error("FetchJWTSVID", &socket, e))?;
    let token = zeroize::Zeroizing::new(token);
    id_token_hop(
        HOP,
        &token,
        socket,
        |_| "JWT-SVID".to_owned(),
        started,
        hops,
    )
}
