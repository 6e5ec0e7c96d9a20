//! Source `kubernetes-pod`: the calling pod's service-account token, minted with the
//! Kubernetes TokenRequest API (`POST …/serviceaccounts/{sa}/token`) for the route's audience
//! and bound to the pod (`boundObjectRef`), so it dies with the pod.
//!
//! Which pod is calling is per-request context: `idbridge serve` with `[serve.kubernetes]`
//! finds the pod behind a connection and runs the route in a [`Context`] carrying it
//! ([`Context::with_pod`]). Anywhere else (one-shot commands, a caller that is not a pod) the
//! source refuses to run.

use std::path::PathBuf;

use idbridge_core::Credential;
use idbridge_core::env::Env;
use idbridge_core::secret::SecretString;
use serde::Deserialize;
use tokio::time::Instant;

use crate::step::{Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::token::id_token_hop;
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport, Overrides};

/// The hop.
pub const HOP: Hop = Hop::new(
    "kubernetes-token",
    "KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT or api_server",
);

/// The in-cluster service-account token the kubelet projects into every pod.
pub const TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The cluster CA the kubelet projects next to it.
pub const CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// The Kubernetes minimum for `expirationSeconds` (ten minutes).
pub const MIN_EXPIRATION_SECONDS: u32 = 600;
/// The API server's default when none is asked for.
pub const DEFAULT_EXPIRATION_SECONDS: u32 = 3600;

/// The pod a request comes from, as the Kubernetes API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.serviceAccountName`.
    pub service_account: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// A calling pod and how to reach its API server (`serve`'s `[serve.kubernetes]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallingPod {
    /// The pod.
    pub pod: PodRef,
    /// The API server `serve` found it through; the source's own fields take precedence.
    pub api: ApiServer,
}

/// How to reach the API server: `api_server` (a URL; else `https://` +
/// `KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT`, as inside a pod), the bearer token file
/// (re-read on every call, so the kubelet's rotation is seen) and the CA file for `https://`
/// (used when it exists; else the platform's trust store).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiServer {
    /// `api_server`.
    pub url: Option<String>,
    /// `token_file` (default [`TOKEN_FILE`]).
    pub token_file: Option<PathBuf>,
    /// `ca_file` (default [`CA_FILE`]).
    pub ca_file: Option<PathBuf>,
}

impl ApiServer {
    /// These settings, each unset one taken from `other`.
    pub fn or(&self, other: &ApiServer) -> ApiServer {
        ApiServer {
            url: self.url.clone().or_else(|| other.url.clone()),
            token_file: self.token_file.clone().or_else(|| other.token_file.clone()),
            ca_file: self.ca_file.clone().or_else(|| other.ca_file.clone()),
        }
    }

    /// The API server's base URL (no trailing slash).
    pub fn base_url(&self, env: &dyn Env) -> Result<String, String> {
        if let Some(u) = &self.url {
            return Ok(u.trim_end_matches('/').to_owned());
        }
        match (
            env.get("KUBERNETES_SERVICE_HOST"),
            env.get("KUBERNETES_SERVICE_PORT"),
        ) {
            (Some(host), port) => {
                let port = port.unwrap_or_else(|| "443".to_owned());
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                Ok(format!("https://{host}:{port}"))
            }
            (None, _) => Err(
                "no `api_server` configured and KUBERNETES_SERVICE_HOST is not set \
                              (not running in a pod)"
                    .to_owned(),
            ),
        }
    }

    /// The bearer token, read from its file now.
    pub fn bearer(&self) -> Result<SecretString, String> {
        let path = self
            .token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(TOKEN_FILE));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read the API token file {}: {e}", path.display()))?;
        let token = SecretString::new(text.trim());
        if token.is_empty() {
            return Err(format!("the API token file {} is empty", path.display()));
        }
        Ok(token)
    }

    /// A client builder trusting the cluster CA (when its file exists) for `https://`.
    pub fn client_builder(&self) -> Result<reqwest::ClientBuilder, String> {
        let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        let path = self
            .ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(CA_FILE));
        match std::fs::read(&path) {
            Ok(pem) => {
                for cert in reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| format!("the CA file {} is not PEM: {e}", path.display()))?
                {
                    b = b.add_root_certificate(cert);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.ca_file.is_none() => {}
            Err(e) => return Err(format!("cannot read the CA file {}: {e}", path.display())),
        }
        Ok(b)
    }
}

/// `source = { kind = "kubernetes-pod", audience = "…", expiration_seconds = 3600,
/// api_server = "…", token_file = "…", ca_file = "…" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesPod {
    audience: String,
    expiration_seconds: u32,
    api: ApiServer,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    audience: String,
    #[serde(default)]
    expiration_seconds: Option<u32>,
    #[serde(default)]
    api_server: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

impl KubernetesPod {
    /// Reads `source = { kind = "kubernetes-pod", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Raw = p.table(table)?;
        if raw.audience.is_empty() {
            return Err(p.invalid("audience", "must not be empty"));
        }
        let expiration_seconds = raw.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        if expiration_seconds < MIN_EXPIRATION_SECONDS {
            return Err(p.invalid(
                "expiration_seconds",
                "must be at least 600 (the API server refuses shorter tokens)",
            ));
        }
        if let Some(u) = &raw.api_server
            && !u.starts_with("http://")
            && !u.starts_with("https://")
        {
            return Err(p.invalid("api_server", "must be an http(s) URL"));
        }
        Ok(Box::new(KubernetesPod {
            audience: raw.audience,
            expiration_seconds,
            api: ApiServer {
                url: raw.api_server,
                token_file: raw.token_file.map(|f| p.path(f)),
                ca_file: raw.ca_file.map(|f| p.path(f)),
            },
        }))
    }

    /// Mints the calling pod's token.
    async fn mint(
        &self,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let fail = |kind, m: String| BrokerError::new(kind, HOP, m);
        let Some(calling) = &ctx.pod else {
            return Err(fail(
                ErrorKind::NotConfigured,
                "no calling pod: the kubernetes-pod source runs only in `idbridge serve` with \
                 [serve.kubernetes], for a caller that is a pod"
                    .to_owned(),
            ));
        };
        let (pod, api) = (&calling.pod, self.api.or(&calling.api));
        let base = api
            .base_url(ctx.env.as_ref())
            .map_err(|m| fail(ErrorKind::NotConfigured, m))?;
        let bearer = api
            .bearer()
            .map_err(|m| fail(ErrorKind::NotConfigured, m))?;
        let url = format!(
            "{base}/api/v1/namespaces/{}/serviceaccounts/{}/token",
            path_segment(&pod.namespace),
            path_segment(&pod.service_account)
        );
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [self.audience],
                "expirationSeconds": self.expiration_seconds,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.name, "uid": pod.uid},
            },
        });
        let started = Instant::now();
        let tls;
        let client = if url.starts_with("http://") {
            ctx.http.client_for(&url)
        } else {
            tls = api
                .client_builder()
                .and_then(|b| {
                    b.connect_timeout(ctx.connect_timeout())
                        .timeout(ctx.hop_timeout)
                        .build()
                        .map_err(|e| e.to_string())
                })
                .map_err(|m| fail(ErrorKind::NotConfigured, m))?;
            &tls
        };
        let mut auth = http::HeaderValue::from_str(&format!("Bearer {}", bearer.expose_secret()))
            .map_err(|_| {
            fail(
                ErrorKind::NotConfigured,
                "the API token is not a header value".to_owned(),
            )
        })?;
        auth.set_sensitive(true);
        let shown = format!(
            "{base}/api/v1/namespaces/{}/serviceaccounts/{}/token",
            pod.namespace, pod.service_account
        );
        let resp = client
            .post(&url)
            .header(http::header::AUTHORIZATION, auth)
            .json(&body)
            .send()
            .await
            .map_err(|e| BrokerError::from_http(HOP, &shown, &e))?;
        let status = resp.status().as_u16();
        let text = zeroize::Zeroizing::new(
            resp.text()
                .await
                .map_err(|e| BrokerError::from_http(HOP, &shown, &e))?,
        );
        if status != 200 && status != 201 {
            // A Kubernetes Status: `reason` and `message` (which hold no token).
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let code = v["reason"].as_str().map(str::to_owned);
            let message = v["message"].as_str().map_or_else(
                || format!("TokenRequest at {shown} answered {status}"),
                |m| format!("TokenRequest at {shown}: {m}"),
            );
            return Err(BrokerError::from_status(HOP, status, code, message));
        }
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
            BrokerError::unparsable(
                HOP,
                format!("TokenRequest at {shown}: the answer is not JSON"),
            )
        })?;
        let Some(jwt) = v["status"]["token"].as_str() else {
            return Err(BrokerError::unparsable(
                HOP,
                format!("TokenRequest at {shown}: no status.token in the answer"),
            ));
        };
        let jwt = zeroize::Zeroizing::new(jwt.to_owned());
        id_token_hop(
            HOP,
            &jwt,
            shown,
            |_| format!("pod {}/{}", pod.namespace, pod.name),
            started,
            hops,
        )
    }
}

/// A name as one URL path segment (Kubernetes names are DNS labels; anything else is escaped).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Step for KubernetesPod {
    fn kind(&self) -> &'static str {
        "kubernetes-pod"
    }

    fn yields(&self) -> Yields {
        Yields::IdToken
    }

    fn describe(&self) -> String {
        format!(
            "the calling pod's service-account token for {} (TokenRequest)",
            self.audience
        )
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            audience: Some(&self.audience),
            ..Facts::default()
        }
    }

    fn with_overrides(&self, overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        if overrides.scopes.is_some() {
            return Some(Err(
                "a Kubernetes token has an audience, not scopes".to_owned()
            ));
        }
        let audience = overrides.audience.clone()?;
        Some(Ok(Box::new(KubernetesPod {
            audience,
            ..self.clone()
        })))
    }

    fn run<'a>(
        &'a self,
        _input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(self.mint(ctx, hops))
    }
}
