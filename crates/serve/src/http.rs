//! Middleware every frontend shares: the header-size limit, the `Host` rule and request
//! accounting.

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::Frontend;
use crate::broker::Broker;

/// Largest request head (target plus headers) accepted: 16 KiB. Metadata clients send a few
/// hundred bytes; anything near this is a misbehaving or hostile client, refused with 431 as
/// the real metadata servers do, before any handler or upstream call runs.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Whether a request that came through a listener breaks the `Host` rule of HTTP/1.1
/// (RFC 9112 §3.2): an HTTP/1.1 request without `Host`, or any request with more than one, is
/// 400, as real servers answer it. Requests driven into a router directly (tests) carry no
/// connection info and are not checked.
fn bad_host(req: &Request) -> bool {
    if req
        .extensions()
        .get::<ConnectInfo<crate::caller::Peer>>()
        .is_none()
    {
        return false;
    }
    match req.headers().get_all(header::HOST).iter().count() {
        0 => req.version() == Version::HTTP_11,
        1 => false,
        _ => true,
    }
}

/// Refuses requests whose head is over [`MAX_HEADER_BYTES`] with 431, and requests breaking
/// the `Host` rule with 400.
pub(crate) async fn limit_headers(req: Request, next: Next) -> Response {
    let size = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if size > MAX_HEADER_BYTES {
        tracing::info!(size, "refused: request headers too large");
        let mut resp = (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Request Header Fields Too Large\n",
        )
            .into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return resp;
    }
    if bad_host(&req) {
        tracing::info!("refused: request without exactly one Host header");
        let mut resp = (StatusCode::BAD_REQUEST, "Bad Request\n").into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return resp;
    }
    next.run(req).await
}

/// Adds the outer layers of a frontend: request counting and a debug log line per request
/// (method, path and status; never headers or query strings).
pub(crate) fn observe(router: Router, frontend: Frontend, broker: Arc<Broker>) -> Router {
    router.layer(middleware::from_fn_with_state(
        (broker, frontend),
        count_request,
    ))
}

async fn count_request(
    State((broker, frontend)): State<(Arc<Broker>, Frontend)>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    broker.metrics().count_request(frontend, status);
    tracing::debug!(
        frontend = frontend.as_str(),
        %method,
        path,
        status,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request"
    );
    resp
}
