#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration test helpers fail loudly"
)]
//! `setup`, `explain` and `doctor` against the in-process emulator.
//!
//! The round trips: `setup --format world` writes the cloud-side objects of a route; a world
//! made of the built-in one with those objects replaced by the generated ones lets the route
//! succeed; the same fragment with one condition value changed makes it fail, and `explain`
//! names the failing condition. `doctor` is run as the binary against the emulator, as a user
//! would after sourcing the emulator's env file.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use idbridge_broker::config::{ExchangeConfig, SourceConfig};
use idbridge_broker::external_account::{ExternalAccount, to_route};
use idbridge_broker::{BrokerError, Config, Context, Route, RouteOutput};
use idbridge_core::Credential;
use idbridge_core::env::MapEnv;
use idbridge_emulator::world::BUILTIN_TOML;
use idbridge_emulator::{Running, World};
use serde_json::Value;

async fn emulator_with(world_toml: &str) -> Running {
    emulator_of(World::from_str_at(world_toml, "<test world>", None).unwrap()).await
}

fn ctx(running: &Running) -> Context {
    let env: BTreeMap<String, String> = running.env_pairs().into_iter().collect();
    Context::new(
        Arc::new(MapEnv(env)),
        idbridge_core::clock::system(),
        &Default::default(),
    )
    .unwrap()
}

async fn run_route(
    running: &Running,
    config: &Path,
    route: &str,
) -> Result<RouteOutput, BrokerError> {
    let config = Config::load(config).unwrap();
    let route = Route::new(config.route(route).unwrap().clone());
    route.run(&ctx(running)).await.map_err(|(e, _)| e)
}

/// Runs the idbridge binary with the emulator's environment: (exit code, stdout, stderr).
async fn idbridge(running: &Running, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(args)
        .envs(running.env_pairs())
        .env("NO_COLOR", "1")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

async fn setup_world(running: &Running, config: &Path, route: &str) -> String {
    let (code, out, err) = idbridge(
        running,
        &[
            "setup",
            "--config",
            config.to_str().unwrap(),
            "--route",
            route,
            "--format",
            "world",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(no_warning_but_azp_forms(&err), "{err}");
    out
}

/// No warning on stderr, except the note about the other `azp` form of Google ID tokens (which
/// setup gives for every route whose ID token comes from generateIdToken).
fn no_warning_but_azp_forms(err: &str) -> bool {
    err.lines()
        .filter(|l| l.contains("warning"))
        .all(|l| l.contains("[google-azp-forms]"))
}

/// The identity of an object of a world array, for replacing it.
fn identity(array: &str, item: &toml::Value) -> Option<String> {
    let s = |k: &str| item.get(k).and_then(toml::Value::as_str).map(str::to_owned);
    match array {
        "project" | "aws_account" => s("id"),
        "service_account" => s("email"),
        "aws_role" => s("arn"),
        "oidc_issuer" => s("issuer"),
        "workload_identity_pool" => Some(format!("{}/{}", s("project")?, s("id")?)),
        _ => None,
    }
}

/// The built-in world with every object the fragment declares replaced by the fragment's.
fn merged_world(fragment: &str) -> String {
    let mut base: toml::Table = toml::from_str(BUILTIN_TOML).unwrap();
    let frag: toml::Table = toml::from_str(fragment).unwrap();
    for (key, value) in frag {
        // `[roles_anywhere]`: its arrays of objects with an `arn`, merged one by one.
        if let toml::Value::Table(sections) = value {
            let entry = base
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let table = entry.as_table_mut().unwrap();
            for (k, items) in sections {
                let items = items.as_array().cloned().unwrap_or_default();
                let arn = |i: &toml::Value| {
                    i.get("arn")
                        .and_then(toml::Value::as_str)
                        .map(str::to_owned)
                };
                let ids: Vec<Option<String>> = items.iter().map(arn).collect();
                let arr = table
                    .entry(k)
                    .or_insert_with(|| toml::Value::Array(Vec::new()))
                    .as_array_mut()
                    .unwrap();
                arr.retain(|old| arn(old).is_none() || !ids.contains(&arn(old)));
                arr.extend(items);
            }
            continue;
        }
        let items = value.as_array().cloned().unwrap_or_default();
        let ids: Vec<Option<String>> = items.iter().map(|i| identity(&key, i)).collect();
        let entry = base
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        let arr = entry.as_array_mut().unwrap();
        arr.retain(|old| {
            let id = identity(&key, old);
            id.is_none() || !ids.contains(&id)
        });
        arr.extend(items);
    }
    toml::to_string(&base).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The condition traces of an AWS `explain --format json` report.
fn aws_conditions(report: &Value) -> Vec<Value> {
    report["statements"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["conditions"].as_array().unwrap().clone())
        .collect()
}

fn gcp_step<'a>(report: &'a Value, step: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == step)
        .unwrap_or_else(|| panic!("no {step} step in {report}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn seed002_setup_round_trip_and_explain_names_the_changed_condition() {
    let config = examples().join("seed002-impersonate-to-aws.toml");
    let builtin = emulator_with(BUILTIN_TOML).await;
    let fragment = setup_world(&builtin, &config, "myapp-to-aws").await;
    assert!(
        fragment.contains("\"accounts.google.com:oaud\": \"aws-trust-1\""),
        "{fragment}"
    );
    assert!(
        fragment.contains("\"accounts.google.com:aud\": \"100367186111111111111\""),
        "{fragment}"
    );
    builtin.shutdown().await;

    // The generated role (replacing the built-in one) admits the route.
    let good = emulator_with(&merged_world(&fragment)).await;
    let out = run_route(&good, &config, "myapp-to-aws").await.unwrap();
    let Credential::Aws(c) = &out.credential else {
        panic!("{:?}", out.credential.kind())
    };
    assert_eq!(
        c.arn.as_deref(),
        Some("arn:aws:sts::111122223333:assumed-role/google-cloud-myapp/myapp")
    );
    good.shutdown().await;

    // One value changed: refused, and explain names the condition.
    let broken = fragment.replace("\"aws-trust-1\"", "\"aws-trust-2\"");
    assert_ne!(broken, fragment);
    let bad = emulator_with(&merged_world(&broken)).await;
    let err = run_route(&bad, &config, "myapp-to-aws").await.unwrap_err();
    assert_eq!(err.code.as_deref(), Some("AccessDenied"), "{err}");

    let mut source_only = Config::load(&config)
        .unwrap()
        .route("myapp-to-aws")
        .unwrap()
        .clone();
    source_only.exchange.clear();
    let token = match Route::new(source_only)
        .run(&ctx(&bad))
        .await
        .unwrap()
        .credential
    {
        Credential::IdToken(t) => t.token.expose_secret().to_owned(),
        other => panic!("{}", other.kind()),
    };
    let dir = tempfile::tempdir().unwrap();
    let world: toml::Table = toml::from_str(&broken).unwrap();
    let policy = world["aws_role"][0]["trust_policy"].as_str().unwrap();
    let policy_file = write(dir.path(), "policy.json", policy);
    let token_file = write(dir.path(), "token.jwt", &token);
    let (code, out, err) = idbridge(
        &bad,
        &[
            "explain",
            "--token",
            &format!("@{}", token_file.display()),
            "--aws-trust-policy",
            policy_file.to_str().unwrap(),
            "--account",
            "111122223333",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    let report = json(&out);
    assert_eq!(report["decision"], "deny");
    let failing: Vec<Value> = aws_conditions(&report)
        .into_iter()
        .filter(|c| c["result"] == false)
        .collect();
    assert_eq!(failing.len(), 1, "{report}");
    assert_eq!(failing[0]["key"], "accounts.google.com:oaud");
    assert_eq!(failing[0]["claim"], "aud");
    assert_eq!(failing[0]["token_value"], "aws-trust-1");
    assert_eq!(
        failing[0]["policy_values"],
        serde_json::json!(["aws-trust-2"])
    );
    // The table names it too, without printing the token.
    let (_, table, _) = idbridge(
        &bad,
        &[
            "explain",
            "--token",
            &format!("@{}", token_file.display()),
            "--aws-trust-policy",
            policy_file.to_str().unwrap(),
        ],
    )
    .await;
    let line = table
        .lines()
        .find(|l| l.contains("accounts.google.com:oaud") && l.contains("FAIL"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("aws-trust-2"), "{line}");
    assert!(!table.contains(&token), "the token was printed");
    bad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seed001_setup_round_trip_and_explain_names_the_changed_condition() {
    let config = examples().join("seed001-aws-to-gcp.toml");
    let builtin = emulator_with(BUILTIN_TOML).await;
    let fragment = setup_world(&builtin, &config, "ec2-to-gcp").await;
    let condition = "attribute_condition = \"attribute.aws_role == 'arn:aws:sts::111122223333:assumed-role/gcp-caller'\"";
    assert!(fragment.contains(condition), "{fragment}");
    assert!(
        fragment.contains("aws = { account_id = \"111122223333\" }"),
        "{fragment}"
    );
    builtin.shutdown().await;

    // Without the built-in pool, provider and binding: the generated ones admit the route.
    let good = emulator_with(&merged_world(&fragment)).await;
    let out = run_route(&good, &config, "ec2-to-gcp").await.unwrap();
    let Credential::GoogleAccessToken(t) = &out.credential else {
        panic!("{}", out.credential.kind())
    };
    assert_eq!(
        t.principal.as_deref(),
        Some("aws-service-account-demo@example-project.iam.gserviceaccount.com")
    );
    good.shutdown().await;

    let broken = fragment.replace("assumed-role/gcp-caller'", "assumed-role/gcp-worker'");
    assert_ne!(broken, fragment);
    let bad = emulator_with(&merged_world(&broken)).await;
    let err = run_route(&bad, &config, "ec2-to-gcp").await.unwrap_err();
    assert_eq!(err.code.as_deref(), Some("unauthorized_client"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let provider = write(dir.path(), "world.toml", &broken);
    let arn = "arn:aws:sts::111122223333:assumed-role/gcp-caller/i-0a1b2c3d4e5f60718";
    let (code, out, err) = idbridge(
        &bad,
        &[
            "explain",
            "--gcp-provider",
            provider.to_str().unwrap(),
            "--aws-arn",
            arn,
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    let report = json(&out);
    assert_eq!(report["decision"], "deny");
    let cond = gcp_step(&report, "condition");
    assert_eq!(cond["result"], false, "{report}");
    assert!(
        cond["expected"].as_str().unwrap().contains("gcp-worker"),
        "{cond}"
    );
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .starts_with("unauthorized_client"),
        "{report}"
    );
    let role = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "attribute.aws_role")
        .unwrap();
    assert_eq!(
        role["value"],
        "arn:aws:sts::111122223333:assumed-role/gcp-caller"
    );
    // The original fragment admits the same caller.
    let provider = write(dir.path(), "good.toml", &fragment);
    let (code, out, _) = idbridge(
        &bad,
        &[
            "explain",
            "--gcp-provider",
            provider.to_str().unwrap(),
            "--aws-arn",
            arn,
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(
        (code, json(&out)["decision"].clone()),
        (0, Value::from("allow")),
        "{out}"
    );
    bad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seed003_setup_round_trip_and_explain_names_the_changed_condition() {
    let config = examples().join("seed003-spiffe-to-gcp.toml");
    let builtin = emulator_with(BUILTIN_TOML).await;
    let fragment = setup_world(&builtin, &config, "spiffe-to-gcp").await;
    assert!(
        fragment.contains("issuer_uri = \"https://spire.idbridge.test\""),
        "{fragment}"
    );
    assert!(
        fragment.contains("/spiffe-pool/subject/spiffe://example.org/ns/prod/sa/billing"),
        "{fragment}"
    );
    builtin.shutdown().await;

    let good = emulator_with(&merged_world(&fragment)).await;
    let out = run_route(&good, &config, "spiffe-to-gcp").await.unwrap();
    assert!(matches!(out.credential, Credential::GoogleAccessToken(_)));
    good.shutdown().await;

    let broken = fragment.replace(
        "startsWith('spiffe://example.org/')",
        "startsWith('spiffe://example.com/')",
    );
    assert_ne!(broken, fragment);
    let bad = emulator_with(&merged_world(&broken)).await;
    let err = run_route(&bad, &config, "spiffe-to-gcp").await.unwrap_err();
    assert_eq!(err.code.as_deref(), Some("unauthorized_client"), "{err}");

    let audience = "//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/spiffe-pool/providers/spire";
    let now = bad.emulator.clock.unix();
    let svid = bad.emulator.issuer_keys["https://spire.idbridge.test"]
        .sign(&serde_json::json!({
            "iss": "https://spire.idbridge.test",
            "sub": "spiffe://example.org/ns/prod/sa/billing",
            "aud": [audience], "iat": now, "exp": now + 300,
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "svid.jwt", &svid);
    let provider = write(dir.path(), "world.toml", &broken);
    let member = "principal://iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/spiffe-pool/subject/spiffe://example.org/ns/prod/sa/billing";
    let (code, out, err) = idbridge(
        &bad,
        &[
            "explain",
            "--gcp-provider",
            provider.to_str().unwrap(),
            "--token",
            &format!("@{}", token.display()),
            "--binding",
            member,
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    let report = json(&out);
    for passing in ["issuer", "audience", "mapping"] {
        assert_eq!(
            gcp_step(&report, passing)["result"],
            true,
            "{passing}: {report}"
        );
    }
    let cond = gcp_step(&report, "condition");
    assert_eq!(cond["result"], false, "{report}");
    assert!(
        cond["expected"].as_str().unwrap().contains("example.com"),
        "{cond}"
    );
    assert_eq!(gcp_step(&report, "binding")["result"], true, "{report}");
    assert_eq!(report["principal"], member);
    bad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn external_account_file_reads_back_and_runs() {
    let r = emulator_with(BUILTIN_TOML).await;
    let dir = tempfile::tempdir().unwrap();
    let imds = format!("http://{}", r.imds);
    let config = write(
        dir.path(),
        "routes.toml",
        &format!(
            "[[route]]\nname = \"ec2-to-gcp\"\nsource = {{ kind = \"aws\", provider = \"imds\", imds_endpoint = \"{imds}\" }}\nexchange = [\n  {{ kind = \"google-sts\", audience = \"//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/aws-pool/providers/aws-test-account\" }},\n  {{ kind = \"impersonate\", service_account = \"aws-service-account-demo@example-project.iam.gserviceaccount.com\", lifetime_seconds = 1200 }},\n]\n"
        ),
    );
    let (code, out, err) = idbridge(
        &r,
        &[
            "setup",
            "--config",
            config.to_str().unwrap(),
            "--route",
            "ec2-to-gcp",
            "--format",
            "external-account",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let ea: ExternalAccount = serde_json::from_str(&out).unwrap();
    assert_eq!(ea.kind, "external_account");
    assert_eq!(
        ea.subject_token_type,
        "urn:ietf:params:aws:token-type:aws4_request"
    );
    assert_eq!(ea.credential_source["environment_id"], "aws1");
    assert_eq!(
        ea.credential_source["imdsv2_session_token_url"],
        format!("{imds}/latest/api/token")
    );
    let (source, exchanges) = to_route(&ea).unwrap();
    assert!(
        matches!(&source, SourceConfig::Aws { imds_endpoint: Some(e), .. } if *e == imds),
        "{source:?}"
    );
    assert!(
        matches!(&exchanges[..], [
            ExchangeConfig::GoogleSts { audience, .. },
            ExchangeConfig::Impersonate { service_account, lifetime_seconds: Some(1200), .. },
        ] if audience.ends_with("/aws-pool/providers/aws-test-account")
            && service_account == "aws-service-account-demo@example-project.iam.gserviceaccount.com"),
        "{exchanges:?}"
    );
    // The file, as a route, works against the emulator.
    write(dir.path(), "ea.json", &out);
    let ea_config = write(
        dir.path(),
        "ea.toml",
        "[[route]]\nname = \"from-file\"\nexternal_account = \"ea.json\"\n",
    );
    let out = run_route(&r, &ea_config, "from-file").await.unwrap();
    let Credential::GoogleAccessToken(t) = &out.credential else {
        panic!("{}", out.credential.kind())
    };
    assert_eq!(
        t.principal.as_deref(),
        Some("aws-service-account-demo@example-project.iam.gserviceaccount.com")
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_names_the_seed002_trap_and_passes_the_fixed_route() {
    let r = emulator_with(BUILTIN_TOML).await;
    let config = examples().join("seed002-impersonate-to-aws.toml");
    let config = config.to_str().unwrap();
    let (code, out, err) = idbridge(
        &r,
        &[
            "doctor",
            "--config",
            config,
            "--route",
            "myapp-to-aws-naive",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("AccessDenied"), "{out}");
    assert!(out.contains("azp=100367186111111111111"), "{out}");
    assert!(
        out.contains("\"accounts.google.com:oaud\": \"aws-trust-1\""),
        "{out}"
    );
    assert!(
        out.contains("\"accounts.google.com:aud\": \"100367186111111111111\""),
        "{out}"
    );
    assert!(!out.contains("eyJ"), "a token was printed: {out}");

    // With the role's policy, the failing condition itself.
    let world: toml::Table = toml::from_str(BUILTIN_TOML).unwrap();
    let naive = world["aws_role"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["arn"]
                .as_str()
                .unwrap()
                .ends_with("google-cloud-myapp-naive")
        })
        .unwrap()["trust_policy"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "naive.json", &naive);
    let (code, out, _) = idbridge(
        &r,
        &[
            "doctor",
            "--config",
            config,
            "--route",
            "myapp-to-aws-naive",
            "--aws-trust-policy",
            policy.to_str().unwrap(),
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 1);
    let report = json(&out);
    assert_eq!(report["ok"], false);
    let d = &report["diagnosis"];
    assert_eq!(
        (d["hop"].as_str(), d["code"].as_str()),
        (Some("aws-sts"), Some("AccessDenied"))
    );
    let fixes = d["fix"].to_string();
    assert!(
        fixes.contains("condition StringEquals accounts.google.com:aud") && fixes.contains("azp"),
        "{fixes}"
    );
    assert!(fixes.contains("google-aud-is-azp"), "{fixes}");
    assert_eq!(
        report["steps"][0]["received"]["claims"]["aud"],
        "aws-trust-1"
    );
    assert!(report["steps"][0]["received"].get("token").is_none());

    let (code, out, err) = idbridge(
        &r,
        &["doctor", "--config", config, "--route", "myapp-to-aws"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("result: the route works"), "{out}");
    assert!(
        out.contains(
            "arn:aws:sts::111122223333:assumed-role/google-cloud-myapp/myapp (GetCallerIdentity"
        ),
        "{out}"
    );
    assert!(
        !out.contains("eyJ") && !out.contains("SecretAccessKey"),
        "{out}"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_diagnoses_google_side_refusals_and_unreachable_endpoints() {
    let r = emulator_with(BUILTIN_TOML).await;
    let config = examples().join("seed001-aws-to-gcp.toml");
    let config = config.to_str().unwrap();
    let (code, out, _) = idbridge(
        &r,
        &[
            "doctor",
            "--config",
            config,
            "--route",
            "ecs-to-gcp",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 1);
    let d = &json(&out)["diagnosis"];
    assert_eq!(d["code"], "unauthorized_client", "{d}");
    let text = d.to_string();
    assert!(
        text.contains("attribute.aws_role == 'arn:aws:sts::111122223333:assumed-role/other-app'"),
        "{text}"
    );
    assert!(
        text.contains("constraints/iam.workloadIdentityPoolAwsAccounts 111122223333"),
        "{text}"
    );

    let (code, out, _) =
        idbridge(&r, &["doctor", "--config", config, "--route", "ec2-to-gcp"]).await;
    assert_eq!(code, 0, "{out}");

    // A binding that is missing: the exact gcloud command.
    let dir = tempfile::tempdir().unwrap();
    let text = BUILTIN_TOML.replace(
        "\"principalSet://iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/aws-pool/attribute.aws_role/arn:aws:sts::111122223333:assumed-role/gcp-caller\",",
        "",
    );
    assert_ne!(text, BUILTIN_TOML);
    let unbound = emulator_with(&text).await;
    let (code, out, _) = idbridge(
        &unbound,
        &["doctor", "--config", config, "--route", "ec2-to-gcp"],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("gcloud iam service-accounts add-iam-policy-binding aws-service-account-demo@example-project.iam.gserviceaccount.com --role=roles/iam.workloadIdentityUser --member=principalSet://iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/aws-pool/attribute.aws_role/arn:aws:sts::111122223333:assumed-role/gcp-caller"),
        "{out}"
    );
    unbound.shutdown().await;

    // Nothing listens: which variable to check.
    let cfg = write(
        dir.path(),
        "r.toml",
        "[endpoints]\naws_sts = \"http://127.0.0.1:1\"\n\n[[route]]\nname = \"t\"\nsource = { kind = \"gce-metadata\", audience = \"https://psoxy.example/aws\" }\nexchange = [{ kind = \"aws-sts\", role_arn = \"arn:aws:iam::111122223333:role/psoxy-tenant-access\" }]\n",
    );
    let (code, out, _) = idbridge(
        &r,
        &["doctor", "--config", cfg.to_str().unwrap(), "--route", "t"],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("unreachable") && out.contains("AWS_ENDPOINT_URL_STS"),
        "{out}"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_gcp_warns_about_open_providers_and_setup_writes_every_format() {
    let r = emulator_with(BUILTIN_TOML).await;
    let dir = tempfile::tempdir().unwrap();
    let provider = write(
        dir.path(),
        "provider.toml",
        "project_number = \"836192731250\"\npool = \"ci-pool\"\nid = \"ci\"\noidc = { issuer_uri = \"https://token.actions.example\" }\nattribute_mapping = { \"google.subject\" = \"assertion.repository\" }\n",
    );
    let now = r.emulator.clock.unix();
    let claims = serde_json::json!({
        "iss": "https://token.actions.example", "sub": "repo:org/app:ref:refs/heads/main",
        "repository": "org/app", "aud": "https://iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/ci-pool/providers/ci",
        "iat": now, "exp": now + 300,
    });
    // Signed by a key of another issuer: explain does not verify unless asked.
    let jwt = r.emulator.issuer_keys["https://spire.idbridge.test"]
        .sign(&claims)
        .unwrap();
    let (code, out, err) = idbridge(
        &r,
        &[
            "explain", "--gcp-provider", provider.to_str().unwrap(), "--token", &jwt,
            "--binding", "principalSet://iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/ci-pool/*",
            "--format", "json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let report = json(&out);
    assert_eq!(report["decision"], "allow");
    let codes: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    for c in [
        "unverified",
        "no-condition",
        "subject-not-unique",
        "principalset-all",
    ] {
        assert!(codes.contains(&c), "{c} missing: {codes:?}");
    }
    assert_eq!(
        report["principal"],
        "principal://iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/ci-pool/subject/org/app"
    );

    // Every format of setup, for a GCP→AWS and an AWS→GCP route.
    let seed002 = examples().join("seed002-impersonate-to-aws.toml");
    let seed001 = examples().join("seed001-aws-to-gcp.toml");
    for (config, route, format, needle) in [
        (
            &seed002,
            "myapp-to-aws",
            "aws-json",
            "\"accounts.google.com:oaud\": \"aws-trust-1\"",
        ),
        (
            &seed002,
            "myapp-to-aws",
            "aws-cli",
            "aws iam create-role --role-name google-cloud-myapp",
        ),
        (
            &seed002,
            "myapp-to-aws",
            "terraform",
            "resource \"aws_iam_role\" \"google_cloud_myapp\"",
        ),
        (
            &seed002,
            "myapp-to-aws",
            "gcloud",
            "--role=roles/iam.serviceAccountTokenCreator --member=serviceAccount:psoxy-tenant@saas-tenant.iam.gserviceaccount.com",
        ),
        (
            &seed001,
            "ec2-to-gcp",
            "gcloud",
            "gcloud resource-manager org-policies allow constraints/iam.workloadIdentityPoolAwsAccounts 111122223333 --organization=1234",
        ),
        (
            &seed001,
            "ec2-to-gcp",
            "gcloud",
            "providers create-aws aws-test-account",
        ),
        (
            &seed001,
            "ec2-to-gcp",
            "terraform",
            "resource \"google_iam_workload_identity_pool_provider\" \"aws_test_account\"",
        ),
        (
            &seed001,
            "ec2-to-gcp",
            "terraform",
            "iam.workloadIdentityPoolAwsAccounts",
        ),
    ] {
        let (code, out, err) = idbridge(
            &r,
            &[
                "setup",
                "--config",
                config.to_str().unwrap(),
                "--route",
                route,
                "--format",
                format,
                "--organization",
                "1234",
            ],
        )
        .await;
        assert_eq!(code, 0, "{route} {format}: {err}");
        assert!(out.contains(needle), "{route} {format}: {needle}\n{out}");
    }
    // The aws-json policy parses and admits the route's token (setup checks it itself).
    let (_, out, err) = idbridge(
        &r,
        &[
            "setup",
            "--config",
            seed002.to_str().unwrap(),
            "--route",
            "myapp-to-aws",
            "--format",
            "aws-json",
        ],
    )
    .await;
    assert!(
        idbridge_policy::aws::TrustPolicy::parse(&out).is_ok(),
        "{out}"
    );
    assert!(no_warning_but_azp_forms(&err), "{err}");
    assert!(err.contains("[google-azp-forms]"), "{err}");
    // Offline, the numeric id must be given.
    let (code, _, err) = idbridge(
        &r,
        &[
            "setup",
            "--config",
            seed002.to_str().unwrap(),
            "--route",
            "myapp-to-aws",
            "--format",
            "aws-json",
            "--offline",
        ],
    )
    .await;
    assert_eq!(code, 64);
    assert!(err.contains("--sa-unique-id"), "{err}");
    r.shutdown().await;
}

// ----- Role chaining, IAM Roles Anywhere, outbound identity federation ------------------------

/// `setup --format FORMAT` of a route with extra flags: (stdout, stderr); fails on a non-zero exit.
async fn setup_out(
    running: &Running,
    config: &Path,
    route: &str,
    format: &str,
    extra: &[&str],
) -> (String, String) {
    let mut args = vec![
        "setup",
        "--config",
        config.to_str().unwrap(),
        "--route",
        route,
        "--format",
        format,
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = idbridge(running, &args).await;
    assert_eq!(code, 0, "setup {format}: {err}");
    (out, err)
}

/// The trust policy of the `[[aws_role]]` whose ARN ends with `role` in a world fragment.
fn fragment_policy(fragment: &str, role: &str) -> String {
    let world: toml::Table = toml::from_str(fragment).unwrap();
    world["aws_role"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["arn"].as_str().unwrap().ends_with(role))
        .unwrap_or_else(|| panic!("no role {role} in {fragment}"))["trust_policy"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Runs the `aws` commands of a generated script with the AWS CLI of the peer venv against a
/// closed port: each must get past argument parsing and botocore's parameter validation (exit
/// 255, "Could not connect"), which a wrong command, option or value does not (exit 2 or 252).
fn assert_aws_commands_parse(script: &str) {
    let aws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/aws");
    assert!(
        aws.exists(),
        "the AWS CLI peer is missing: {} (set up the venv)",
        aws.display()
    );
    let expected = script.lines().filter(|l| l.starts_with("aws ")).count();
    assert!(expected > 0, "no aws command in {script}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "setup.sh", script);
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"aws() { "$AWS_BIN" "$@" --cli-connect-timeout 1 >/dev/null 2>>errors.txt; echo "$? $1 $2" >> codes.txt; }; . ./setup.sh"#)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("AWS_BIN", &aws)
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "not-a-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let codes = std::fs::read_to_string(dir.path().join("codes.txt")).unwrap();
    let errors = std::fs::read_to_string(dir.path().join("errors.txt")).unwrap_or_default();
    assert_eq!(codes.lines().count(), expected, "{codes}");
    for line in codes.lines() {
        assert!(
            line.starts_with("255 "),
            "`aws {line}` did not parse:\n{errors}"
        );
    }
    assert_eq!(
        errors
            .matches("Could not connect to the endpoint URL")
            .count(),
        expected,
        "{errors}"
    );
}

/// `terraform fmt` reads it (HCL syntax); every heredoc is JSON (after interpolations); every
/// `aws_….NAME.` reference names a resource it declares.
fn assert_terraform_well_formed(hcl: &str, resources: &[&str]) {
    let mut child = std::process::Command::new("terraform")
        .args(["fmt", "-no-color", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("terraform is installed");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(hcl.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "terraform fmt: {}\n{hcl}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut declared = Vec::new();
    let mut heredoc: Option<String> = None;
    for line in hcl.lines() {
        if let Some(body) = heredoc.as_mut() {
            if line.trim() == "EOT" {
                let text = body.replace("$${", "${");
                // `${aws_x.y.arn}` stands for a string.
                let re_free: String = text
                    .split("${")
                    .enumerate()
                    .map(|(i, part)| {
                        if i == 0 {
                            part.to_owned()
                        } else {
                            let (_, rest) = part.split_once('}').unwrap();
                            format!("ARN{rest}")
                        }
                    })
                    .collect();
                serde_json::from_str::<Value>(&re_free)
                    .unwrap_or_else(|e| panic!("heredoc is not JSON ({e}): {re_free}"));
                heredoc = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
            continue;
        }
        if line.trim_end().ends_with("<<-EOT") {
            heredoc = Some(String::new());
        }
        if let Some(rest) = line.strip_prefix("resource \"") {
            let (kind, rest) = rest.split_once("\" \"").unwrap();
            let name = rest.split('"').next().unwrap();
            declared.push(format!("{kind}.{name}"));
        }
    }
    assert!(heredoc.is_none(), "unterminated heredoc");
    for r in resources {
        assert!(
            declared.iter().any(|d| d.starts_with(&format!("{r}."))),
            "no {r} in {declared:?}"
        );
    }
    for word in hcl.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')) {
        if word.starts_with("aws_") && word.matches('.').count() >= 2 {
            let target: String = word.splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
            assert!(
                declared.contains(&target),
                "{word} names no resource: {declared:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chained_role_setup_round_trip_explain_and_doctor() {
    let config = examples().join("gcp-to-aws-chained.toml");
    let builtin = emulator_with(BUILTIN_TOML).await;
    let fragment = setup_world(&builtin, &config, "gcp-to-chained").await;
    let policy = json(&fragment_policy(&fragment, "role/chained-reader"));
    let st = &policy["Statement"][0];
    assert_eq!(
        st["Principal"]["AWS"],
        "arn:aws:iam::111122223333:role/psoxy-tenant-access"
    );
    assert_eq!(
        st["Action"],
        serde_json::json!(["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"])
    );
    assert_eq!(
        st["Condition"]["StringEquals"]["sts:ExternalId"],
        "tenant-7"
    );

    // The aws CLI commands parse; the Terraform is well formed.
    let (cli, _) = setup_out(&builtin, &config, "gcp-to-chained", "aws-cli", &[]).await;
    assert!(
        cli.contains("aws iam create-role --role-name chained-reader --assume-role-policy-document file://trust-policy-chained-reader.json"),
        "{cli}"
    );
    assert_aws_commands_parse(&cli);
    let (tf, _) = setup_out(&builtin, &config, "gcp-to-chained", "terraform", &[]).await;
    assert_terraform_well_formed(&tf, &["aws_iam_role"]);
    assert!(
        tf.contains("resource \"aws_iam_role\" \"chained_reader\""),
        "{tf}"
    );
    builtin.shutdown().await;

    // The generated roles admit the route.
    let good = emulator_with(&merged_world(&fragment)).await;
    let out = run_route(&good, &config, "gcp-to-chained").await.unwrap();
    let Credential::Aws(c) = &out.credential else {
        panic!("{}", out.credential.kind())
    };
    assert_eq!(
        c.arn.as_deref(),
        Some("arn:aws:sts::111122223333:assumed-role/chained-reader/tenant-7-reader")
    );
    good.shutdown().await;

    // Another external id: refused; doctor and explain name sts:ExternalId.
    let broken = fragment.replace(
        "\"sts:ExternalId\": \"tenant-7\"",
        "\"sts:ExternalId\": \"tenant-8\"",
    );
    assert_ne!(broken, fragment);
    let bad = emulator_with(&merged_world(&broken)).await;
    let err = run_route(&bad, &config, "gcp-to-chained")
        .await
        .unwrap_err();
    assert_eq!(err.code.as_deref(), Some("AccessDenied"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let policy_file = write(
        dir.path(),
        "trust.json",
        &fragment_policy(&broken, "role/chained-reader"),
    );
    let policy_arg = policy_file.to_str().unwrap();
    let (code, out, err) = idbridge(
        &bad,
        &[
            "doctor",
            "--config",
            config.to_str().unwrap(),
            "--route",
            "gcp-to-chained",
            "--aws-trust-policy",
            policy_arg,
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    let report = json(&out);
    let d = &report["diagnosis"];
    assert_eq!(d["code"], "AccessDenied", "{d}");
    assert!(
        d["cause"]
            .as_str()
            .unwrap()
            .contains("refuses sts:AssumeRole"),
        "{d}"
    );
    let evaluation = &d["evaluation"];
    assert_eq!(evaluation["decision"], "deny", "{d}");
    let failing: Vec<Value> = aws_conditions(evaluation)
        .into_iter()
        .filter(|c| c["result"] == false)
        .collect();
    assert_eq!(failing.len(), 1, "{evaluation}");
    assert_eq!(failing[0]["key"], "sts:ExternalId");
    assert_eq!(failing[0]["token_value"], "tenant-7");
    assert!(
        d["commands"].to_string().contains("idbridge explain --aws-trust-policy trust.json --aws-arn arn:aws:sts::111122223333:assumed-role/psoxy-tenant-access/psoxy-tenant"),
        "{d}"
    );

    let caller = "arn:aws:sts::111122223333:assumed-role/psoxy-tenant-access/psoxy-tenant";
    let (code, out, err) = idbridge(
        &bad,
        &[
            "explain",
            "--aws-trust-policy",
            policy_arg,
            "--aws-arn",
            caller,
            "--external-id",
            "tenant-7",
            "--tag",
            "tenant=7",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    let report = json(&out);
    assert_eq!(
        (report["kind"].as_str(), report["action"].as_str()),
        (Some("assume-role"), Some("sts:AssumeRole"))
    );
    let cond = &aws_conditions(&report)[0];
    assert_eq!(
        (
            cond["key"].as_str(),
            cond["claim"].as_str(),
            cond["result"].as_bool()
        ),
        (
            Some("sts:ExternalId"),
            Some("(request) ExternalId"),
            Some(false)
        )
    );
    assert_eq!(cond["policy_values"], serde_json::json!(["tenant-8"]));

    // The right external id, tags and source identity: every action allowed, each evaluated.
    let good_policy = write(
        dir.path(),
        "good.json",
        &fragment_policy(&fragment, "role/chained-reader"),
    );
    let (code, out, err) = idbridge(
        &bad,
        &[
            "explain",
            "--aws-trust-policy",
            good_policy.to_str().unwrap(),
            "--aws-arn",
            caller,
            "--external-id",
            "tenant-7",
            "--tag",
            "tenant=7",
            "--source-identity",
            "psoxy-tenant",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let report = json(&out);
    let actions: Vec<&str> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]
    );

    // Another first role: the principal is what is wrong, said so in the table.
    let (code, table, _) = idbridge(
        &bad,
        &[
            "explain",
            "--aws-trust-policy",
            good_policy.to_str().unwrap(),
            "--aws-arn",
            "arn:aws:iam::111122223333:role/gcp-caller",
            "--external-id",
            "tenant-7",
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(table.contains("principal ✗"), "{table}");
    assert!(
        table.contains("[principal-not-named]")
            && table.contains("arn:aws:iam::111122223333:role/gcp-caller"),
        "{table}"
    );
    bad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_anywhere_setup_round_trip_explain_and_doctor() {
    let config = examples().join("spiffe-x509-to-aws.toml");
    let route = "spiffe-x509-to-aws";
    let builtin = emulator_with(BUILTIN_TOML).await;
    let fragment = setup_world(&builtin, &config, route).await;
    let policy = json(&fragment_policy(&fragment, "role/spiffe-billing"));
    let st = &policy["Statement"][0];
    assert_eq!(st["Principal"]["Service"], "rolesanywhere.amazonaws.com");
    assert_eq!(
        st["Condition"]["StringEquals"]["aws:PrincipalTag/x509SAN/URI"],
        "spiffe://example.org/ns/prod/sa/billing"
    );
    assert!(
        fragment.contains("spiffe_trust_domain = \"example.org\""),
        "{fragment}"
    );

    // With a CA bundle: the aws CLI commands parse, the Terraform is well formed.
    let ca = builtin
        .env_pairs()
        .into_iter()
        .find(|(k, _)| k == "NODE_EXTRA_CA_CERTS")
        .map(|(_, v)| v)
        .unwrap();
    // Another CA than the SPIFFE one (the emulator's Entra TLS CA), kept past the emulator.
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = write(
        ca_dir.path(),
        "ca.pem",
        &std::fs::read_to_string(&ca).unwrap(),
    );
    let ca = ca.to_str().unwrap().to_owned();
    let (cli, _) = setup_out(&builtin, &config, route, "aws-cli", &["--ca-bundle", &ca]).await;
    assert!(cli.contains("aws rolesanywhere create-trust-anchor --region us-east-1 --name spiffe-billing-anchor --enabled --source file://"), "{cli}");
    assert!(cli.contains("aws rolesanywhere create-profile --region us-east-1 --name spiffe-billing-profile --role-arns arn:aws:iam::111122223333:role/spiffe-billing --enabled"), "{cli}");
    assert!(
        cli.contains("\"x509CertificateData\": \"-----BEGIN CERTIFICATE-----\\n"),
        "{cli}"
    );
    assert_aws_commands_parse(&cli);
    let (tf, _) = setup_out(&builtin, &config, route, "terraform", &["--ca-bundle", &ca]).await;
    assert_terraform_well_formed(
        &tf,
        &[
            "aws_rolesanywhere_trust_anchor",
            "aws_iam_role",
            "aws_rolesanywhere_profile",
        ],
    );
    assert!(
        tf.contains(
            "\"aws:SourceArn\": \"${aws_rolesanywhere_trust_anchor.spiffe_billing_anchor.arn}\""
        ),
        "{tf}"
    );
    assert!(
        tf.contains("role_arns = [aws_iam_role.spiffe_billing.arn]"),
        "{tf}"
    );
    // Offline, from the flags.
    let (json_policy, _) = setup_out(
        &builtin,
        &config,
        route,
        "aws-json",
        &["--offline", "--x509-cn", "billing"],
    )
    .await;
    assert_eq!(
        json(&json_policy)["Statement"][0]["Condition"]["StringEquals"],
        serde_json::json!({"aws:PrincipalTag/x509Subject/CN": "billing"})
    );
    builtin.shutdown().await;

    // The generated objects admit the route.
    let good = emulator_with(&merged_world(&fragment)).await;
    let out = run_route(&good, &config, route).await.unwrap();
    let Credential::Aws(c) = &out.credential else {
        panic!("{}", out.credential.kind())
    };
    assert!(
        c.arn
            .as_deref()
            .unwrap()
            .starts_with("arn:aws:sts::111122223333:assumed-role/spiffe-billing/"),
        "{:?}",
        c.arn
    );
    good.shutdown().await;

    // Another SPIFFE ID in the trust policy: refused; doctor and explain name the condition.
    let broken = fragment.replace(
        "\"aws:PrincipalTag/x509SAN/URI\": \"spiffe://example.org/ns/prod/sa/billing\"",
        "\"aws:PrincipalTag/x509SAN/URI\": \"spiffe://example.org/ns/prod/sa/payroll\"",
    );
    assert_ne!(broken, fragment);
    let bad = emulator_with(&merged_world(&broken)).await;
    let err = run_route(&bad, &config, route).await.unwrap_err();
    assert_eq!(err.code.as_deref(), Some("AccessDeniedException"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let policy_file = write(
        dir.path(),
        "trust.json",
        &fragment_policy(&broken, "role/spiffe-billing"),
    );
    let (code, out, err) = idbridge(
        &bad,
        &[
            "doctor",
            "--config",
            config.to_str().unwrap(),
            "--route",
            route,
            "--aws-trust-policy",
            policy_file.to_str().unwrap(),
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    let d = &json(&out)["diagnosis"];
    let cause = d["cause"].as_str().unwrap();
    assert!(
        cause.contains("refuses sts:AssumeRole")
            && cause.contains("aws:PrincipalTag/x509SAN/URI")
            && cause.contains("spiffe://example.org/ns/prod/sa/billing"),
        "{d}"
    );
    assert!(
        d["commands"]
            .to_string()
            .contains("--x509-uri spiffe://example.org/ns/prod/sa/billing"),
        "{d}"
    );
    let anchor = "arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/0c9d1f7e-5a1b-4c2d-9e3f-7a6b5c4d3e21";
    let (code, table, _) = idbridge(
        &bad,
        &[
            "explain",
            "--aws-trust-policy",
            policy_file.to_str().unwrap(),
            "--trust-anchor",
            anchor,
            "--x509-uri",
            "spiffe://example.org/ns/prod/sa/billing",
        ],
    )
    .await;
    assert_eq!(code, 2, "{table}");
    let line = table
        .lines()
        .find(|l| l.contains("aws:PrincipalTag/x509SAN/URI") && l.contains("FAIL"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("(certificate) x509SAN/URI") && line.contains("sa/payroll"),
        "{line}"
    );
    bad.shutdown().await;

    // A trust anchor on another CA: the CA is the cause.
    let other_ca = fragment.replace(
        "spiffe_trust_domain = \"example.org\"",
        &format!("certificate_bundle_file = {:?}", ca),
    );
    let r = emulator_with(&merged_world(&other_ca)).await;
    let (code, out, err) = idbridge(
        &r,
        &[
            "doctor",
            "--config",
            config.to_str().unwrap(),
            "--route",
            route,
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    let d = &json(&out)["diagnosis"];
    assert_eq!(d["code"], "AccessDeniedException");
    assert!(
        d["cause"].as_str().unwrap().contains(
            "does not trust the signing certificate (spiffe://example.org/ns/prod/sa/billing)"
        ),
        "{d}"
    );
    assert!(d["commands"].to_string().contains("aws rolesanywhere get-trust-anchor --trust-anchor-id 0c9d1f7e-5a1b-4c2d-9e3f-7a6b5c4d3e21"), "{d}");
    r.shutdown().await;

    // A profile that does not list the role.
    let other_role = fragment.replace(
        "role_arns = [\"arn:aws:iam::111122223333:role/spiffe-billing\"]",
        "role_arns = [\"arn:aws:iam::111122223333:role/chained-reader\"]",
    );
    assert_ne!(other_role, fragment);
    let r = emulator_with(&merged_world(&other_role)).await;
    let (code, out, err) = idbridge(
        &r,
        &[
            "doctor",
            "--config",
            config.to_str().unwrap(),
            "--route",
            route,
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    let d = &json(&out)["diagnosis"];
    assert!(
        d["cause"]
            .as_str()
            .unwrap()
            .contains("the profile and the role do not match"),
        "{d}"
    );
    assert!(d["commands"].to_string().contains("aws rolesanywhere update-profile --profile-id 3f2e1d0c-9b8a-4765-8432-10fedcba9876 --role-arns arn:aws:iam::111122223333:role/spiffe-billing"), "{d}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_federation_doctor_and_setup() {
    let config = examples().join("ec2-aws-jwt-to-gcp.toml");
    let route = "ec2-jwt-to-gcp";
    // The built-in account's switch is off.
    let off = emulator_with(BUILTIN_TOML).await;
    let (code, out, err) = idbridge(
        &off,
        &[
            "doctor",
            "--config",
            config.to_str().unwrap(),
            "--route",
            route,
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    let d = &json(&out)["diagnosis"];
    assert_eq!(
        d["code"], "OutboundWebIdentityFederationDisabledException",
        "{d}"
    );
    assert!(
        d["cause"]
            .as_str()
            .unwrap()
            .contains("outbound identity federation is off"),
        "{d}"
    );
    assert!(
        d["commands"]
            .to_string()
            .contains("aws iam enable-outbound-web-identity-federation"),
        "{d}"
    );
    off.shutdown().await;

    let world = BUILTIN_TOML.replace(
        "outbound_issuer = \"https://5e1f0c2a",
        "outbound_federation_enabled = true\noutbound_issuer = \"https://5e1f0c2a",
    );
    assert_ne!(world, BUILTIN_TOML);
    let on = emulator_with(&world).await;
    let (cli, err) = setup_out(&on, &config, route, "aws-cli", &[]).await;
    assert!(!err.contains("warning"), "{err}");
    assert!(
        cli.contains("\naws iam enable-outbound-web-identity-federation\n"),
        "{cli}"
    );
    assert!(cli.contains("aws iam put-role-policy --role-name gcp-caller --policy-name idbridge-get-web-identity-token"), "{cli}");
    assert_aws_commands_parse(&cli);
    let (policy, _) = setup_out(&on, &config, route, "aws-json", &[]).await;
    let st = &json(&policy)["Statement"][0];
    assert_eq!(st["Action"], "sts:GetWebIdentityToken");
    assert_eq!(
        st["Condition"]["ForAllValues:StringEquals"]["sts:IdentityTokenAudience"],
        serde_json::json!(["https://gcp.idbridge.test/aws-outbound"])
    );
    let (tf, _) = setup_out(&on, &config, route, "terraform", &[]).await;
    assert_terraform_well_formed(
        &tf,
        &[
            "aws_iam_outbound_web_identity_federation",
            "aws_iam_role_policy",
            "google_iam_workload_identity_pool_provider",
        ],
    );
    assert!(tf.contains("issuer_uri = \"https://5e1f0c2a-7b3d-4e8f-9a6c-1d2e3f4a5b6c.tokens.sts.global.api.aws\""), "{tf}");
    let fragment = setup_world(&on, &config, route).await;
    assert!(
        fragment.contains("outbound_federation_enabled = true"),
        "{fragment}"
    );
    on.shutdown().await;
}

#[tokio::test]
async fn delegation_chain_setup_grants_every_link() {
    let config = examples().join("gcp-delegation-chain.toml");
    let builtin = emulator_with(BUILTIN_TOML).await;
    let fragment = setup_world(&builtin, &config, "gcp-delegation-chain").await;
    builtin.shutdown().await;
    let world: toml::Value = toml::from_str(&fragment).unwrap();
    let creators = |email: &str| {
        world["service_account"]
            .as_array()
            .unwrap()
            .iter()
            .find(|sa| sa["email"].as_str() == Some(email))
            .unwrap_or_else(|| panic!("{email} missing from {fragment}"))["token_creators"]
            .clone()
    };
    assert_eq!(
        creators("deploy-hop@gcp-project.iam.gserviceaccount.com"),
        toml::Value::from(vec![
            "serviceAccount:psoxy-tenant@saas-tenant.iam.gserviceaccount.com"
        ])
    );
    assert_eq!(
        creators("deploy-target@gcp-project.iam.gserviceaccount.com"),
        toml::Value::from(vec![
            "serviceAccount:deploy-hop@gcp-project.iam.gserviceaccount.com"
        ])
    );

    // The generated grants (replacing the built-in accounts) admit the chain.
    let good = emulator_with(&merged_world(&fragment)).await;
    let out = run_route(&good, &config, "gcp-delegation-chain")
        .await
        .unwrap();
    let Credential::GoogleAccessToken(t) = &out.credential else {
        panic!("{:?}", out.credential.kind())
    };
    assert_eq!(
        t.principal.as_deref(),
        Some("deploy-target@gcp-project.iam.gserviceaccount.com")
    );
    good.shutdown().await;
}

/// A delegate given by its unique id is never written as a `serviceAccount:<id>` member (IAM
/// refuses it): gcloud looks the email up when run, Terraform and the world say to write it.
#[tokio::test]
async fn a_delegate_given_by_unique_id_is_never_a_member() {
    let config = examples().join("gcp-delegation-chain.toml");
    let route = "gcp-delegation-chain-id-token";
    let id = "103948576012938475610";
    let on = emulator_with(BUILTIN_TOML).await;
    let (cli, _) = setup_out(&on, &config, route, "gcloud", &[]).await;
    assert!(!cli.contains(&format!("serviceAccount:{id} ")), "{cli}");
    assert!(
        cli.contains(&format!(
            "--member=\"serviceAccount:$(gcloud iam service-accounts describe {id} --format='value(email)')\""
        )),
        "{cli}"
    );
    assert!(cli.contains("a member must be an email"), "{cli}");
    let (tf, _) = setup_out(&on, &config, route, "terraform", &[]).await;
    assert!(!tf.contains(&format!("\"serviceAccount:{id}\"")), "{tf}");
    assert!(
        tf.contains(&format!(
            "replace EMAIL_OF_{id} below with the account's email"
        )),
        "{tf}"
    );
    let fragment = setup_world(&on, &config, route).await;
    assert!(
        !fragment.contains(&format!("serviceAccount:{id}")),
        "{fragment}"
    );
    assert!(
        fragment.contains(&format!("whose unique id is {id}")),
        "{fragment}"
    );
    on.shutdown().await;
}

#[tokio::test]
async fn doctor_names_every_link_of_a_refused_delegation_chain() {
    let r = emulator_with(BUILTIN_TOML).await;
    let config = examples().join("gcp-delegation-chain.toml");
    let (code, out, err) = idbridge(
        &r,
        &[
            "doctor",
            "--config",
            config.to_str().unwrap(),
            "--route",
            "gcp-delegation-missing-link",
        ],
    )
    .await;
    r.shutdown().await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("PERMISSION_DENIED"), "{out}");
    assert!(
        out.contains("a link of the delegation chain psoxy-tenant@saas-tenant.iam.gserviceaccount.com → deploy-hop@gcp-project.iam.gserviceaccount.com → deploy-locked@gcp-project.iam.gserviceaccount.com"),
        "{out}"
    );
    for (account, member) in [
        (
            "deploy-hop@gcp-project.iam.gserviceaccount.com",
            "psoxy-tenant@saas-tenant.iam.gserviceaccount.com",
        ),
        (
            "deploy-locked@gcp-project.iam.gserviceaccount.com",
            "deploy-hop@gcp-project.iam.gserviceaccount.com",
        ),
    ] {
        let command = format!(
            "gcloud iam service-accounts add-iam-policy-binding {account} --role=roles/iam.serviceAccountTokenCreator --member=serviceAccount:{member}"
        );
        assert!(out.contains(&command), "{command}\n{out}");
    }
    assert!(!out.contains("ya29."), "a token was printed: {out}");
}

/// `explain --gcp-delegation`: each link of a chain against the built-in world's accounts, the
/// first missing one named with its grant, the emulator's own decision.
#[test]
fn explain_checks_every_link_of_a_delegation_chain() {
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("world.toml");
    std::fs::write(&world, BUILTIN_TOML).unwrap();
    let run = |target: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_idbridge"))
            .args(["explain", "--gcp-delegation"])
            .arg(&world)
            .args([
                "--caller",
                "psoxy-tenant@saas-tenant.iam.gserviceaccount.com",
                "--delegate",
                "103948576012938475610",
                "--target",
                target,
                "--format",
                "json",
            ])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    };
    let (code, ok) = run("deploy-target@gcp-project.iam.gserviceaccount.com");
    assert_eq!(
        (code, ok["decision"].as_str()),
        (Some(0), Some("allow")),
        "{ok}"
    );
    assert_eq!(
        ok["chain"][1],
        "deploy-hop@gcp-project.iam.gserviceaccount.com"
    );
    let (code, denied) = run("deploy-locked@gcp-project.iam.gserviceaccount.com");
    assert_eq!(code, Some(2), "{denied}");
    assert_eq!(denied["first_missing"], 1, "{denied}");
    assert_eq!(
        denied["links"][0]["granted_by"],
        "roles/iam.serviceAccountTokenCreator"
    );
    assert_eq!(
        denied["fix"],
        "gcloud iam service-accounts add-iam-policy-binding deploy-locked@gcp-project.iam.gserviceaccount.com --role=roles/iam.serviceAccountTokenCreator --member=serviceAccount:deploy-hop@gcp-project.iam.gserviceaccount.com"
    );
}
