//! The metadata frontends' instance data: GCE `instance/` values and attributes.

use super::*;

#[tokio::test]
async fn gce_instance_defaults() {
    let (r, fake) = fake_routers(Duration::from_secs(3600));
    let text = |path: &'static str| {
        let gce = r.gce.clone();
        async move {
            let reply = send(&gce, md(path)).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
            reply.body
        }
    };
    // The detection probe of Go's and Node's clients, with and without the slash.
    for probe in [
        "/computeMetadata/v1/instance",
        "/computeMetadata/v1/instance/",
    ] {
        assert_eq!(
            text(probe).await,
            "attributes/\nhostname\nid\nname\nservice-accounts/\nzone\n"
        );
    }
    assert_eq!(text("/computeMetadata/v1/instance/name").await, "idbridge");
    assert_eq!(
        text("/computeMetadata/v1/instance/zone").await,
        "projects/1234/zones/us-central1-a"
    );
    assert_eq!(
        text("/computeMetadata/v1/instance/hostname").await,
        "idbridge.us-central1-a.c.proj.internal"
    );
    let id = text("/computeMetadata/v1/instance/id").await;
    assert!(id.parse::<i64>().is_ok_and(|n| n > 0), "{id}");
    assert_eq!(text("/computeMetadata/v1/instance/attributes/").await, "");
    assert_eq!(text("/computeMetadata/v1/project/attributes/").await, "");
    let v: Value =
        serde_json::from_str(&text("/computeMetadata/v1/instance/?recursive=true").await).unwrap();
    assert_eq!(v["id"].as_u64().map(|n| n.to_string()), Some(id));
    assert_eq!(v["attributes"], serde_json::json!({}));
    assert_eq!(v["serviceAccounts"]["default"]["email"], SA);
    let missing = send(&r.gce, md("/computeMetadata/v1/instance/attributes/nope")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn gce_instance_from_the_config() {
    let text = format!(
        "{ROUTES}{}",
        SERVE.replace(
            "numeric_project_id = \"1234\"\n",
            "numeric_project_id = \"1234\"\ninstance_name = \"web-1\"\nzone = \"europe-west4-b\"\n\
             instance_id = \"4520031799277581759\"\nhostname = \"web-1.example.internal\"\n\
             attributes = { env = \"dev\", \"ssh-keys\" = \"\" }\n"
        )
    );
    let config = ServeConfig::parse(&text, "t.toml", None, &Accounts::default()).unwrap();
    let fake = Fake::new(Duration::from_secs(3600));
    let r = routers(&config, fake.broker(CallerPolicy::open()));
    for (path, want) in [
        ("/computeMetadata/v1/instance/name", "web-1"),
        (
            "/computeMetadata/v1/instance/zone",
            "projects/1234/zones/europe-west4-b",
        ),
        ("/computeMetadata/v1/instance/id", "4520031799277581759"),
        (
            "/computeMetadata/v1/instance/hostname",
            "web-1.example.internal",
        ),
        (
            "/computeMetadata/v1/instance/attributes/",
            "env\nssh-keys\n",
        ),
        ("/computeMetadata/v1/instance/attributes/env", "dev"),
        ("/computeMetadata/v1/instance/attributes/ssh-keys", ""),
        (
            "/computeMetadata/v1/instance/attributes/?recursive=true",
            r#"{"env":"dev","ssh-keys":""}"#,
        ),
    ] {
        let reply = send(&r.gce, md(path)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, want),
            "{path}"
        );
    }
}

#[test]
fn gce_instance_config_errors_name_the_field() {
    for (line, field) in [
        ("instance_name = \"Web_1\"", "instance_name"),
        ("instance_name = \"web-\"", "instance_name"),
        ("zone = \"nowhere\"", "zone"),
        ("instance_id = \"i-123\"", "instance_id"),
        ("instance_id = \"+5\"", "instance_id"),
        ("hostname = \"a b\"", "hostname"),
        ("attributes = { \"a b\" = \"x\" }", "attributes"),
    ] {
        let text = format!(
            "{ROUTES}{}",
            SERVE.replace(
                "numeric_project_id = \"1234\"\n",
                &format!("numeric_project_id = \"1234\"\n{line}\n")
            )
        );
        let err = ServeConfig::parse(&text, "t.toml", None, &Accounts::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("field `{field}`")), "{line}: {err}");
    }
}

#[tokio::test(start_paused = true)]
async fn imds_identity_document_and_listings() {
    let (r, _fake) = fake_routers(Duration::from_secs(3600));
    let t = imds_token(&r.imds, "60").await;
    let text = |path: &'static str| {
        let imds = r.imds.clone();
        let t = t.clone();
        async move {
            let reply = imds_get(&imds, path, Some(&t)).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
            assert_eq!(reply.header("content-type"), "text/plain");
            reply.body
        }
    };
    assert_eq!(text("/latest/").await, "dynamic\nmeta-data");
    assert_eq!(text("/latest/dynamic/").await, "instance-identity/");
    assert_eq!(text("/latest/dynamic/instance-identity/").await, "document");
    let doc: Value =
        serde_json::from_str(&text("/latest/dynamic/instance-identity/document").await).unwrap();
    assert_eq!(doc["region"], "us-east-1");
    assert_eq!(doc["availabilityZone"], "us-east-1a");
    assert_eq!(doc["accountId"], "111122223333");
    assert_eq!(doc["instanceId"], aws_imds::DEFAULT_INSTANCE_ID);
    assert_eq!(doc["instanceType"], "t3.micro");
    assert_eq!(doc["privateIp"], "127.0.0.1");
    assert_eq!(doc["version"], "2017-09-30");
    assert!(doc["pendingTime"].as_str().unwrap().ends_with('Z'), "{doc}");
    let info: Value = serde_json::from_str(&text("/latest/meta-data/iam/info").await).unwrap();
    assert_eq!(info["Code"], "Success");
    assert_eq!(
        info["InstanceProfileArn"],
        "arn:aws:iam::111122223333:instance-profile/test-role"
    );
    assert!(
        info["InstanceProfileId"]
            .as_str()
            .is_some_and(|id| id.starts_with("AIPA") && id.len() == 21),
        "{info}"
    );
    assert_eq!(
        text("/latest/meta-data/hostname").await,
        "ip-127-0-0-1.ec2.internal"
    );
    let listing = text("/latest/meta-data/").await;
    for entry in ["iam/", "instance-id", "placement/", "ami-id", "local-ipv4"] {
        assert!(listing.lines().any(|l| l == entry), "{entry}: {listing}");
    }
    // Without a token the document is 401 like everything else.
    let reply = imds_get(&r.imds, "/latest/dynamic/instance-identity/document", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn imds_document_fields_from_the_config() {
    let c = config("").aws_imds().cloned().unwrap();
    assert_eq!(c.account_id, "111122223333");
    let text = format!(
        "{ROUTES}{}",
        SERVE.replace(
            "route = \"aws\"\n[serve.aws_ecs]",
            "route = \"aws\"\naccount_id = \"999988887777\"\ninstance_type = \"m5.large\"\n\
             image_id = \"ami-0abc\"\nprivate_ip = \"10.1.2.3\"\n[serve.aws_ecs]"
        )
    );
    let c = ServeConfig::parse(&text, "t.toml", None, &Accounts::default())
        .unwrap()
        .aws_imds()
        .cloned()
        .unwrap();
    assert_eq!(
        (
            c.account_id.as_str(),
            c.instance_type.as_str(),
            c.image_id.as_str(),
            c.private_ip.as_str(),
            c.hostname.as_str()
        ),
        (
            "999988887777",
            "m5.large",
            "ami-0abc",
            "10.1.2.3",
            "ip-10-1-2-3.ec2.internal"
        )
    );
    for (line, field) in [
        ("account_id = \"12\"", "account_id"),
        ("instance_type = \"large\"", "instance_type"),
        ("image_id = \"img-1\"", "image_id"),
        ("private_ip = \"10.1\"", "private_ip"),
        ("hostname = \"a b\"", "hostname"),
    ] {
        let text = format!(
            "{ROUTES}{}",
            SERVE.replace(
                "route = \"aws\"\n[serve.aws_ecs]",
                &format!("route = \"aws\"\n{line}\n[serve.aws_ecs]")
            )
        );
        let err = ServeConfig::parse(&text, "t.toml", None, &Accounts::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("field `{field}`")), "{line}: {err}");
    }
}

const PROJECT: &str = "/computeMetadata/v1/project/project-id";
const TOKEN: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

#[tokio::test(start_paused = true)]
async fn gce_hanging_get_on_a_value_times_out_with_the_same_etag() {
    let (r, _fake) = fake_routers(Duration::from_secs(3600));
    let first = send(&r.gce, md(PROJECT)).await;
    let etag = first.header("etag").to_owned();
    assert!(!etag.is_empty());
    // A different (or no) last_etag answers at once.
    for q in ["?wait_for_change=true", "?wait_for_change=true&last_etag=0"] {
        let start = Instant::now();
        let reply = send(&r.gce, md(&format!("{PROJECT}{q}"))).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "proj")
        );
        assert_eq!(reply.header("etag"), etag);
        assert_eq!(start.elapsed(), Duration::ZERO, "{q}");
    }
    let start = Instant::now();
    let reply = send(
        &r.gce,
        md(&format!(
            "{PROJECT}?wait_for_change=true&last_etag={etag}&timeout_sec=7"
        )),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "proj")
    );
    assert_eq!(reply.header("etag"), etag);
    assert_eq!(start.elapsed(), Duration::from_secs(7));
    // Without timeout_sec the server's bound applies.
    let start = Instant::now();
    let dir = "/computeMetadata/v1/instance/?recursive=true";
    let etag = send(&r.gce, md(dir)).await.header("etag").to_owned();
    let reply = send(
        &r.gce,
        md(&format!("{dir}&wait_for_change=true&last_etag={etag}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        start.elapsed(),
        idbridge_wire::gce_metadata::watch::MAX_TIMEOUT
    );
    let reply = send(
        &r.gce,
        md(&format!("{PROJECT}?wait_for_change=true&timeout_sec=soon")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(start_paused = true)]
async fn gce_hanging_get_on_the_token_wakes_when_it_is_refreshed() {
    let (r, fake) = fake_routers(Duration::from_secs(60));
    let first = send(&r.gce, md(TOKEN)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let etag = first.header("etag").to_owned();
    // The ETag follows the credential, not the countdown of expires_in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = send(&r.gce, md(TOKEN)).await;
    assert_ne!(again.json()["expires_in"], first.json()["expires_in"]);
    assert_eq!(again.header("etag"), etag);

    let start = Instant::now();
    let reply = send(
        &r.gce,
        md(&format!("{TOKEN}?wait_for_change=true&last_etag={etag}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_ne!(reply.header("etag"), etag);
    assert_ne!(reply.json()["access_token"], first.json()["access_token"]);
    // Woken by the refresh (a third of the lifetime before expiry, jittered), long before the
    // hanging GET's own timeout.
    let waited = start.elapsed();
    assert!(
        waited > Duration::from_secs(20) && waited < Duration::from_secs(60),
        "{waited:?}"
    );
    assert_eq!(fake.calls().len(), 2);
}
