//! What the HTTP fuzz targets share: raw bytes read as an HTTP/1.1 request, and a way to drive an axum router with
//! it on one current-thread runtime. A target fails on a panic inside the handler (the router is
//! called directly, so a panic is not caught by a server) and on a 5xx that is not one of the
//! cloud's own deliberate errors (every emulated 5xx carries a body; an empty 500 is a bug).
#![allow(dead_code, reason = "each target uses a part")]

pub mod emulator;

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Parses `data` as an HTTP/1.1 request as hyper would (request line, headers, then the body),
/// so seed corpora are readable requests. `None` when hyper would refuse it before any handler
/// ran. `fixed_headers` are added unless the input sets them itself.
pub fn request(data: &[u8], fixed_headers: &[(&str, &str)]) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(data).ok()? else {
        return None;
    };
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    let mut req = Request::builder().method(method).uri(parsed.path?);
    let mut named = Vec::new();
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        named.push(name.clone());
        req = req.header(name, value);
    }
    for (name, value) in fixed_headers {
        if !named.iter().any(|n| n.as_str().eq_ignore_ascii_case(name)) {
            req = req.header(*name, *value);
        }
    }
    req.body(Body::from(data[head_len..].to_vec())).ok()
}

/// A runtime shared by every input.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// Sends `req` to `router` and checks the answer.
pub fn drive(router: &Router, req: Request<Body>) {
    runtime().block_on(async {
        let resp = router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("a body").to_bytes();
        assert!(
            !(status.is_server_error() && body.is_empty()),
            "an empty {status}: a handler failed without the cloud's error body"
        );
    });
}
