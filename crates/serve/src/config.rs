//! The `[serve]` section of a route config file, validated before any socket is bound.
//!
//! The file is the one `idbridge token` reads: its `[[route]]`s and `[endpoints]` are parsed
//! and validated by [`idbridge_broker::Config`] (which ignores `[serve]`), then this module
//! parses `[serve]` and checks it against those routes. See the crate docs for the fields.
//! Every error is an [`idbridge_broker::ConfigError`] naming the file, the line and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use idbridge_broker::config::{RouteConfig, Yields};
use idbridge_broker::step::AwsRole;
use idbridge_broker::{Config, ConfigError};
use serde::Deserialize;
use toml::Spanned;

use crate::accounts::Accounts;
use crate::caller::{CallerPolicy, CallerRule, RouteSet, Who};
use crate::conn::ConnectionLimits;
use crate::frontend::{Configured, Section};

/// The scope Google tokens get when a route names none.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Default bound on cached credentials (one per route and audience or scope set): far above
/// what a host's workloads ask for, low enough that clients inventing audiences cannot grow the
/// daemon without bound.
pub const DEFAULT_MAX_CACHED_CREDENTIALS: usize = 256;
/// Default bound on the client-chosen keys (`?audience=`, `?scopes=`) cached per route, in
/// their own least-recently-used set: a host's workloads use a handful of audiences each, and a
/// client inventing audiences only evicts its own route's older ones, never another route's
/// credentials.
pub const DEFAULT_MAX_CLIENT_KEYS_PER_ROUTE: usize = 64;

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where a frontend listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP port on `[serve] bind` (0 = any free port).
    Port(u16),
    /// A unix socket at this path (absolute), created at start and removed at shutdown.
    Socket(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Port(0) => f.write_str("any free TCP port"),
            Listen::Port(p) => write!(f, "TCP port {p}"),
            Listen::Socket(path) => write!(f, "unix socket {}", path.display()),
        }
    }
}

/// A validated `idbridge serve` config: the routes and the `[serve]` section.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The routes and endpoints of the file.
    pub routes: Config,
    /// Address of every TCP listener.
    pub bind: IpAddr,
    /// Log format asked for by the file.
    pub log_format: LogFormat,
    /// Bound on cached credentials.
    pub max_cached_credentials: NonZeroUsize,
    /// The configured frontends and listeners ([`crate::frontend::KINDS`]), in registration
    /// order.
    pub frontends: Vec<Arc<dyn Configured>>,
    /// Who may use which route.
    pub callers: CallerPolicy,
    /// Connection caps and timeouts of every listener (`[serve.connections]`).
    pub connections: ConnectionLimits,
    /// Bound on the distinct client-chosen keys (`?audience=`, `?scopes=`) cached per route.
    pub max_client_keys_per_route: NonZeroUsize,
    /// The fleet cache (`[cache]`, see [`idbridge_broker::shared_cache`]).
    pub cache: idbridge_broker::shared_cache::CacheSettings,
    /// Pod identity: `[serve.kubernetes]` and the `[[serve.pod]]` rules.
    pub kubernetes: Option<crate::pods::KubernetesConfig>,
}

#[derive(Debug, Deserialize)]
struct RawFile {
    #[serde(default)]
    serve: Option<Spanned<RawServe>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    #[serde(default)]
    bind: Option<Spanned<String>>,
    #[serde(default)]
    log_format: Option<Spanned<String>>,
    #[serde(default)]
    max_cached_credentials: Option<Spanned<usize>>,
    #[serde(default)]
    caller: Vec<Spanned<RawCaller>>,
    #[serde(default)]
    connections: Option<Spanned<RawConnections>>,
    #[serde(default)]
    max_client_keys_per_route: Option<Spanned<usize>>,
    #[serde(default)]
    kubernetes: Option<Spanned<RawKubernetes>>,
    #[serde(default)]
    pod: Vec<Spanned<RawPodRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    #[serde(default)]
    api_server: Option<Spanned<String>>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    max_pods: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPodRule {
    namespace: String,
    #[serde(default)]
    service_account: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotation: Option<String>,
    route: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnections {
    #[serde(default)]
    max_per_listener: Option<Spanned<usize>>,
    #[serde(default)]
    max_per_caller: Option<Spanned<usize>>,
    #[serde(default)]
    header_read_timeout_ms: Option<Spanned<u64>>,
    #[serde(default)]
    idle_timeout_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    #[serde(default)]
    uid: Option<Spanned<u32>>,
    #[serde(default)]
    user: Option<Spanned<String>>,
    #[serde(default)]
    group: Option<Spanned<String>>,
    routes: Spanned<Vec<String>>,
}

/// Reads only `[serve] log_format` of a config file, leniently (any problem → `None`), so the
/// log subscriber can be set up before the full validation, whose errors are then logged in
/// the asked-for format.
pub fn log_format_hint(path: &Path) -> Option<LogFormat> {
    #[derive(Deserialize)]
    struct Hint {
        serve: Option<HintServe>,
    }
    #[derive(Deserialize)]
    struct HintServe {
        log_format: Option<String>,
    }
    let text = idbridge_core::file::read_config_file(path).ok()?;
    let hint: Hint = toml::from_str(&text).ok()?;
    match hint.serve?.log_format?.as_str() {
        "json" => Some(LogFormat::Json),
        "text" => Some(LogFormat::Text),
        _ => None,
    }
}

impl ServeConfig {
    /// Loads and validates a config file against the system's users and groups. Relative
    /// paths inside resolve against the file's directory.
    pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
        let text =
            idbridge_core::file::read_config_file(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
        let base = path.parent().map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        });
        Self::parse(
            &text,
            &path.display().to_string(),
            base,
            &Accounts::system(),
        )
    }

    /// Parses and validates config text; `base` resolves relative paths, `accounts` user and
    /// group names.
    pub fn parse(
        text: &str,
        path: &str,
        base: Option<&Path>,
        accounts: &Accounts,
    ) -> Result<ServeConfig, ConfigError> {
        let routes = Config::parse(text, path, base)?;
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            message: idbridge_broker::config::toml_error_message(text, &e),
        };
        let mut doc = toml::de::DeTable::parse(text).map_err(parse_error)?;
        let sections = crate::frontend::take_sections(&mut doc);
        let raw = RawFile::deserialize(toml::de::Deserializer::from(doc)).map_err(parse_error)?;
        let v = Validator {
            text,
            path,
            base,
            routes: &routes,
        };
        let Some(serve) = raw.serve else {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: 1,
                message: format!(
                    "no [serve] section: `idbridge serve` needs at least one frontend ({})",
                    frontend_sections()
                ),
            });
        };
        let serve_span = serve.span();
        let serve = serve.into_inner();
        let bind = match &serve.bind {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(b) => b.get_ref().parse().map_err(|_| {
                v.err(
                    b.span(),
                    format!(
                        "[serve] field `bind`: {:?} is not an IP address",
                        b.get_ref()
                    ),
                )
            })?,
        };
        let log_format = match serve.log_format.as_ref().map(|f| (f.get_ref().as_str(), f)) {
            None | Some(("text", _)) => LogFormat::Text,
            Some(("json", _)) => LogFormat::Json,
            Some((other, f)) => {
                return Err(v.err(
                    f.span(),
                    format!(
                        "[serve] field `log_format` must be \"text\" or \"json\", not {other:?}"
                    ),
                ));
            }
        };
        let max_cached_credentials = match &serve.max_cached_credentials {
            None => NonZeroUsize::new(DEFAULT_MAX_CACHED_CREDENTIALS).unwrap_or(NonZeroUsize::MIN),
            Some(n) => NonZeroUsize::new(*n.get_ref()).ok_or_else(|| {
                v.err(
                    n.span(),
                    "[serve] field `max_cached_credentials` must be at least 1".to_owned(),
                )
            })?,
        };
        let frontends = sections
            .into_iter()
            .map(|(kind, value)| kind.parse(Section::new(value, &v, kind.section())))
            .collect::<Result<Vec<_>, _>>()?;
        if !frontends.iter().any(|f| f.kind().serves_credentials()) {
            return Err(v.err(
                serve_span,
                format!(
                    "[serve] configures no frontend: add one of {}",
                    frontend_sections()
                ),
            ));
        }
        let callers = v.callers(serve.caller, accounts)?;
        let connections = v.connections(serve.connections)?;
        let max_client_keys_per_route = match &serve.max_client_keys_per_route {
            None => {
                NonZeroUsize::new(DEFAULT_MAX_CLIENT_KEYS_PER_ROUTE).unwrap_or(NonZeroUsize::MIN)
            }
            Some(n) => NonZeroUsize::new(*n.get_ref()).ok_or_else(|| {
                v.err(
                    n.span(),
                    "[serve] field `max_client_keys_per_route` must be at least 1".to_owned(),
                )
            })?,
        };
        let kubernetes = v.kubernetes(serve.kubernetes, serve.pod)?;
        v.distinct_listeners(&listeners(&frontends))?;
        Ok(ServeConfig {
            routes,
            bind,
            log_format,
            max_cached_credentials,
            frontends,
            callers,
            connections,
            max_client_keys_per_route,
            cache: idbridge_broker::shared_cache::CacheSettings::parse(
                text,
                path,
                base,
                &idbridge_core::env::ProcessEnv,
            )?,
            kubernetes,
        })
    }

    /// Every listener: (section, where), in a fixed order.
    pub fn listeners(&self) -> Vec<(&'static str, &Listen)> {
        listeners(&self.frontends)
    }
}

impl ServeConfig {
    /// The configured frontend of type `T` (behind the seam), if any.
    pub fn frontend<T: 'static>(&self) -> Option<&T> {
        self.frontends
            .iter()
            .find_map(|f| (**f).as_any().downcast_ref::<T>())
    }
}

/// Every frontend section, for errors: `[serve.gce_metadata], …`.
fn frontend_sections() -> String {
    let all: Vec<_> = crate::frontend::KINDS
        .iter()
        .filter(|k| k.serves_credentials())
        .map(|k| k.section())
        .collect();
    all.join(", ")
}

fn listeners(frontends: &[Arc<dyn Configured>]) -> Vec<(&'static str, &Listen)> {
    frontends
        .iter()
        .map(|f| (f.kind().section(), f.listen()))
        .collect()
}

/// What a route finally yields (its config is already validated by the broker).
pub fn final_yield(route: &RouteConfig) -> Yields {
    route.yields()
}

/// The role a route assumes last, when its last exchange assumes one.
pub(crate) fn route_role(route: &RouteConfig) -> Option<AwsRole<'_>> {
    route.exchange.last().and_then(|e| e.facts().aws_role)
}

pub(crate) struct Validator<'a> {
    text: &'a str,
    path: &'a str,
    base: Option<&'a Path>,
    pub(crate) routes: &'a Config,
}

impl<'a> Validator<'a> {
    fn line(&self, span: &Range<usize>) -> usize {
        self.text
            .get(..span.start)
            .map_or(1, |t| t.matches('\n').count() + 1)
    }

    /// A type or unknown-field error of a section, as the file's own parse error.
    pub(crate) fn parse_err(&self, e: &toml::de::Error) -> ConfigError {
        ConfigError::Parse {
            path: self.path.to_owned(),
            message: idbridge_broker::config::toml_error_message(self.text, e),
        }
    }

    pub(crate) fn err(&self, span: Range<usize>, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: self.line(&span),
            message,
        }
    }

    /// The route named by `name`, which must yield `want`.
    pub(crate) fn route(
        &self,
        section: &str,
        field: &str,
        name: &Spanned<String>,
        want: Yields,
    ) -> Result<&'a RouteConfig, ConfigError> {
        let route = self.routes.route(name.get_ref()).map_err(|e| {
            let known = match e {
                ConfigError::NoSuchRoute { known, .. } => known,
                other => other.to_string(),
            };
            self.err(
                name.span(),
                format!(
                    "{section} field `{field}`: no route named {:?} (routes: {known})",
                    name.get_ref()
                ),
            )
        })?;
        let got = final_yield(route);
        if got != want {
            let what = Yields::described;
            return Err(self.err(
                name.span(),
                format!(
                    "{section} field `{field}`: route {:?} yields {}, but this frontend serves {}",
                    route.name,
                    what(got),
                    what(want)
                ),
            ));
        }
        Ok(route)
    }

    pub(crate) fn absolute(&self, p: &Path) -> PathBuf {
        let joined = match self.base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p.to_path_buf(),
        };
        std::path::absolute(&joined).unwrap_or(joined)
    }

    pub(crate) fn listen(
        &self,
        section: &str,
        port: Option<Spanned<u16>>,
        socket: Option<Spanned<PathBuf>>,
    ) -> Result<Listen, ConfigError> {
        match (port, socket) {
            (Some(_), Some(s)) => Err(self.err(
                s.span(),
                format!("{section}: set only one of `port` and `socket`"),
            )),
            (Some(p), None) => Ok(Listen::Port(*p.get_ref())),
            (None, None) => Ok(Listen::Port(0)),
            (None, Some(s)) => {
                let path = self.absolute(s.get_ref());
                let parent_ok = path.parent().is_some_and(Path::is_dir);
                if s.get_ref().as_os_str().is_empty() || !parent_ok {
                    return Err(self.err(
                        s.span(),
                        format!(
                            "{section} field `socket`: the directory of {} does not exist",
                            path.display()
                        ),
                    ));
                }
                if path.is_dir() {
                    return Err(self.err(
                        s.span(),
                        format!(
                            "{section} field `socket`: {} is a directory",
                            path.display()
                        ),
                    ));
                }
                Ok(Listen::Socket(path))
            }
        }
    }

    fn connections(
        &self,
        raw: Option<Spanned<RawConnections>>,
    ) -> Result<ConnectionLimits, ConfigError> {
        const S: &str = "[serve.connections]";
        let mut limits = ConnectionLimits::default();
        let Some(raw) = raw else {
            return Ok(limits);
        };
        let raw = raw.into_inner();
        let positive = |n: &Spanned<u64>, field: &str| {
            if *n.get_ref() == 0 {
                Err(self.err(n.span(), format!("{S} field `{field}` must be at least 1")))
            } else {
                Ok(*n.get_ref())
            }
        };
        let count = |n: &Spanned<usize>, field: &str| {
            let wide = Spanned::new(n.span(), u64::try_from(*n.get_ref()).unwrap_or(u64::MAX));
            positive(&wide, field).map(|_| *n.get_ref())
        };
        if let Some(n) = &raw.max_per_listener {
            limits.max_per_listener = count(n, "max_per_listener")?;
            limits.max_per_caller = limits.max_per_caller.min(limits.max_per_listener);
        }
        if let Some(n) = &raw.max_per_caller {
            limits.max_per_caller = count(n, "max_per_caller")?;
            if limits.max_per_caller > limits.max_per_listener {
                return Err(self.err(
                    n.span(),
                    format!("{S} field `max_per_caller` must not exceed `max_per_listener`"),
                ));
            }
        }
        if let Some(n) = &raw.header_read_timeout_ms {
            limits.header_read_timeout =
                Duration::from_millis(positive(n, "header_read_timeout_ms")?);
        }
        if let Some(n) = &raw.idle_timeout_ms {
            limits.idle_timeout = Duration::from_millis(positive(n, "idle_timeout_ms")?);
        }
        Ok(limits)
    }

    /// `[serve.kubernetes]` and `[[serve.pod]]`.
    fn kubernetes(
        &self,
        raw: Option<Spanned<RawKubernetes>>,
        rules: Vec<Spanned<RawPodRule>>,
    ) -> Result<Option<crate::pods::KubernetesConfig>, ConfigError> {
        const K: &str = "[serve.kubernetes]";
        const P: &str = "[[serve.pod]]";
        let Some(raw) = raw else {
            if let Some(r) = rules.first() {
                return Err(self.err(
                    r.span(),
                    format!("{P} needs {K} (how to reach the Kubernetes API)"),
                ));
            }
            return Ok(None);
        };
        let raw = raw.into_inner();
        if let Some(u) = &raw.api_server
            && !u.get_ref().starts_with("http://")
            && !u.get_ref().starts_with("https://")
        {
            return Err(self.err(
                u.span(),
                format!("{K} field `api_server` must be an http(s) URL"),
            ));
        }
        let max_pods = match &raw.max_pods {
            None => NonZeroUsize::new(crate::pods::DEFAULT_MAX_PODS).unwrap_or(NonZeroUsize::MIN),
            Some(n) => NonZeroUsize::new(*n.get_ref()).ok_or_else(|| {
                self.err(n.span(), format!("{K} field `max_pods` must be at least 1"))
            })?,
        };
        let path = |p: PathBuf| match self.base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p,
        };
        let mut out = Vec::new();
        for r in rules {
            let r = r.into_inner();
            // Checks the route exists (any credential: the frontend asked decides what it serves).
            if self.routes.route(r.route.get_ref()).is_err() {
                return Err(self.err(
                    r.route.span(),
                    format!("{P} field `route`: no route named {:?}", r.route.get_ref()),
                ));
            }
            out.push(crate::pods::PodRule {
                namespace: r.namespace,
                service_account: r.service_account,
                labels: r.labels,
                annotation: r.annotation,
                route: r.route.into_inner(),
            });
        }
        Ok(Some(crate::pods::KubernetesConfig {
            api: idbridge_broker::source::kubernetes_pod::ApiServer {
                url: raw.api_server.map(Spanned::into_inner),
                token_file: raw.token_file.map(path),
                ca_file: raw.ca_file.map(path),
            },
            node: raw.node,
            max_pods,
            rules: crate::pods::PodRules(out),
        }))
    }

    fn callers(
        &self,
        raw: Vec<Spanned<RawCaller>>,
        accounts: &Accounts,
    ) -> Result<CallerPolicy, ConfigError> {
        const S: &str = "[[serve.caller]]";
        let mut rules = Vec::new();
        for c in raw {
            let span = c.span();
            let c = c.into_inner();
            let who = match (c.uid, c.user, c.group) {
                (Some(uid), None, None) => Who::Uid(*uid.get_ref()),
                (None, Some(user), None) => {
                    let Some(u) = accounts.user(user.get_ref()) else {
                        return Err(self.err(
                            user.span(),
                            format!(
                                "{S} field `user`: no user {:?} in {} (give `uid` for users \
                                 known only to LDAP or other NSS sources)",
                                user.get_ref(),
                                crate::accounts::PASSWD
                            ),
                        ));
                    };
                    Who::User {
                        name: u.name.clone(),
                        uid: u.uid,
                    }
                }
                (None, None, Some(group)) => {
                    let Some(g) = accounts.group(group.get_ref()) else {
                        return Err(self.err(
                            group.span(),
                            format!(
                                "{S} field `group`: no group {:?} in {}",
                                group.get_ref(),
                                crate::accounts::GROUP
                            ),
                        ));
                    };
                    Who::Group {
                        name: g.name.clone(),
                        gid: g.gid,
                        members: accounts.member_uids(g),
                    }
                }
                _ => {
                    return Err(self.err(
                        span,
                        format!("{S}: set exactly one of `uid`, `user` and `group`"),
                    ));
                }
            };
            let names = c.routes.get_ref();
            if names.is_empty() {
                return Err(self.err(
                    c.routes.span(),
                    format!("{S} field `routes`: empty (list route names, or \"*\" for all)"),
                ));
            }
            let routes = if names.iter().any(|n| n == "*") {
                RouteSet::All
            } else {
                for n in names {
                    if let Err(e) = self.routes.route(n) {
                        return Err(self.err(c.routes.span(), format!("{S} field `routes`: {e}")));
                    }
                }
                RouteSet::Only(names.iter().cloned().collect::<BTreeSet<_>>())
            };
            rules.push(CallerRule { who, routes });
        }
        Ok(CallerPolicy::new(rules))
    }

    /// Two listeners may not share a TCP port (other than 0) or a socket path.
    fn distinct_listeners(&self, all: &[(&'static str, &Listen)]) -> Result<(), ConfigError> {
        for (i, (a, la)) in all.iter().enumerate() {
            for (b, lb) in all.iter().skip(i + 1) {
                let clash = match (la, lb) {
                    (Listen::Port(p), Listen::Port(q)) => *p != 0 && p == q,
                    (Listen::Socket(p), Listen::Socket(q)) => p == q,
                    _ => false,
                };
                if clash {
                    return Err(ConfigError::Invalid {
                        path: self.path.to_owned(),
                        line: self.find_line(b),
                        message: format!("{a} and {b} listen on the same port or socket"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The line of a section header, for errors about whole sections.
    fn find_line(&self, section: &str) -> usize {
        self.text.find(section).map_or(1, |at| self.line(&(at..at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws_ecs::EcsToken;

    const ROUTES: &str = r#"
[[route]]
name = "to-aws"
source = { kind = "gce-metadata", audience = "https://a.example" }
exchange = [{ kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/r", region = "eu-west-3" }]

[[route]]
name = "gcp"
source = { kind = "impersonate", service_account = "app@p.iam.gserviceaccount.com", scopes = ["https://www.googleapis.com/auth/cloud-platform"] }

[[route]]
name = "file"
source = { kind = "oidc-file", path = "t.jwt" }
"#;

    fn accounts() -> Accounts {
        Accounts::parse(
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
            "ci:x:2000:alice\n",
        )
    }

    fn parse(serve: &str) -> Result<ServeConfig, ConfigError> {
        ServeConfig::parse(&format!("{ROUTES}{serve}"), "s.toml", None, &accounts())
    }

    fn err(serve: &str) -> String {
        parse(serve).unwrap_err().to_string()
    }

    /// The 1-based line of the first occurrence of `needle` in the composed file.
    fn line_of(serve: &str, needle: &str) -> String {
        let text = format!("{ROUTES}{serve}");
        let at = text.find(needle).unwrap();
        format!("line {}", text[..at].matches('\n').count() + 1)
    }

    #[test]
    fn pod_rules_need_the_api_and_a_known_route() {
        const IMDS: &str = "[serve.aws_imds]\nport = 0\nroute = \"to-aws\"\n";
        let e = err(&format!(
            "[serve]\n{IMDS}[[serve.pod]]\nnamespace = \"a\"\nroute = \"to-aws\"\n"
        ));
        assert!(e.contains("[[serve.pod]] needs [serve.kubernetes]"), "{e}");
        let serve = format!(
            "[serve]\n{IMDS}[serve.kubernetes]\nnode = \"n\"\n[[serve.pod]]\nnamespace = \"a\"\nroute = \"nope\"\n"
        );
        let e = err(&serve);
        assert!(e.contains("field `route`: no route named \"nope\""), "{e}");
        assert!(e.contains(&line_of(&serve, "route = \"nope\"")), "{e}");
        let e = err(&format!(
            "[serve]\n{IMDS}[serve.kubernetes]\nmax_pods = 0\n"
        ));
        assert!(e.contains("`max_pods` must be at least 1"), "{e}");
        let c = parse(&format!(
            "[serve]\n{IMDS}[serve.kubernetes]\napi_server = \"http://127.0.0.1:1\"\n[[serve.pod]]\nnamespace = \"a\"\nlabels = {{ app = \"x\" }}\nroute = \"to-aws\"\n"
        ))
        .unwrap();
        let k = c.kubernetes.unwrap();
        assert_eq!(
            k.rules.0[0].labels.get("app").map(String::as_str),
            Some("x")
        );
        assert_eq!(k.max_pods.get(), crate::pods::DEFAULT_MAX_PODS);
    }

    #[test]
    fn a_full_config() {
        let c = parse(
            r#"
[serve]
log_format = "json"
[serve.gce_metadata]
port = 8080
token_route = "gcp"
identity_route = "gcp"
project_id = "p"
numeric_project_id = "123"
[serve.aws_imds]
route = "to-aws"
ipv6 = true
[serve.aws_ecs]
authorization_token = "abcdefghijklmnop"
[[serve.aws_ecs.role]]
path = "/role/a"
route = "to-aws"
[serve.metrics]
port = 9090
[[serve.caller]]
user = "alice"
routes = ["gcp"]
[[serve.caller]]
group = "ci"
routes = ["*"]
"#,
        )
        .unwrap();
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.log_format, LogFormat::Json);
        let g = c.gce_metadata().cloned().unwrap();
        assert_eq!(g.listen, Listen::Port(8080));
        assert_eq!(g.service_account_email, "app@p.iam.gserviceaccount.com");
        assert_eq!(g.scopes, vec![CLOUD_PLATFORM.to_owned()]);
        assert!(g.scopes_overridable);
        let i = c.aws_imds().cloned().unwrap();
        assert_eq!(i.role_name, "r");
        assert_eq!(
            (i.region.as_str(), i.availability_zone.as_str()),
            ("eu-west-3", "eu-west-3a")
        );
        assert!(i.require_token && i.ipv6);
        let e = c.aws_ecs().cloned().unwrap();
        assert_eq!(e.token.secret().expose_secret(), "abcdefghijklmnop");
        assert_eq!(
            e.roles[0].role_arn.as_deref(),
            Some("arn:aws:iam::111122223333:role/r")
        );
        assert_eq!(c.callers.rules().len(), 2);
        assert!(matches!(
            &c.callers.rules()[1].who,
            Who::Group { members, .. } if members.contains(&1000)
        ));
    }

    #[test]
    fn the_example_file_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let path = dir.join("serve.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = ServeConfig::parse(&text, "serve.toml", Some(&dir), &accounts()).unwrap();
        assert!(c.gce_metadata().is_some() && c.aws_imds().is_some() && c.aws_ecs().is_some());
        assert!(matches!(c.aws_ecs().unwrap().token, EcsToken::Generated(_)));
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "[serve]\n[serve.aws_imds]\nroute = \"gcp\"\n",
                "route = \"gcp\"",
                &["yields a Google access token", "AWS credentials", "`route`"],
            ),
            (
                "[serve]\n[serve.aws_imds]\nroute = \"nope\"\n",
                "route = \"nope\"",
                &["no route named \"nope\"", "to-aws, gcp, file"],
            ),
            (
                "[serve]\n[serve.gce_metadata]\ntoken_route = \"to-aws\"\n",
                "token_route",
                &["`token_route`", "yields AWS credentials"],
            ),
            (
                "[serve]\n[serve.gce_metadata]\nidentity_route = \"to-aws\"\nservice_account_email = \"a@b\"\n",
                "identity_route",
                &[
                    "`identity_route`",
                    "cannot mint ID tokens",
                    "AWS credentials",
                ],
            ),
            (
                "[serve]\n[serve.gce_metadata]\nidentity_route = \"file\"\nservice_account_email = \"a@b\"\n",
                "identity_route",
                &["`identity_route`", "cannot mint"],
            ),
            (
                "[serve]\nbind = \"localhost\"\n[serve.aws_imds]\nroute = \"to-aws\"\n",
                "bind",
                &["`bind`", "not an IP address"],
            ),
            (
                "[serve]\n[serve.aws_imds]\nroute = \"to-aws\"\nport = 9000\n[serve.metrics]\nport = 9000\n",
                "[serve.metrics]",
                &["same port"],
            ),
            (
                "[serve]\n[serve.aws_imds]\nroute = \"to-aws\"\navailability_zone = \"eu-west-3\"\n",
                "availability_zone",
                &["`availability_zone`", "zone letter"],
            ),
            (
                "[serve]\n[serve.aws_imds]\nroute = \"to-aws\"\n[[serve.caller]]\nuser = \"mallory\"\nroutes = [\"to-aws\"]\n",
                "user = \"mallory\"",
                &["`user`", "no user \"mallory\""],
            ),
            (
                "[serve]\n[serve.aws_imds]\nroute = \"to-aws\"\n[[serve.caller]]\nuid = 1\nuser = \"alice\"\nroutes = [\"to-aws\"]\n",
                "[[serve.caller]]",
                &["exactly one of `uid`, `user` and `group`"],
            ),
            (
                "[serve]\n[serve.aws_imds]\nroute = \"to-aws\"\n[[serve.caller]]\nuid = 1\nroutes = [\"ghost\"]\n",
                "routes = [\"ghost\"]",
                &["`routes`", "ghost"],
            ),
            (
                "[serve]\n[serve.aws_ecs]\nauthorization_token = \"has space\"\n[[serve.aws_ecs.role]]\npath = \"/a\"\nroute = \"to-aws\"\n",
                "authorization_token",
                &["`authorization_token`", "printable ASCII"],
            ),
            (
                "[serve]\n[serve.aws_ecs]\n[[serve.aws_ecs.role]]\npath = \"a\"\nroute = \"to-aws\"\n",
                "path = \"a\"",
                &["`path`", "starting with /"],
            ),
            (
                "[serve]\n[serve.aws_imds]\nroute = \"to-aws\"\nsocket = \"/nonexistent-dir/x.sock\"\n",
                "socket",
                &["`socket`", "does not exist"],
            ),
            (
                "[serve]\n[serve.aws_imds]\nroute = \"to-aws\"\nsocket = \"/tmp/x.sock\"\nipv6 = true\n",
                "ipv6",
                &["`ipv6`"],
            ),
        ];
        for (serve, needle, wants) in cases {
            let e = err(serve);
            assert!(e.starts_with("config file s.toml, line"), "{e}");
            let line = line_of(serve, needle);
            assert!(e.contains(&line), "{serve}\nwant {line}: {e}");
            for w in *wants {
                assert!(e.contains(w), "{serve}\nwant {w:?}: {e}");
            }
        }
    }

    #[test]
    fn parse_errors_and_missing_sections() {
        let e = err("[serve]\ncolour = 1\n[serve.aws_imds]\nroute = \"to-aws\"\n");
        assert!(e.contains("s.toml") && e.contains("colour"), "{e}");
        assert!(
            e.contains(&line_of("[serve]\ncolour = 1\n", "colour")),
            "{e}"
        );
        let e = err("");
        assert!(e.contains("no [serve] section"), "{e}");
        let e = err("[serve]\n");
        assert!(e.contains("no frontend"), "{e}");
        // A broken route is the broker's error, with its line.
        let bad = ROUTES.replace("role/r", "user/r");
        let e = ServeConfig::parse(&bad, "s.toml", None, &accounts())
            .unwrap_err()
            .to_string();
        assert!(e.contains("role_arn"), "{e}");
    }

    #[test]
    fn ecs_token_from_a_file_loses_its_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ecs.token"), "s3cret-token-value\n").unwrap();
        let text = format!(
            "{ROUTES}[serve]\n[serve.aws_ecs]\nauthorization_token_file = \"ecs.token\"\n\
             [[serve.aws_ecs.role]]\npath = \"/a\"\nroute = \"to-aws\"\n"
        );
        let c = ServeConfig::parse(&text, "s.toml", Some(dir.path()), &accounts()).unwrap();
        let token = c.aws_ecs().unwrap().token.clone();
        assert!(matches!(token, EcsToken::File(..)));
        assert_eq!(token.secret().expose_secret(), "s3cret-token-value");
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn an_inline_ecs_token_reaches_no_debug_and_no_error() {
        let ecs = "[serve]\n[serve.aws_ecs]\nauthorization_token = \"inline-ecs-secret-token\"\n\
                   [[serve.aws_ecs.role]]\npath = \"/a\"\nroute = \"to-aws\"\n";
        let c = parse(ecs).unwrap();
        let printed = format!("{c:?} {c:#?}");
        assert!(printed.contains("Inline"), "{printed}");
        assert!(!printed.contains("inline-ecs-secret-token"), "{printed}");
        // A line that does not parse is located, not quoted.
        let e = err(&ecs.replace("-token\"", "-token"));
        assert!(e.contains(&line_of(ecs, "authorization_token")), "{e}");
        assert!(!e.contains("inline-ecs-secret-token"), "{e}");
        // Neither is a token the validation refuses.
        let e = err(&ecs.replace("inline-ecs-secret-token", "inline-ecs secret-token"));
        assert!(e.contains("printable ASCII"), "{e}");
        assert!(!e.contains("secret-token"), "{e}");
    }

    #[test]
    fn log_format_hint_is_lenient() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[serve]\nlog_format = \"json\"\n[[route]]\nbad = 1\n").unwrap();
        assert_eq!(log_format_hint(&p), Some(LogFormat::Json));
        assert_eq!(log_format_hint(&dir.path().join("missing.toml")), None);
    }
}
