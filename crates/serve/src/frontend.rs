//! The frontend seam: a frontend is one file implementing [`Kind`] plus one line in [`KINDS`].
//!
//! A kind owns its `[serve.<name>]` section: [`Kind::parse`] validates it (errors name the file,
//! the line and the field, through [`Section`]), and the [`Configured`] value it returns binds
//! one listener, builds the listener's router and names the client settings `--env-file`
//! writes. The daemon needs nothing else from it: caller rules, connection caps, request
//! metrics and the shared credential cache apply to every frontend alike.
//!
//! The ECS and Azure frontends are built this way; the GCE metadata and IMDSv2 frontends and
//! the metrics listener predate the seam and are still wired in [`crate::config`] and
//! [`crate::server`] directly.

use std::fmt::Debug;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use idbridge_broker::ConfigError;
use idbridge_broker::config::{RouteConfig, Yields};
use idbridge_core::SecretString;
use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::DeValue;

use crate::broker::Broker;
use crate::config::{Listen, Validator};
use crate::{aws_ecs, azure_app_service, azure_imds};

/// Every registered frontend kind, in `--env-file` and listener order.
pub static KINDS: &[&dyn Kind] = &[&aws_ecs::KIND, &azure_imds::KIND, &azure_app_service::KIND];

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
}

/// A validated frontend, ready to serve.
pub trait Configured: Debug + Send + Sync {
    /// Its kind.
    fn kind(&self) -> &'static dyn Kind;
    /// Itself, for [`crate::ServeConfig::frontend`].
    fn as_any(&self) -> &dyn std::any::Any;
    /// Where it listens.
    fn listen(&self) -> &Listen;
    /// The routes it serves (every one exists and yields what the frontend serves).
    fn routes(&self) -> Vec<String>;
    /// Its router, backed by `broker`.
    fn router(&self, broker: Arc<Broker>) -> Router;
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
