//! One HTTP exchange with an upstream, classified the same way on every hop (see
//! [`crate::error`]): the status decides first (5xx, 429 and 408 are transient whatever the
//! body says, other non-200 statuses are refusals), then the caller parses the 200 body and
//! turns a body that does not parse into [`BrokerError::unparsable`]. A body cut short (a reset
//! mid-answer, a truncated `Content-Length`) is a transport error, transient like a timeout.
//!
//! Each request is bounded by the HTTP client's per-attempt timeout
//! ([`crate::context::HOP_TIMEOUT`]), so one hung connection costs one attempt, not a load.

use zeroize::Zeroizing;

use crate::{BrokerError, Context, Hop};

/// Sends `req` and returns its 200 body (zeroized on drop: it may hold a token). Any other
/// status becomes an error whose code and message `describe` reads from the body, with the
/// upstream's `Retry-After`. `shown` names the endpoint in messages (no query, no secret).
pub(crate) async fn send(
    ctx: &Context,
    hop: Hop,
    shown: &str,
    req: reqwest::RequestBuilder,
    describe: impl FnOnce(&str) -> (Option<String>, String),
) -> Result<Zeroizing<String>, BrokerError> {
    let resp = req
        .send()
        .await
        .map_err(|e| BrokerError::from_http(hop, shown, &e))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::error::parse_retry_after(v, ctx.clock.now()));
    let body = Zeroizing::new(
        resp.text()
            .await
            .map_err(|e| BrokerError::from_http(hop, shown, &e))?,
    );
    if status != 200 {
        let (code, message) = describe(&body);
        let error = BrokerError::from_status(hop, status, code, message);
        return Err(if error.is_transient() {
            error.with_retry_after(retry_after)
        } else {
            error
        });
    }
    Ok(body)
}
