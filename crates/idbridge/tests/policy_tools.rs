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
