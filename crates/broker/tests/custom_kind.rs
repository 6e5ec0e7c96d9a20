#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code fails loudly"
)]
//! The seam, shown: a source kind defined in this one file and registered with one line
//! reads from a config, is checked against the exchanges after it, runs, reports its hop, and
//! takes a client's audience — with nothing else in the crate knowing it.

use std::sync::Arc;

use base64::Engine;
use idbridge_broker::config::Config;
use idbridge_broker::step::{Facts, Input, Kind, KindError, Parse, Registry, Step, StepFuture};
use idbridge_broker::{BrokerError, Context, Hop, HopReport, Overrides, Route, Yields};
use idbridge_core::env::MapEnv;
use idbridge_core::{Credential, IdToken};
use serde::Deserialize;

/// The test kind's hop.
const HOP: Hop = Hop::new("fixed-jwt", "the `issuer` field of the source");

/// `source = { kind = "fixed-jwt", issuer = "…", audience = "…" }`: an unsigned JWT made on
/// the spot, valid for an hour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedJwt {
    issuer: String,
    audience: String,
}

impl FixedJwt {
    fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: FixedJwt = p.table(table)?;
        if !raw.issuer.starts_with("https://") {
            return Err(p.invalid("issuer", "must be an https URL"));
        }
        Ok(Box::new(raw))
    }

    async fn fetch(
        &self,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let started = tokio::time::Instant::now();
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let exp = ctx.clock.unix() + 3600;
        let jwt = format!(
            "{}.{}.sig",
            b64(serde_json::json!({"alg": "none"})),
            b64(
                serde_json::json!({"iss": self.issuer, "aud": self.audience, "sub": "test", "exp": exp})
            ),
        );
        let expires_at = time::OffsetDateTime::from_unix_timestamp(exp).unwrap();
        hops.push(HopReport::new(
            HOP,
            self.issuer.clone(),
            format!("token for {}", self.audience),
            Some(expires_at),
            started,
        ));
        Ok(Credential::IdToken(IdToken {
            token: jwt.into(),
            expires_at,
        }))
    }
}

impl Step for FixedJwt {
    fn kind(&self) -> &'static str {
        "fixed-jwt"
    }

    fn yields(&self) -> Yields {
        Yields::IdToken
    }

    fn describe(&self) -> String {
        format!("unsigned token of {} for {}", self.issuer, self.audience)
    }

    fn facts(&self) -> Facts<'_> {
        let mut facts = Facts::default();
        facts.audience = Some(&self.audience);
        facts
    }

    fn with_overrides(&self, overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        let audience = overrides.audience.clone()?;
        Some(Ok(Box::new(FixedJwt {
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
        Box::pin(self.fetch(ctx, hops))
    }
}

/// The one registration line.
fn registry() -> Registry {
    Registry::builtin().with_source(Kind::new("fixed-jwt", FixedJwt::parse))
}

const CONFIG: &str = r#"
[[route]]
name = "fixed"
source = { kind = "fixed-jwt", issuer = "https://issuer.example", audience = "aud-1" }

[[route]]
name = "fixed-to-aws"
source = { kind = "fixed-jwt", issuer = "https://issuer.example", audience = "aws" }
exchange = [{ kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/app" }]
"#;

fn ctx() -> Context {
    Context::new(
        Arc::new(MapEnv(Default::default())),
        idbridge_core::clock::system(),
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn a_registered_kind_reads_and_is_checked_against_the_next_step() {
    let config = Config::parse_with(CONFIG, "c.toml", None, &registry()).unwrap();
    let route = config.route("fixed-to-aws").unwrap();
    assert_eq!(route.source.kind(), "fixed-jwt");
    assert_eq!(route.yields(), Yields::AwsCredentials);
    assert_eq!(
        route.source.describe(),
        "unsigned token of https://issuer.example for aws"
    );

    // Without the registration line the kind is unknown, and the error names it.
    let e = Config::parse(CONFIG, "c.toml", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.toml, line 4") && e.contains("\"fixed-jwt\""),
        "{e}"
    );

    // Its own checks name the field; its table's shape is checked by serde.
    let bad = CONFIG.replace(
        "issuer = \"https://issuer.example\", audience = \"aud-1\"",
        "issuer = \"http://x\", audience = \"a\"",
    );
    let e = Config::parse_with(&bad, "c.toml", None, &registry())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("field `source.issuer` must be an https URL"),
        "{e}"
    );
    let bad = CONFIG.replace("audience = \"aud-1\"", "audience = \"aud-1\", colour = 1");
    let e = Config::parse_with(&bad, "c.toml", None, &registry())
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 4") && e.contains("colour"), "{e}");

    // An exchange that does not take an ID token refuses it when the file is read.
    let bad = format!(
        "{CONFIG}\n[[route]]\nname = \"x\"\nsource = {{ kind = \"fixed-jwt\", issuer = \"https://i.example\", audience = \"a\" }}\nexchange = [{{ kind = \"impersonate\", service_account = \"sa@p.iam.gserviceaccount.com\" }}]\n"
    );
    let e = Config::parse_with(&bad, "c.toml", None, &registry())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("exchange[0]") && e.contains("impersonate needs a Google access token"),
        "{e}"
    );
}

#[tokio::test]
async fn a_registered_kind_runs_reports_its_hop_and_takes_overrides() {
    let config = Config::parse_with(CONFIG, "c.toml", None, &registry()).unwrap();
    let route = Route::new(config.route("fixed").unwrap().clone());
    let out = route.run(&ctx()).await.unwrap();
    assert!(matches!(out.credential, Credential::IdToken(_)));
    assert_eq!(out.hops.len(), 1);
    assert_eq!(out.hops[0].hop, "fixed-jwt");
    assert_eq!(
        out.hops[0].hop.endpoint_variable(),
        "the `issuer` field of the source"
    );

    let other = route
        .with_overrides(&Overrides {
            audience: Some("aud-2".into()),
            scopes: None,
        })
        .unwrap();
    assert_eq!(other.config.source.facts().audience, Some("aud-2"));
    let out = other.run(&ctx()).await.unwrap();
    assert_eq!(out.hops[0].identity, "token for aud-2");

    // Scopes do not apply to it: the route says so.
    let e = route
        .with_overrides(&Overrides {
            audience: None,
            scopes: Some(vec!["s".into()]),
        })
        .unwrap_err();
    assert!(e.message.contains("cannot mint tokens"), "{e}");
}
