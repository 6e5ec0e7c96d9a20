//! Serving one listener's connections so that no local neighbour can starve the others.
//!
//! Every workload on the host depends on the daemon, and any local user can connect to it, so
//! each listener runs its own accept loop (hyper's HTTP/1.1 server under it) with:
//!
//! * **Identification once per connection.** The caller behind a connection (its uid) is found
//!   when it is accepted — `SO_PEERCRED` for unix sockets, the kernel's socket lookup by exact
//!   address pair for TCP ([`crate::caller::PeerResolver`]) — and carried by every request of
//!   the connection as [`Peer::Identified`]. No request reads the socket tables.
//! * **A cap per listener and per caller.** At most [`ConnectionLimits::max_per_listener`]
//!   open connections, and at most [`ConnectionLimits::max_per_caller`] of them from one uid
//!   (unidentified callers share one budget). A connection over either is *shed*: it gets a
//!   canned `503` (written without waiting; never read) and is closed at once. So one user
//!   holding connections open uses up its own share, and every other user is still served.
//! * **A header-read timeout.** Once the first byte of a request head has arrived, the whole
//!   head must follow within [`ConnectionLimits::header_read_timeout`] (slowloris); the same
//!   clock runs for a request body the handler did not read.
//! * **An idle timeout.** A connection with no request in flight and nothing received is closed
//!   after [`ConnectionLimits::idle_timeout`]: a fresh connection that sends nothing, or a
//!   keep-alive connection nobody reuses. Clients reconnect transparently.
//! * **Bounded request heads.** hyper's read buffer is capped at twice
//!   [`crate::http::MAX_HEADER_BYTES`], so a connection cannot make the daemon buffer more.
//! * **Accept errors** (`EMFILE` when the fd limit is reached) are logged and counted, and the
//!   loop pauses [`ACCEPT_ERROR_PAUSE`] instead of spinning.
//!
//! Every shed and every timed-out connection is counted in the metrics
//! (`idbridge_serve_connections_shed_total`, `idbridge_serve_connections_closed_total`) and
//! logged: each at debug, and at most one warning per listener every [`SHED_WARN_INTERVAL`]
//! with the number shed meanwhile, so a flood cannot flood the log too.
//!
//! At start-up [`raise_fd_limit`] lifts `RLIMIT_NOFILE`'s soft limit to the hard limit
//! (systemd's default soft limit is 1024), and [`ConnectionLimits::fit`] lowers the caps if the
//! listeners' caps together would still not fit in it.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::Service as _;

use crate::Frontend;
use crate::broker::Broker;
use crate::caller::{Caller, Peer};

/// Default cap on open connections per listener. Metadata clients open one connection per
/// request or keep one alive per process; a thousand is far above a busy host's need and, with
/// the fd limit raised, far below what the process can hold.
pub const DEFAULT_MAX_PER_LISTENER: usize = 1024;

/// Default cap on one caller's (uid's) open connections per listener: a quarter of the
/// listener's, so at least three other users are served however many one user holds.
pub const DEFAULT_MAX_PER_CALLER: usize = DEFAULT_MAX_PER_LISTENER / 4;

/// Default header-read timeout. A local client writes its request head in one go; ten seconds
/// is generous for a loaded host and short enough that slowloris connections do not pile up.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default idle timeout. Below the keep-alive timeouts clients assume (Go 90 s, urllib3
/// reconnects on its own), long enough that a client polling every few seconds keeps its
/// connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (typically `EMFILE`), so the loop does not spin while the
/// process is out of descriptors; connections in flight finish and free some meanwhile.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// At most one warning per listener this often about shed connections (each is also logged at
/// debug and counted).
pub const SHED_WARN_INTERVAL: Duration = Duration::from_secs(5);

/// Descriptors kept free of the connection caps for everything else the process opens
/// (upstream connections, files, the netlink socket, the runtime's own).
pub const RESERVED_FDS: u64 = 256;

/// The answer to a shed connection. Written with one non-blocking write and never read.
const SHED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 21\r\nConnection: close\r\nRetry-After: 1\r\n\r\ntoo many connections\n";

/// Connection limits of every listener (`[serve.connections]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections per listener.
    pub max_per_listener: usize,
    /// Open connections per listener from one caller uid.
    pub max_per_caller: usize,
    /// Time from a request head's first byte to its end.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in flight and nothing received.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_per_listener: DEFAULT_MAX_PER_LISTENER,
            max_per_caller: DEFAULT_MAX_PER_CALLER,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl ConnectionLimits {
    /// These limits lowered, if need be, so that `listeners` listeners at their cap fit in
    /// `fd_limit` descriptors with [`RESERVED_FDS`] to spare.
    pub fn fit(&self, listeners: usize, fd_limit: u64) -> ConnectionLimits {
        let budget = fd_limit.saturating_sub(RESERVED_FDS).max(8);
        let per_listener = usize::try_from(budget / u64::try_from(listeners.max(1)).unwrap_or(1))
            .unwrap_or(usize::MAX)
            .max(4);
        if per_listener >= self.max_per_listener {
            return self.clone();
        }
        ConnectionLimits {
            max_per_listener: per_listener,
            max_per_caller: self.max_per_caller.min(per_listener.div_ceil(4).max(1)),
            ..self.clone()
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force after.
pub fn raise_fd_limit() -> io::Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft >= hard {
        return Ok(soft);
    }
    match rlimit::increase_nofile_limit(hard) {
        Ok(now) => {
            tracing::info!(from = soft, to = now, "raised the open-file limit");
            Ok(now)
        }
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
            Ok(soft)
        }
    }
}

/// The soft `RLIMIT_NOFILE` in force (1024 when it cannot be read).
pub fn fd_limit() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(soft, _)| soft)
}

/// Why a connection was shed or closed; the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Shed: the listener was at [`ConnectionLimits::max_per_listener`].
    ListenerCap,
    /// Shed: its caller was at [`ConnectionLimits::max_per_caller`].
    CallerCap,
    /// Closed: no request for [`ConnectionLimits::idle_timeout`].
    Idle,
    /// Closed: a request head (or unread body) took over
    /// [`ConnectionLimits::header_read_timeout`].
    HeaderRead,
}

impl Reason {
    /// `listener_cap`, `caller_cap`, `idle`, `header_read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ListenerCap => "listener_cap",
            Reason::CallerCap => "caller_cap",
            Reason::Idle => "idle",
            Reason::HeaderRead => "header_read",
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Connection counters of every listener, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    open: Mutex<HashMap<Frontend, u64>>,
    accepted: Mutex<HashMap<Frontend, u64>>,
    ended: Mutex<HashMap<(Frontend, Reason), u64>>,
    accept_errors: Mutex<HashMap<Frontend, u64>>,
}

impl ConnectionMetrics {
    fn add(map: &Mutex<HashMap<Frontend, u64>>, f: Frontend, delta: i64) {
        let mut m = lock(map);
        let v = m.entry(f).or_default();
        *v = v.saturating_add_signed(delta);
    }

    /// Connections shed or closed by `frontend`'s listeners for `reason`.
    pub fn ended(&self, frontend: Frontend, reason: Reason) -> u64 {
        lock(&self.ended)
            .get(&(frontend, reason))
            .copied()
            .unwrap_or(0)
    }

    /// Connections open on `frontend`'s listeners now.
    pub fn open(&self, frontend: Frontend) -> u64 {
        lock(&self.open).get(&frontend).copied().unwrap_or(0)
    }

    /// Appends the connection series to a Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let mut series = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        };
        let by_frontend = |m: &Mutex<HashMap<Frontend, u64>>| {
            let mut rows: Vec<_> = lock(m)
                .iter()
                .map(|(f, v)| (format!("frontend=\"{}\"", f.as_str()), *v))
                .collect();
            rows.sort();
            rows
        };
        let ended = |shed: bool| {
            let mut rows: Vec<_> = lock(&self.ended)
                .iter()
                .filter(|((_, r), _)| matches!(r, Reason::ListenerCap | Reason::CallerCap) == shed)
                .map(|((f, r), v)| {
                    (
                        format!("frontend=\"{}\",reason=\"{}\"", f.as_str(), r.as_str()),
                        *v,
                    )
                })
                .collect();
            rows.sort();
            rows
        };
        series(
            "idbridge_serve_connections_open",
            "gauge",
            "Connections open now.",
            by_frontend(&self.open),
        );
        series(
            "idbridge_serve_connections_accepted_total",
            "counter",
            "Connections accepted (shed ones included).",
            by_frontend(&self.accepted),
        );
        series(
            "idbridge_serve_connections_shed_total",
            "counter",
            "Connections refused at once for being over a listener's or a caller's cap.",
            ended(true),
        );
        series(
            "idbridge_serve_connections_closed_total",
            "counter",
            "Connections closed for idleness or a slow request head.",
            ended(false),
        );
        series(
            "idbridge_serve_accept_errors_total",
            "counter",
            "Failed accepts (out of file descriptors, typically).",
            by_frontend(&self.accept_errors),
        );
    }
}

/// What one listener shares between its connections.
#[derive(Debug)]
pub(crate) struct Listener {
    frontend: Frontend,
    limits: ConnectionLimits,
    broker: Arc<Broker>,
    open: Mutex<Open>,
    warned: Mutex<Option<Instant>>,
    unwarned: AtomicU64,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_caller: HashMap<Option<u32>, usize>,
}

impl Listener {
    pub(crate) fn new(
        frontend: Frontend,
        limits: ConnectionLimits,
        broker: Arc<Broker>,
    ) -> Arc<Self> {
        Arc::new(Self {
            frontend,
            limits,
            broker,
            open: Mutex::default(),
            warned: Mutex::new(None),
            unwarned: AtomicU64::new(0),
        })
    }

    fn connections(&self) -> &ConnectionMetrics {
        self.broker.metrics().connections()
    }

    /// Takes a slot of the listener and of `uid`'s share, or says which is full.
    fn reserve(self: &Arc<Self>, uid: Option<u32>) -> Result<Slot, Reason> {
        let mut open = lock(&self.open);
        if open.per_caller.get(&uid).copied().unwrap_or(0) >= self.limits.max_per_caller {
            return Err(Reason::CallerCap);
        }
        if open.total >= self.limits.max_per_listener {
            return Err(Reason::ListenerCap);
        }
        open.total += 1;
        *open.per_caller.entry(uid).or_default() += 1;
        drop(open);
        ConnectionMetrics::add(&self.connections().open, self.frontend, 1);
        Ok(Slot {
            listener: Arc::clone(self),
            uid,
        })
    }

    fn shed(&self, reason: Reason, caller: &Caller) {
        self.end(reason);
        tracing::debug!(frontend = self.frontend.as_str(), reason = reason.as_str(), caller = %caller, "connection shed");
        let now = Instant::now();
        let mut warned = lock(&self.warned);
        if warned.is_some_and(|at| now < at + SHED_WARN_INTERVAL) {
            self.unwarned.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *warned = Some(now);
        let earlier = self.unwarned.swap(0, Ordering::Relaxed);
        let (cap, limit) = match reason {
            Reason::CallerCap => ("per-caller", self.limits.max_per_caller),
            _ => ("per-listener", self.limits.max_per_listener),
        };
        tracing::warn!(
            frontend = self.frontend.as_str(),
            reason = reason.as_str(),
            caller = %caller,
            limit,
            shed_since_last_warning = earlier,
            "connection shed: over the {cap} connection cap"
        );
    }

    fn end(&self, reason: Reason) {
        *lock(&self.connections().ended)
            .entry((self.frontend, reason))
            .or_default() += 1;
    }
}

/// A held slot of a listener and of a caller's share; released on drop.
struct Slot {
    listener: Arc<Listener>,
    uid: Option<u32>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.listener.open);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_caller.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_caller.remove(&self.uid);
            }
        }
        drop(open);
        ConnectionMetrics::add(
            &self.listener.connections().open,
            self.listener.frontend,
            -1,
        );
    }
}

/// A stream the listener accepted.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn try_write_now(&self, buf: &[u8]) -> io::Result<usize>;
    fn try_read_now(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// Answers a shed connection without waiting: one non-blocking write of the 503, and one
    /// non-blocking read of what the client already sent (closing a socket with unread data
    /// resets the connection, and the client would see a reset instead of the 503).
    fn shed_now(&self) {
        let _ = self.try_write_now(SHED_RESPONSE);
        let _ = self.try_read_now(&mut [0u8; 4096]);
    }
}

impl Stream for TcpStream {
    fn try_write_now(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_write(buf)
    }
    fn try_read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_read(buf)
    }
}

impl Stream for UnixStream {
    fn try_write_now(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_write(buf)
    }
    fn try_read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_read(buf)
    }
}

/// A listening socket.
trait Accept: Send + Sync {
    type Stream: Stream;
    fn accept_peer(&self) -> impl Future<Output = io::Result<(Self::Stream, Peer)>> + Send;
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    async fn accept_peer(&self) -> io::Result<(TcpStream, Peer)> {
        let (s, remote) = self.accept().await?;
        let local = s.local_addr().ok();
        Ok((s, Peer::Tcp { remote, local }))
    }
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    async fn accept_peer(&self) -> io::Result<(UnixStream, Peer)> {
        let (s, _) = self.accept().await?;
        let peer = match s.peer_cred() {
            Ok(c) => Peer::Unix {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            Err(_) => Peer::UnixUnknown,
        };
        Ok((s, peer))
    }
}

/// Serves a TCP listener until `stop`.
pub(crate) async fn serve_tcp(
    listener: TcpListener,
    ctx: Arc<Listener>,
    router: Router,
    stop: watch::Receiver<bool>,
) {
    serve(&listener, ctx, router, stop).await;
}

/// Serves a unix-socket listener until `stop`.
pub(crate) async fn serve_unix(
    listener: UnixListener,
    ctx: Arc<Listener>,
    router: Router,
    stop: watch::Receiver<bool>,
) {
    serve(&listener, ctx, router, stop).await;
}

async fn serve<L: Accept>(
    listener: &L,
    ctx: Arc<Listener>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept_peer() => r,
            _ = stop.wait_for(|s| *s) => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                ConnectionMetrics::add(&ctx.connections().accept_errors, ctx.frontend, 1);
                tracing::warn!(frontend = ctx.frontend.as_str(), error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        ConnectionMetrics::add(&ctx.connections().accepted, ctx.frontend, 1);
        // Identified here, before any slot is taken, so that a burst of one caller's
        // connections is shed against its own share and never fills the listener's. The kernel
        // lookup answers at once; only the /proc fallback takes time, and then accepting waits.
        let caller = ctx.broker.identify(Some(&peer)).await;
        let slot = match ctx.reserve(caller.uid) {
            Ok(slot) => slot,
            Err(reason) => {
                stream.shed_now();
                ctx.shed(reason, &caller);
                continue;
            }
        };
        let ctx = Arc::clone(&ctx);
        let router = router.clone();
        let stop = stop.clone();
        connections.spawn(connection(stream, caller, slot, ctx, router, stop));
    }
    // Stopping: each connection finishes its request in flight and closes.
    while connections.join_next().await.is_some() {}
}

async fn connection<S: Stream>(
    stream: S,
    caller: Caller,
    slot: Slot,
    ctx: Arc<Listener>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let identified = Peer::Identified(caller);
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = activity.begin();
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo(identified.clone()));
            let fut = router.clone().call(req);
            async move {
                let resp = fut.await;
                drop(guard);
                resp
            }
        })
    };
    let limits = &ctx.limits;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // A backstop only: the watchdog below closes idle and slow connections first.
        .header_read_timeout(limits.idle_timeout + limits.header_read_timeout)
        .max_buf_size(2 * crate::http::MAX_HEADER_BYTES);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = activity.deadline(limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(frontend = ctx.frontend.as_str(), error = %e, "connection ended with an error");
                }
                break;
            }
            () = sleep_until(deadline) => {
                if let Some(reason) = activity.expired(limits, Instant::now()) {
                    ctx.end(reason);
                    tracing::debug!(frontend = ctx.frontend.as_str(), reason = reason.as_str(), "connection closed");
                    break;
                }
            }
            () = activity.changed.notified() => {}
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    drop(slot);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What the watchdog of one connection reads: requests in flight, when the connection last
/// became idle, and when bytes first arrived since then.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    times: Mutex<Times>,
    changed: Notify,
}

#[derive(Debug)]
struct Times {
    idle_since: Instant,
    first_byte: Option<Instant>,
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let mut t = lock(&self.0.times);
            t.idle_since = Instant::now();
            t.first_byte = None;
        }
        self.0.changed.notify_one();
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            times: Mutex::new(Times {
                idle_since: Instant::now(),
                first_byte: None,
            }),
            changed: Notify::new(),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    fn received(&self) {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return;
        }
        let mut t = lock(&self.times);
        if t.first_byte.is_none() {
            t.first_byte = Some(Instant::now());
            drop(t);
            self.changed.notify_one();
        }
    }

    /// When the connection expires unless something happens; `None` while a request runs.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let t = lock(&self.times);
        Some(match t.first_byte {
            Some(first) => first + limits.header_read_timeout,
            None => t.idle_since + limits.idle_timeout,
        })
    }

    fn expired(&self, limits: &ConnectionLimits, now: Instant) -> Option<Reason> {
        let deadline = self.deadline(limits)?;
        if now < deadline {
            return None;
        }
        Some(if lock(&self.times).first_byte.is_some() {
            Reason::HeaderRead
        } else {
            Reason::Idle
        })
    }
}

/// The accepted stream, telling the watchdog when bytes arrive.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_fit_the_fd_limit() {
        let l = ConnectionLimits::default();
        assert_eq!(l.fit(4, 1 << 20), l, "a raised limit leaves the defaults");
        let low = l.fit(4, 1024);
        assert_eq!(low.max_per_listener, (1024 - 256) / 4);
        assert_eq!(low.max_per_caller, 48);
        assert_eq!(low.idle_timeout, l.idle_timeout);
        assert!(l.fit(1, 0).max_per_listener >= 4);
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_deadlines() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            ..ConnectionLimits::default()
        };
        let a = Arc::new(Activity::new());
        let start = Instant::now();
        assert_eq!(a.deadline(&limits), Some(start + limits.idle_timeout));
        tokio::time::advance(Duration::from_secs(1)).await;
        a.received();
        assert_eq!(
            a.deadline(&limits),
            Some(start + Duration::from_secs(3)),
            "the first byte starts the header clock"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(a.expired(&limits, Instant::now()), Some(Reason::HeaderRead));
        let guard = a.begin();
        assert_eq!(
            a.deadline(&limits),
            None,
            "nothing expires while a request runs"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        drop(guard);
        let idle = Instant::now();
        assert_eq!(a.deadline(&limits), Some(idle + limits.idle_timeout));
        tokio::time::advance(limits.idle_timeout).await;
        assert_eq!(a.expired(&limits, Instant::now()), Some(Reason::Idle));
    }
}
