//! Pod identity (DaemonSet mode): which pod of this node is calling, by the connection's
//! source IP, through the Kubernetes API.
//!
//! A [`PodIndex`] lists this node's pods (`GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`)
//! and then watches them from the list's `resourceVersion`, keeping a local index from pod IP
//! to pod. The index holds at most `max_pods` pods, filled only from the API server's answers
//! (never from what a client sends); pods beyond the bound are not indexed and are looked up
//! one by one. An IP the index does not know is asked about once per connection
//! (`GET /api/v1/pods?fieldSelector=status.podIP=<ip>,spec.nodeName=<node>`), and the answer
//! is not kept. Host-network pods (whose IP is the node's), pods not `Running`, and an IP with
//! no pod or several are refused.
//!
//! [`PodRules`] (`[[serve.pod]]`) then pick the pod's route.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use idbridge_broker::source::kubernetes_pod::{ApiServer, PodRef};
use serde::Deserialize;

/// The annotation a pod names its route with (a rule must allow it).
pub const ROUTE_ANNOTATION: &str = "idbridge.dev/route";
/// Default bound on indexed pods (a node runs at most a few hundred).
pub const DEFAULT_MAX_PODS: usize = 1024;
/// Timeout of a list or a one-pod lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one watch request lasts before it is renewed (the API server closes it then).
const WATCH_SECONDS: u64 = 300;
/// The pause before relisting after a failure.
const RETRY_PAUSE: Duration = Duration::from_secs(2);
/// Bound on one watch event line.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// `[serve.kubernetes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// How to reach the API server.
    pub api: ApiServer,
    /// This node's name (`node`, else `NODE_NAME` at start).
    pub node: Option<String>,
    /// Bound on the index.
    pub max_pods: NonZeroUsize,
    /// The route rules, in file order.
    pub rules: PodRules,
}

/// A calling pod, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Namespace, service account, name and uid.
    pub id: PodRef,
    /// `status.podIP`.
    pub ip: IpAddr,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The [`ROUTE_ANNOTATION`] annotation.
    pub route_annotation: Option<String>,
}

/// One `[[serve.pod]]` rule: every given condition must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRule {
    /// The pod's namespace.
    pub namespace: String,
    /// Its service account, if the rule names one.
    pub service_account: Option<String>,
    /// Labels the pod must carry.
    pub labels: BTreeMap<String, String>,
    /// The value its `idbridge.dev/route` annotation must have, if the rule names one.
    pub annotation: Option<String>,
    /// The route it gets.
    pub route: String,
}

impl PodRule {
    fn matches(&self, pod: &Pod) -> bool {
        self.namespace == pod.id.namespace
            && self
                .service_account
                .as_ref()
                .is_none_or(|s| *s == pod.id.service_account)
            && self
                .labels
                .iter()
                .all(|(k, v)| pod.labels.get(k) == Some(v))
            && self
                .annotation
                .as_ref()
                .is_none_or(|a| pod.route_annotation.as_ref() == Some(a))
    }
}

/// The rules; the first that matches a pod gives its route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRules(pub Vec<PodRule>);

impl PodRules {
    /// The route of `pod`, if a rule gives it one.
    pub fn route_for(&self, pod: &Pod) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.matches(pod))
            .map(|r| r.route.as_str())
    }
}

#[derive(Debug, Deserialize)]
struct PodList {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<RawPod>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(default)]
    resource_version: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPod {
    metadata: RawMeta,
    spec: RawSpec,
    status: RawStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawMeta {
    name: String,
    namespace: String,
    uid: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawSpec {
    service_account_name: String,
    host_network: bool,
    node_name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawStatus {
    phase: String,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
}

impl RawPod {
    /// The pod, if it may be attributed by IP: running, not on the host network, with an IP.
    fn usable(self) -> Option<Pod> {
        if self.spec.host_network || self.status.phase != "Running" {
            return None;
        }
        let ip = self.status.pod_ip?.parse().ok()?;
        let service_account = if self.spec.service_account_name.is_empty() {
            "default".to_owned()
        } else {
            self.spec.service_account_name
        };
        Some(Pod {
            id: PodRef {
                namespace: self.metadata.namespace,
                service_account,
                name: self.metadata.name,
                uid: self.metadata.uid,
            },
            ip,
            labels: self.metadata.labels,
            route_annotation: self.metadata.annotations.get(ROUTE_ANNOTATION).cloned(),
        })
    }

    fn key(&self) -> (String, String) {
        (self.metadata.namespace.clone(), self.metadata.name.clone())
    }
}

/// This node's pods by IP, kept fresh by a watch.
#[derive(Debug)]
pub struct PodIndex {
    config: KubernetesConfig,
    base: Result<String, String>,
    node: Option<String>,
    client: Option<reqwest::Client>,
    watch_client: Option<reqwest::Client>,
    /// (namespace, name) → pod, at most `max_pods`.
    pods: Mutex<HashMap<(String, String), Arc<Pod>>>,
}

impl PodIndex {
    /// An index for `config`; `env` gives `NODE_NAME` and the in-cluster API address. Call
    /// [`PodIndex::start`] to fill it.
    pub fn new(config: KubernetesConfig, env: &dyn idbridge_core::env::Env) -> Self {
        let node = config.node.clone().or_else(|| env.get("NODE_NAME"));
        let base = config.api.base_url(env);
        let build = |timeout: Duration| match config.api.client_builder() {
            Ok(b) => b
                .connect_timeout(Duration::from_secs(5))
                .timeout(timeout)
                .build()
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let (client, watch_client) = match (
            build(LOOKUP_TIMEOUT),
            build(Duration::from_secs(WATCH_SECONDS + 30)),
        ) {
            (Ok(a), Ok(b)) => (Some(a), Some(b)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot build the Kubernetes API client: every pod is refused");
                (None, None)
            }
        };
        if node.is_none() {
            tracing::error!(
                "[serve.kubernetes] has no `node` and NODE_NAME is not set: every pod is refused"
            );
        }
        if let Err(e) = &base {
            tracing::error!(error = %e, "no Kubernetes API server: every pod is refused");
        }
        Self {
            config,
            base,
            node,
            client,
            watch_client,
            pods: Mutex::default(),
        }
    }

    /// The route rules.
    pub fn rules(&self) -> &PodRules {
        &self.config.rules
    }

    /// Starts the list-and-watch task (it ends when the index is dropped).
    pub fn start(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(watch_loop(weak));
    }

    /// How many pods are indexed.
    pub fn len(&self) -> usize {
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no pod is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pod at `ip` on this node: from the index, else from one API lookup (not kept).
    pub async fn lookup(&self, ip: IpAddr) -> Option<Arc<Pod>> {
        let ip = ip.to_canonical();
        if ip.is_loopback() {
            return None;
        }
        let hit = self
            .pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|p| p.ip == ip)
            .cloned()
            .collect::<Vec<_>>();
        match hit.len() {
            1 => return hit.into_iter().next(),
            0 => {}
            _ => {
                tracing::warn!(%ip, "several pods have this IP: refused");
                return None;
            }
        }
        let node = self.node.as_deref()?;
        let selector = format!("status.podIP={ip},spec.nodeName={node}");
        let list = match self.list(&selector).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%ip, error = %e, "pod lookup failed: refused");
                return None;
            }
        };
        let mut pods: Vec<Pod> = list.items.into_iter().filter_map(RawPod::usable).collect();
        if pods.len() != 1 {
            tracing::info!(%ip, found = pods.len(), "no single running pod has this IP: refused");
            return None;
        }
        pods.pop().map(Arc::new)
    }

    async fn get(
        &self,
        client: &reqwest::Client,
        query: &str,
    ) -> Result<reqwest::Response, String> {
        let (Ok(base), Some(_)) = (&self.base, &self.node) else {
            return Err("pod identity is not configured".to_owned());
        };
        let token = self.config.api.bearer()?;
        let mut auth =
            axum::http::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| "the API token is not a header value".to_owned())?;
        auth.set_sensitive(true);
        let resp = client
            .get(format!("{base}/api/v1/pods?{query}"))
            .header(axum::http::header::AUTHORIZATION, auth)
            .send()
            .await
            .map_err(|e| format!("{base}/api/v1/pods: {e}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            return Err(format!(
                "{base}/api/v1/pods answered {status}: {}",
                v["message"].as_str().unwrap_or("")
            ));
        }
        Ok(resp)
    }

    async fn list(&self, selector: &str) -> Result<PodList, String> {
        let client = self.client.as_ref().ok_or("no API client")?;
        let query = format!("fieldSelector={}", encode(selector));
        let resp = self.get(client, &query).await?;
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| format!("a pod list that does not parse: {e}"))
    }

    fn replace_all(&self, items: Vec<RawPod>) {
        let max = self.config.max_pods.get();
        let mut map = HashMap::new();
        for raw in items {
            let key = raw.key();
            if let Some(p) = raw.usable() {
                if map.len() >= max {
                    tracing::warn!(
                        max,
                        "more pods on this node than max_pods: the rest are looked up one by one"
                    );
                    break;
                }
                map.insert(key, Arc::new(p));
            }
        }
        *self.pods.lock().unwrap_or_else(PoisonError::into_inner) = map;
    }

    fn apply(&self, event: WatchEvent) -> Result<(), String> {
        let raw: RawPod = serde_json::from_value(event.object)
            .map_err(|e| format!("a watch event that does not parse: {e}"))?;
        let key = raw.key();
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        match event.kind.as_str() {
            "DELETED" => {
                pods.remove(&key);
            }
            "ADDED" | "MODIFIED" => match raw.usable() {
                Some(p) => {
                    if pods.contains_key(&key) || pods.len() < self.config.max_pods.get() {
                        pods.insert(key, Arc::new(p));
                    }
                }
                None => {
                    pods.remove(&key);
                }
            },
            _ => {}
        }
        Ok(())
    }
}

/// `application/x-www-form-urlencoded`-style escaping of a query value.
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// List, then watch from the list's version; on any failure (or a 410 Expired) list again.
async fn watch_loop(index: Weak<PodIndex>) {
    loop {
        let Some(ix) = index.upgrade() else { return };
        if let Err(e) = list_and_watch(&ix).await {
            tracing::warn!(error = %e, "pod watch ended; listing again");
        }
        drop(ix);
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

async fn list_and_watch(ix: &PodIndex) -> Result<(), String> {
    let node = ix.node.clone().ok_or("no node name")?;
    let selector = format!("spec.nodeName={node}");
    let list = ix.list(&selector).await?;
    let mut version = list.metadata.resource_version.unwrap_or_default();
    ix.replace_all(list.items);
    tracing::info!(pods = ix.len(), node = %node, "pods of this node indexed");
    let client = ix.watch_client.as_ref().ok_or("no API client")?;
    loop {
        let query = format!(
            "fieldSelector={}&watch=true&resourceVersion={}&timeoutSeconds={WATCH_SECONDS}",
            encode(&selector),
            encode(&version)
        );
        let mut resp = ix.get(client, &query).await?;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let event: WatchEvent = serde_json::from_slice(&line)
                    .map_err(|e| format!("a watch line that does not parse: {e}"))?;
                if event.kind == "ERROR" {
                    return Err(format!(
                        "the watch answered an error: {}",
                        event.object["message"].as_str().unwrap_or("")
                    ));
                }
                if let Some(v) = event.object["metadata"]["resourceVersion"].as_str() {
                    version = v.to_owned();
                }
                ix.apply(event)?;
            }
            if buf.len() > MAX_EVENT_BYTES {
                return Err("a watch event longer than 1 MiB".to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, sa: &str, labels: &[(&str, &str)], ann: Option<&str>) -> Pod {
        Pod {
            id: PodRef {
                namespace: ns.into(),
                service_account: sa.into(),
                name: "p".into(),
                uid: "u".into(),
            },
            ip: "10.0.0.1".parse().unwrap(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            route_annotation: ann.map(str::to_owned),
        }
    }

    #[test]
    fn the_first_matching_rule_gives_the_route() {
        let rule =
            |sa: Option<&str>, labels: &[(&str, &str)], ann: Option<&str>, route: &str| PodRule {
                namespace: "default".into(),
                service_account: sa.map(str::to_owned),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                annotation: ann.map(str::to_owned),
                route: route.into(),
            };
        let rules = PodRules(vec![
            rule(None, &[], Some("a"), "by-annotation"),
            rule(Some("web"), &[("tier", "front")], None, "web-front"),
            rule(Some("web"), &[], None, "web"),
        ]);
        assert_eq!(
            rules.route_for(&pod("default", "x", &[], Some("a"))),
            Some("by-annotation")
        );
        assert_eq!(rules.route_for(&pod("default", "x", &[], Some("b"))), None);
        assert_eq!(
            rules.route_for(&pod("default", "web", &[("tier", "front")], None)),
            Some("web-front")
        );
        assert_eq!(
            rules.route_for(&pod("default", "web", &[], None)),
            Some("web")
        );
        assert_eq!(rules.route_for(&pod("other", "web", &[], None)), None);
    }

    /// Polls `f` until it holds (bounded: the watch is on loopback; this is no timing claim).
    async fn eventually(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..400 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    #[tokio::test]
    async fn the_watch_keeps_the_index_fresh_and_bounded() {
        let running = crate::tests::emulator().await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "emulator-kubernetes-token\n").unwrap();
        let api = ApiServer {
            url: Some(format!("http://{}", running.kubernetes)),
            token_file: Some(token),
            ca_file: None,
        };
        let config = |max: usize| KubernetesConfig {
            api: api.clone(),
            node: Some("node-1".into()),
            max_pods: NonZeroUsize::new(max).unwrap(),
            rules: PodRules::default(),
        };
        let env = idbridge_core::env::MapEnv::default();
        let index = Arc::new(PodIndex::new(config(16), &env));
        index.start();
        assert!(
            eventually(|| index.len() == 2).await,
            "the built-in pods are indexed"
        );
        let web = index.lookup("10.88.0.11".parse().unwrap()).await.unwrap();
        assert_eq!(web.id.service_account, "web");
        assert!(index.lookup("127.0.0.1".parse().unwrap()).await.is_none());
        assert!(index.lookup("10.88.0.99".parse().unwrap()).await.is_none());

        let base = format!(
            "http://{}/_emulator/kubernetes/namespaces/default/pods",
            running.kubernetes
        );
        let http = reqwest::Client::new();
        let put = |name: &'static str, body: serde_json::Value| {
            http.put(format!("{base}/{name}")).json(&body).send()
        };
        put(
            "late-0",
            serde_json::json!({"service_account": "web", "pod_ip": "10.88.0.20", "node": "node-1"}),
        )
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
        put("host-0", serde_json::json!({"service_account": "web", "pod_ip": "10.88.0.21", "node": "node-1", "host_network": true}))
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        assert!(
            eventually(|| index.len() == 3).await,
            "an added pod arrives by the watch; a host-network pod is not indexed"
        );
        assert!(index.lookup("10.88.0.21".parse().unwrap()).await.is_none());
        http.delete(format!("{base}/late-0"))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        assert!(
            eventually(|| index.len() == 2).await,
            "a deleted pod leaves the index"
        );

        // A bound below the node's pods: the index stays at it; the rest are looked up one by one.
        let small = Arc::new(PodIndex::new(config(1), &env));
        small.start();
        assert!(eventually(|| small.len() == 1).await);
        assert!(small.lookup("10.88.0.10".parse().unwrap()).await.is_some());
        assert!(small.lookup("10.88.0.11".parse().unwrap()).await.is_some());
        assert_eq!(small.len(), 1);
        http.delete(format!("{base}/host-0")).send().await.unwrap();
    }

    #[test]
    fn host_network_and_pending_pods_are_not_attributed() {
        let raw = |host: bool, phase: &str| RawPod {
            metadata: RawMeta {
                name: "p".into(),
                namespace: "n".into(),
                ..RawMeta::default()
            },
            spec: RawSpec {
                host_network: host,
                ..RawSpec::default()
            },
            status: RawStatus {
                phase: phase.into(),
                pod_ip: Some("10.0.0.1".into()),
            },
        };
        assert!(raw(true, "Running").usable().is_none());
        assert!(raw(false, "Pending").usable().is_none());
        let p = raw(false, "Running").usable().unwrap();
        assert_eq!(p.id.service_account, "default");
    }
}
