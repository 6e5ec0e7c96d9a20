//! Google's HTTP APIs as every Google hop calls them: one request, its 200 body, and a non-200
//! answer reduced to Google's code and message (`google.rpc.Status` or OAuth2's
//! `{"error", "error_description"}`), never the body itself.

use crate::{BrokerError, Context, Hop};

/// Sends a request to a Google API and returns the 200 body (zeroized on drop: it holds a
/// token); a non-200 answer becomes an error carrying Google's code and message, classified by
/// its status ([`crate::upstream`]).
pub(crate) async fn send_google(
    ctx: &Context,
    hop: Hop,
    url: &str,
    req: reqwest::RequestBuilder,
) -> Result<zeroize::Zeroizing<String>, BrokerError> {
    crate::upstream::send(ctx, hop, url, req, google_error).await
}

/// Reads an error body from a Google API: `google.rpc.Status` or OAuth `{"error",…}`; returns
/// (code, message) without ever echoing unknown bodies (they may hold tokens).
pub(crate) fn google_error(body: &str) -> (Option<String>, String) {
    if let Ok(e) = serde_json::from_str::<idbridge_wire::google::RpcError>(body) {
        return (Some(e.error.status), e.error.message);
    }
    if let Ok(e) = serde_json::from_str::<idbridge_wire::google::OAuthError>(body) {
        return (Some(e.error), e.error_description.unwrap_or_default());
    }
    (None, "unrecognised error body".to_owned())
}
