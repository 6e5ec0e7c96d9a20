//! Binding the listeners and serving them until shutdown.
//!
//! Every listener is bound before any is served, so a port in use fails the start cleanly.
//! TCP listeners bind `[serve] bind`; a frontend with `socket = "…"` gets a unix socket instead,
//! mode 0666 (callers are told apart by `SO_PEERCRED`, and loopback TCP is open to every local
//! user anyway). A stale socket file left by a dead daemon is replaced; a live one is an error.
//! Sockets are removed at shutdown. Each listener's connections are served by [`conn`]: caps
//! per listener and per caller, header-read and idle timeouts, one identification per
//! connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use idbridge_core::SecretString;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Frontend;
use crate::broker::Broker;
use crate::config::{Listen, ServeConfig};
use crate::conn;

/// How long shutdown waits for in-flight requests (a credential load is bounded by the cache's
/// 30-second load timeout; clients have given up long before) before aborting them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Mode of the unix sockets: any local user may connect; the caller policy decides.
const SOCKET_MODE: u32 = 0o666;

/// Where a listener is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket.
    Unix(PathBuf),
}

impl Address {
    /// `http://HOST:PORT` as a client on this host reaches it (a wildcard bind becomes
    /// loopback), or `unix:PATH`.
    pub fn url(&self) -> String {
        match self {
            Address::Tcp(a) => format!("http://{}", client_addr(*a)),
            Address::Unix(p) => format!("unix:{}", p.display()),
        }
    }
}

/// The address a local client uses for a listener on `a`.
fn client_addr(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())
        }
        _ => a,
    }
}

/// One bound listener.
#[derive(Debug, Clone)]
pub struct BoundListener {
    /// What it serves.
    pub frontend: Frontend,
    /// Where.
    pub address: Address,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {what}: {message}")]
pub struct StartError {
    what: String,
    message: String,
}

impl StartError {
    fn new(what: impl Into<String>, e: &std::io::Error) -> Self {
        Self {
            what: what.into(),
            message: e.to_string(),
        }
    }
}

/// A running daemon.
#[derive(Debug)]
pub struct Running {
    listeners: Vec<BoundListener>,
    env: Vec<(&'static str, SecretString)>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    sockets: Vec<PathBuf>,
}

impl Running {
    /// Every listener, in config order (an IMDS IPv6 listener follows its IPv4 one).
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The first TCP address of `frontend`.
    pub fn tcp_addr(&self, frontend: Frontend) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find_map(|l| match (&l.address, l.frontend == frontend) {
                (Address::Tcp(a), true) => Some(client_addr(*a)),
                _ => None,
            })
    }

    /// The client settings of the TCP frontends, each frontend's
    /// ([`crate::frontend::Configured::env`]) in [`crate::frontend::KINDS`] order:
    /// `GCE_METADATA_HOST`, `GCE_METADATA_IP`, `AWS_EC2_METADATA_SERVICE_ENDPOINT`,
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` (the first role) and
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN` (or `…_TOKEN_FILE` when the token comes from a file),
    /// `AZURE_POD_IDENTITY_AUTHORITY_HOST`, `IDENTITY_ENDPOINT`, `IDENTITY_HEADER`. The ECS
    /// token is a secret: write these only where the workloads that may use it can read them.
    pub fn env_pairs(&self) -> &[(&'static str, SecretString)] {
        &self.env
    }

    /// Stops accepting, lets in-flight requests finish (at most [`SHUTDOWN_GRACE`]), and
    /// removes the unix sockets.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let aborts: Vec<_> = self.tasks.iter().map(JoinHandle::abort_handle).collect();
        let drain = async {
            for t in self.tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("in-flight requests did not finish in time; aborting them");
            for a in aborts {
                a.abort();
            }
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Bound {
    fn address(&self) -> Result<Address, std::io::Error> {
        match self {
            Bound::Tcp(l) => l.local_addr().map(Address::Tcp),
            Bound::Unix(_, p) => Ok(Address::Unix(p.clone())),
        }
    }
}

async fn bind(ip: IpAddr, listen: &Listen, what: &str) -> Result<Bound, StartError> {
    match listen {
        Listen::Port(port) => TcpListener::bind((ip, *port))
            .await
            .map(Bound::Tcp)
            .map_err(|e| StartError::new(format!("{what} {}", SocketAddr::new(ip, *port)), &e)),
        Listen::Socket(path) => bind_unix(path)
            .map(|l| Bound::Unix(l, path.clone()))
            .map_err(|e| StartError::new(format!("{what} {}", path.display()), &e)),
    }
}

fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another server is listening on this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    Ok(listener)
}

fn spawn(
    bound: Bound,
    listener: Arc<conn::Listener>,
    router: Router,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    match bound {
        Bound::Tcp(l) => tokio::spawn(conn::serve_tcp(l, listener, router, stop)),
        Bound::Unix(l, _) => tokio::spawn(conn::serve_unix(l, listener, router, stop)),
    }
}

/// Binds every configured listener, serves them, and marks `broker` ready.
pub async fn start(config: &ServeConfig, broker: Arc<Broker>) -> Result<Running, StartError> {
    let ip = config.bind;
    let mut plan: Vec<(Frontend, Bound, Router)> = Vec::new();
    let mut sockets = Vec::new();
    let (tx, rx) = watch::channel(false);
    let result = async {
        for f in &config.frontends {
            let kind = f.kind();
            let b = bind(ip, f.listen(), &kind.listener_name()).await?;
            let first = match &b {
                Bound::Tcp(l) => l.local_addr().ok(),
                Bound::Unix(..) => None,
            };
            let router = f.router_until(Arc::clone(&broker), rx.clone());
            plan.push((kind.frontend(), b, router.clone()));
            for (addr, what) in f.more_listeners(first) {
                let b = bind(addr.ip(), &Listen::Port(addr.port()), &what).await?;
                plan.push((kind.frontend(), b, router.clone()));
            }
        }
        Ok::<(), StartError>(())
    }
    .await;
    for (_, b, _) in &plan {
        if let Bound::Unix(_, p) = b {
            sockets.push(p.clone());
        }
    }
    if let Err(e) = result {
        for s in &sockets {
            let _ = std::fs::remove_file(s);
        }
        return Err(e);
    }
    let fds = conn::fd_limit();
    let limits = config.connections.fit(plan.len(), fds);
    if limits != config.connections {
        tracing::warn!(
            fd_limit = fds,
            max_per_listener = limits.max_per_listener,
            max_per_caller = limits.max_per_caller,
            "connection caps lowered to fit the open-file limit"
        );
    }
    let mut listeners = Vec::new();
    let mut tasks = Vec::new();
    for (frontend, bound, router) in plan {
        let address = bound
            .address()
            .map_err(|e| StartError::new(frontend.title(), &e))?;
        listeners.push(BoundListener { frontend, address });
        let ctx = conn::Listener::new(frontend, limits.clone(), Arc::clone(&broker));
        tasks.push(spawn(bound, ctx, router, rx.clone()));
    }
    let running = Running {
        env: env_pairs(config, &listeners),
        listeners,
        shutdown: tx,
        tasks,
        sockets,
    };
    broker.set_ready();
    for l in &running.listeners {
        tracing::info!(frontend = l.frontend.as_str(), url = %l.address.url(), "listening");
    }
    Ok(running)
}

fn env_pairs(
    config: &ServeConfig,
    listeners: &[BoundListener],
) -> Vec<(&'static str, SecretString)> {
    let tcp = |f: Frontend| {
        listeners
            .iter()
            .find_map(|l| match (&l.address, l.frontend == f) {
                (Address::Tcp(a), true) => Some(client_addr(*a)),
                _ => None,
            })
    };
    let mut out = Vec::new();
    for f in &config.frontends {
        if let Some(a) = tcp(f.kind().frontend()) {
            out.extend(f.env(&format!("http://{a}")));
        }
    }
    out
}
