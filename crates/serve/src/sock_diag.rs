//! The owner of one TCP socket, asked of the kernel by its exact address pair (netlink
//! `sock_diag`, `SOCK_DIAG_BY_FAMILY` without `NLM_F_DUMP`).
//!
//! The kernel looks the socket up in its connection hash by the four-tuple and answers one
//! `inet_diag_msg` (with the owner's uid) or `ENOENT`: constant time whatever the number of
//! sockets on the host, where reading `/proc/net/tcp{,6}` costs time proportional to every
//! socket any local user opened. The reply is queued before `send` returns, so the socket is
//! non-blocking and a missing reply is a failed lookup, never a wait.
//!
//! For a loopback connection client → listener, the client's own socket is the one whose
//! source is the client address and whose destination is the listener address. An IPv4 client
//! may hold an IPv6 dual-stack socket with mapped addresses, so an `AF_INET` miss is asked
//! again as `AF_INET6` with `::ffff:a.b.c.d` addresses.
//!
//! Needs no privilege (any user may ask about any socket, as `ss` does). Where netlink is not
//! available (some sandboxes, seccomp profiles), [`owner`] returns `Unavailable` and the
//! caller falls back to the socket tables in `/proc`.

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

/// The answer of one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The socket exists; its owner's uid.
    Owner(u32),
    /// The kernel has no such socket (not a local client).
    NotFound,
    /// Netlink `sock_diag` cannot be used here.
    Unavailable,
}

/// "Match any socket cookie" (`INET_DIAG_NOCOOKIE`).
const NO_COOKIE: [u8; 8] = [0xff; 8];

/// Room for one reply: an `inet_diag_msg` (72 bytes) after a netlink header, or an error
/// message echoing the request.
const REPLY_BUFFER: usize = 1024;

/// The uid owning the TCP socket `source` → `destination`.
pub fn owner(source: SocketAddr, destination: SocketAddr) -> Lookup {
    let (source, destination) = (canonical(source), canonical(destination));
    let socket = match open() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "netlink sock_diag unavailable");
            return Lookup::Unavailable;
        }
    };
    let first = query(&socket, source, destination, false);
    match (first, source.is_ipv4() && destination.is_ipv4()) {
        (Lookup::NotFound, true) => query(&socket, source, destination, true),
        (answer, _) => answer,
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn open() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    socket.set_non_blocking(true)?;
    Ok(socket)
}

/// Maps an IPv4 address into IPv6 when asking about dual-stack sockets.
fn ip(addr: IpAddr, mapped: bool) -> IpAddr {
    match (addr, mapped) {
        (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
        (other, _) => other,
    }
}

fn query(socket: &Socket, source: SocketAddr, destination: SocketAddr, mapped: bool) -> Lookup {
    let family = if mapped || source.is_ipv6() {
        AF_INET6
    } else {
        AF_INET
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: source.port(),
                destination_port: destination.port(),
                source_address: ip(source.ip(), mapped),
                destination_address: ip(destination.ip(), mapped),
                interface_id: 0,
                cookie: NO_COOKIE,
            },
        })
        .into(),
    );
    packet.finalize();
    let mut request = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut request);
    if let Err(e) = socket.send(&request, 0) {
        tracing::debug!(error = %e, "netlink sock_diag request failed");
        return Lookup::Unavailable;
    }
    let mut reply = Vec::with_capacity(REPLY_BUFFER);
    let n = match socket.recv(&mut reply, 0) {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(error = %e, "netlink sock_diag gave no reply");
            return Lookup::Unavailable;
        }
    };
    parse_reply(reply.get(..n).unwrap_or_default())
}

/// Reads the kernel's answer to one lookup.
fn parse_reply(bytes: &[u8]) -> Lookup {
    match NetlinkMessage::<SockDiagMessage>::deserialize(bytes) {
        Ok(msg) => match msg.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                Lookup::Owner(r.header.uid)
            }
            // ENOENT: no such socket. Any other error means the request was not understood.
            NetlinkPayload::Error(e) if e.raw_code() == -libc_enoent() => Lookup::NotFound,
            NetlinkPayload::Error(e) => {
                tracing::debug!(code = e.raw_code(), "netlink sock_diag refused the request");
                Lookup::Unavailable
            }
            _ => Lookup::Unavailable,
        },
        Err(e) => {
            tracing::debug!(error = %e, "netlink sock_diag reply unreadable");
            Lookup::Unavailable
        }
    }
}

/// `ENOENT` (2 on every Linux architecture).
const fn libc_enoent() -> i32 {
    2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_the_owner_of_a_loopback_client_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(server).await.unwrap();
        let (_accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let uid = std::fs::metadata("/proc/self").map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            m.uid()
        });
        // The daemon falls back to /proc where netlink is refused; this host must have it.
        assert_eq!(
            owner(peer, server),
            Lookup::Owner(uid.unwrap()),
            "netlink sock_diag must find the client socket"
        );
        // Not a socket of this host: a port nobody holds.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(owner(nobody, server), Lookup::NotFound);
    }

    #[tokio::test]
    async fn finds_dual_stack_client_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        // An IPv6 socket connecting to an IPv4 address through a mapped address.
        let mapped = SocketAddr::new(
            match server.ip() {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                other => other,
            },
            server.port(),
        );
        let Ok(client) = tokio::net::TcpStream::connect(mapped).await else {
            return; // no IPv6 on this host
        };
        let (_accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(
            canonical(client.local_addr().unwrap()),
            canonical(peer),
            "the kernel reports the mapped peer as IPv4"
        );
        assert!(matches!(owner(peer, server), Lookup::Owner(_)));
    }

    #[test]
    fn unreadable_replies_are_unavailable() {
        assert_eq!(parse_reply(&[]), Lookup::Unavailable);
        assert_eq!(parse_reply(&[1, 2, 3]), Lookup::Unavailable);
    }
}
