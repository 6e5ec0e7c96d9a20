//! SigV4 request signing for `idbridge request` (like `curl --aws-sigv4`), through the
//! `aws-sigv4` crate.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use idbridge_core::AwsCredentials;

use crate::{BrokerError, ErrorKind};

/// A request to sign. Its `Debug` shows header names only (a caller's headers may carry a
/// credential) and the body's length.
pub struct UnsignedRequest<'a> {
    /// Method.
    pub method: &'a str,
    /// Full URL.
    pub url: &'a str,
    /// Headers (the `host` header is derived from the URL).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: &'a [u8],
}

impl std::fmt::Debug for UnsignedRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsignedRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field(
                "header_names",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The AWS SDK's view of idbridge credentials.
pub(crate) fn sdk_credentials(creds: &AwsCredentials) -> Credentials {
    Credentials::new(
        &creds.access_key_id,
        creds.secret_access_key.expose_secret(),
        creds
            .session_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        None,
        "idbridge",
    )
}

/// Signing settings per service: S3 (and S3-compatible `s3-object-lambda`) signs the payload
/// hash as `x-amz-content-sha256`, encodes the path once and never normalizes it; every other
/// service uses the SigV4 defaults (double encoding, normalized paths).
fn settings_for(service: &str) -> SigningSettings {
    let mut s = SigningSettings::default();
    if service == "s3" || service == "s3-object-lambda" || service == "s3express" {
        s.payload_checksum_kind = aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256;
        s.percent_encoding_mode = aws_sigv4::http_request::PercentEncodingMode::Single;
        s.uri_path_normalization_mode = aws_sigv4::http_request::UriPathNormalizationMode::Disabled;
    }
    s
}

/// Returns the headers to add (`authorization`, `x-amz-date`, `x-amz-security-token`, …).
pub fn sign_request(
    creds: &AwsCredentials,
    req: &UnsignedRequest<'_>,
    service: &str,
    region: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, BrokerError> {
    let fail = |m: String| BrokerError::new(ErrorKind::InvalidConfiguration, "sigv4", m);
    let identity = sdk_credentials(creds).into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings_for(service))
        .build()
        .map_err(|e| fail(format!("cannot build signing parameters: {e}")))?;
    let signable = SignableRequest::new(
        req.method,
        req.url,
        req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(req.body),
    )
    .map_err(|e| fail(format!("cannot sign this request: {e}")))?;
    let (instructions, _sig) = sign(signable, &params.into())
        .map_err(|e| fail(format!("signing failed: {e}")))?
        .into_parts();
    let (headers, _params) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name().to_owned(), h.value().to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_request_debug_shows_header_names_only() {
        let req = UnsignedRequest {
            method: "POST",
            url: "https://sts.us-east-1.amazonaws.com/",
            headers: vec![("authorization".into(), "Bearer caller-secret".into())],
            body: b"payload-secret",
        };
        let printed = format!("{req:?} {req:#?}");
        assert!(!printed.contains("caller-secret"), "{printed}");
        assert!(!printed.contains("payload-secret"), "{printed}");
        assert!(printed.contains("authorization"), "{printed}");
    }
}
