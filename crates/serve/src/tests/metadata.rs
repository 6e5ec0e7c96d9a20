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
