//! The daemon's frontends (GCE metadata, IMDSv2, ECS, metrics) as a local neighbour reaches
//! them: raw HTTP/1.1 requests, the first byte choosing the frontend. Credentials come from a
//! loader that answers at once (no upstream), so what is fuzzed is the request handling: paths,
//! query strings and audiences, IMDS token and TTL headers, the ECS authorization header.
#![no_main]

mod common;

use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};

use axum::Router;
use idbridge_broker::BrokerError;
use idbridge_core::{AwsCredentials, Credential, GoogleAccessToken, IdToken, SecretString};
use idbridge_serve::accounts::Accounts;
use idbridge_serve::broker::{Broker, CredentialKey};
use idbridge_serve::caller::CallerPolicy;
use idbridge_serve::config::ServeConfig;
use idbridge_serve::{aws_ecs, aws_imds, gce_metadata, metrics};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[[route]]
name = "aws"
source = { kind = "gce-metadata", audience = "https://a.example" }
exchange = [{ kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/test-role" }]
[[route]]
name = "gcp"
source = { kind = "impersonate", service_account = "app@proj.iam.gserviceaccount.com", scopes = ["https://www.googleapis.com/auth/cloud-platform"] }
[serve]
[serve.gce_metadata]
token_route = "gcp"
identity_route = "gcp"
project_id = "proj"
numeric_project_id = "1234"
[serve.aws_imds]
route = "aws"
[serve.aws_ecs]
authorization_token = "fuzz-ecs-token-0123456789"
[[serve.aws_ecs.role]]
path = "/role/a"
route = "aws"
[serve.metrics]
"#;

fn routers() -> &'static [Router; 4] {
    static R: OnceLock<[Router; 4]> = OnceLock::new();
    R.get_or_init(|| {
        let config = ServeConfig::parse(CONFIG, "fuzz.toml", None, &Accounts::default())
            .expect("the fuzz config");
        let clock = idbridge_core::clock::system();
        let loader_clock = Arc::clone(&clock);
        let loader = move |key: CredentialKey| {
            let expires_at = loader_clock.now() + time::Duration::HOUR;
            async move {
                let secret = || SecretString::new("fuzz-secret");
                Ok::<_, BrokerError>(match (key.route.as_str(), &key.overrides.audience) {
                    ("aws", _) => Credential::Aws(AwsCredentials {
                        access_key_id: "ASIAFUZZ".to_owned(),
                        secret_access_key: secret(),
                        session_token: Some(secret()),
                        expiration: Some(expires_at),
                        account_id: None,
                        arn: None,
                    }),
                    (_, Some(_)) => Credential::IdToken(IdToken {
                        token: secret(),
                        expires_at,
                    }),
                    _ => Credential::GoogleAccessToken(GoogleAccessToken {
                        token: secret(),
                        expires_at,
                        principal: Some("app@proj.iam.gserviceaccount.com".to_owned()),
                        scopes: key.overrides.scopes.clone().unwrap_or_default(),
                    }),
                })
            }
        };
        let broker = Arc::new(Broker::with_loader(
            loader,
            clock,
            CallerPolicy::open(),
            NonZeroUsize::new(64).expect("non-zero"),
        ));
        common::runtime().block_on(async {
            [
                gce_metadata::router(Arc::clone(&broker), config.gce_metadata().cloned().expect("gce")),
                aws_imds::router(Arc::clone(&broker), config.aws_imds().cloned().expect("imds")),
                aws_ecs::router(Arc::clone(&broker), config.aws_ecs().cloned().expect("ecs")),
                metrics::router(Arc::clone(&broker)),
            ]
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    // Hanging GETs wait for a change by design; not a hang to report.
    if rest.windows(15).any(|w| w.eq_ignore_ascii_case(b"wait_for_change")) {
        return;
    }
    let router = &routers()[usize::from(which) % 4];
    if let Some(req) = common::request(rest, &[]) {
        common::drive(router, req);
    }
});
