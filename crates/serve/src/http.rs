//! Middleware every frontend shares: the header-size limit and request accounting.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::Frontend;
use crate::broker::Broker;

/// Largest request head (target plus headers) accepted: 16 KiB. Metadata clients send a few
/// hundred bytes; anything near this is a misbehaving or hostile client, refused with 431 as
/// the real metadata servers do, before any handler or upstream call runs.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses requests whose head is over [`MAX_HEADER_BYTES`] with 431.
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
