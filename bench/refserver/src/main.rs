//! `bench-refserver NAME=FILE…`: the reference server of `bench/run`.
//!
//! Each `FILE` is an HTTP response as `curl -si` printed it (status line, headers, blank line,
//! body), captured from the daemon's endpoint. One loopback listener per `NAME` answers every
//! request with those bytes, through hyper's HTTP/1.1 server on a default multi-threaded tokio
//! runtime and nothing else: no routing, no extractors, no cache. Its throughput is what the
//! machine allows for that response, the bar the daemon's figure is divided by.
//!
//! Prints `NAME=127.0.0.1:PORT` per listener on stdout, then serves until killed.

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A response to repeat: status, headers (without the ones hyper writes itself), body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Headers that hyper computes per response or per connection.
const GENERATED: &[&str] = &["date", "content-length", "connection", "transfer-encoding"];

fn parse(raw: &[u8]) -> anyhow::Result<Answer> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no blank line after the headers")?;
    let head = std::str::from_utf8(&raw[..split]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("empty response")?;
    let code = status_line
        .split(' ')
        .nth(1)
        .context("no status code")?
        .parse::<u16>()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("bad header line {line:?}");
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())?;
        if GENERATED.contains(&name.as_str()) {
            continue;
        }
        headers.append(name, HeaderValue::from_str(value.trim())?);
    }
    Ok(Answer {
        status: StatusCode::from_u16(code)?,
        headers,
        body: Bytes::copy_from_slice(&raw[split + 4..]),
    })
}

fn respond(answer: &Answer) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(answer.body.clone()));
    *r.status_mut() = answer.status;
    *r.headers_mut() = answer.headers.clone();
    r
}

async fn serve(listener: TcpListener, answer: Arc<Answer>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let answer = Arc::clone(&answer);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let r = respond(&answer);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let specs: Vec<String> = std::env::args().skip(1).collect();
    if specs.is_empty() {
        bail!("usage: bench-refserver NAME=FILE…");
    }
    let mut out = std::io::stdout().lock();
    for spec in specs {
        let (name, file) = spec.split_once('=').context("arguments are NAME=FILE")?;
        let raw = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        let answer = Arc::new(parse(&raw).with_context(|| format!("parsing {file}"))?);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        writeln!(out, "{name}={}", listener.local_addr()?)?;
        tokio::spawn(serve(listener, answer));
    }
    out.flush()?;
    drop(out);
    std::future::pending::<()>().await;
    Ok(())
}
