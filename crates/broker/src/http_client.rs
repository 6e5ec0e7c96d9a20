//! The broker's HTTP clients, built on first use and shared by every hop of a context.
//!
//! A rustls client with the platform's trust store costs more to build than a whole route run
//! against a loopback endpoint: loading and parsing every root certificate of
//! `/etc/ssl/certs` is most of the CPU of a cold `idbridge token` (BENCHMARKS.md). So a context
//! only builds a client without any trust store, for `http://` URLs (the metadata server, an
//! emulator, a private plain-HTTP endpoint); the first request to an `https://` URL builds the
//! TLS client with the platform's roots. Both are shared by the context's clones (the daemon's
//! cache, every hop).
//!
//! The AWS SDK's clients get the same treatment ([`HttpClient::aws_sdk`]): one shared SDK HTTP
//! client per context (its connection pool survives from one exchange to the next), and for a
//! plain-HTTP STS endpoint one whose TLS context has an empty trust store, so the SDK does not
//! load the platform's roots either. Otherwise it is the SDK's default client: rustls with
//! aws-lc, the proxy settings of the environment.
//!
//! The plain client follows redirects like the TLS one, except to `https://`: it has no trust
//! store to check a certificate with, so such a redirect fails with a clear error instead.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_sdk_sts::config::SharedHttpClient;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use reqwest::redirect::Policy;

/// How many redirects either client follows (reqwest's default).
const MAX_REDIRECTS: usize = 10;

/// Lazily built HTTP clients with the same timeouts and user agent.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    connect_timeout: Duration,
    timeout: Duration,
    tls: OnceLock<reqwest::Client>,
    plain: reqwest::Client,
    aws_tls: OnceLock<SharedHttpClient>,
    aws_plain: OnceLock<SharedHttpClient>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("timeout", &self.inner.timeout)
            .field("tls_built", &self.inner.tls.get().is_some())
            .finish()
    }
}

impl HttpClient {
    /// Clients that wait `connect_timeout` for a connection and `timeout` for a whole exchange.
    /// Builds the plain-HTTP one only.
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Result<Self, reqwest::Error> {
        let plain = builder(connect_timeout, timeout)
            .tls_built_in_root_certs(false)
            .redirect(Policy::custom(|attempt| {
                if attempt.url().scheme() != "http" {
                    attempt.error("a plain-http endpoint redirected to https")
                } else if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else {
                    attempt.follow()
                }
            }))
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                connect_timeout,
                timeout,
                tls: OnceLock::new(),
                plain,
                aws_tls: OnceLock::new(),
                aws_plain: OnceLock::new(),
            }),
        })
    }

    /// A GET request to `url`.
    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.client_for(url).get(url)
    }

    /// A POST request to `url`.
    pub fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.client_for(url).post(url)
    }

    /// The client for `url`: without a trust store for `http://`, with the platform's for
    /// anything else.
    pub fn client_for(&self, url: &str) -> &reqwest::Client {
        if is_plain_http(url) {
            return &self.inner.plain;
        }
        self.inner.tls.get_or_init(|| {
            builder(self.inner.connect_timeout, self.inner.timeout)
                .build()
                .unwrap_or_else(|e| {
                    // Only when every certificate of the platform's trust store is unusable:
                    // requests to https then fail as unknown issuers.
                    tracing::error!(error = %e, "cannot build the TLS HTTP client");
                    self.inner.plain.clone()
                })
        })
    }
}

impl HttpClient {
    /// The AWS SDK HTTP client for `endpoint` (the STS URL the SDK will call): built once per
    /// context, without a trust store for `http://`.
    pub fn aws_sdk(&self, endpoint: &str) -> SharedHttpClient {
        let (cell, trust_store) = if is_plain_http(endpoint) {
            (&self.inner.aws_plain, TrustStore::empty())
        } else {
            (&self.inner.aws_tls, TrustStore::default())
        };
        cell.get_or_init(|| aws_sdk_client(trust_store)).clone()
    }
}

/// The SDK's default HTTPS client (rustls with aws-lc, proxy settings from the environment)
/// over `trust_store`.
fn aws_sdk_client(trust_store: TrustStore) -> SharedHttpClient {
    let context = TlsContext::builder()
        .with_trust_store(trust_store)
        .build()
        .unwrap_or_default();
    aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
        let mut b = aws_smithy_http_client::ConnectorBuilder::default()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(context.clone());
        b.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            b.set_sleep_impl(c.sleep_impl());
        }
        b.set_proxy_config(Some(ProxyConfig::from_env()));
        b.build()
    })
}

fn builder(connect_timeout: Duration, timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(concat!("idbridge/", env!("CARGO_PKG_VERSION")))
}

/// `http://…` (any case), where no certificate is ever checked.
fn is_plain_http(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_client_is_built_on_first_https_use_and_shared() {
        let c = HttpClient::new(Duration::from_secs(1), Duration::from_secs(2)).unwrap();
        let clone = c.clone();
        let _ = c.get("http://127.0.0.1:1/x");
        assert!(c.inner.tls.get().is_none(), "no trust store for plain http");
        let _ = c.post("https://sts.amazonaws.com/");
        assert!(clone.inner.tls.get().is_some());
    }

    #[test]
    fn only_http_urls_are_plain() {
        assert!(is_plain_http("http://metadata.google.internal/x"));
        assert!(is_plain_http("HTTP://127.0.0.1:8080"));
        assert!(!is_plain_http("https://oauth2.googleapis.com/token"));
        assert!(!is_plain_http("http:/"));
        assert!(!is_plain_http(""));
    }
}
