//! Frontend tests: every router driven with `oneshot` over a fake loader (paused clock where
//! time matters) or the in-process emulator, and the listeners over real TCP and unix sockets.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use idbridge_broker::cache::Loader;
use idbridge_broker::{BrokerError, Context, ErrorKind};
use idbridge_core::clock::{Clock, SharedClock};
use idbridge_core::{AwsCredentials, Credential, GoogleAccessToken, IdToken, SecretString};
pub(crate) use idbridge_emulator::test_util::{Reply, TokioClock, send};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::accounts::Accounts;
use crate::caller::{CallerPolicy, Peer};
use crate::config::ServeConfig;
use crate::{Broker, CredentialKey, Frontend, aws_ecs, aws_imds, gce_metadata, metrics};

mod azure;
mod metadata;

const ROUTES: &str = r#"
[[route]]
name = "aws"
source = { kind = "gce-metadata", audience = "https://a.example" }
exchange = [{ kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/test-role" }]

[[route]]
name = "aws2"
source = { kind = "gce-metadata", audience = "https://b.example" }
exchange = [{ kind = "aws-sts", role_arn = "arn:aws:iam::444455556666:role/other" }]

[[route]]
name = "gcp"
source = { kind = "impersonate", service_account = "app@proj.iam.gserviceaccount.com", scopes = ["https://www.googleapis.com/auth/cloud-platform"] }
"#;

const SERVE: &str = r#"
[serve]
[serve.gce_metadata]
token_route = "gcp"
identity_route = "gcp"
project_id = "proj"
numeric_project_id = "1234"
[serve.aws_imds]
route = "aws"
[serve.aws_ecs]
authorization_token = "test-ecs-token-0123456789"
[[serve.aws_ecs.role]]
path = "/role/a"
route = "aws"
[[serve.aws_ecs.role]]
path = "/role/b"
route = "aws2"
[serve.metrics]
"#;

const SA: &str = "app@proj.iam.gserviceaccount.com";
const CP: &str = "https://www.googleapis.com/auth/cloud-platform";
const ECS_TOKEN: &str = "test-ecs-token-0123456789";
/// Marks every fake secret, so a leak is easy to grep for.
const SECRET: &str = "SeCrEt";

fn config(extra: &str) -> ServeConfig {
    ServeConfig::parse(
        &format!("{ROUTES}{SERVE}{extra}"),
        "test.toml",
        None,
        &Accounts::default(),
    )
    .unwrap()
}

/// A loader minting fake credentials of `lifetime`, recording every key it is asked for.
#[derive(Debug, Clone)]
struct Fake {
    calls: Arc<Mutex<Vec<CredentialKey>>>,
    clock: Arc<TokioClock>,
    lifetime: Duration,
}

impl Fake {
    fn new(lifetime: Duration) -> Self {
        Self {
            calls: Arc::default(),
            clock: TokioClock::at(1_750_000_000),
            lifetime,
        }
    }

    fn calls(&self) -> Vec<CredentialKey> {
        self.calls.lock().unwrap().clone()
    }

    fn loader(&self) -> impl Loader<CredentialKey, Credential> {
        let fake = self.clone();
        move |key: CredentialKey| {
            let serial = {
                let mut calls = fake.calls.lock().unwrap();
                calls.push(key.clone());
                calls.len()
            };
            let expires_at = fake.clock.now() + fake.lifetime;
            async move {
                let secret = |what: &str| SecretString::new(format!("{SECRET}-{what}-{serial}"));
                match key.route.as_str() {
                    "aws" | "aws2" => Ok(Credential::Aws(AwsCredentials {
                        access_key_id: format!("ASIAFAKE{serial:012}"),
                        secret_access_key: secret("key"),
                        session_token: Some(secret("session")),
                        expiration: Some(expires_at),
                        account_id: None,
                        arn: None,
                    })),
                    "gcp" if key.overrides.audience.is_some() => Ok(Credential::IdToken(IdToken {
                        token: secret(key.overrides.audience.as_deref().unwrap_or_default()),
                        expires_at,
                    })),
                    "gcp" => Ok(Credential::GoogleAccessToken(GoogleAccessToken {
                        token: secret("ya29"),
                        expires_at,
                        principal: Some(SA.to_owned()),
                        scopes: key.overrides.scopes.clone().unwrap_or_default(),
                    })),
                    _ => Err(
                        BrokerError::new(ErrorKind::Rejected, "fake", "no such route")
                            .with_code("AccessDenied"),
                    ),
                }
            }
        }
    }

    fn broker(&self, policy: CallerPolicy) -> Arc<Broker> {
        Arc::new(Broker::with_loader(
            self.loader(),
            Arc::clone(&self.clock) as SharedClock,
            policy,
            NonZeroUsize::new(64).unwrap(),
        ))
    }
}

/// The four routers of `config` over one broker.
struct Routers {
    gce: Router,
    imds: Router,
    ecs: Router,
    metrics: Router,
    broker: Arc<Broker>,
}

fn routers(config: &ServeConfig, broker: Arc<Broker>) -> Routers {
    Routers {
        gce: gce_metadata::router(Arc::clone(&broker), config.gce_metadata().cloned().unwrap()),
        imds: aws_imds::router(Arc::clone(&broker), config.aws_imds().cloned().unwrap()),
        ecs: aws_ecs::router(Arc::clone(&broker), config.aws_ecs().cloned().unwrap()),
        metrics: metrics::router(Arc::clone(&broker)),
        broker,
    }
}

fn fake_routers(lifetime: Duration) -> (Routers, Fake) {
    let fake = Fake::new(lifetime);
    (
        routers(&config(""), fake.broker(CallerPolicy::open())),
        fake,
    )
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut r = Request::get(path);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Body::empty()).unwrap()
}

fn md(path: &str) -> Request<Body> {
    get(path, &[("Metadata-Flavor", "Google")])
}

async fn imds_token(imds: &Router, ttl: &str) -> String {
    let req = Request::put(aws_imds::TOKEN_PATH)
        .header(aws_imds::TTL_HEADER, ttl)
        .body(Body::empty())
        .unwrap();
    let r = send(imds, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.header(aws_imds::TTL_HEADER), ttl);
    r.body
}

async fn imds_get(imds: &Router, path: &str, token: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = token
        .map(|t| vec![(aws_imds::TOKEN_HEADER, t)])
        .unwrap_or_default();
    send(imds, get(path, &headers)).await
}

const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/test-role";

// ------------------------------------------------------------------------------------------
// GCE metadata
// ------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn gce_header_rules() {
    let (r, _) = fake_routers(Duration::from_secs(3600));
    let ping = send(&r.gce, get("/", &[])).await;
    assert_eq!(ping.status, StatusCode::OK);
    assert_eq!(ping.header("metadata-flavor"), "Google");
    assert!(!ping.header("content-type").is_empty());

    let path = "/computeMetadata/v1/project/project-id";
    let cases = [
        (get(path, &[]), StatusCode::FORBIDDEN),
        (
            get(path, &[("Metadata-Flavor", "google")]),
            StatusCode::FORBIDDEN,
        ),
        (
            get(
                path,
                &[
                    ("Metadata-Flavor", "Google"),
                    ("X-Forwarded-For", "10.0.0.1"),
                ],
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            Request::post(path)
                .header("Metadata-Flavor", "Google")
                .body(Body::empty())
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (get(path, &[("METADATA-FLAVOR", "Google")]), StatusCode::OK),
        (md("/computeMetadata/v2/"), StatusCode::NOT_FOUND),
    ];
    for (req, want) in cases {
        let what = format!("{} {:?}", req.method(), req.headers());
        let reply = send(&r.gce, req).await;
        assert_eq!(reply.status, want, "{what}: {}", reply.body);
        assert_eq!(reply.header("metadata-flavor"), "Google", "{what}");
        assert!(!reply.header("content-type").is_empty(), "{what}");
        assert!(!reply.body.contains('<'), "{what}: {}", reply.body);
    }
    let missing = send(&r.gce, get(path, &[])).await;
    assert!(
        missing.body.contains("Metadata-Flavor: Google"),
        "{}",
        missing.body
    );
}

#[tokio::test(start_paused = true)]
async fn gce_tokens_follow_the_route_and_the_client() {
    let (r, fake) = fake_routers(Duration::from_secs(3600));
    let tok = "/computeMetadata/v1/instance/service-accounts/default/token";
    let reply = send(&r.gce, md(tok)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("content-type"), "application/json");
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["access_token"].as_str().unwrap().starts_with(SECRET));
    assert_eq!(body["expires_in"], 3600);

    // Later, by email, with the configured scopes: the same cached token, expires_in counting down.
    tokio::time::advance(Duration::from_secs(100)).await;
    let same = send(
        &r.gce,
        md(&format!(
            "/computeMetadata/v1/instance/service-accounts/{}/token?scopes={}",
            SA.replace('@', "%40"),
            CP.replace(':', "%3A").replace('/', "%2F")
        )),
    )
    .await
    .json();
    assert_eq!(same["access_token"], body["access_token"]);
    assert_eq!(same["expires_in"], 3500);
    assert_eq!(fake.calls(), vec![CredentialKey::route("gcp")]);

    // Other scopes go to the route's last hop, sorted into one key.
    let other = send(&r.gce, md(&format!("{tok}?scopes=b,a,b")))
        .await
        .json();
    assert_ne!(other["access_token"], body["access_token"]);
    assert_eq!(
        fake.calls()[1],
        CredentialKey::scopes("gcp", vec!["a".into(), "b".into()])
    );

    // Identity: the client's audience.
    let id = "/computeMetadata/v1/instance/service-accounts/default/identity";
    for bad in [
        id.to_owned(),
        format!("{id}?audience="),
        format!("{id}?audience=x&format=weird"),
    ] {
        let reply = send(&r.gce, md(&bad)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let reply = send(
        &r.gce,
        md(&format!(
            "{id}?audience=https%3A%2F%2Faud.example&format=full"
        )),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("content-type"), "application/text");
    assert!(reply.body.contains("https://aud.example"), "{}", reply.body);
    assert_eq!(
        fake.calls()[2],
        CredentialKey::audience("gcp", "https://aud.example")
    );
    assert_eq!(fake.calls().len(), 3, "bad requests never reach upstream");
}

#[tokio::test(start_paused = true)]
async fn gce_tree() {
    let (r, fake) = fake_routers(Duration::from_secs(3600));
    let text = |path: &'static str| {
        let gce = r.gce.clone();
        async move {
            let reply = send(&gce, md(path)).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
            (reply.header("content-type").to_owned(), reply.body)
        }
    };
    let sa = "/computeMetadata/v1/instance/service-accounts";
    assert_eq!(
        text("/computeMetadata/v1/instance/service-accounts/")
            .await
            .1,
        format!("default/\n{SA}/\n")
    );
    let (ct, body) =
        text("/computeMetadata/v1/instance/service-accounts/default/?recursive=true").await;
    assert_eq!(ct, "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"aliases": ["default"], "email": SA, "scopes": [CP]})
    );
    assert_eq!(
        text("/computeMetadata/v1/instance/service-accounts/default/")
            .await
            .1,
        "aliases\nemail\nidentity\nscopes\ntoken\n"
    );
    assert_eq!(
        text("/computeMetadata/v1/instance/service-accounts/default/email")
            .await
            .1,
        SA
    );
    assert_eq!(
        text("/computeMetadata/v1/instance/service-accounts/default/scopes")
            .await
            .1,
        format!("{CP}\n")
    );
    assert_eq!(
        text("/computeMetadata/v1/instance/service-accounts/default/aliases")
            .await
            .1,
        "default\n"
    );
    assert_eq!(
        text("/computeMetadata/v1/project/project-id").await.1,
        "proj"
    );
    assert_eq!(
        text("/computeMetadata/v1/project/numeric-project-id")
            .await
            .1,
        "1234"
    );
    assert_eq!(
        text("/computeMetadata/v1/universe/universe-domain").await.1,
        "googleapis.com"
    );
    assert_eq!(text("/computeMetadata/").await.1, "v1/\n");
    let (ct, body) = text("/computeMetadata/v1/?recursive=true").await;
    assert_eq!(ct, "application/json");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["project"]["numericProjectId"], 1234);
    assert_eq!(v["project"]["projectId"], "proj");
    assert_eq!(v["instance"]["serviceAccounts"][SA]["email"], SA);
    assert!(
        v["instance"]["serviceAccounts"]["default"]
            .get("token")
            .is_none()
    );
    let (ct, body) =
        text("/computeMetadata/v1/instance/service-accounts/default/scopes?alt=json").await;
    assert_eq!(
        (ct.as_str(), body),
        ("application/json", format!("[\"{CP}\"]"))
    );
    for missing in [
        format!("{sa}/other@proj.iam.gserviceaccount.com/token"),
        format!("{sa}/default/nothing"),
        "/computeMetadata/v1/project/project-id/deeper".to_owned(),
        "/latest/meta-data/".to_owned(),
    ] {
        let reply = send(&r.gce, md(&missing)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(reply.header("metadata-flavor"), "Google");
    }
    assert!(
        fake.calls().is_empty(),
        "metadata reads never load credentials"
    );
}

// ------------------------------------------------------------------------------------------
// IMDS
// ------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn imds_token_rules() {
    let (r, fake) = fake_routers(Duration::from_secs(3600));
    for ttl in [
        None,
        Some("0"),
        Some("21601"),
        Some("abc"),
        Some("-1"),
        Some("1.5"),
        Some(""),
    ] {
        let mut req = Request::put(aws_imds::TOKEN_PATH);
        if let Some(ttl) = ttl {
            req = req.header(aws_imds::TTL_HEADER, ttl);
        }
        let reply = send(&r.imds, req.body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{ttl:?}");
    }
    let xff = Request::put(aws_imds::TOKEN_PATH)
        .header(aws_imds::TTL_HEADER, "300")
        .header("X-Forwarded-For", "10.0.0.1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&r.imds, xff).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        send(&r.imds, get(aws_imds::TOKEN_PATH, &[])).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    for ttl in ["1", "21600"] {
        imds_token(&r.imds, ttl).await;
    }

    assert_eq!(
        imds_get(&r.imds, ROLE_PATH, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        imds_get(&r.imds, ROLE_PATH, Some("not-a-token"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let short = imds_token(&r.imds, "1").await;
    assert_eq!(
        imds_get(&r.imds, "/latest/meta-data/instance-id", Some(&short))
            .await
            .status,
        StatusCode::OK
    );
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert_eq!(
        imds_get(&r.imds, ROLE_PATH, Some(&short)).await.status,
        StatusCode::UNAUTHORIZED,
        "expired token"
    );
    assert!(fake.calls().is_empty(), "no token, no credentials");
}

#[tokio::test(start_paused = true)]
async fn imds_paths_and_credentials() {
    let (r, fake) = fake_routers(Duration::from_secs(3600));
    let t = imds_token(&r.imds, "21600").await;
    let ok = |path: &'static str| {
        let (imds, t) = (r.imds.clone(), t.clone());
        async move {
            let reply = imds_get(&imds, path, Some(&t)).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
            assert_eq!(reply.header("server"), "EC2ws");
            reply.body
        }
    };
    assert_eq!(
        ok("/latest/meta-data/iam/security-credentials/").await,
        "test-role"
    );
    assert_eq!(
        ok("/latest/meta-data/iam/security-credentials").await,
        "test-role"
    );
    assert_eq!(
        ok("/latest/meta-data/placement/availability-zone").await,
        "us-east-1a"
    );
    assert_eq!(ok("/latest/meta-data/placement/region").await, "us-east-1");
    assert_eq!(
        ok("/latest/meta-data/instance-id").await,
        "i-00000000000000000"
    );
    assert!(ok("/latest/meta-data/").await.contains("placement/"));

    let doc: Value = serde_json::from_str(&ok(ROLE_PATH).await).unwrap();
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "Code",
        "LastUpdated",
        "Type",
        "AccessKeyId",
        "SecretAccessKey",
        "Token",
        "Expiration",
    ] {
        assert!(keys.contains(&k), "{k} missing: {doc}");
    }
    assert_eq!(doc["Code"], "Success");
    assert_eq!(doc["Type"], "AWS-HMAC");
    // 1_750_000_000 + 3600 s.
    assert_eq!(doc["Expiration"], "2025-06-15T16:06:40Z");
    assert_eq!(doc["LastUpdated"], "2025-06-15T15:06:40Z");

    for missing in [
        "/latest/meta-data/iam/security-credentials/other-role",
        "/latest/meta-data/iam/security-credentials/test-role/",
        "/latest/meta-data/iam/security-credentials-extended/",
        "/latest/meta-data/iam/security-credentials-extended/test-role",
        "/latest/meta-data/instance-id/",
        "/latest/user-data",
    ] {
        let reply = imds_get(&r.imds, missing, Some(&t)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{missing}");
    }
    let post = Request::post("/latest/meta-data/")
        .header(aws_imds::TOKEN_HEADER, t.as_str())
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&r.imds, post).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(fake.calls(), vec![CredentialKey::route("aws")]);
}

#[tokio::test(start_paused = true)]
async fn imds_v1_when_tokens_are_not_required() {
    let fake = Fake::new(Duration::from_secs(3600));
    let c = ServeConfig::parse(
        &format!("{ROUTES}[serve]\n[serve.aws_imds]\nroute = \"aws\"\nrequire_token = false\nrole_name = \"custom\"\navailability_zone = \"eu-west-3b\"\n"),
        "t.toml",
        None,
        &Accounts::default(),
    )
    .unwrap();
    let imds = aws_imds::router(
        fake.broker(CallerPolicy::open()),
        c.aws_imds().cloned().unwrap(),
    );
    let reply = imds_get(
        &imds,
        "/latest/meta-data/iam/security-credentials/custom",
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        imds_get(&imds, "/latest/meta-data/placement/region", None)
            .await
            .body,
        "eu-west-3"
    );
    // A token that is present must still be live.
    assert_eq!(
        imds_get(&imds, "/latest/meta-data/instance-id", Some("bogus"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

// ------------------------------------------------------------------------------------------
// ECS
// ------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn ecs_rules_and_documents() {
    let (r, fake) = fake_routers(Duration::from_secs(3600));
    for auth in [
        None,
        Some("wrong"),
        Some("test-ecs-token-012345678"),
        Some("Bearer test-ecs-token-0123456789"),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        for path in ["/role/a", "/nope"] {
            let reply = send(&r.ecs, get(path, &headers)).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{auth:?} {path}");
            assert_eq!(reply.header("content-type"), "application/json");
            assert_eq!(reply.json()["code"], "AccessDenied");
        }
    }
    let auth = [("Authorization", ECS_TOKEN)];
    let reply = send(&r.ecs, get("/nope", &auth)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["code"], "NotFound");
    let reply = send(&r.ecs, get("/role/a", &auth)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let doc = reply.json();
    assert_eq!(doc["RoleArn"], "arn:aws:iam::111122223333:role/test-role");
    assert_eq!(doc["AccountId"], "111122223333");
    assert_eq!(doc["Expiration"], "2025-06-15T16:06:40Z");
    for k in ["AccessKeyId", "SecretAccessKey", "Token"] {
        assert!(doc[k].as_str().is_some_and(|v| !v.is_empty()), "{k}: {doc}");
    }
    let b = send(&r.ecs, get("/role/b", &auth)).await.json();
    assert_eq!(b["AccountId"], "444455556666");
    assert_ne!(b["AccessKeyId"], doc["AccessKeyId"]);
    assert_eq!(
        fake.calls(),
        vec![CredentialKey::route("aws"), CredentialKey::route("aws2")]
    );
}

// ------------------------------------------------------------------------------------------
// Shared behaviour: 431, failures, caller policy, metrics, secrets in logs
// ------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn oversized_headers_are_431_everywhere() {
    let (r, fake) = fake_routers(Duration::from_secs(3600));
    let big = "x".repeat(crate::http::MAX_HEADER_BYTES + 1);
    for (name, router) in [
        ("gce", &r.gce),
        ("imds", &r.imds),
        ("ecs", &r.ecs),
        ("metrics", &r.metrics),
    ] {
        let req = get(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            &[
                ("Metadata-Flavor", "Google"),
                ("Authorization", ECS_TOKEN),
                ("X-Big", &big),
            ],
        );
        let reply = send(router, req).await;
        assert_eq!(
            reply.status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{name}"
        );
        if name == "gce" {
            assert_eq!(reply.header("metadata-flavor"), "Google");
        }
    }
    // Just under the limit passes.
    let fits = "x".repeat(8 * 1024);
    let reply = send(&r.gce, get("/", &[("X-Big", &fits)])).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(fake.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn failures_reach_clients_as_each_protocol_says() {
    let fake = Fake::new(Duration::from_secs(3600));
    let failing = move |key: CredentialKey| {
        let transient = key.route == "aws";
        async move {
            Err::<Credential, _>(if transient {
                BrokerError::new(
                    ErrorKind::Transient,
                    "aws-sts",
                    "could not connect: http://sts",
                )
            } else {
                BrokerError::new(ErrorKind::Rejected, "aws-sts", "HTTP 403: not authorized")
                    .with_code("AccessDenied")
            })
        }
    };
    let broker = Arc::new(Broker::with_loader(
        failing,
        Arc::clone(&fake.clock) as SharedClock,
        CallerPolicy::open(),
        NonZeroUsize::new(8).unwrap(),
    ));
    let r = routers(&config(""), broker);
    let t = imds_token(&r.imds, "60").await;
    let reply = imds_get(&r.imds, ROLE_PATH, Some(&t)).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert!(reply.body.contains("could not connect"), "{}", reply.body);
    let reply = send(&r.ecs, get("/role/b", &[("Authorization", ECS_TOKEN)])).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json()["code"], "AccessDenied");
    assert!(reply.json()["message"].as_str().unwrap().contains("aws2"));
}

#[tokio::test(start_paused = true)]
async fn callers_not_mapped_to_a_route_get_403() {
    let fake = Fake::new(Duration::from_secs(3600));
    let c = config("[[serve.caller]]\nuid = 1000\nroutes = [\"gcp\", \"aws2\"]\n");
    let broker = fake.broker(c.callers.clone());
    let as_uid = |uid: u32| {
        MockConnectInfo(Peer::Unix {
            uid,
            gid: uid,
            pid: Some(42),
        })
    };
    let r = routers(&c, broker);
    let (gce, imds, ecs) = (
        r.gce.clone().layer(as_uid(1000)),
        r.imds.clone().layer(as_uid(1000)),
        r.ecs.clone().layer(as_uid(1000)),
    );
    let tok = "/computeMetadata/v1/instance/service-accounts/default/token";
    assert_eq!(send(&gce, md(tok)).await.status, StatusCode::OK);
    let t = imds_token(&imds, "60").await;
    let reply = imds_get(&imds, ROLE_PATH, Some(&t)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["Code"], "AccessDenied");
    let msg = reply.json()["Message"].as_str().unwrap().to_owned();
    assert!(msg.contains("uid 1000") && msg.contains("\"aws\""), "{msg}");
    let auth = [("Authorization", ECS_TOKEN)];
    assert_eq!(
        send(&ecs, get("/role/b", &auth)).await.status,
        StatusCode::OK
    );
    let reply = send(&ecs, get("/role/a", &auth)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("uid 1000")
    );

    // Another uid gets nothing; neither does a caller without connection info.
    let other = r.gce.clone().layer(as_uid(1001));
    let reply = send(&other, md(tok)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.body.contains("uid 1001") && reply.body.contains("\"gcp\""),
        "{}",
        reply.body
    );
    assert_eq!(reply.header("content-type"), "application/text");
    let reply = send(&r.gce, md(tok)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.body.contains("unidentified"), "{}", reply.body);
    // Metadata that is not a credential is for everyone.
    let email = "/computeMetadata/v1/instance/service-accounts/default/email";
    assert_eq!(send(&other, md(email)).await.status, StatusCode::OK);
    assert_eq!(
        fake.calls().len(),
        2,
        "refused callers cause no upstream call"
    );
    let text = metrics::render(&r.broker);
    assert!(
        text.contains("idbridge_serve_caller_denials_total{route=\"aws\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("idbridge_serve_caller_denials_total{route=\"gcp\"} 2"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_health_and_readiness() {
    let (r, _) = fake_routers(Duration::from_secs(3600));
    assert_eq!(
        send(&r.metrics, get("/healthz", &[])).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&r.metrics, get("/readyz", &[])).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    r.broker.set_ready();
    assert_eq!(
        send(&r.metrics, get("/readyz", &[])).await.status,
        StatusCode::OK
    );

    let t = imds_token(&r.imds, "60").await;
    for _ in 0..3 {
        assert_eq!(
            imds_get(&r.imds, ROLE_PATH, Some(&t)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        imds_get(&r.imds, ROLE_PATH, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let id = "/computeMetadata/v1/instance/service-accounts/default/identity?audience=a%22b";
    assert_eq!(send(&r.gce, md(id)).await.status, StatusCode::OK);
    tokio::time::advance(Duration::from_secs(600)).await;

    let reply = send(&r.metrics, get("/metrics", &[])).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header("content-type")
            .starts_with("text/plain; version=0.0.4")
    );
    let m = reply.body;
    let aws = "route=\"aws\",keys=\"route\"";
    for line in [
        "idbridge_serve_requests_total{frontend=\"aws_imds\",status=\"200\"} 4".to_owned(),
        "idbridge_serve_requests_total{frontend=\"aws_imds\",status=\"401\"} 1".to_owned(),
        "idbridge_serve_requests_total{frontend=\"gce_metadata\",status=\"200\"} 1".to_owned(),
        "idbridge_serve_requests_total{frontend=\"metrics\",status=\"200\"} 2".to_owned(),
        "idbridge_serve_requests_total{frontend=\"metrics\",status=\"503\"} 1".to_owned(),
        format!("idbridge_serve_cache_hits_total{{{aws}}} 2"),
        format!("idbridge_serve_cache_misses_total{{{aws}}} 1"),
        format!("idbridge_serve_upstream_loads_total{{{aws}}} 1"),
        format!("idbridge_serve_upstream_load_errors_total{{{aws}}} 0"),
        format!("idbridge_serve_credential_expiry_seconds{{{aws}}} 3000"),
        format!("idbridge_serve_upstream_load_latency_seconds{{{aws}}} 0"),
        // Client-chosen audiences are summed per route, never label values.
        "idbridge_serve_cache_misses_total{route=\"gcp\",keys=\"client\"} 1".to_owned(),
        "idbridge_serve_client_keys{route=\"gcp\"} 1".to_owned(),
        "idbridge_serve_client_keys_max 64".to_owned(),
        "idbridge_serve_cache_entries 1".to_owned(),
        "idbridge_serve_ready 1".to_owned(),
        "# TYPE idbridge_serve_requests_total counter".to_owned(),
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }
    assert!(!m.contains(SECRET), "{m}");
    assert!(!m.contains("a\\\"b") && !m.contains("audience="), "{m}");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line, at every level, while the guard lives.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(start_paused = true)]
async fn no_secret_reaches_the_logs() {
    let (captured, _guard) = capture_logs();

    let fake = Fake::new(Duration::from_secs(3600));
    let c = config("[[serve.caller]]\nuid = 7\nroutes = [\"*\"]\n");
    let r = routers(&c, fake.broker(c.callers.clone()));
    let imds = r.imds.clone().layer(MockConnectInfo(Peer::Unix {
        uid: 7,
        gid: 7,
        pid: None,
    }));
    let ecs = r.ecs.clone().layer(MockConnectInfo(Peer::Unix {
        uid: 8,
        gid: 8,
        pid: None,
    }));
    let t = imds_token(&imds, "60").await;
    assert_eq!(
        imds_get(&imds, ROLE_PATH, Some(&t)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&ecs, get("/role/a", &[("Authorization", ECS_TOKEN)]))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&ecs, get("/role/a", &[("Authorization", "wrong-token")]))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("refused"), "{logs}");
    for secret in [SECRET, ECS_TOKEN, t.as_str(), "wrong-token"] {
        assert!(!logs.contains(secret), "{secret:?} in logs:\n{logs}");
    }
}

// ------------------------------------------------------------------------------------------
// Refresh and single flight
// ------------------------------------------------------------------------------------------

/// 20-second credentials, a client polling IMDS every 100 ms for a minute: never an expired
/// credential, and upstream sees one exchange per refresh period (a load at 0 s, then one every
/// 11.7–13.3 s: the cache refreshes a third of the lifetime ahead, with jitter).
#[tokio::test(start_paused = true)]
async fn short_credentials_are_refreshed_and_never_served_expired() {
    let (r, fake) = fake_routers(Duration::from_secs(20));
    let t = imds_token(&r.imds, "21600").await;
    let start = Instant::now();
    let mut keys = std::collections::BTreeSet::new();
    while start.elapsed() < Duration::from_secs(60) {
        let reply = imds_get(&r.imds, ROLE_PATH, Some(&t)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let doc = reply.json();
        let expiration = OffsetDateTime::parse(
            doc["Expiration"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let now = fake.clock.now();
        assert!(
            expiration > now,
            "expired credential at {:?}: {expiration} <= {now}",
            start.elapsed()
        );
        keys.insert(doc["AccessKeyId"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let loads = fake.calls().len();
    assert!((5..=6).contains(&loads), "{loads} upstream loads in 60 s");
    assert!(
        keys.len() + 1 >= loads,
        "{} served, {loads} loaded",
        keys.len()
    );
}

/// A world with the seed routes against the in-process emulator.
const EMULATED: &str = r#"
[[route]]
name = "tenant-to-aws"
source = { kind = "gce-metadata", audience = "https://psoxy.example/aws" }
exchange = [
  { kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/psoxy-tenant-access", session_name = "psoxy-tenant" },
]

[[route]]
name = "myapp-gcp"
source = { kind = "impersonate", service_account = "myapp@gcp-project.iam.gserviceaccount.com", scopes = ["https://www.googleapis.com/auth/cloud-platform"] }

[serve]
[serve.gce_metadata]
token_route = "myapp-gcp"
identity_route = "myapp-gcp"
project_id = "gcp-project"
[serve.aws_imds]
route = "tenant-to-aws"
"#;

pub(crate) async fn emulator() -> idbridge_emulator::Running {
    let emu = idbridge_emulator::Emulator::new(
        idbridge_emulator::World::builtin().unwrap(),
        idbridge_core::clock::system(),
    )
    .unwrap();
    idbridge_emulator::serve(
        emu,
        [127, 0, 0, 1].into(),
        idbridge_emulator::Ports::default(),
    )
    .await
    .unwrap()
}

fn emulated_broker(running: &idbridge_emulator::Running, config: &ServeConfig) -> Arc<Broker> {
    let env: BTreeMap<String, String> = running.env_pairs().into_iter().collect();
    let ctx = Context::new(
        Arc::new(idbridge_core::env::MapEnv(env)),
        idbridge_core::clock::system(),
        &config.routes.endpoints,
    )
    .unwrap();
    Arc::new(Broker::new(config, ctx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_requests_cause_one_upstream_exchange() {
    let running = emulator().await;
    let config = ServeConfig::parse(EMULATED, "e.toml", None, &Accounts::default()).unwrap();
    let broker = emulated_broker(&running, &config);
    let imds = aws_imds::router(Arc::clone(&broker), config.aws_imds().cloned().unwrap());
    let t = imds_token(&imds, "300").await;
    let path = "/latest/meta-data/iam/security-credentials/psoxy-tenant-access";
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let (imds, t) = (imds.clone(), t.clone());
        tasks.spawn(async move { imds_get(&imds, path, Some(&t)).await });
    }
    let replies = tasks.join_all().await;
    let mut key_ids = std::collections::BTreeSet::new();
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        key_ids.insert(reply.json()["AccessKeyId"].as_str().unwrap().to_owned());
    }
    assert_eq!(replies.len(), 1000);
    assert_eq!(key_ids.len(), 1, "{key_ids:?}");
    assert_eq!(
        running.emulator.count("aws_sts.AssumeRoleWithWebIdentity"),
        1
    );
    assert_eq!(running.emulator.count("metadata.identity"), 1);
    let snapshot = broker.cache_snapshot();
    let row = &snapshot.entries[0];
    assert_eq!(
        (row.loads, row.hits + row.misses),
        (1, 1000),
        "{snapshot:?}"
    );
    // The credentials are a live session of the emulated STS.
    let access_key = key_ids.into_iter().next().unwrap();
    let session = running.emulator.session(&access_key).unwrap();
    assert_eq!(
        session.role_arn,
        "arn:aws:iam::111122223333:role/psoxy-tenant-access"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn gce_frontend_over_the_emulator() {
    let running = emulator().await;
    let config = ServeConfig::parse(EMULATED, "e.toml", None, &Accounts::default()).unwrap();
    let gce_cfg = config.gce_metadata().cloned().unwrap();
    assert_eq!(
        gce_cfg.service_account_email,
        "myapp@gcp-project.iam.gserviceaccount.com"
    );
    let gce = gce_metadata::router(emulated_broker(&running, &config), gce_cfg);
    let reply = send(
        &gce,
        md("/computeMetadata/v1/instance/service-accounts/default/token"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    let issued = running.emulator.google_token(&token).unwrap();
    assert_eq!(
        issued.principal,
        idbridge_emulator::state::GooglePrincipal::ServiceAccount(
            "myapp@gcp-project.iam.gserviceaccount.com".to_owned()
        )
    );
    let reply = send(
        &gce,
        md("/computeMetadata/v1/instance/service-accounts/default/identity?audience=https%3A%2F%2Fx.example&format=full"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let claims = idbridge_core::jwt::UnverifiedJwt::parse(&reply.body).unwrap();
    assert_eq!(claims.str_claim("aud"), Some("https://x.example"));
    assert_eq!(claims.str_claim("sub"), Some("100367186111111111111"));
    running.shutdown().await;
}

// ------------------------------------------------------------------------------------------
// Real listeners: unix sockets (SO_PEERCRED) and TCP (the socket owner, by netlink sock_diag)
// ------------------------------------------------------------------------------------------

/// Sends a raw HTTP/1.1 request (with `Connection: close`) and reads the whole answer.
async fn raw<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, head: &str) -> (u16, String) {
    s.write_all(format!("{head}Host: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn my_uid() -> u32 {
    let (a, _b) = tokio::net::UnixStream::pair().unwrap();
    a.peer_cred().unwrap().uid()
}

fn listener_config(dir: &Path, uid: u32, sockets: bool) -> ServeConfig {
    let listen = |name: &str| {
        if sockets {
            format!("socket = \"{}\"", dir.join(name).display())
        } else {
            "port = 0".to_owned()
        }
    };
    let text = format!(
        "{ROUTES}[serve]\n[serve.gce_metadata]\n{}\ntoken_route = \"gcp\"\n\
         [serve.aws_imds]\n{}\nroute = \"aws\"\n[serve.metrics]\n{}\n\
         [[serve.caller]]\nuid = {uid}\nroutes = [\"gcp\"]\n",
        listen("gce.sock"),
        listen("imds.sock"),
        listen("metrics.sock"),
    );
    ServeConfig::parse(&text, "l.toml", None, &Accounts::default()).unwrap()
}

fn socket_of(running: &crate::Running, f: Frontend) -> std::path::PathBuf {
    running
        .listeners()
        .iter()
        .find_map(|l| match (&l.address, l.frontend == f) {
            (crate::Address::Unix(p), true) => Some(p.clone()),
            _ => None,
        })
        .unwrap()
}

#[tokio::test]
async fn unix_socket_callers_are_identified_by_peer_credentials() {
    let uid = my_uid().await;
    let dir = tempfile::tempdir().unwrap();
    // A stale socket file from a dead daemon is replaced.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("imds.sock")).unwrap());
    let config = listener_config(dir.path(), uid, true);
    let fake = Fake::new(Duration::from_secs(3600));
    let broker = fake.broker(config.callers.clone());
    let running = crate::start(&config, Arc::clone(&broker)).await.unwrap();
    assert!(broker.is_ready());
    let connect = |f: Frontend| {
        let path = socket_of(&running, f);
        async move { tokio::net::UnixStream::connect(path).await.unwrap() }
    };
    let (status, body) = raw(
        connect(Frontend::GceMetadata).await,
        "GET /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.1\r\nMetadata-Flavor: Google\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, token) = raw(
        connect(Frontend::AwsImds).await,
        "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n",
    )
    .await;
    assert_eq!(status, 200, "{token}");
    let (status, body) = raw(
        connect(Frontend::AwsImds).await,
        &format!("GET {ROLE_PATH} HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let msg = v["Message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("uid {uid}")) && msg.contains("\"aws\""),
        "{msg}"
    );
    let (status, body) = raw(connect(Frontend::Metrics).await, "GET /readyz HTTP/1.1\r\n").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ready\n"), "{body}");

    let imds_sock = socket_of(&running, Frontend::AwsImds);
    // A second daemon on the same socket is refused while the first one lives.
    let err = crate::start(&config, fake.broker(CallerPolicy::open()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another server"), "{err}");
    running.shutdown().await;
    assert!(!imds_sock.exists(), "socket removed at shutdown");
}

#[tokio::test]
async fn tcp_callers_are_identified_by_the_socket_table() {
    let uid = my_uid().await;
    let dir = tempfile::tempdir().unwrap();
    let config = listener_config(dir.path(), uid, false);
    let fake = Fake::new(Duration::from_secs(3600));
    let running = crate::start(&config, fake.broker(config.callers.clone()))
        .await
        .unwrap();
    let gce = running.tcp_addr(Frontend::GceMetadata).unwrap();
    let imds = running.tcp_addr(Frontend::AwsImds).unwrap();
    let env: BTreeMap<_, _> = running
        .env_pairs()
        .iter()
        .map(|(k, v)| (*k, v.expose_secret().to_owned()))
        .collect();
    assert_eq!(env["GCE_METADATA_HOST"], gce.to_string());
    assert_eq!(env["GCE_METADATA_IP"], gce.to_string());
    assert_eq!(
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"],
        format!("http://{imds}/")
    );

    let tcp = |a| async move { tokio::net::TcpStream::connect(a).await.unwrap() };
    let (status, body) = raw(
        tcp(gce).await,
        "GET /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.1\r\nMetadata-Flavor: Google\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, token) = raw(
        tcp(imds).await,
        "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n",
    )
    .await;
    assert_eq!(status, 200, "{token}");
    let (status, body) = raw(
        tcp(imds).await,
        &format!("GET {ROLE_PATH} HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(&format!("uid {uid}")), "{body}");
    // Through hyper's real parser, an oversized head is still our 431.
    let big = "x".repeat(20 * 1024);
    let (status, _) = raw(
        tcp(gce).await,
        &format!("GET / HTTP/1.1\r\nX-Big: {big}\r\n"),
    )
    .await;
    assert_eq!(status, 431);
    assert_eq!(fake.calls(), vec![CredentialKey::route("gcp")]);
    running.shutdown().await;
}

#[tokio::test]
async fn imds_also_listens_on_ipv6_loopback() {
    let config = ServeConfig::parse(
        &format!("{ROUTES}[serve]\n[serve.aws_imds]\nroute = \"aws\"\nipv6 = true\n"),
        "v6.toml",
        None,
        &Accounts::default(),
    )
    .unwrap();
    let fake = Fake::new(Duration::from_secs(3600));
    let running = crate::start(&config, fake.broker(CallerPolicy::open()))
        .await
        .unwrap();
    let addrs: Vec<_> = running
        .listeners()
        .iter()
        .filter_map(|l| match &l.address {
            crate::Address::Tcp(a) => Some(*a),
            crate::Address::Unix(_) => None,
        })
        .collect();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6());
    assert_eq!(addrs[0].port(), addrs[1].port());
    let (status, token) = raw(
        tokio::net::TcpStream::connect(addrs[1]).await.unwrap(),
        "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n",
    )
    .await;
    assert_eq!(status, 200);
    // One token store behind both addresses.
    let (status, body) = raw(
        tokio::net::TcpStream::connect(addrs[0]).await.unwrap(),
        &format!("GET {ROLE_PATH} HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    running.shutdown().await;
}

#[path = "isolation_tests.rs"]
mod isolation;
