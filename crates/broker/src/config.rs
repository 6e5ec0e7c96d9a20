//! The route configuration file (TOML).
//!
//! ```toml
//! [endpoints]                 # optional; see `context` for precedence
//! aws_sts = "http://127.0.0.1:4001"
//!
//! [[route]]
//! name = "tenant-to-aws"
//! source = { kind = "gce-metadata", audience = "https://psoxy.example/aws" }
//! exchange = [
//!   { kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/psoxy-tenant-access" },
//! ]
//! ```
//!
//! Sources (`source.kind`) and exchanges (`exchange[].kind`) are the kinds registered in
//! [`crate::source::KINDS`] and [`crate::exchange::KINDS`]; each kind's module documents its
//! fields. A kind reads its own table into typed values (role ARNs, providers, service
//! accounts, audiences) and the route checks that each step takes what the previous one yields
//! ([`crate::step`]).
//!
//! Instead of `source` and `exchange`, a route may name a Google credential file:
//! `external_account = "cred.json"` (see [`crate::external_account`]).
//!
//! A `[serve]` table is allowed and ignored here: `idbridge serve` reads it (see the
//! `idbridge-serve` crate).
//!
//! Every error names the file, the line and the field. The whole file is validated before
//! anything is fetched or bound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::step::{KindError, Registry, Step};

/// Why a config file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Cannot read the file.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Syntax, type or unknown-field error (toml's message carries line, column and field).
    #[error("config file {path}: {message}")]
    Parse {
        /// Path.
        path: String,
        /// Message.
        message: String,
    },
    /// A semantic error at a given line.
    #[error("config file {path}, line {line}: {message}")]
    Invalid {
        /// Path.
        path: String,
        /// 1-based line.
        line: usize,
        /// Message naming the field.
        message: String,
    },
    /// The route does not exist.
    #[error("no route named {name:?} in {path} (routes: {known})")]
    NoSuchRoute {
        /// Path.
        path: String,
        /// Asked-for name.
        name: String,
        /// Known names.
        known: String,
    },
}

/// Endpoint overrides.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EndpointsConfig {
    /// AWS STS base URL.
    #[serde(default)]
    pub aws_sts: Option<String>,
    /// GCE metadata `host:port`.
    #[serde(default)]
    pub gce_metadata_host: Option<String>,
    /// Google OAuth2 token URL.
    #[serde(default)]
    pub google_oauth2: Option<String>,
    /// IAM Credentials base URL.
    #[serde(default)]
    pub google_iamcredentials: Option<String>,
}

/// The extra request headers of an `oidc-url` source, name → value. A value may be a
/// credential (an `Authorization` header for the token server), so `Debug` shows the names
/// only, and the source marks every value sensitive when it sends them.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct RequestHeaders(pub BTreeMap<String, String>);

impl std::ops::Deref for RequestHeaders {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl FromIterator<(String, String)> for RequestHeaders {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl std::fmt::Debug for RequestHeaders {
    /// Header names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestHeaders")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

pub use crate::external_account::{ExchangeConfig, SourceConfig};
pub use crate::step::Yields;

/// One route, read and checked.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The source.
    pub source: Box<dyn Step>,
    /// The exchanges, in order.
    pub exchange: Vec<Box<dyn Step>>,
}

impl RouteConfig {
    /// The step that mints the route's credential: its last exchange, else its source.
    pub fn last(&self) -> &dyn Step {
        self.exchange.last().unwrap_or(&self.source).as_ref()
    }

    /// Every step in order: the source, then each exchange.
    pub fn steps(&self) -> impl Iterator<Item = &dyn Step> {
        std::iter::once(self.source.as_ref()).chain(self.exchange.iter().map(AsRef::as_ref))
    }

    /// What the route finally yields.
    pub fn yields(&self) -> Yields {
        self.last().yields()
    }

    /// Checks that each exchange takes what the step before it yields; the error names the
    /// exchange (``field `exchange[i]`: …``).
    pub fn check_inputs(&self) -> Result<(), String> {
        let mut yields = self.source.yields();
        for (i, ex) in self.exchange.iter().enumerate() {
            if !ex.takes().contains(&yields) {
                return Err(format!("field `exchange[{i}]`: {}", ex.refuses(yields)));
            }
            yields = ex.yields();
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    endpoints: EndpointsConfig,
    #[serde(default)]
    route: Vec<toml::Spanned<RawRoute>>,
    /// `[serve]`: read by `idbridge serve` (crate `idbridge-serve`), ignored here so that one
    /// file holds a daemon's routes and its listeners.
    #[serde(default, rename = "serve")]
    _serve: Option<serde::de::IgnoredAny>,
}

/// A route as written: either `source` (+ `exchange`) or `external_account`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    source: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    exchange: Option<Vec<toml::Spanned<toml::Value>>>,
    /// A Google `external_account` credential file standing for source + exchanges.
    #[serde(default)]
    external_account: Option<PathBuf>,
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from.
    pub path: String,
    /// Endpoint overrides.
    pub endpoints: EndpointsConfig,
    /// Routes, in file order.
    pub routes: Vec<RouteConfig>,
}

impl Config {
    /// Loads and validates a config file. Relative paths inside resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            idbridge_core::file::read_config_file(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
        Self::parse(&text, &path.display().to_string(), path.parent())
    }

    /// Parses and validates config text.
    pub fn parse(text: &str, path: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        Self::parse_with(text, path, base, &Registry::builtin())
    }

    /// Parses and validates config text whose routes may name the kinds of `registry`.
    pub fn parse_with(
        text: &str,
        path: &str,
        base: Option<&Path>,
        registry: &Registry,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: toml_error_message(text, &e),
        })?;
        let mut routes = Vec::new();
        for spanned in raw.route {
            let line = line_of(text, spanned.span().start);
            let raw_route = spanned.into_inner();
            let name = raw_route.name.clone();
            let at_line = |line: usize, message: String| ConfigError::Invalid {
                path: path.to_owned(),
                line,
                message: format!("route {name:?}: {message}"),
            };
            let invalid = |message: String| at_line(line, message);
            // A table's shape is reported at its own line, a bad value at the route's.
            let kind_error = |table_line: usize, e: KindError| match e {
                KindError::Shape(m) => at_line(table_line, m),
                KindError::Invalid(m) => at_line(line, m),
            };
            let (source, exchange) = match (
                raw_route.source,
                raw_route.exchange,
                raw_route.external_account,
            ) {
                (None, None, Some(file)) => {
                    let file = match base {
                        Some(b) if file.is_relative() => b.join(file),
                        _ => file,
                    };
                    let in_file = |m: String| {
                        invalid(format!("field `external_account`: {}: {m}", file.display()))
                    };
                    let (source, exchange) =
                        crate::external_account::load(&file).map_err(in_file)?;
                    let message = |e: KindError| match e {
                        KindError::Shape(m) | KindError::Invalid(m) => m,
                    };
                    let source = source
                        .to_step(registry, base)
                        .map_err(|e| in_file(message(e)))?;
                    let exchange = exchange
                        .iter()
                        .enumerate()
                        .map(|(i, ex)| {
                            ex.to_step(registry, base).map_err(|e| {
                                invalid(format!("field `exchange[{i}]`: {}", message(e)))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    (source, exchange)
                }
                (Some(source), exchange, None) => {
                    let source_line = line_of(text, source.span().start);
                    let source = registry
                        .source(source.into_inner(), "source", base)
                        .map_err(|e| kind_error(source_line, e))?;
                    let mut steps = Vec::new();
                    for (i, ex) in exchange.unwrap_or_default().into_iter().enumerate() {
                        let ex_line = line_of(text, ex.span().start);
                        let step = registry.exchange(ex.into_inner(), base).map_err(|e| {
                            let prefix = |m: String| format!("field `exchange[{i}]`: {m}");
                            kind_error(
                                ex_line,
                                match e {
                                    KindError::Shape(m) => KindError::Shape(prefix(m)),
                                    KindError::Invalid(m) => KindError::Invalid(prefix(m)),
                                },
                            )
                        })?;
                        steps.push(step);
                    }
                    (source, steps)
                }
                (None, _, None) => {
                    return Err(invalid(
                        "missing field `source` (or `external_account`)".into(),
                    ));
                }
                (_, _, Some(_)) => {
                    return Err(invalid(
                        "`external_account` replaces `source` and `exchange`; set only one".into(),
                    ));
                }
            };
            let route = RouteConfig {
                name: raw_route.name,
                description: raw_route.description,
                source,
                exchange,
            };
            if route.name.is_empty()
                || !route
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(
                    "field `name` must be non-empty letters, digits, `-`, `_`, `.`".into(),
                ));
            }
            if routes.iter().any(|r: &RouteConfig| r.name == route.name) {
                return Err(invalid("field `name`: duplicate route name".into()));
            }
            route.check_inputs().map_err(&invalid)?;
            routes.push(route);
        }
        Ok(Config {
            path: path.to_owned(),
            endpoints: raw.endpoints,
            routes,
        })
    }

    /// A route by name.
    pub fn route(&self, name: &str) -> Result<&RouteConfig, ConfigError> {
        self.routes
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| ConfigError::NoSuchRoute {
                path: self.path.clone(),
                name: name.to_owned(),
                known: if self.routes.is_empty() {
                    "none".to_owned()
                } else {
                    self.routes
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }
}

/// toml's message for text that does not parse, with its line and column but without the
/// excerpt of the file toml's `Display` adds: the offending line may hold an inline secret (an
/// `authorization_token`, a header value), and these messages reach terminals and logs.
pub fn toml_error_message(text: &str, e: &toml::de::Error) -> String {
    let at = match e.span() {
        Some(span) => {
            let line = line_of(text, span.start);
            let column = text.get(..span.start).map_or(1, |t| {
                t.rsplit('\n').next().unwrap_or(t).chars().count() + 1
            });
            format!(" at line {line}, column {column}")
        }
        None => String::new(),
    };
    format!(
        "TOML parse error{at}: {}",
        e.message().trim_end().replace('\n', "\n  ")
    )
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[route]]
name = "a"
source = { kind = "gce-metadata", audience = "x" }
exchange = [{ kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/r" }]
"#;

    #[test]
    fn parses_good() {
        let c = Config::parse(GOOD, "c.toml", None).unwrap();
        assert_eq!(c.routes.len(), 1);
        assert!(c.route("a").is_ok());
        let e = c.route("b").unwrap_err().to_string();
        assert!(e.contains("routes: a"), "{e}");
    }

    #[test]
    fn unknown_field_names_file_line_field() {
        let bad = GOOD.replace("audience = \"x\"", "audience = \"x\", colour = 1");
        let e = Config::parse(&bad, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("c.toml"), "{e}");
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn parse_errors_quote_no_line_of_the_file() {
        let bad = GOOD.replace(
            "audience = \"x\" }",
            "audience = \"x\" }\nsecret_line = \"inline-secret-value",
        );
        let e = Config::parse(&bad, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("line 5"), "{e}");
        assert!(!e.contains("inline-secret-value"), "{e}");
    }

    #[test]
    fn semantic_error_names_line_and_field() {
        let bad = GOOD.replace("role/r", "user/r");
        let e = Config::parse(&bad, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("c.toml, line 2"), "{e}");
        assert!(e.contains("role_arn"), "{e}");
        let bad = GOOD.replace("audience = \"x\"", "scopes = [\"s\"]");
        let e = Config::parse(&bad, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("needs an ID token"), "{e}");
        let bad = GOOD.replace(
            "kind = \"aws-sts\"",
            "kind = \"aws-sts\", duration_seconds = 60",
        );
        let e = Config::parse(&bad, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("duration_seconds"), "{e}");
    }

    #[test]
    fn debug_of_a_route_shows_no_header_values() {
        let text = "[[route]]\nname = \"u\"\nsource = { kind = \"oidc-url\", url = \"http://127.0.0.1:1/token\", headers = { Authorization = \"Bearer inline-secret-value\" } }\n";
        let c = Config::parse(text, "u.toml", None).unwrap();
        let printed = format!("{c:?} {:#?}", c.routes[0]);
        assert!(!printed.contains("inline-secret-value"), "{printed}");
        assert!(printed.contains("Authorization"), "{printed}");
        let source = c.routes[0].source.credential_source("").unwrap();
        assert_eq!(
            source.credential_source["headers"]["Authorization"],
            "Bearer inline-secret-value"
        );
    }

    #[test]
    fn second_route_line() {
        let two = format!(
            "{GOOD}\n[[route]]\nname = \"a\"\nsource = {{ kind = \"oidc-file\", path = \"t\" }}\n"
        );
        let e = Config::parse(&two, "c.toml", None).unwrap_err().to_string();
        assert!(e.contains("line 7"), "{e}");
        assert!(e.contains("duplicate"), "{e}");
    }
}
