//! The Azure frontends: config validation, both protocols' request rules and documents, the
//! resource and identity choice, caller rules, and the listeners' client settings.

use super::*;
use idbridge_core::AzureAccessToken;

const AZ_ROUTES: &str = r#"
[[route]]
name = "az"
source = { kind = "gce-metadata", audience = "api://AzureADTokenExchange" }
exchange = [{ kind = "entra", tenant = "t", client_id = "c1", scope = "api://billing/.default" }]

[[route]]
name = "az2"
source = { kind = "gce-metadata", audience = "api://AzureADTokenExchange" }
exchange = [{ kind = "entra", tenant = "t", client_id = "c2", scope = "api://billing/.default" }]

[[route]]
name = "aws"
source = { kind = "gce-metadata", audience = "https://a.example" }
exchange = [{ kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/test-role" }]
"#;

const AZ_SERVE: &str = r#"
[serve.azure_imds]
[[serve.azure_imds.resource]]
resource = "api://billing"
route = "az"
object_id = "oid-1"
[[serve.azure_imds.resource]]
resource = "api://billing/.default"
route = "az2"
client_id = "C2"
resource_id = "/subscriptions/s/rg/x"

[serve.azure_app_service]
identity_header = "id-header-0123456789"
[[serve.azure_app_service.resource]]
resource = "api://billing"
route = "az"
"#;

const ID_HEADER: &str = "id-header-0123456789";

fn az_parse(extra: &str) -> Result<ServeConfig, idbridge_broker::ConfigError> {
    ServeConfig::parse(
        &format!("{AZ_ROUTES}[serve]\n{AZ_SERVE}{extra}"),
        "az.toml",
        None,
        &Accounts::default(),
    )
}

fn az_err(serve: &str) -> String {
    ServeConfig::parse(
        &format!("{AZ_ROUTES}[serve]\n{serve}"),
        "az.toml",
        None,
        &Accounts::default(),
    )
    .unwrap_err()
    .to_string()
}

fn az_loader(clock: Arc<TokioClock>) -> impl Loader<CredentialKey, Credential> {
    move |key: CredentialKey| {
        let expires_at = clock.now() + Duration::from_secs(3600);
        async move {
            let client = match key.route.as_str() {
                "az" => "c1",
                "az2" => "c2",
                _ => {
                    return Err(BrokerError::new(
                        ErrorKind::Rejected,
                        "fake",
                        "no such route",
                    ));
                }
            };
            Ok(Credential::AzureAccessToken(AzureAccessToken {
                token: SecretString::new(format!("eyJ{SECRET}-{client}")),
                expires_at,
                tenant: "t".into(),
                client_id: client.into(),
                scope: "api://billing/.default".into(),
            }))
        }
    }
}

fn az_broker(policy: CallerPolicy) -> (Arc<Broker>, Arc<TokioClock>) {
    let clock = TokioClock::at(1_750_000_000);
    let broker = Arc::new(Broker::with_loader(
        az_loader(Arc::clone(&clock)),
        Arc::clone(&clock) as SharedClock,
        policy,
        NonZeroUsize::new(64).unwrap(),
    ));
    (broker, clock)
}

const TOKEN: &str = "/metadata/identity/oauth2/token";

#[test]
fn azure_config_is_validated_with_lines() {
    let c = az_parse("").unwrap();
    assert_eq!(c.frontends.len(), 2);
    let sections: Vec<_> = c.listeners().into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        sections,
        ["[serve.azure_imds]", "[serve.azure_app_service]"]
    );
    assert_eq!(c.frontends[0].routes(), ["az", "az2"]);
    assert_eq!(c.frontends[1].routes(), ["az"]);
    // The inline identity header is a secret: not in Debug.
    assert!(!format!("{c:?}").contains(ID_HEADER));

    let e = az_err("[serve.azure_imds]\n");
    assert!(
        e.contains("add at least one [[serve.azure_imds.resource]]"),
        "{e}"
    );
    let e = az_err(
        "[serve.azure_imds]\n[[serve.azure_imds.resource]]\nresource = \"api://x\"\nroute = \"aws\"\n",
    );
    assert!(e.starts_with("config file az.toml, line "), "{e}");
    assert!(
        e.contains("field `route`") && e.contains("yields AWS credentials"),
        "{e}"
    );
    let line = |needle: &str, serve: &str| {
        let text = format!("{AZ_ROUTES}[serve]\n{serve}");
        let at = text.find(needle).unwrap();
        format!("az.toml, line {}:", text[..at].matches('\n').count() + 1)
    };
    let wrong = "[serve.azure_imds]\n[[serve.azure_imds.resource]]\nresource = \"api://x\"\nroute = \"aws\"\n";
    assert!(e.contains(&line("route = \"aws\"\n", wrong)), "{e}");
    let e = az_err(
        "[serve.azure_imds]\n[[serve.azure_imds.resource]]\nresource = \"api://x\"\nroute = \"nope\"\n",
    );
    assert!(e.contains("no route named \"nope\""), "{e}");
    let e = az_err(
        "[serve.azure_imds]\n[[serve.azure_imds.resource]]\nresource = \"not a uri\"\nroute = \"az\"\n",
    );
    assert!(e.contains("field `resource`"), "{e}");
    let bogus = "[serve.azure_imds]\nbogus = 1\n[[serve.azure_imds.resource]]\nresource = \"api://x\"\nroute = \"az\"\n";
    let e = az_err(bogus);
    assert!(e.contains("unknown field `bogus`"), "{e}");
    assert!(e.contains(&line("bogus", bogus)), "{e}");
    let e = az_err(
        "[serve.azure_imds]\n[[serve.azure_imds.resource]]\nresource = \"api://x\"\nroute = \"az\"\n\
         [[serve.azure_imds.resource]]\nresource = \"api://x/\"\nroute = \"az2\"\n",
    );
    assert!(e.contains("listed twice"), "{e}");
    let e = az_err(
        "[serve.azure_app_service]\nidentity_header = \"a b\"\n[[serve.azure_app_service.resource]]\nresource = \"api://x\"\nroute = \"az\"\n",
    );
    assert!(
        e.contains("field `identity_header`") && !e.contains("a b"),
        "{e}"
    );
    let e = az_err(
        "[serve.azure_app_service]\npath = \"msi\"\n[[serve.azure_app_service.resource]]\nresource = \"api://x\"\nroute = \"az\"\n",
    );
    assert!(e.contains("field `path`"), "{e}");
    let e = az_err(
        "[serve.azure_imds]\nport = 4000\n[[serve.azure_imds.resource]]\nresource = \"api://x\"\nroute = \"az\"\n\
         [serve.azure_app_service]\nport = 4000\n[[serve.azure_app_service.resource]]\nresource = \"api://x\"\nroute = \"az\"\n",
    );
    assert!(e.contains("listen on the same port"), "{e}");
    // An unknown [serve] key still fails, and the no-frontend error names the Azure sections.
    assert!(az_err("bogus = 1\n").contains("bogus"));
    let e = az_err("[serve.metrics]\n");
    assert!(
        e.contains("[serve.azure_imds]") && e.contains("[serve.azure_app_service]"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn azure_imds_rules_and_document() {
    let c = az_parse("").unwrap();
    let (broker, clock) = az_broker(CallerPolicy::open());
    let imds = c.frontends[0].router(Arc::clone(&broker));
    let md = [("Metadata", "true")];
    let q = |rest: &str| format!("{TOKEN}?api-version=2018-02-01&resource={rest}");

    let ok = send(&imds, get(&q("api%3A%2F%2Fbilling"), &md)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.header("content-type").starts_with("application/json"));
    let v: Value = serde_json::from_str(&ok.body).unwrap();
    let now = clock.now().unix_timestamp();
    assert_eq!(v["access_token"], format!("eyJ{SECRET}-c1"));
    assert_eq!(v["client_id"], "c1");
    assert_eq!(v["expires_in"], "3600");
    assert_eq!(v["expires_on"], (now + 3600).to_string());
    assert_eq!(v["not_before"], now.to_string());
    assert_eq!(v["resource"], "api://billing");
    assert_eq!(v["token_type"], "Bearer");

    let client = |sel: &str| q(&format!("api%3A%2F%2Fbilling&{sel}"));
    for (sel, want) in [
        ("client_id=c2", "c2"),
        ("client_id=c1", "c1"),
        ("object_id=oid-1", "c1"),
        ("msi_res_id=%2Fsubscriptions%2Fs%2Frg%2Fx", "c2"),
    ] {
        let r = send(&imds, get(&client(sel), &md)).await;
        assert_eq!(r.status, StatusCode::OK, "{sel}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["client_id"], want, "{sel}");
    }
    let cases = [
        (get(&client("client_id=zz"), &md), 400, "Identity not found"),
        (get(&client("object_id=zz"), &md), 400, "Identity not found"),
        (get(&q("api%3A%2F%2Fother"), &md), 400, "invalid_resource"),
        (
            get(&q("api%3A%2F%2Fbilling"), &[]),
            400,
            "Required metadata header not specified",
        ),
        (
            get(
                &q("api%3A%2F%2Fbilling"),
                &[("Metadata", "true"), ("X-Forwarded-For", "10.0.0.1")],
            ),
            400,
            "X-Forwarded-For",
        ),
        (get(&format!("{TOKEN}?resource=x"), &md), 400, "api-version"),
        (
            get("/metadata/instance?api-version=2021-02-01", &md),
            404,
            "not_found",
        ),
    ];
    for (req, status, needle) in cases {
        let r = send(&imds, req).await;
        assert_eq!(r.status.as_u16(), status, "{needle}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert!(v["error"].is_string(), "{}", r.body);
        assert!(r.body.contains(needle), "{needle}: {}", r.body);
    }
    let post = Request::post(q("api%3A%2F%2Fbilling"))
        .header("Metadata", "true")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&imds, post).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test(start_paused = true)]
async fn azure_app_service_rules_and_document() {
    let c = az_parse("").unwrap();
    let (broker, clock) = az_broker(CallerPolicy::open());
    let app = c.frontends[1].router(Arc::clone(&broker));
    let h = [("X-IDENTITY-HEADER", ID_HEADER)];
    let q = |rest: &str| format!("/msi/token?api-version=2019-08-01&resource={rest}");

    let ok = send(&app, get(&q("api%3A%2F%2Fbilling%2F"), &h)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let v: Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(v["access_token"], format!("eyJ{SECRET}-c1"));
    assert_eq!(
        v["expires_on"],
        (clock.now().unix_timestamp() + 3600).to_string()
    );
    assert!(v.get("expires_in").is_none(), "{v}");
    assert_eq!(
        (v["client_id"].as_str(), v["resource"].as_str()),
        (Some("c1"), Some("api://billing/"))
    );

    let cases = [
        (get(&q("api%3A%2F%2Fbilling"), &[]), 400),
        (
            get(&q("api%3A%2F%2Fbilling"), &[("X-IDENTITY-HEADER", "wrong")]),
            401,
        ),
        // The secret before the path: an unauthenticated client learns nothing of it.
        (
            get(
                "/other?api-version=2019-08-01&resource=x",
                &[("X-IDENTITY-HEADER", "wrong")],
            ),
            401,
        ),
        (get("/other?api-version=2019-08-01&resource=x", &h), 404),
        (
            get(
                "/msi/token?api-version=2017-09-01&resource=api%3A%2F%2Fbilling",
                &h,
            ),
            400,
        ),
        (get(&q("api%3A%2F%2Fother"), &h), 400),
        (
            get(&format!("{}&client_id=zz", q("api%3A%2F%2Fbilling")), &h),
            400,
        ),
    ];
    for (req, status) in cases {
        let r = send(&app, req).await;
        assert_eq!(r.status.as_u16(), status, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["statusCode"], status, "{}", r.body);
        assert!(
            v["message"].is_string() && v["correlationId"].is_string(),
            "{}",
            r.body
        );
        assert!(!r.body.contains(ID_HEADER));
    }
}

#[tokio::test(start_paused = true)]
async fn azure_caller_rules_apply() {
    let c = az_parse("[[serve.caller]]\nuid = 7\nroutes = [\"az\"]\n").unwrap();
    let (broker, _) = az_broker(c.callers.clone());
    let as_uid = |r: Router, uid: u32| {
        r.layer(MockConnectInfo(Peer::Unix {
            uid,
            gid: uid,
            pid: None,
        }))
    };
    let md = [("Metadata", "true")];
    let billing = format!("{TOKEN}?api-version=2018-02-01&resource=api://billing");
    let imds7 = as_uid(c.frontends[0].router(Arc::clone(&broker)), 7);
    let imds8 = as_uid(c.frontends[0].router(Arc::clone(&broker)), 8);
    assert_eq!(
        send(&imds7, get(&billing, &md)).await.status,
        StatusCode::OK
    );
    let denied = send(&imds7, get(&format!("{billing}&client_id=c2"), &md)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert!(
        denied.body.contains("access_denied") && denied.body.contains("\\\"az2\\\""),
        "{}",
        denied.body
    );
    let denied = send(&imds8, get(&billing, &md)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(denied.body.contains("uid 8"), "{}", denied.body);
    let app8 = as_uid(c.frontends[1].router(Arc::clone(&broker)), 8);
    let r = send(
        &app8,
        get(
            "/msi/token?api-version=2019-08-01&resource=api://billing",
            &[("X-IDENTITY-HEADER", ID_HEADER)],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("\"statusCode\":403"), "{}", r.body);
}

#[test]
fn azure_client_settings() {
    let c = az_parse("").unwrap();
    let imds = c.frontends[0].env("http://127.0.0.1:4000");
    assert_eq!(imds.len(), 1);
    assert_eq!(imds[0].0, "AZURE_POD_IDENTITY_AUTHORITY_HOST");
    assert_eq!(imds[0].1.expose_secret(), "http://127.0.0.1:4000");
    let app = c.frontends[1].env("http://127.0.0.1:4001");
    let app: Vec<_> = app.iter().map(|(k, v)| (*k, v.expose_secret())).collect();
    assert_eq!(
        app,
        [
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:4001/msi/token"),
            ("IDENTITY_HEADER", ID_HEADER)
        ]
    );
    assert!(c.frontends[1].needs_env_file().is_none());
    let generated = ServeConfig::parse(
        &format!(
            "{AZ_ROUTES}[serve.azure_app_service]\n[[serve.azure_app_service.resource]]\nresource = \"api://x\"\nroute = \"az\"\n"
        ),
        "az.toml",
        None,
        &Accounts::default(),
    )
    .unwrap();
    assert!(generated.frontends[0].needs_env_file().is_some());
    let secret = generated.frontends[0].env("http://h")[1]
        .1
        .expose_secret()
        .to_owned();
    assert!(secret.len() >= 40, "{secret}");
}

#[test]
fn the_azure_example_file_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let text = std::fs::read_to_string(dir.join("serve-azure.toml")).unwrap();
    let c =
        ServeConfig::parse(&text, "serve-azure.toml", Some(&dir), &Accounts::default()).unwrap();
    let imds = c.frontend::<crate::azure_imds::AzureImdsConfig>().unwrap();
    assert_eq!(imds.resources.len(), 2);
    assert_eq!(imds.resources[1].resource, "api://idbridge-reports");
    let app = c
        .frontend::<crate::azure_app_service::AzureAppServiceConfig>()
        .unwrap();
    assert!(matches!(
        app.identity_header,
        crate::azure_app_service::IdentityHeader::Generated(_)
    ));
    assert!(c.metrics().is_some() && c.gce_metadata().is_none() && c.aws_ecs().is_none());
}

#[tokio::test(start_paused = true)]
async fn no_azure_secret_reaches_the_logs() {
    let (captured, _guard) = capture_logs();
    let c = az_parse("").unwrap();
    let (broker, _) = az_broker(CallerPolicy::open());
    let imds = c.frontends[0].router(Arc::clone(&broker));
    let app = c.frontends[1].router(Arc::clone(&broker));
    let q = "?api-version=2018-02-01&resource=api://billing";
    assert_eq!(
        send(&imds, get(&format!("{TOKEN}{q}"), &[("Metadata", "true")]))
            .await
            .status,
        StatusCode::OK
    );
    let q = "/msi/token?api-version=2019-08-01&resource=api://billing";
    assert_eq!(
        send(&app, get(q, &[("X-IDENTITY-HEADER", ID_HEADER)]))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get(q, &[("X-IDENTITY-HEADER", "wrong-header-value")]))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("refused"), "{logs}");
    for secret in [SECRET, ID_HEADER, "wrong-header-value"] {
        assert!(!logs.contains(secret), "{secret} in {logs}");
    }
}

/// `resource = "*"`: any other resource is asked of the route's last hop as
/// `<resource>/.default`, each resource's token cached apart (and bounded); named entries
/// still come first.
#[tokio::test(start_paused = true)]
async fn any_resource_asks_the_route_for_that_scope() {
    let serve = "[serve.azure_imds]\n[[serve.azure_imds.resource]]\nresource = \"api://billing\"\nroute = \"az2\"\n[[serve.azure_imds.resource]]\nresource = \"*\"\nroute = \"az\"\n";
    let c = ServeConfig::parse(
        &format!("{AZ_ROUTES}[serve]\n{serve}"),
        "az.toml",
        None,
        &Accounts::default(),
    )
    .unwrap();
    // The route's own config takes the override: its entra hop asks for the other scope.
    let az = c.routes.routes.iter().find(|r| r.name == "az").unwrap();
    let other = idbridge_broker::Route::new(az.clone())
        .with_overrides(&idbridge_broker::Overrides {
            audience: None,
            scopes: Some(vec!["api://reports/.default".into()]),
        })
        .unwrap();
    assert!(
        other.config.exchange[0]
            .describe()
            .ends_with("for api://reports/.default")
    );

    let clock = TokioClock::at(1_750_000_000);
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let loader = {
        let (clock, calls) = (Arc::clone(&clock), Arc::clone(&calls));
        move |key: CredentialKey| {
            let expires_at = clock.now() + Duration::from_secs(3600);
            let scope = key
                .overrides
                .scopes
                .as_ref()
                .map_or("api://billing/.default".to_owned(), |s| s.join(" "));
            calls.lock().unwrap().push(format!("{} {scope}", key.route));
            async move {
                Ok(Credential::AzureAccessToken(AzureAccessToken {
                    token: SecretString::new(format!("eyJ{SECRET}-{scope}")),
                    expires_at,
                    tenant: "t".into(),
                    client_id: "c1".into(),
                    scope,
                }))
            }
        }
    };
    let broker = Arc::new(
        Broker::with_loader(
            loader,
            Arc::clone(&clock) as SharedClock,
            CallerPolicy::open(),
            NonZeroUsize::new(64).unwrap(),
        )
        .with_client_keys_per_route(NonZeroUsize::new(2).unwrap()),
    );
    let imds = c.frontends[0].router(Arc::clone(&broker));
    let md = [("Metadata", "true")];
    let ask = |resource: &str| {
        format!(
            "{TOKEN}?api-version=2018-02-01&resource={}",
            resource.replace(':', "%3A").replace('/', "%2F")
        )
    };
    for resource in [
        "api://reports",
        "api://reports/.default",
        "https://vault.azure.net",
        "api://billing",
    ] {
        let r = send(&imds, get(&ask(resource), &md)).await;
        assert_eq!(r.status, StatusCode::OK, "{resource}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        let scope = match resource {
            "api://billing" => "api://billing/.default".to_owned(),
            r => format!("{}/.default", r.strip_suffix("/.default").unwrap_or(r)),
        };
        assert_eq!(
            v["access_token"],
            format!("eyJ{SECRET}-{scope}"),
            "{resource}"
        );
    }
    assert_eq!(
        *calls.lock().unwrap(),
        [
            "az api://reports/.default",
            "az https://vault.azure.net/.default",
            "az2 api://billing/.default",
        ],
        "one load per scope; the named entry keeps its own route"
    );
    // Not a resource URI: refused as Azure does, before any load.
    let r = send(&imds, get(&ask("nonsense"), &md)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("invalid_resource"), "{}", r.body);
    // Bounded: a third scope evicts one of the two cached ones.
    send(&imds, get(&ask("api://third"), &md)).await;
    let snapshots = broker.client_key_snapshots();
    let (route, snap) = &snapshots[0];
    assert_eq!(route, "az");
    assert!(snap.entries.len() <= 2, "{:?}", snap.entries.len());

    let e = az_err(
        "[serve.azure_imds]\n[[serve.azure_imds.resource]]\nresource = \"*\"\nroute = \"aws\"\n",
    );
    assert!(e.contains("field `route`"), "{e}");
}
