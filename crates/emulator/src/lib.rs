//! A local emulator of the cloud endpoints idbridge talks to.
//!
//! It validates like the real clouds — JWT signatures against the issuer's keys, claims, SigV4
//! signatures, trust policies and IAM bindings — and answers with each cloud's status codes and
//! error bodies. TCP listeners, each an axum router (drive them with `tower::ServiceExt::oneshot`
//! in tests, or bind them with [`serve`]):
//!
//! | listener | module | endpoints |
//! |---|---|---|
//! | AWS STS | [`aws_sts`] | `AssumeRoleWithWebIdentity`, `GetCallerIdentity` (POST form or GET query) |
//! | Google APIs | [`google`] | OAuth2 `/token`, STS `/v1/token` (token exchange), IAM Credentials `…:generateIdToken`/`:generateAccessToken`, `/oauth2/v1/certs`, `/oauth2/v3/certs`, OIDC discovery, emulator control under `/_emulator/` |
//! | GCE metadata | [`gce_metadata`] | `/computeMetadata/v1/…` of the world's VM |
//! | EC2 IMDSv2 | [`aws_instance`] | `/latest/api/token`, `/latest/meta-data/…` of the world's EC2 instance |
//! | ECS credentials | [`aws_instance`] | the `[[ecs_task]]` container credential endpoints |
//! | SPIFFE OIDC | [`spiffe`] | discovery and JWKS of the JWT-SVID issuer |
//! | IAM Roles Anywhere | [`roles_anywhere`] | `POST /sessions` (`CreateSession`, certificate-signed) |
//! | AWS IAM | [`aws_outbound`] | the outbound identity federation switch; the outbound issuers' discovery and JWKS |
//! | Kubernetes API | [`kubernetes`] | pods (list, get, watch by field selector), namespaces, service accounts, TokenRequest, the cluster issuer's OIDC discovery |
//!
//! plus, when the world has a `[spiffe]` section, the SPIFFE Workload API (gRPC) on a unix
//! socket ([`spiffe::serve_unix`]).
//!
//! The world (what exists) comes from a TOML file or the built-in world; see [`world`]. Every
//! TCP listener can fail on purpose — errors, throttling, hangs, resets, truncated and garbage
//! answers, latency, outages — as the world's `[chaos]` section or `PUT /_emulator/chaos` says
//! ([`chaos`]).
#![warn(missing_docs, unreachable_pub)]

pub mod aws_instance;
pub mod aws_outbound;
pub mod aws_sts;
pub mod chaos;
pub mod expiring;
pub mod gce_metadata;
pub mod google;
pub mod keys;
pub mod kubernetes;
pub mod roles_anywhere;
pub mod sigv4;
pub mod spiffe;
pub mod state;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub mod token_verify;
pub mod world;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
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
    /// EC2 IMDSv2.
    pub imds: u16,
    /// ECS container credentials.
    pub ecs: u16,
    /// OIDC discovery of the SPIFFE JWT issuer.
    pub spiffe_oidc: u16,
    /// IAM Roles Anywhere.
    pub roles_anywhere: u16,
    /// AWS IAM (outbound federation).
    pub aws_iam: u16,
    /// The Kubernetes API server.
    pub kubernetes: u16,
}

/// Options of [`serve_with`] beyond the TCP ports.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Where to create the SPIFFE Workload API socket (when the world has `[spiffe]`); default:
    /// `spire-agent.sock` in a fresh private temp directory, removed at shutdown.
    pub spiffe_socket: Option<PathBuf>,
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
    /// EC2 IMDSv2 address.
    pub imds: SocketAddr,
    /// ECS container credentials address.
    pub ecs: SocketAddr,
    /// SPIFFE issuer OIDC discovery address.
    pub spiffe_oidc: SocketAddr,
    /// IAM Roles Anywhere address.
    pub roles_anywhere: SocketAddr,
    /// AWS IAM address.
    pub aws_iam: SocketAddr,
    /// Kubernetes API server address.
    pub kubernetes: SocketAddr,
    /// The SPIFFE Workload API socket (absolute), when the world has `[spiffe]`.
    pub spiffe_socket: Option<PathBuf>,
    /// The default socket's temp directory (removed when dropped).
    spiffe_dir: Option<tempfile::TempDir>,
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
            ("IDBRIDGE_GOOGLE_STS_URL".into(), format!("{g}/v1/token")),
            (
                "IDBRIDGE_GOOGLE_CERTS_URL".into(),
                format!("{g}/oauth2/v3/certs"),
            ),
            ("IDBRIDGE_EMULATOR_GOOGLE_URL".into(), g),
            (
                "AWS_ENDPOINT_URL_ROLESANYWHERE".into(),
                format!("http://{}", self.roles_anywhere),
            ),
            (
                "AWS_ENDPOINT_URL_IAM".into(),
                format!("http://{}", self.aws_iam),
            ),
        ]
        .into_iter()
        .chain(self.instance_env_pairs())
        .collect()
    }

    /// The IMDS, ECS and SPIFFE pairs, for what the world declares.
    fn instance_env_pairs(&self) -> Vec<(String, String)> {
        let world = &self.emulator.world;
        let mut out = Vec::new();
        if world.ec2_instance.is_some() {
            out.push((
                "AWS_EC2_METADATA_SERVICE_ENDPOINT".into(),
                format!("http://{}/", self.imds),
            ));
        }
        if let Some(task) = world.ecs_tasks.first() {
            out.push((
                "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
                format!("http://{}{}", self.ecs, task.path),
            ));
            out.push((
                "AWS_CONTAINER_AUTHORIZATION_TOKEN".into(),
                task.authorization_token.expose_secret().to_owned(),
            ));
        }
        if let Some(socket) = &self.spiffe_socket {
            out.push((
                "SPIFFE_ENDPOINT_SOCKET".into(),
                format!("unix://{}", socket.display()),
            ));
        }
        if world.spiffe.is_some() {
            out.push((
                "IDBRIDGE_EMULATOR_SPIFFE_OIDC_URL".into(),
                format!("http://{}", self.spiffe_oidc),
            ));
        }
        if world.kubernetes.is_some() {
            out.push((
                "IDBRIDGE_EMULATOR_KUBERNETES_URL".into(),
                format!("http://{}", self.kubernetes),
            ));
        }
        out
    }

    /// Stops every listener and waits for them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.emulator.chaos.release_hangs();
        self.emulator.kubernetes.close_watches();
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(socket) = &self.spiffe_socket {
            let _ = std::fs::remove_file(socket);
        }
        drop(self.spiffe_dir);
    }
}

/// Binds the listeners on `ip` (and the Workload API socket) and serves until
/// [`Running::shutdown`].
pub async fn serve(emulator: Arc<Emulator>, ip: IpAddr, ports: Ports) -> std::io::Result<Running> {
    serve_with(emulator, ip, ports, ServeOptions::default()).await
}

/// [`serve`] with [`ServeOptions`].
pub async fn serve_with(
    emulator: Arc<Emulator>,
    ip: IpAddr,
    ports: Ports,
    options: ServeOptions,
) -> std::io::Result<Running> {
    let aws = TcpListener::bind((ip, ports.aws_sts)).await?;
    let google = TcpListener::bind((ip, ports.google)).await?;
    let metadata = TcpListener::bind((ip, ports.metadata)).await?;
    let imds = TcpListener::bind((ip, ports.imds)).await?;
    let ecs = TcpListener::bind((ip, ports.ecs)).await?;
    let spiffe_oidc = TcpListener::bind((ip, ports.spiffe_oidc)).await?;
    let roles_anywhere = TcpListener::bind((ip, ports.roles_anywhere)).await?;
    let roles_anywhere_addr = roles_anywhere.local_addr()?;
    let aws_iam = TcpListener::bind((ip, ports.aws_iam)).await?;
    let aws_iam_addr = aws_iam.local_addr()?;
    let (imds_addr, ecs_addr, spiffe_oidc_addr) = (
        imds.local_addr()?,
        ecs.local_addr()?,
        spiffe_oidc.local_addr()?,
    );
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
            aws_iam: format!("http://{aws_iam_addr}"),
        };
    }
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    use chaos::Listener;
    // The Kubernetes API server.
    let kubernetes = TcpListener::bind((ip, ports.kubernetes)).await?;
    let kubernetes_addr = kubernetes.local_addr()?;
    let kubernetes_router = kubernetes::router(emulator.clone());
    for (listener, router, name) in [
        (aws, aws_sts::router(emulator.clone()), Listener::AwsSts),
        (google, google::router(emulator.clone()), Listener::Google),
        (
            metadata,
            gce_metadata::router(emulator.clone()),
            Listener::Metadata,
        ),
        (
            imds,
            aws_instance::imds_router(emulator.clone()),
            Listener::Imds,
        ),
        (
            ecs,
            aws_instance::ecs_router(emulator.clone()),
            Listener::Ecs,
        ),
        (
            spiffe_oidc,
            spiffe::oidc_router(emulator.clone()),
            Listener::SpiffeOidc,
        ),
        (
            roles_anywhere,
            roles_anywhere::router(emulator.clone()),
            Listener::RolesAnywhere,
        ),
        (
            aws_iam,
            aws_outbound::iam_router(emulator.clone()),
            Listener::AwsIam,
        ),
        (kubernetes, kubernetes_router, Listener::Kubernetes),
    ] {
        let router = chaos::layer(router, emulator.clone(), name);
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await;
        }));
    }
    let (mut spiffe_socket, mut spiffe_dir) = (None, None);
    if emulator.world.spiffe.is_some() {
        let path = match options.spiffe_socket {
            Some(p) => std::path::absolute(p)?,
            None => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("idbridge-emulator-{}-", std::process::id()))
                    .tempdir()?;
                let path = std::path::absolute(dir.path().join(spiffe::SOCKET_FILE_NAME))?;
                spiffe_dir = Some(dir);
                path
            }
        };
        match spiffe::serve_unix(emulator.clone(), &path, rx) {
            Ok(task) => tasks.push(task),
            Err(e) => {
                let _ = tx.send(true);
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("SPIFFE Workload API socket {}: {e}", path.display()),
                ));
            }
        }
        spiffe_socket = Some(path);
    }
    Ok(Running {
        emulator,
        aws_sts: aws_addr,
        google: google_addr,
        metadata: md_addr,
        imds: imds_addr,
        ecs: ecs_addr,
        spiffe_oidc: spiffe_oidc_addr,
        roles_anywhere: roles_anywhere_addr,
        aws_iam: aws_iam_addr,
        kubernetes: kubernetes_addr,
        spiffe_socket,
        spiffe_dir,
        shutdown: tx,
        tasks,
    })
}

/// Client-supplied text as messages quote it: at most `max` characters, then `…` when cut.
pub(crate) fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}
