//! Who is calling: per-workload identity for local callers.
//!
//! Every listener identifies the caller of a connection once, when it accepts it
//! ([`crate::conn`]), and hands each request of the connection the result as
//! [`Peer::Identified`]:
//!
//! * **unix socket** — the peer's credentials from `SO_PEERCRED` (uid, gid, pid), read by the
//!   kernel at `connect()`; nothing the client sends can change them.
//! * **TCP** — on loopback the client's socket is this host's socket whose source is the
//!   connection's peer address and whose destination is our listener's address; its owner is
//!   the caller. [`PeerResolver`] asks the kernel for exactly that socket with netlink
//!   `sock_diag` ([`crate::sock_diag`]), in constant time however many sockets the host has.
//!   Only where netlink is unavailable does it read `/proc/net/tcp` (and `/proc/net/tcp6`, for
//!   IPv6 and dual-stack sockets), whose rows are parsed here. A caller that is not on this
//!   host (a non-loopback bind) has no such socket and stays unidentified.
//!
//! A [`CallerPolicy`] maps uids, users and groups to the routes they may use. Without rules
//! every caller may use every route; with rules, an unidentified caller may use nothing.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, MockConnectInfo};
use axum::http::Extensions;

/// The other end of a connection, as the listener saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP connection.
    Tcp {
        /// The client's address.
        remote: SocketAddr,
        /// The address the client connected to (ours).
        local: Option<SocketAddr>,
    },
    /// A unix-socket connection with its `SO_PEERCRED` credentials.
    Unix {
        /// Effective uid of the connecting process.
        uid: u32,
        /// Effective gid of the connecting process.
        gid: u32,
        /// Its pid, when the kernel reports one.
        pid: Option<i32>,
    },
    /// A unix-socket connection whose credentials could not be read.
    UnixUnknown,
    /// A connection whose caller the listener identified when it accepted it.
    Identified(Caller),
}

impl Peer {
    /// The caller's uid when already known without a lookup (unix sockets, identified
    /// connections).
    pub fn uid(&self) -> Option<u32> {
        match self {
            Peer::Unix { uid, .. } => Some(*uid),
            Peer::Identified(c) => c.uid,
            Peer::Tcp { .. } | Peer::UnixUnknown => None,
        }
    }

    /// The peer recorded for a request: the listener's `ConnectInfo`, or the
    /// `MockConnectInfo` a test layered on a router.
    pub fn of(extensions: &Extensions) -> Option<&Peer> {
        extensions
            .get::<ConnectInfo<Peer>>()
            .map(|c| &c.0)
            .or_else(|| extensions.get::<MockConnectInfo<Peer>>().map(|c| &c.0))
    }
}

/// An identified (or not) caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Owning uid of the client socket.
    pub uid: Option<u32>,
    /// Effective gid (unix sockets only).
    pub gid: Option<u32>,
    /// Process id (unix sockets only).
    pub pid: Option<i32>,
    /// The client's address, for TCP.
    pub addr: Option<SocketAddr>,
    /// The pod at that address (`[serve.kubernetes]`, see [`crate::pods`]).
    pub pod: Option<Arc<crate::pods::Pod>>,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.pod {
            return write!(
                f,
                "pod {}/{} (service account {})",
                p.id.namespace, p.id.name, p.id.service_account
            );
        }
        match (self.uid, self.addr) {
            (Some(uid), _) => write!(f, "uid {uid}"),
            (None, Some(addr)) => write!(f, "an unidentified caller at {addr}"),
            (None, None) => f.write_str("an unidentified caller"),
        }
    }
}

/// One socket of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// `local_address`.
    pub local: SocketAddr,
    /// `rem_address`.
    pub remote: SocketAddr,
    /// The `uid` column: the socket's owner.
    pub uid: u32,
}

/// Parses one row of `/proc/net/tcp{,6}` (`sl local rem st queues timer retr uid …`); `None`
/// for the header and anything malformed.
///
/// Addresses are hex in the kernel's byte order: IPv4 as one 32-bit word, IPv6 as four; ports
/// are hex in host order. IPv4-mapped IPv6 addresses come back as IPv4.
pub fn parse_tcp_line(line: &str) -> Option<TcpSocket> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next().filter(|s| s.ends_with(':'))?;
    let local = parse_hex_socket_addr(fields.next()?)?;
    let remote = parse_hex_socket_addr(fields.next()?)?;
    // st, tx_queue:rx_queue, tr:tm->when, retrnsmt, then uid.
    let uid = fields.nth(4)?.parse().ok()?;
    Some(TcpSocket { local, remote, uid })
}

/// Every socket of a `/proc/net/tcp{,6}` text.
pub fn parse_proc_net_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines().filter_map(parse_tcp_line).collect()
}

fn parse_hex_socket_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    if !ip.is_ascii() || port.len() != 4 {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (chunk, out) in ip.as_bytes().chunks(8).zip(bytes.chunks_mut(4)) {
                out.copy_from_slice(&word(std::str::from_utf8(chunk).ok()?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(canonical(SocketAddr::new(ip, port)))
}

/// The address with IPv4-mapped IPv6 turned into IPv4 and no flow or scope id.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The uid owning the client socket of the connection `peer` → `local`, from the text of
/// `/proc/net/tcp{,6}`.
pub fn owner_uid(proc_net_tcp: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (peer, local) = (canonical(peer), canonical(local));
    proc_net_tcp
        .lines()
        .filter_map(parse_tcp_line)
        .find(|s| s.local == peer && s.remote == local)
        .map(|s| s.uid)
}

/// How TCP peers are looked up.
#[derive(Clone)]
enum Method {
    /// The kernel (netlink `sock_diag`), or the tables under the path where it is unavailable.
    Kernel(PathBuf),
    /// Only the tables under the path (tests point it at sample tables).
    Tables(PathBuf),
    /// A fixed mapping from the client's address (tests).
    Fixed(Arc<dyn Fn(SocketAddr) -> Option<u32> + Send + Sync>),
}

/// Turns a [`Peer`] into a [`Caller`]: netlink `sock_diag` for TCP peers, `/proc/net/tcp{,6}`
/// where that is unavailable.
#[derive(Clone)]
pub struct PeerResolver {
    method: Method,
}

impl fmt::Debug for PeerResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match &self.method {
            Method::Kernel(p) => format!("kernel, else tables under {}", p.display()),
            Method::Tables(p) => format!("tables under {}", p.display()),
            Method::Fixed(_) => "fixed".to_owned(),
        };
        f.debug_struct("PeerResolver")
            .field("method", &method)
            .finish()
    }
}

impl Default for PeerResolver {
    fn default() -> Self {
        Self {
            method: Method::Kernel(PathBuf::from("/proc/net")),
        }
    }
}

impl PeerResolver {
    /// A resolver reading only `tcp` and `tcp6` under `proc_net` (normally `/proc/net`).
    pub fn new(proc_net: impl Into<PathBuf>) -> Self {
        Self {
            method: Method::Tables(proc_net.into()),
        }
    }

    /// A resolver that gives TCP clients the uid `owner` maps their address to.
    pub fn fixed(owner: impl Fn(SocketAddr) -> Option<u32> + Send + Sync + 'static) -> Self {
        Self {
            method: Method::Fixed(Arc::new(owner)),
        }
    }

    /// Identifies the caller of a connection; `None` (no connection info, as in tests driving a
    /// router directly) is an unidentified caller. A [`Peer::Identified`] is returned as is.
    pub async fn identify(&self, peer: Option<&Peer>) -> Caller {
        match peer {
            None | Some(Peer::UnixUnknown) => Caller::default(),
            Some(Peer::Identified(caller)) => caller.clone(),
            Some(Peer::Unix { uid, gid, pid }) => Caller {
                uid: Some(*uid),
                gid: Some(*gid),
                pid: *pid,
                addr: None,
                pod: None,
            },
            Some(Peer::Tcp { remote, local }) => {
                let uid = match local {
                    Some(local) => self.tcp_owner(*remote, *local).await,
                    None => None,
                };
                Caller {
                    uid,
                    addr: Some(*remote),
                    ..Caller::default()
                }
            }
        }
    }

    async fn tcp_owner(&self, remote: SocketAddr, local: SocketAddr) -> Option<u32> {
        match &self.method {
            Method::Fixed(owner) => owner(remote),
            Method::Tables(proc_net) => tables_owner(proc_net, remote, local).await,
            Method::Kernel(proc_net) => match crate::sock_diag::owner(remote, local) {
                crate::sock_diag::Lookup::Owner(uid) => Some(uid),
                crate::sock_diag::Lookup::NotFound => None,
                crate::sock_diag::Lookup::Unavailable => {
                    tables_owner(proc_net, remote, local).await
                }
            },
        }
    }
}

/// The owner of the client socket `remote` → `local` from the tables under `proc_net`.
async fn tables_owner(proc_net: &Path, remote: SocketAddr, local: SocketAddr) -> Option<u32> {
    // An IPv4 peer may still own an IPv6 (dual-stack) socket, listed in tcp6.
    let files: &[&str] = if canonical(remote).is_ipv4() {
        &["tcp", "tcp6"]
    } else {
        &["tcp6"]
    };
    for file in files {
        let path = proc_net.join(file);
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => {
                if let Some(uid) = owner_uid(&text, remote, local) {
                    return Some(uid);
                }
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot read socket table");
            }
        }
    }
    None
}

/// Whom a caller rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// A numeric uid.
    Uid(u32),
    /// A user, resolved to its uid.
    User {
        /// Login name.
        name: String,
        /// Its uid.
        uid: u32,
    },
    /// A group: its members (primary or listed), or a unix-socket caller whose effective gid
    /// it is.
    Group {
        /// Group name.
        name: String,
        /// Its gid.
        gid: u32,
        /// Member uids.
        members: BTreeSet<u32>,
    },
}

impl Who {
    fn matches(&self, caller: &Caller) -> bool {
        match self {
            Who::Uid(uid) | Who::User { uid, .. } => caller.uid == Some(*uid),
            Who::Group { gid, members, .. } => {
                caller.uid.is_some_and(|u| members.contains(&u)) || caller.gid == Some(*gid)
            }
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Uid(uid) => write!(f, "uid {uid}"),
            Who::User { name, uid } => write!(f, "user {name} (uid {uid})"),
            Who::Group { name, gid, .. } => write!(f, "group {name} (gid {gid})"),
        }
    }
}

/// The routes a rule grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteSet {
    /// `routes = ["*"]`.
    All,
    /// These routes.
    Only(BTreeSet<String>),
}

impl RouteSet {
    fn contains(&self, route: &str) -> bool {
        match self {
            RouteSet::All => true,
            RouteSet::Only(names) => names.contains(route),
        }
    }
}

/// One `[[serve.caller]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerRule {
    /// Whom it applies to.
    pub who: Who,
    /// What they may use.
    pub routes: RouteSet,
}

/// Which callers may use which routes. A caller may use the union of the routes of every rule
/// that matches it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerPolicy {
    rules: Vec<CallerRule>,
}

impl CallerPolicy {
    /// Every caller may use every route.
    pub fn open() -> Self {
        Self::default()
    }

    /// A policy from rules (no rules = open).
    pub fn new(rules: Vec<CallerRule>) -> Self {
        Self { rules }
    }

    /// Whether there are no rules, so callers need not be identified.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules.
    pub fn rules(&self) -> &[CallerRule] {
        &self.rules
    }

    /// Whether `caller` may use `route`.
    pub fn allows(&self, caller: &Caller, route: &str) -> bool {
        self.is_open()
            || self
                .rules
                .iter()
                .any(|r| r.who.matches(caller) && r.routes.contains(route))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A listener on 127.0.0.1:8080 (0x1F90) and one client from 127.0.0.1:54321 (0xD431) owned
    // by uid 1000, the server side of that connection (uid 0), and an IPv6 dual-stack client
    // from ::ffff:127.0.0.1:40000 (0x9C40) owned by uid 1001. Addresses as a little-endian
    // kernel prints them.
    #[cfg(target_endian = "little")]
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1161 1 0000000069388ce8 100 0 0 10 0
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 36961 1 000000001e49d2bc 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 36962 1 000000001e49d2bc 20 4 30 10 -1
   3: garbage
";
    #[cfg(target_endian = "little")]
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:9C40 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 4242 1 0000000000000000 20 4 30 10 -1
   1: 00000000000000000000000001000000:1F91 00000000000000000000000001000000:A000 01 00000000:00000000 00:00000000 00000000  1002        0 4243 1 0000000000000000 20 4 30 10 -1
";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_proc_net_tcp() {
        let rows = parse_proc_net_tcp(TCP);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(
            rows[1],
            TcpSocket {
                local: addr("127.0.0.1:54321"),
                remote: addr("127.0.0.1:8080"),
                uid: 1000
            }
        );
        let rows6 = parse_proc_net_tcp(TCP6);
        assert_eq!(rows6[0].local, addr("127.0.0.1:40000"), "v4-mapped is v4");
        assert_eq!(rows6[1].local, addr("[::1]:8081"));
        assert_eq!(rows6[1].remote, addr("[::1]:40960"));
        assert!(parse_tcp_line("   9: 0100007F:1F9 00000000:0000 0A 0 0 0 0").is_none());
        assert!(parse_tcp_line("   9: 0100007F:1F90 00000000:0000 0A 0 0 0 notanumber").is_none());
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn finds_the_owner_of_the_client_socket() {
        let server = addr("127.0.0.1:8080");
        assert_eq!(owner_uid(TCP, addr("127.0.0.1:54321"), server), Some(1000));
        // Not the server side's uid, and nothing for an unknown peer.
        assert_eq!(owner_uid(TCP, addr("127.0.0.1:54322"), server), None);
        assert_eq!(owner_uid(TCP6, addr("127.0.0.1:40000"), server), Some(1001));
        assert_eq!(
            owner_uid(TCP6, addr("[::ffff:127.0.0.1]:40000"), server),
            Some(1001)
        );
        assert_eq!(
            owner_uid(TCP6, addr("[::1]:8081"), addr("[::1]:40960")),
            Some(1002)
        );
    }

    #[tokio::test]
    #[cfg(target_endian = "little")]
    async fn resolver_reads_both_tables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tcp"), TCP).unwrap();
        std::fs::write(dir.path().join("tcp6"), TCP6).unwrap();
        let r = PeerResolver::new(dir.path());
        let tcp = |remote: &str| Peer::Tcp {
            remote: addr(remote),
            local: Some(addr("127.0.0.1:8080")),
        };
        assert_eq!(
            r.identify(Some(&tcp("127.0.0.1:54321"))).await.uid,
            Some(1000)
        );
        assert_eq!(
            r.identify(Some(&tcp("127.0.0.1:40000"))).await.uid,
            Some(1001)
        );
        let unknown = r.identify(Some(&tcp("10.0.0.9:40000"))).await;
        assert_eq!(unknown.uid, None);
        assert_eq!(
            unknown.to_string(),
            "an unidentified caller at 10.0.0.9:40000"
        );
        assert_eq!(r.identify(None).await, Caller::default());
    }

    #[test]
    fn policy_unions_matching_rules() {
        let only = |names: &[&str]| RouteSet::Only(names.iter().map(|s| s.to_string()).collect());
        let policy = CallerPolicy::new(vec![
            CallerRule {
                who: Who::Uid(1000),
                routes: only(&["a"]),
            },
            CallerRule {
                who: Who::Group {
                    name: "ci".into(),
                    gid: 2000,
                    members: BTreeSet::from([1000, 1001]),
                },
                routes: only(&["b"]),
            },
            CallerRule {
                who: Who::User {
                    name: "root".into(),
                    uid: 0,
                },
                routes: RouteSet::All,
            },
        ]);
        let uid = |u: u32| Caller {
            uid: Some(u),
            ..Caller::default()
        };
        assert!(policy.allows(&uid(1000), "a"));
        assert!(policy.allows(&uid(1000), "b"));
        assert!(!policy.allows(&uid(1001), "a"));
        assert!(policy.allows(&uid(1001), "b"));
        assert!(policy.allows(&uid(0), "anything"));
        assert!(!policy.allows(&uid(1002), "b"));
        let by_gid = Caller {
            uid: Some(1003),
            gid: Some(2000),
            ..Caller::default()
        };
        assert!(policy.allows(&by_gid, "b"));
        assert!(!policy.allows(&Caller::default(), "a"));
        assert!(CallerPolicy::open().allows(&Caller::default(), "a"));
    }
}
