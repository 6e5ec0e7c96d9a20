//! The frontend seam: a frontend is one file implementing [`Kind`] plus one line in [`KINDS`].
//!
//! A kind owns its `[serve.<name>]` section: [`Kind::parse`] validates it (errors name the file,
//! the line and the field, through [`Section`]), and the [`Configured`] value it returns names
//! where it listens (and any further listeners, as IMDS's `[::1]`), builds the listeners'
//! router (told when the daemon shuts down, for hanging requests) and names the client settings
//! `--env-file` writes. A kind that serves no credentials (the metrics listener) does not count
//! towards the one frontend a config needs. The daemon needs nothing else from it: caller
//! rules, connection caps, request metrics and the shared credential cache apply to every
//! frontend alike, and [`crate::config`] and [`crate::server`] name none of them.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use idbridge_broker::config::{RouteConfig, Yields};
use idbridge_broker::{Config, ConfigError};
use idbridge_core::SecretString;
use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::DeValue;

use crate::Frontend;
use crate::broker::Broker;
use crate::config::{Listen, Validator};
use crate::{aws_ecs, aws_imds, azure_app_service, azure_imds, gce_metadata, metrics};

/// Every registered frontend kind, in `--env-file` and listener order.
pub static KINDS: &[&dyn Kind] = &[
    &gce_metadata::KIND,
    &aws_imds::KIND,
    &aws_ecs::KIND,
    &azure_imds::KIND,
    &azure_app_service::KIND,
    &metrics::KIND,
];

/// Turns true when the daemon shuts down.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// The kind named `name` (the part after `serve.`).
pub fn kind(name: &str) -> Option<&'static dyn Kind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// A kind of frontend.
pub trait Kind: Sync {
    /// The section name under `[serve]`, also the metric label: `azure_imds`.
    fn name(&self) -> &'static str;
    /// The section as written in errors: `[serve.azure_imds]`.
    fn section(&self) -> &'static str;
    /// A title for people: `Azure IMDS`.
    fn title(&self) -> &'static str;
    /// Validates the kind's section.
    fn parse(&self, section: Section<'_, '_>) -> Result<Arc<dyn Configured>, ConfigError>;
    /// Its listeners' label in metrics and `Running::listeners`.
    fn frontend(&self) -> Frontend {
        Frontend::Registered(self.name())
    }
    /// Its listener as named in start-up errors: `the Azure IMDS frontend`.
    fn listener_name(&self) -> String {
        format!("the {} frontend", self.title())
    }
    /// Whether it serves credentials: a config needs at least one kind that does.
    fn serves_credentials(&self) -> bool {
        true
    }
}

/// Itself as [`std::any::Any`], for [`crate::ServeConfig::frontend`]; every type has it.
pub trait AsAny {
    /// Itself.
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: std::any::Any> AsAny for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A validated frontend, ready to serve.
pub trait Configured: AsAny + Debug + Send + Sync {
    /// Its kind.
    fn kind(&self) -> &'static dyn Kind;
    /// Where it listens.
    fn listen(&self) -> &Listen;
    /// The routes it serves (every one exists and yields what the frontend serves).
    fn routes(&self) -> Vec<String>;
    /// Its router, backed by `broker`.
    fn router(&self, broker: Arc<Broker>) -> Router;
    /// Its router for the daemon, which ends hanging requests once `stop` turns true.
    fn router_until(&self, broker: Arc<Broker>, stop: Shutdown) -> Router {
        drop(stop);
        self.router(broker)
    }
    /// Further listeners serving the same router, once the first is bound at `first` (its
    /// TCP address; `None` for a unix socket): (address, name for start-up errors).
    fn more_listeners(&self, first: Option<SocketAddr>) -> Vec<(SocketAddr, String)> {
        let _ = first;
        Vec::new()
    }
    /// The client settings for a TCP listener reached at `base` (`http://127.0.0.1:PORT`).
    fn env(&self, base: &str) -> Vec<(&'static str, SecretString)>;
    /// A warning for `idbridge serve` when no `--env-file` is given, if clients could not
    /// otherwise learn a generated secret.
    fn needs_env_file(&self) -> Option<String> {
        None
    }
}

/// A kind's section of the config file, with what validating it needs.
pub struct Section<'v, 'i> {
    value: Spanned<DeValue<'i>>,
    v: &'v Validator<'v>,
    section: &'static str,
}

impl Debug for Section<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Section")
            .field("section", &self.section)
            .finish_non_exhaustive()
    }
}

impl<'v, 'i> Section<'v, 'i> {
    pub(crate) fn new(
        value: Spanned<DeValue<'i>>,
        v: &'v Validator<'v>,
        section: &'static str,
    ) -> Self {
        Self { value, v, section }
    }

    /// The section deserialized into `T` (use `toml::Spanned` fields for line numbers); a type
    /// or unknown-field error names the line.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<Spanned<T>, ConfigError> {
        let span = self.value.span();
        let value = self.value.clone();
        T::deserialize(value.into_deserializer())
            .map(|t| Spanned::new(span.clone(), t))
            .map_err(|e| {
                let at = e.span().unwrap_or(span);
                self.err(at, format!("{}: {}", self.section, e.message().trim_end()))
            })
    }

    /// As [`Self::deserialize`], but a type or unknown-field error reads as the file's own
    /// parse error (`TOML parse error at line L, column C: …`), as the GCE metadata, IMDSv2
    /// and metrics sections report them.
    pub fn deserialize_as_file<T: DeserializeOwned>(&self) -> Result<Spanned<T>, ConfigError> {
        let span = self.value.span();
        T::deserialize(self.value.clone().into_deserializer())
            .map(|t| Spanned::new(span, t))
            .map_err(|e| self.v.parse_err(&e))
    }

    /// A config error at `span` (a byte range of the file).
    pub fn err(&self, span: Range<usize>, message: String) -> ConfigError {
        self.v.err(span, message)
    }

    /// The route named by `name`, which must yield `want`.
    pub fn route(
        &self,
        section: &str,
        field: &str,
        name: &Spanned<String>,
        want: Yields,
    ) -> Result<&'v RouteConfig, ConfigError> {
        self.v.route(section, field, name, want)
    }

    /// `port` / `socket` of the section.
    pub fn listen(
        &self,
        port: Option<Spanned<u16>>,
        socket: Option<Spanned<PathBuf>>,
    ) -> Result<Listen, ConfigError> {
        self.v.listen(self.section, port, socket)
    }

    /// The routes of the file.
    pub fn routes(&self) -> &'v Config {
        self.v.routes
    }

    /// A path of the file, made absolute against the file's directory.
    pub fn absolute(&self, p: &Path) -> PathBuf {
        self.v.absolute(p)
    }
}

/// Takes every registered kind's section out of `[serve]` of `doc`, leaving the rest for the
/// built-in sections.
pub(crate) fn take_sections<'i>(
    doc: &mut Spanned<toml::de::DeTable<'i>>,
) -> Vec<(&'static dyn Kind, Spanned<DeValue<'i>>)> {
    let mut out = Vec::new();
    let Some(serve) = doc.get_mut().get_mut("serve") else {
        return out;
    };
    let DeValue::Table(serve) = serve.get_mut() else {
        return out;
    };
    for kind in KINDS {
        if let Some(value) = serve.remove(kind.name()) {
            out.push((*kind, value));
        }
    }
    out
}

/// A random-looking request id in UUID form, for error bodies that carry one.
pub(crate) fn correlation_id() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
