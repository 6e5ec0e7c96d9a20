//! A local emulator of the cloud endpoints idbridge talks to.
//!
//! It validates like the real clouds — JWT signatures against the issuer's keys, claims, SigV4
//! signatures, trust policies and IAM bindings — and answers with each cloud's status codes and
//! error bodies. Three listeners, each an axum router (drive them with `tower::ServiceExt::oneshot`
//! in tests, or bind them with [`serve`]):
//!
//! | listener | module | endpoints |
//! |---|---|---|
//! | AWS STS | [`aws_sts`] | `AssumeRoleWithWebIdentity`, `GetCallerIdentity` (POST form or GET query) |
//! | Google APIs | [`google`] | OAuth2 `/token`, IAM Credentials `…:generateIdToken`/`:generateAccessToken`, `/oauth2/v1/certs`, `/oauth2/v3/certs`, OIDC discovery, emulator control under `/_emulator/` |
//! | GCE metadata | [`gce_metadata`] | `/computeMetadata/v1/…` of the world's VM |
//!
//! The world (what exists) comes from a TOML file or the built-in world; see [`world`].
#![warn(missing_docs, unreachable_pub)]

pub mod aws_sts;
pub mod gce_metadata;
pub mod google;
pub mod keys;
pub mod sigv4;
pub mod state;
pub mod token_verify;
pub mod world;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use state::{Emulator, Endpoints};
use tokio::net::TcpListener;
use tokio::sync::watch;
pub use world::World;

/// Ports to bind (0 = any free port).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ports {
    /// AWS STS.
    pub aws_sts: u16,
    /// Google APIs.
    pub google: u16,
    /// GCE metadata.
    pub metadata: u16,
}

/// A running emulator.
#[derive(Debug)]
pub struct Running {
    /// The state, for counters and direct inspection.
    pub emulator: Arc<Emulator>,
    /// AWS STS address.
    pub aws_sts: SocketAddr,
    /// Google APIs address.
    pub google: SocketAddr,
    /// Metadata server address.
    pub metadata: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// `KEY=VALUE` pairs that point the SDKs and idbridge at this emulator.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        let g = format!("http://{}", self.google);
        vec![
            (
                "AWS_ENDPOINT_URL_STS".into(),
                format!("http://{}", self.aws_sts),
            ),
            ("GCE_METADATA_HOST".into(), self.metadata.to_string()),
            ("GCE_METADATA_IP".into(), self.metadata.to_string()),
            ("IDBRIDGE_GOOGLE_OAUTH2_URL".into(), format!("{g}/token")),
            ("IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL".into(), g.clone()),
            (
                "IDBRIDGE_GOOGLE_CERTS_URL".into(),
                format!("{g}/oauth2/v3/certs"),
            ),
            ("IDBRIDGE_EMULATOR_GOOGLE_URL".into(), g),
        ]
    }

    /// Stops every listener and waits for them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds the three listeners on `ip` and serves until [`Running::shutdown`].
pub async fn serve(emulator: Arc<Emulator>, ip: IpAddr, ports: Ports) -> std::io::Result<Running> {
    let aws = TcpListener::bind((ip, ports.aws_sts)).await?;
    let google = TcpListener::bind((ip, ports.google)).await?;
    let metadata = TcpListener::bind((ip, ports.metadata)).await?;
    let (aws_addr, google_addr, md_addr) = (
        aws.local_addr()?,
        google.local_addr()?,
        metadata.local_addr()?,
    );
    if let Ok(mut e) = emulator.endpoints.write() {
        *e = Endpoints {
            aws_sts: format!("http://{aws_addr}"),
            google: format!("http://{google_addr}"),
            metadata: format!("http://{md_addr}"),
        };
    }
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (listener, router) in [
        (aws, aws_sts::router(emulator.clone())),
        (google, google::router(emulator.clone())),
        (metadata, gce_metadata::router(emulator.clone())),
    ] {
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await;
        }));
    }
    Ok(Running {
        emulator,
        aws_sts: aws_addr,
        google: google_addr,
        metadata: md_addr,
        shutdown: tx,
        tasks,
    })
}
