#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers fail loudly"
)]
//! The one-shot commands print credentials on stdout and nothing secret anywhere else: with
//! every log line enabled (`IDBRIDGE_LOG=trace`, idbridge's and its libraries'), none of the
//! secrets a command prints — the AWS secret access key and session token, Google access
//! tokens — appears in its stderr. The daemon's side is covered by `no_secret_reaches_the_logs`
//! in `crates/serve/src/tests.rs` and `test_no_credential_in_the_log` in `tests/peers`.

mod common;
use common::*;

use idbridge_emulator::Running;
use serde_json::Value;

/// Runs the idbridge binary at trace level against the emulator: (exit code, stdout, stderr).
async fn idbridge_traced(running: &Running, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(args)
        .envs(running.env_pairs())
        .env("IDBRIDGE_LOG", "trace")
        .env("NO_COLOR", "1")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Runs `args`, which must succeed and print a JSON object, and checks that none of the string
/// values at `secret_fields` (each present and non-trivial) appears in stderr, which must hold
/// trace output (so the check is not vacuous).
async fn assert_no_leak(running: &Running, args: &[&str], secret_fields: &[&str]) -> Value {
    let (code, stdout, stderr) = idbridge_traced(running, args).await;
    assert_eq!(code, 0, "idbridge {args:?} failed:\n{stderr}");
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "no trace output from idbridge {args:?}:\n{stderr}"
    );
    // Request dumps would show the IMDS session token (and signatures) as header values.
    for header in [
        "x-aws-ec2-metadata-token\": \"",
        "x-amz-security-token\": \"",
    ] {
        assert!(
            !stderr.contains(header),
            "a {header:?} header value of idbridge {args:?} reached stderr"
        );
    }
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap();
    for field in secret_fields {
        let secret = doc[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {doc}"));
        assert!(secret.len() >= 16, "{field} is too short to search for");
        assert!(
            !stderr.contains(secret),
            "{field} of idbridge {args:?} reached stderr"
        );
        // Nor any good part of it (a log line could truncate or wrap it).
        let head: String = secret.chars().take(16).collect();
        let tail: String = secret.chars().skip(secret.chars().count() - 16).collect();
        assert!(
            !stderr.contains(&head) && !stderr.contains(&tail),
            "part of {field} of idbridge {args:?} reached stderr"
        );
    }
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_credentials_reach_stdout_only() {
    let r = emulator().await;
    let config = examples().join("seed000-gce-to-aws.toml");
    let config = config.to_str().unwrap();
    let route = ["--config", config, "--route", "tenant-to-aws"];
    let token: Vec<&str> = ["token"]
        .into_iter()
        .chain(route)
        .chain(["--format", "json"])
        .collect();
    let doc = assert_no_leak(&r, &token, &["SecretAccessKey", "SessionToken"]).await;
    assert!(doc["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    let process: Vec<&str> = ["credential-process"].into_iter().chain(route).collect();
    let doc = assert_no_leak(&r, &process, &["SecretAccessKey", "SessionToken"]).await;
    assert_eq!(doc["Version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_access_tokens_reach_stdout_only() {
    let r = emulator().await;
    // EC2 instance role (IMDSv2) → Google STS → impersonation: an IMDS session token, AWS
    // credentials, a federated token and the final access token all pass through the process.
    let config = examples().join("seed001-aws-to-gcp.toml");
    let doc = assert_no_leak(
        &r,
        &[
            "token",
            "--config",
            config.to_str().unwrap(),
            "--route",
            "ec2-to-gcp",
            "--format",
            "json",
        ],
        &["access_token"],
    )
    .await;
    assert_eq!(
        doc["principal"],
        "aws-service-account-demo@example-project.iam.gserviceaccount.com"
    );
    // The service-account key route: the assertion and the ID token stay in the process too.
    let config = examples().join("seed004-sa-key-to-aws.toml");
    assert_no_leak(
        &r,
        &[
            "token",
            "--config",
            config.to_str().unwrap(),
            "--route",
            "sa-key-to-aws",
            "--format",
            "json",
        ],
        &["SecretAccessKey", "SessionToken"],
    )
    .await;
}

/// Asserts that no secret of `secrets` (name, value) appears in `log`, whole or in part.
fn assert_absent(log: &str, secrets: &[(&str, &str)]) {
    for (name, secret) in secrets {
        assert!(secret.len() >= 16, "{name} is too short to search for");
        let head: String = secret.chars().take(16).collect();
        let tail: String = secret.chars().skip(secret.chars().count() - 16).collect();
        assert!(
            !log.contains(secret) && !log.contains(&head) && !log.contains(&tail),
            "{name} reached the daemon's log"
        );
    }
}

/// The daemon at trace level: every credential it hands out, the ECS token and the IMDS session
/// token stay out of its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_logs_no_credential_it_serves() {
    let r = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("serve.env");
    let log_path = dir.path().join("serve.log");
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(["serve", "--config"])
        .arg(examples().join("serve.toml"))
        .arg("--env-file")
        .arg(&env_file)
        .envs(r.env_pairs())
        .env("IDBRIDGE_LOG", "trace")
        .env("NO_COLOR", "1")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // A file, not a pipe: trace output would fill a pipe nobody reads until the end.
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !env_file.exists() {
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "idbridge serve exited:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "idbridge serve did not write its env file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let settings: std::collections::BTreeMap<String, String> = std::fs::read_to_string(&env_file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let http = reqwest::Client::new();
    let get_json = |req: reqwest::RequestBuilder| async move {
        let resp = req.send().await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let text = resp.text().await.unwrap();
        serde_json::from_str::<Value>(&text).unwrap()
    };

    let gce = format!(
        "http://{}/computeMetadata/v1/instance/service-accounts/default",
        settings["GCE_METADATA_HOST"]
    );
    let access = get_json(
        http.get(format!("{gce}/token"))
            .header("Metadata-Flavor", "Google"),
    )
    .await;
    let id_token = http
        .get(format!("{gce}/identity?audience=https://leak-test.example"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(id_token.starts_with("eyJ"), "{id_token}");

    let imds = settings["AWS_EC2_METADATA_SERVICE_ENDPOINT"].trim_end_matches('/');
    let session = http
        .put(format!("{imds}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "300")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let role = http
        .get(format!("{imds}/latest/meta-data/iam/security-credentials/"))
        .header("x-aws-ec2-metadata-token", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let instance = get_json(
        http.get(format!(
            "{imds}/latest/meta-data/iam/security-credentials/{role}"
        ))
        .header("x-aws-ec2-metadata-token", &session),
    )
    .await;

    let ecs_token = &settings["AWS_CONTAINER_AUTHORIZATION_TOKEN"];
    let container = get_json(
        http.get(&settings["AWS_CONTAINER_CREDENTIALS_FULL_URI"])
            .header("Authorization", ecs_token),
    )
    .await;
    // A refused ECS token is logged as refused, and not repeated.
    let wrong = format!("{ecs_token}-but-wrong");
    let refused = http
        .get(&settings["AWS_CONTAINER_CREDENTIALS_FULL_URI"])
        .header("Authorization", &wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);

    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("TRACE"), "no trace output:\n{log}");
    assert!(log.contains("refused"), "{log}");
    let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_owned();
    assert_absent(
        &log,
        &[
            ("the GCE access token", &s(&access, "access_token")),
            ("the GCE ID token", &id_token),
            ("the IMDS session token", &session),
            ("the IMDS SecretAccessKey", &s(&instance, "SecretAccessKey")),
            (
                "the IMDS session credentials' Token",
                &s(&instance, "Token"),
            ),
            ("the ECS SecretAccessKey", &s(&container, "SecretAccessKey")),
            ("the ECS Token", &s(&container, "Token")),
            ("the ECS authorization token", ecs_token),
            ("a wrong ECS authorization token", &wrong),
        ],
    );
}
