//! Hostile local neighbours: connection caps, slowloris and idle connections, caller budgets,
//! client-chosen audiences, the `Host` rule. Real listeners on 127.0.0.1; the neighbour
//! connects from 127.0.0.2 and a fixed resolver gives it its own uid, so no root is needed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpSocket, TcpStream};

use super::*;
use crate::caller::PeerResolver;
use crate::conn::Reason;

const TOKEN_HEAD: &str = "GET /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.1\r\nMetadata-Flavor: Google\r\n";
const NEIGHBOUR: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const NEIGHBOUR_UID: u32 = 4242;
const NORMAL_UID: u32 = 1000;

fn gce_config(connections: &str) -> ServeConfig {
    ServeConfig::parse(
        &format!(
            "{ROUTES}[serve]\nmax_client_keys_per_route = 16\n[serve.connections]\n{connections}\n\
             [serve.gce_metadata]\nport = 0\ntoken_route = \"gcp\"\nidentity_route = \"gcp\"\n\
             [serve.aws_imds]\nport = 0\nroute = \"aws\"\n[serve.metrics]\nport = 0\n"
        ),
        "isolation.toml",
        None,
        &Accounts::default(),
    )
    .unwrap()
}

/// A broker whose TCP callers are the neighbour (from 127.0.0.2) or the normal user; counts
/// identifications.
fn broker_with(config: &ServeConfig, fake: &Fake, lookups: Arc<AtomicUsize>) -> Arc<Broker> {
    let resolver = PeerResolver::fixed(move |addr: SocketAddr| {
        lookups.fetch_add(1, Ordering::SeqCst);
        Some(if addr.ip() == NEIGHBOUR {
            NEIGHBOUR_UID
        } else {
            NORMAL_UID
        })
    });
    Arc::new(
        Broker::with_loader(
            fake.loader(),
            Arc::clone(&fake.clock) as SharedClock,
            config.callers.clone(),
            config.max_cached_credentials,
        )
        .with_client_keys_per_route(config.max_client_keys_per_route)
        .with_resolver(resolver),
    )
}

/// A daemon of `config` whose callers are told apart by [`broker_with`] (identifications
/// counted in `lookups`), over a fake loader of hour-long credentials: the set-up the
/// connection tests share.
struct Daemon {
    broker: Arc<Broker>,
    lookups: Arc<AtomicUsize>,
    running: crate::Running,
    gce: SocketAddr,
}

impl Daemon {
    async fn start(config: &ServeConfig) -> Daemon {
        let fake = Fake::new(Duration::from_secs(3600));
        let lookups = Arc::new(AtomicUsize::new(0));
        let broker = broker_with(config, &fake, Arc::clone(&lookups));
        let running = crate::start(config, Arc::clone(&broker)).await.unwrap();
        let gce = running.tcp_addr(Frontend::GceMetadata).unwrap();
        Daemon {
            broker,
            lookups,
            running,
            gce,
        }
    }
}

async fn connect_from(source: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the peer closes (or 5 s pass); what was read.
async fn read_until_closed(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

/// One request of a normal client, which must be answered within 2 s.
async fn normal_request(addr: SocketAddr, head: &str) -> (u16, String) {
    let s = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), raw(s, head))
        .await
        .expect("a normal client waited over 2 s")
}

#[tokio::test]
async fn a_hostile_neighbour_cannot_stop_a_normal_client() {
    let config = gce_config(
        "max_per_listener = 64\nmax_per_caller = 16\nheader_read_timeout_ms = 400\nidle_timeout_ms = 1500",
    );
    let Daemon {
        broker,
        running,
        gce,
        ..
    } = Daemon::start(&config).await;
    let metrics = running.tcp_addr(Frontend::Metrics).unwrap();

    // Slowloris: a request head trickled a byte every 100 ms.
    let mut slow = Vec::new();
    for _ in 0..8 {
        slow.push(connect_from(NEIGHBOUR, gce).await);
    }
    let head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".to_vec();
    let trickle: Vec<_> = slow
        .into_iter()
        .map(|mut s| {
            let head = head.clone();
            tokio::spawn(async move {
                for b in head.iter().chain(std::iter::repeat(&b'a')).take(200) {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                read_until_closed(&mut s).await
            })
        })
        .collect();
    // Then idle connections, far beyond the neighbour's share and the listener's cap.
    let mut idle = Vec::new();
    for _ in 0..150 {
        idle.push(connect_from(NEIGHBOUR, gce).await);
    }

    // Meanwhile a normal client is served, every time, and so is the health check.
    for _ in 0..10 {
        let (status, body) = normal_request(gce, TOKEN_HEAD).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = normal_request(metrics, "GET /healthz HTTP/1.1\r\n").await;
    assert_eq!(status, 200);

    // The neighbour's connections beyond its share were shed at once with a 503.
    let c = broker.metrics().connections();
    assert_eq!(c.ended(Frontend::GceMetadata, Reason::CallerCap), 150 - 8);
    assert_eq!(c.ended(Frontend::GceMetadata, Reason::ListenerCap), 0);
    let shed = read_until_closed(idle.last_mut().unwrap()).await.unwrap();
    assert!(shed.starts_with("HTTP/1.1 503 "), "{shed:?}");
    // Slowloris connections are closed by the header-read timeout, idle ones by the idle
    // timeout: every one of them ends without an answer.
    for t in trickle {
        let got = t
            .await
            .unwrap()
            .expect("a slowloris connection was left open");
        assert_eq!(got, "", "no answer to a head that never ended");
    }
    for s in idle.iter_mut().take(8) {
        let got = read_until_closed(s)
            .await
            .expect("an idle connection was left open");
        assert_eq!(got, "");
    }
    assert_eq!(c.ended(Frontend::GceMetadata, Reason::HeaderRead), 8);
    assert!(c.ended(Frontend::GceMetadata, Reason::Idle) >= 8);

    // All of it is in /metrics; the neighbour's slots are free again.
    let (status, body) = normal_request(metrics, "GET /metrics HTTP/1.1\r\n").await;
    assert_eq!(status, 200);
    for line in [
        "idbridge_serve_connections_shed_total{frontend=\"gce_metadata\",reason=\"caller_cap\"} 142",
        "idbridge_serve_connections_closed_total{frontend=\"gce_metadata\",reason=\"header_read\"} 8",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
    drop(idle);
    let mut back = connect_from(NEIGHBOUR, gce).await;
    back.write_all(format!("{TOKEN_HEAD}Host: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_until_closed(&mut back).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    running.shutdown().await;
}

#[tokio::test]
async fn a_full_listener_sheds_and_recovers() {
    let config = gce_config("max_per_listener = 6\nmax_per_caller = 6\nidle_timeout_ms = 60000");
    let Daemon {
        broker,
        running,
        gce,
        ..
    } = Daemon::start(&config).await;
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(connect_from(NEIGHBOUR, gce).await);
    }
    // Let the listener take them all before the next one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Shed at once: a 503, or a reset when the request arrived after the close.
    let mut s = TcpStream::connect(gce).await.unwrap();
    let _ = s
        .write_all(format!("{TOKEN_HEAD}Host: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .expect("a shed connection was held open");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.starts_with("HTTP/1.1 503 ") || read.is_err(),
        "the listener is full: {text:?} {read:?}"
    );
    let c = broker.metrics().connections();
    assert_eq!(c.ended(Frontend::GceMetadata, Reason::ListenerCap), 1);
    assert_eq!(c.open(Frontend::GceMetadata), 6);
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = normal_request(gce, TOKEN_HEAD).await;
    assert_eq!(status, 200, "{body}");
    running.shutdown().await;
}

#[tokio::test]
async fn callers_are_identified_once_per_connection() {
    let mut config = gce_config("");
    config.callers = CallerPolicy::new(vec![crate::caller::CallerRule {
        who: crate::caller::Who::Uid(NORMAL_UID),
        routes: crate::caller::RouteSet::All,
    }]);
    let Daemon {
        lookups,
        running,
        gce,
        ..
    } = Daemon::start(&config).await;
    let mut s = TcpStream::connect(gce).await.unwrap();
    let one = format!("{TOKEN_HEAD}Host: localhost\r\n\r\n");
    let last = format!("{TOKEN_HEAD}Host: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(format!("{one}{one}{one}{last}").as_bytes())
        .await
        .unwrap();
    let answers = read_until_closed(&mut s).await.unwrap();
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 4, "{answers}");
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        1,
        "one lookup for four requests"
    );
    // The neighbour is identified too, and refused by the policy.
    let mut n = connect_from(NEIGHBOUR, gce).await;
    n.write_all(last.as_bytes()).await.unwrap();
    let refused = read_until_closed(&mut n).await.unwrap();
    assert!(refused.starts_with("HTTP/1.1 403 "), "{refused}");
    assert!(
        refused.contains(&format!("uid {NEIGHBOUR_UID}")),
        "{refused}"
    );
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
    running.shutdown().await;
}

#[tokio::test]
async fn requests_need_exactly_one_host() {
    let config = gce_config("");
    let Daemon { running, gce, .. } = Daemon::start(&config).await;
    let imds = running.tcp_addr(Frontend::AwsImds).unwrap();
    for addr in [gce, imds] {
        let send = |head: String| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(head.as_bytes()).await.unwrap();
            read_until_closed(&mut s).await.unwrap()
        };
        let none = send("GET / HTTP/1.1\r\nConnection: close\r\n\r\n".into()).await;
        assert!(none.starts_with("HTTP/1.1 400 "), "{none}");
        let two =
            send("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n".into()).await;
        assert!(two.starts_with("HTTP/1.1 400 "), "{two}");
        // HTTP/1.0 has no Host requirement.
        let old = send("GET / HTTP/1.0\r\n\r\n".into()).await;
        assert!(!old.contains(" 400 "), "{old}");
    }
    let (status, _) = normal_request(gce, TOKEN_HEAD).await;
    assert_eq!(status, 200);
    running.shutdown().await;
}

#[tokio::test]
async fn audiences_are_validated_and_bounded_per_route() {
    let config = gce_config("");
    let fake = Fake::new(Duration::from_secs(3600));
    let broker = broker_with(&config, &fake, Arc::default());
    let gce = gce_metadata::router(Arc::clone(&broker), config.gce_metadata().cloned().unwrap());
    let id = |aud: &str| {
        md(&format!(
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience={aud}"
        ))
    };
    for bad in ["a%00b", "%FF%FE", "%C3", "a%0Ab", &"x".repeat(2049)] {
        let reply = send(&gce, id(bad)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.body
        );
        assert!(
            reply.body.starts_with("audience parameter"),
            "{}",
            reply.body
        );
        assert!(!reply.body.contains("xxxx"), "the audience is not quoted");
    }
    assert!(fake.calls().is_empty(), "nothing bad was minted");

    // The route's own token, then 300 invented audiences.
    assert_eq!(
        send(
            &gce,
            md("/computeMetadata/v1/instance/service-accounts/default/token")
        )
        .await
        .status,
        StatusCode::OK
    );
    for i in 0..300 {
        let reply = send(&gce, id(&format!("https://aud-{i}.example"))).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let client = broker.client_key_snapshots();
    assert_eq!(client.len(), 1);
    assert!(
        client[0].1.entries.len() <= 16,
        "{}",
        client[0].1.entries.len()
    );
    assert_eq!(client[0].1.evictions, 300 - 16);
    // The route's own credential was not evicted: asking again costs no upstream call.
    let before = fake.calls().len();
    assert_eq!(
        send(
            &gce,
            md("/computeMetadata/v1/instance/service-accounts/default/token")
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(fake.calls().len(), before);
    let m = metrics::render(&broker);
    assert!(!m.contains("aud-"), "no audience in the metrics:\n{m}");
    assert!(m.len() < 8 * 1024, "metrics stay small: {} bytes", m.len());
}

#[tokio::test]
async fn imds_tokens_are_budgeted_per_caller() {
    let config = gce_config("");
    let fake = Fake::new(Duration::from_secs(3600));
    let broker = broker_with(&config, &fake, Arc::default());
    let imds = aws_imds::router(Arc::clone(&broker), config.aws_imds().cloned().unwrap());
    let as_uid = |uid: u32| {
        imds.clone().layer(MockConnectInfo(Peer::Unix {
            uid,
            gid: uid,
            pid: None,
        }))
    };
    let (victim, neighbour) = (as_uid(NORMAL_UID), as_uid(NEIGHBOUR_UID));
    let token = imds_token(&victim, "21600").await;
    for _ in 0..10_000 {
        imds_token(&neighbour, "21600").await;
    }
    let reply = imds_get(&victim, ROLE_PATH, Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[test]
fn the_fd_limit_is_raised_to_the_hard_limit() {
    let after = crate::conn::raise_fd_limit().unwrap();
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    assert_eq!((after, soft), (hard, hard));
    assert_eq!(crate::conn::fd_limit(), hard);
}
