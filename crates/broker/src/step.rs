//! The seam every source and exchange kind implements: [`Step`].
//!
//! A kind is one type in one file (`source/*.rs`, `exchange/*.rs`) and one line in its table
//! ([`crate::source::KINDS`], [`crate::exchange::KINDS`]): a [`Kind`] pairs the name written in
//! `kind = "…"` with the function that reads the TOML table into the typed, validated step. A
//! route ([`crate::config::RouteConfig`]) holds its source and exchanges as `Box<dyn Step>`;
//! nothing outside a kind's own file matches on kinds:
//!
//! * the config checks, at parse time, that each step takes what the previous one yields
//!   ([`Step::takes`], [`Step::yields`]);
//! * `serve` asks the last step what it mints ([`Step::facts`], [`Step::with_overrides`]);
//! * `doctor` and `setup` ask each step what it is about ([`Step::describe`], [`Step::facts`],
//!   [`Step::credential_source`]) and each hop where its endpoint is set ([`crate::Hop`]);
//! * [`crate::Route`] runs them in turn ([`Step::run`]).
//!
//! The credential kinds a step takes and yields are [`Yields`]: one variant per
//! [`idbridge_core::Credential`] variant, both `#[non_exhaustive]`, so a step yielding a new
//! kind of credential (an Azure access token, an X.509 certificate and key) adds its variant
//! there and its steps here, and existing steps refuse it at parse time by their [`Step::takes`].

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use idbridge_core::Credential;
use serde::de::DeserializeOwned;

use crate::values::{RoleArn, ServiceAccount, WorkloadProvider};
use crate::{BrokerError, Context, HopReport, Overrides};

/// What kind of credential a step takes or yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Yields {
    /// An OIDC ID token (any issuer: Google, a Kubernetes cluster, SPIFFE, …).
    IdToken,
    /// A Google access token.
    AccessToken,
    /// AWS credentials.
    AwsCredentials,
    /// An X.509 certificate chain and its private key.
    X509,
    /// A Microsoft Entra ID access token.
    AzureAccessToken,
}

impl Yields {
    /// The kind of `credential`.
    pub fn of(credential: &Credential) -> Option<Yields> {
        match credential {
            Credential::IdToken(_) => Some(Yields::IdToken),
            Credential::GoogleAccessToken(_) => Some(Yields::AccessToken),
            Credential::Aws(_) => Some(Yields::AwsCredentials),
            Credential::X509(_) => Some(Yields::X509),
            Credential::AzureAccessToken(_) => Some(Yields::AzureAccessToken),
            _ => None,
        }
    }

    /// Described for messages: "an ID token", "a Google access token", "AWS credentials".
    pub fn described(self) -> &'static str {
        match self {
            Yields::IdToken => "an ID token",
            Yields::AccessToken => "a Google access token",
            Yields::AwsCredentials => "AWS credentials",
            Yields::X509 => "an X.509 certificate and key",
            Yields::AzureAccessToken => "an Azure access token",
        }
    }
}

/// What a running step is given.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The previous step's credential; `None` for a source.
    pub credential: Option<&'a Credential>,
    /// The route's name (the default of names derived from it, e.g. an STS session name).
    pub route: &'a str,
    /// The AWS region of the previous step's credentials, when it names one.
    pub region: Option<&'a str>,
}

/// The future a step's [`Step::run`] returns.
pub type StepFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Credential, BrokerError>> + Send + 'a>>;

/// What a step says about itself, for `serve`, `doctor` and `setup`. Every field is optional:
/// a kind fills what applies to it.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Facts<'a> {
    /// The audience of the ID tokens it mints, when configured.
    pub audience: Option<&'a str>,
    /// The scopes of the access tokens it mints (its default included, when it has one).
    pub scopes: Option<&'a [String]>,
    /// The Google service account whose tokens it mints (an email, a numeric id or `default`).
    pub service_account: Option<&'a str>,
    /// Whether the ID tokens it mints are Google-signed (`https://accounts.google.com`).
    pub google_id_token: bool,
    /// Whether its ID tokens come from IAM Credentials `generateIdToken`.
    pub generate_id_token: bool,
    /// The AWS role it assumes.
    pub aws_role: Option<AwsRole<'a>>,
    /// The Google workload identity provider it exchanges at, and its STS settings.
    pub google_sts: Option<GoogleSts<'a>>,
    /// A service-account impersonation by IAM Credentials, and its settings.
    pub impersonation: Option<Impersonation<'a>>,
    /// The AWS region of the credentials it yields, when configured.
    pub region: Option<&'a str>,
    /// The step whose credential it runs first as its caller (the `impersonate` source's).
    pub caller: Option<&'a dyn Step>,
    /// The Entra app or managed identity it federates to.
    pub entra: Option<EntraFederation<'a>>,
    /// What its `sts:AssumeRole` request carries beyond the role (`aws-assume-role`).
    pub assume_role: Option<AssumeRoleFacts<'a>>,
    /// The IAM Roles Anywhere trust anchor and profile of its session (`roles-anywhere`).
    pub roles_anywhere: Option<RolesAnywhereFacts<'a>>,
    /// Its ID token comes from AWS outbound identity federation (`sts:GetWebIdentityToken`).
    pub aws_outbound: Option<AwsOutboundFacts<'a>>,
}

/// An `sts:AssumeRole` request by another role's session (role chaining).
#[derive(Debug, Clone, Copy)]
pub struct AssumeRoleFacts<'a> {
    /// `ExternalId`.
    pub external_id: Option<&'a str>,
    /// `SourceIdentity`.
    pub source_identity: Option<&'a str>,
    /// Session tags.
    pub tags: &'a std::collections::BTreeMap<String, String>,
    /// `TransitiveTagKeys`.
    pub transitive_tag_keys: &'a [String],
}

/// An IAM Roles Anywhere `CreateSession`.
#[derive(Debug, Clone, Copy)]
pub struct RolesAnywhereFacts<'a> {
    /// `arn:aws:rolesanywhere:REGION:ACCOUNT:trust-anchor/ID`.
    pub trust_anchor_arn: &'a str,
    /// `arn:aws:rolesanywhere:REGION:ACCOUNT:profile/ID`.
    pub profile_arn: &'a str,
}

/// An `sts:GetWebIdentityToken` call.
#[derive(Debug, Clone, Copy)]
pub struct AwsOutboundFacts<'a> {
    /// The token's audiences.
    pub audience: &'a [String],
    /// `RS256` or `ES384`.
    pub signing_algorithm: &'a str,
}

/// An Entra ID workload identity federation exchange.
#[derive(Debug, Clone, Copy)]
pub struct EntraFederation<'a> {
    /// The tenant (id or domain).
    pub tenant: &'a str,
    /// The app registration's or managed identity's client id.
    pub client_id: &'a str,
    /// The scope asked for (`<resource>/.default`).
    pub scope: &'a str,
}

/// The role an AWS step assumes.
#[derive(Debug, Clone, Copy)]
pub struct AwsRole<'a> {
    /// The role.
    pub arn: &'a RoleArn,
    /// The configured session name (the route derives one otherwise).
    pub session_name: Option<&'a str>,
    /// The configured session length.
    pub duration_seconds: Option<u32>,
    /// The STS region.
    pub region: Option<&'a str>,
}

/// A Google STS exchange.
#[derive(Debug, Clone, Copy)]
pub struct GoogleSts<'a> {
    /// The provider.
    pub provider: &'a WorkloadProvider,
    /// The configured token URL.
    pub token_url: Option<&'a str>,
    /// The configured subject token type for OIDC subjects.
    pub subject_token_type: Option<&'a str>,
}

/// An IAM Credentials impersonation.
#[derive(Debug, Clone, Copy)]
pub struct Impersonation<'a> {
    /// The target account.
    pub service_account: &'a str,
    /// The delegation chain, caller side first (empty for a direct request): each account needs
    /// the token creator role on the next, the last one on `service_account`.
    pub delegates: &'a [ServiceAccount],
    /// Access-token lifetime.
    pub lifetime_seconds: Option<u32>,
    /// The IAM Credentials base URL of this hop, when configured.
    pub endpoint: Option<&'a str>,
}

/// A source as the `credential_source` of a Google `external_account` file.
#[derive(Debug, Clone)]
pub struct CredentialSource {
    /// The `credential_source` object.
    pub credential_source: serde_json::Value,
    /// Whether the subject token is a signed AWS request (else an OIDC token).
    pub aws: bool,
    /// A caveat to tell the user (Google's libraries do not read everything idbridge does).
    pub note: Option<&'static str>,
}

/// One source or exchange of a route.
///
/// The logic of a kind is an inherent `async fn`; its [`Step::run`] is one line
/// (`Box::pin(self.fetch(input, ctx, hops))`). `Debug` must not print secrets.
pub trait Step: StepClone + fmt::Debug + Send + Sync {
    /// The kind's name as written in the config (`gce-metadata`, `aws-sts`).
    fn kind(&self) -> &'static str;

    /// What it accepts from the previous step; empty for a source.
    fn takes(&self) -> &'static [Yields] {
        &[]
    }

    /// The config error when the previous step yields `got`, which it does not take.
    fn refuses(&self, got: Yields) -> String {
        let wanted: Vec<&str> = self.takes().iter().map(|y| y.described()).collect();
        format!(
            "{} needs {}, but the previous hop yields {}",
            self.kind(),
            wanted.join(" or "),
            got.described()
        )
    }

    /// Whether it may come after `previous` (which yields what it takes); the config error
    /// otherwise (a chained AWS session longer than AWS allows).
    fn follows(&self, previous: &dyn Step) -> Result<(), String> {
        let _ = previous;
        Ok(())
    }

    /// What it yields (validated at parse time: an `audience` makes an ID token, `scopes` an
    /// access token).
    fn yields(&self) -> Yields;

    /// What it is about, on one line: the role, the provider, the account, the token file.
    fn describe(&self) -> String;

    /// What it mints and from where, for `serve`, `doctor` and `setup`.
    fn facts(&self) -> Facts<'_> {
        Facts::default()
    }

    /// The step minting for another audience or other scopes (a client's per-request ask), as
    /// the last step of a route; `None` when it cannot, `Some(Err(why))` when it says why not.
    fn with_overrides(&self, overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        let _ = overrides;
        None
    }

    /// The source as the `credential_source` of a Google `external_account` file (`imds` is
    /// the IMDS base URL to write when the source names none), when it has one.
    fn credential_source(&self, imds: &str) -> Option<CredentialSource> {
        let _ = imds;
        None
    }

    /// The AWS region of the credentials it yields, for the next step (Google STS signs its
    /// AWS subject token for it).
    fn region(&self) -> Option<&str> {
        self.facts().region
    }

    /// Runs the step once, appending one report per network hop.
    fn run<'a>(
        &'a self,
        input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a>;
}

/// `Clone` for `Box<dyn Step>`, implemented for every `Clone` step.
pub trait StepClone {
    /// A boxed copy.
    fn clone_step(&self) -> Box<dyn Step>;
}

impl<T: Step + Clone + 'static> StepClone for T {
    fn clone_step(&self) -> Box<dyn Step> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn Step> {
    fn clone(&self) -> Self {
        self.clone_step()
    }
}

/// A kind's parser: reads its TOML table (`kind` removed) into the step.
pub type ParseFn = fn(toml::Value, &Parse<'_>) -> Result<Box<dyn Step>, KindError>;

/// A registered kind: the name written in `kind = "…"` and the function that reads its table.
#[derive(Clone, Copy)]
pub struct Kind {
    /// The name.
    pub name: &'static str,
    /// Reads the kind's TOML table (`kind` removed) into the step.
    pub parse: ParseFn,
}

impl Kind {
    /// A kind.
    pub const fn new(name: &'static str, parse: ParseFn) -> Self {
        Self { name, parse }
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Why a kind's table is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindError {
    /// Not the table's shape (unknown, missing or mistyped field): reported at the table's line.
    Shape(String),
    /// A value that is not what it must be (not a role ARN, out of range): reported at the
    /// route's line.
    Invalid(String),
}

/// What a kind's parser is given besides its table.
#[derive(Debug, Clone, Copy)]
pub struct Parse<'a> {
    /// Where the table is: `source`, `source.caller`, or `None` for an exchange (whose errors
    /// the route prefixes with `exchange[i]`).
    pub at: Option<&'a str>,
    /// The config file's directory: relative paths resolve against it.
    pub base: Option<&'a Path>,
    /// The kinds known, for a kind that holds another step (the `impersonate` source's caller).
    pub registry: &'a Registry,
}

impl Parse<'_> {
    /// A field's name as messages write it: `source.audience`, or `audience` in an exchange.
    pub fn field(&self, name: &str) -> String {
        match self.at {
            Some(at) => format!("{at}.{name}"),
            None => name.to_owned(),
        }
    }

    /// `path` resolved against the config file's directory.
    pub fn path(&self, path: PathBuf) -> PathBuf {
        match self.base {
            Some(b) if path.is_relative() => b.join(path),
            _ => path,
        }
    }

    /// Reads the kind's own fields (`kind` removed) into its as-written struct, which should
    /// `deny_unknown_fields`.
    pub fn table<T: DeserializeOwned>(&self, table: toml::Value) -> Result<T, KindError> {
        T::deserialize(table).map_err(|e| {
            let message = e.message().trim_end().replace('\n', " ");
            KindError::Shape(match self.at {
                Some(at) => format!("field `{at}`: {message}"),
                None => message,
            })
        })
    }

    /// An invalid value of `field`: "field `source.x` …" / "field `x` …".
    pub fn invalid(&self, field: &str, message: impl fmt::Display) -> KindError {
        KindError::Invalid(format!("field `{}` {message}", self.field(field)))
    }
}

/// The kinds a config may name.
#[derive(Debug, Clone)]
pub struct Registry {
    sources: Vec<Kind>,
    exchanges: Vec<Kind>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// Every kind idbridge has ([`crate::source::KINDS`], [`crate::exchange::KINDS`]).
    pub fn builtin() -> Self {
        Self {
            sources: crate::source::KINDS.to_vec(),
            exchanges: crate::exchange::KINDS.to_vec(),
        }
    }

    /// With one more source kind (replacing a kind of the same name).
    pub fn with_source(mut self, kind: Kind) -> Self {
        self.sources.retain(|k| k.name != kind.name);
        self.sources.push(kind);
        self
    }

    /// With one more exchange kind (replacing a kind of the same name).
    pub fn with_exchange(mut self, kind: Kind) -> Self {
        self.exchanges.retain(|k| k.name != kind.name);
        self.exchanges.push(kind);
        self
    }

    /// Reads a source table (`{ kind = "…", … }`) at `at` (`source`, `source.caller`).
    pub fn source(
        &self,
        table: toml::Value,
        at: &str,
        base: Option<&Path>,
    ) -> Result<Box<dyn Step>, KindError> {
        let parse = Parse {
            at: Some(at),
            base,
            registry: self,
        };
        Self::read(&self.sources, table, &parse, "source")
    }

    /// Reads an exchange table.
    pub fn exchange(
        &self,
        table: toml::Value,
        base: Option<&Path>,
    ) -> Result<Box<dyn Step>, KindError> {
        let parse = Parse {
            at: None,
            base,
            registry: self,
        };
        Self::read(&self.exchanges, table, &parse, "exchange")
    }

    fn read(
        kinds: &[Kind],
        table: toml::Value,
        parse: &Parse<'_>,
        what: &str,
    ) -> Result<Box<dyn Step>, KindError> {
        let toml::Value::Table(mut table) = table else {
            return Err(KindError::Shape(format!(
                "{}: expected a table with a `kind`",
                parse.at.unwrap_or(what)
            )));
        };
        let kind_field = parse.field("kind");
        let name = match table.remove("kind") {
            Some(toml::Value::String(s)) => s,
            Some(_) => {
                return Err(KindError::Shape(format!(
                    "field `{kind_field}` must be a string"
                )));
            }
            None => return Err(KindError::Shape(format!("missing field `{kind_field}`"))),
        };
        let known = || {
            kinds
                .iter()
                .map(|k| format!("`{}`", k.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let kind = kinds.iter().find(|k| k.name == name).ok_or_else(|| {
            KindError::Shape(format!(
                "field `{kind_field}`: unknown {what} kind {name:?}, expected one of {}",
                known()
            ))
        })?;
        (kind.parse)(toml::Value::Table(table), parse)
    }
}
