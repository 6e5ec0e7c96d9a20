#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration test helpers fail loudly"
)]
//! `explain --entra`, `doctor` on an `entra` hop and `setup --format az-cli|terraform` against
//! the in-process emulator.
//!
//! The round trip: with the app's federated credential for the route's token removed, the
//! route fails with AADSTS700213; the credential `setup` writes, put back into the world, lets
//! it succeed. A credential with a changed subject fails with AADSTS700213, and `explain` and
//! `doctor` name the subject and print the `az` command that adds the right credential.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use idbridge_broker::{Config, Context, Route};
use idbridge_core::Credential;
use idbridge_core::env::MapEnv;
use idbridge_emulator::world::BUILTIN_TOML;
use idbridge_emulator::{Running, World};
use serde_json::Value;

const CALLER: &str = "c1111111-0000-4000-8000-000000000011";
const PSOXY_CREDENTIAL: &str = "[[entra_app.federated_credential]]\nname = \"gcp-vm-psoxy-tenant\"\nissuer = \"https://accounts.google.com\"\nsubject = \"112233445566778899001\"\n";
const TENANT: &str = "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";

async fn emulator_with(world_toml: &str) -> Running {
    emulator_of(World::from_str_at(world_toml, "<test world>", None).unwrap()).await
}

/// Runs the idbridge binary with the emulator's environment: (exit code, stdout, stderr).
async fn idbridge(running: &Running, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(args)
        .envs(running.env_pairs())
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The built-in world with the psoxy-tenant credential replaced by `credential`.
fn world_with(credential: &str) -> String {
    assert!(BUILTIN_TOML.contains(PSOXY_CREDENTIAL));
    BUILTIN_TOML.replace(PSOXY_CREDENTIAL, credential)
}

fn gcp_to_azure() -> String {
    examples()
        .join("gcp-to-azure.toml")
        .to_str()
        .unwrap()
        .to_owned()
}

/// The Google ID token the route hands the entra hop (its source alone).
async fn source_token(running: &Running, dir: &Path) -> PathBuf {
    let cfg = write(
        dir,
        "source.toml",
        "[[route]]\nname = \"src\"\nsource = { kind = \"gce-metadata\", audience = \"api://AzureADTokenExchange\" }\n",
    );
    let config = Config::load(&cfg).unwrap();
    let env: BTreeMap<String, String> = running.env_pairs().into_iter().collect();
    let ctx = Context::new(
        Arc::new(MapEnv(env)),
        idbridge_core::clock::system(),
        &Default::default(),
    )
    .unwrap();
    let out = Route::new(config.route("src").unwrap().clone())
        .run(&ctx)
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let Credential::IdToken(t) = out.credential else {
        panic!("not an ID token");
    };
    write(dir, "token.jwt", t.token.expose_secret())
}

/// Light structural checks of generated HCL: balanced braces and quotes, `key = value`
/// attribute lines, and `terraform fmt` when terraform is installed.
fn check_hcl(hcl: &str) {
    let mut depth = 0i32;
    for line in hcl.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        assert_eq!(
            line.matches('"').count() % 2,
            0,
            "unbalanced quotes: {line}"
        );
        if line.ends_with('{') {
            assert!(
                line.starts_with("resource \"") || line.starts_with("data \""),
                "{line}"
            );
            depth += 1;
        } else if line == "}" {
            depth -= 1;
        } else {
            assert!(
                depth > 0 && line.contains(" = "),
                "not an attribute: {line}"
            );
        }
        assert!(depth >= 0, "{hcl}");
    }
    assert_eq!(depth, 0, "{hcl}");
    if let Ok(out) = std::process::Command::new("terraform")
        .args(["fmt", "-check", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(hcl.as_bytes())?;
            child.wait_with_output()
        })
    {
        assert!(
            out.status.success(),
            "terraform fmt -check: {}{}\n{hcl}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_writes_the_missing_credential_and_it_lets_the_route_through() {
    let dir = tempfile::tempdir().unwrap();
    let removed = emulator_with(&world_with("")).await;
    let (code, out, _) = idbridge(
        &removed,
        &[
            "doctor",
            "--config",
            &gcp_to_azure(),
            "--route",
            "gcp-to-azure",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    let d = &json(&out)["diagnosis"];
    // Another credential of the app has the issuer (gcp-myapp), not the subject.
    assert_eq!(d["code"], "AADSTS700213", "{d}");
    assert!(
        d["fix"][0]
            .as_str()
            .unwrap()
            .contains("112233445566778899001"),
        "{d}"
    );

    let (code, az, err) = idbridge(
        &removed,
        &[
            "setup",
            "--config",
            &gcp_to_azure(),
            "--route",
            "gcp-to-azure",
            "--format",
            "az-cli",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let command = az
        .lines()
        .find(|l| l.starts_with("az ad app federated-credential create"))
        .unwrap_or_else(|| panic!("{az}"));
    let rest = command
        .strip_prefix(&format!(
            "az ad app federated-credential create --id {CALLER} --parameters '"
        ))
        .and_then(|r| r.strip_suffix('\''))
        .unwrap_or_else(|| panic!("{command}"));
    let parameters = json(rest);
    assert_eq!(parameters["issuer"], "https://accounts.google.com");
    assert_eq!(parameters["subject"], "112233445566778899001");
    assert_eq!(
        parameters["audiences"],
        serde_json::json!(["api://AzureADTokenExchange"])
    );
    assert!(az.contains(&format!("# Tenant {TENANT}")), "{az}");

    // The generated credential, in the world: the route succeeds.
    let fragment = format!(
        "[[entra_app.federated_credential]]\nname = {}\nissuer = {}\nsubject = {}\naudiences = {}\n",
        parameters["name"], parameters["issuer"], parameters["subject"], parameters["audiences"]
    );
    removed.shutdown().await;
    let fixed = emulator_with(&world_with(&fragment)).await;
    let (code, out, err) = idbridge(
        &fixed,
        &[
            "doctor",
            "--config",
            &gcp_to_azure(),
            "--route",
            "gcp-to-azure",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");

    // Terraform: the azuread resource for an app, azurerm for a managed identity.
    let (code, tf, err) = idbridge(
        &fixed,
        &[
            "setup",
            "--config",
            &gcp_to_azure(),
            "--route",
            "gcp-to-azure",
            "--format",
            "terraform",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    for needle in [
        "data \"azuread_application\"",
        &format!("client_id = \"{CALLER}\""),
        "resource \"azuread_application_federated_identity_credential\"",
        "application_id = data.azuread_application.",
        "audiences      = [\"api://AzureADTokenExchange\"]",
        "issuer         = \"https://accounts.google.com\"",
        "subject        = \"112233445566778899001\"",
    ] {
        assert!(tf.contains(needle), "{needle}: {tf}");
    }
    check_hcl(&tf);
    let identity = "/subscriptions/0f1e2d3c-4b5a-4968-8776-655443322110/resourceGroups/idbridge-demo/providers/Microsoft.ManagedIdentity/userAssignedIdentities/worker-identity";
    let (code, tf, err) = idbridge(
        &fixed,
        &[
            "setup",
            "--config",
            &gcp_to_azure(),
            "--route",
            "gcp-to-azure",
            "--format",
            "terraform",
            "--managed-identity",
            identity,
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        tf.contains("resource \"azurerm_federated_identity_credential\""),
        "{tf}"
    );
    assert!(
        tf.contains(&format!("user_assigned_identity_id = \"{identity}\"")),
        "{tf}"
    );
    check_hcl(&tf);
    let (code, az, err) = idbridge(
        &fixed,
        &[
            "setup",
            "--config",
            &gcp_to_azure(),
            "--route",
            "gcp-to-azure",
            "--format",
            "az-cli",
            "--managed-identity",
            identity,
            "--offline",
            "--issuer",
            "https://accounts.google.com",
            "--subject",
            "112233445566778899001",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        az.contains("az identity federated-credential create --name idbridge-accounts-google-com --identity-name worker-identity --resource-group idbridge-demo --issuer https://accounts.google.com --subject 112233445566778899001 --audiences api://AzureADTokenExchange"),
        "{az}"
    );
    // No entra hop: nothing for az.
    let seed002 = examples().join("seed002-impersonate-to-aws.toml");
    let (code, _, err) = idbridge(
        &fixed,
        &[
            "setup",
            "--config",
            seed002.to_str().unwrap(),
            "--route",
            "myapp-to-aws",
            "--format",
            "az-cli",
        ],
    )
    .await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("needs nothing on Azure"), "{err}");
    fixed.shutdown().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_and_doctor_name_the_subject_that_differs() {
    let dir = tempfile::tempdir().unwrap();
    let changed = PSOXY_CREDENTIAL.replace("112233445566778899001", "112233445566778899009");
    let world_text = world_with(&changed);
    let world = write(dir.path(), "world.toml", &world_text);
    let r = emulator_with(&world_text).await;
    let token = source_token(&r, dir.path()).await;
    let token_arg = format!("@{}", token.display());

    // Several apps have credentials: --client-id picks one.
    let (code, _, err) = idbridge(
        &r,
        &[
            "explain",
            "--entra",
            world.to_str().unwrap(),
            "--token",
            &token_arg,
        ],
    )
    .await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--client-id"), "{err}");

    let (code, out, err) = idbridge(
        &r,
        &[
            "explain",
            "--entra",
            world.to_str().unwrap(),
            "--client-id",
            CALLER,
            "--token",
            &token_arg,
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 2, "{out}{err}");
    let report = json(&out);
    assert_eq!(report["decision"], "deny");
    assert_eq!(report["code"], 700213, "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS700213: No matching federated identity record found for presented assertion subject '112233445566778899001'"),
        "{report}"
    );
    let psoxy = report["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "gcp-vm-psoxy-tenant")
        .unwrap();
    let fields: Vec<(&str, bool)> = psoxy["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["field"].as_str().unwrap(), f["result"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        fields,
        [("issuer", true), ("subject", false), ("audience", true)]
    );
    let fix = report["fix"].as_str().unwrap();
    assert!(
        fix.starts_with(&format!(
            "az ad app federated-credential create --id {CALLER} --parameters '{{"
        )) && fix.contains("\"subject\":\"112233445566778899001\""),
        "{fix}"
    );

    // The table.
    let (code, out, _) = idbridge(
        &r,
        &[
            "explain",
            "--entra",
            world.to_str().unwrap(),
            "--client-id",
            CALLER,
            "--token",
            &token_arg,
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(
        out.contains("credential gcp-vm-psoxy-tenant: not matched"),
        "{out}"
    );
    assert!(
        out.contains(
            "FAIL    subject   token 112233445566778899001   credential 112233445566778899009"
        ),
        "{out}"
    );
    assert!(out.contains("decision: DENY (AADSTS700213"), "{out}");

    // An app file with the right credential: allowed, the credential named.
    let app = write(
        dir.path(),
        "app.toml",
        &format!(
            "client_id = \"{CALLER}\"\ndisplay_name = \"multicloud-caller\"\n{}",
            PSOXY_CREDENTIAL.replace("[[entra_app.", "[[")
        ),
    );
    let (code, out, err) = idbridge(
        &r,
        &[
            "explain",
            "--entra",
            app.to_str().unwrap(),
            "--token",
            &token_arg,
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["matched"], "gcp-vm-psoxy-tenant");

    // doctor: the same refusal from the emulator, the same comparison and command.
    let (code, out, _) = idbridge(
        &r,
        &[
            "doctor",
            "--config",
            &gcp_to_azure(),
            "--route",
            "gcp-to-azure",
            "--entra",
            world.to_str().unwrap(),
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    let d = &json(&out)["diagnosis"];
    assert_eq!(d["code"], "AADSTS700213", "{d}");
    assert_eq!(d["evaluation"]["code"], 700213, "{d}");
    let text = d.to_string();
    assert!(
        text.contains("credential gcp-vm-psoxy-tenant: subject is 112233445566778899001 in the token, 112233445566778899009 in the credential"),
        "{text}"
    );
    assert!(
        d["commands"][0].as_str().unwrap().starts_with(&format!(
            "az ad app federated-credential create --id {CALLER}"
        )),
        "{d}"
    );
    // Without --entra: cause and fix from the code and the token alone.
    let (code, out, _) = idbridge(
        &r,
        &[
            "doctor",
            "--config",
            &gcp_to_azure(),
            "--route",
            "gcp-to-azure",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the token's sub is 112233445566778899001"),
        "{out}"
    );
    assert!(
        out.contains("az ad app federated-credential create"),
        "{out}"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_for_an_entra_token_going_to_aws_and_google() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = format!("https://sts.windows.net/{TENANT}/");
    let cfg = write(
        dir.path(),
        "r.toml",
        "[[route]]\nname = \"azure-to-aws\"\nsource = { kind = \"oidc-file\", path = \"mi.jwt\" }\nexchange = [{ kind = \"aws-sts\", role_arn = \"arn:aws:iam::111122223333:role/azure-workload\" }]\n\n[[route]]\nname = \"azure-to-gcp\"\nsource = { kind = \"oidc-file\", path = \"mi.jwt\" }\nexchange = [{ kind = \"google-sts\", audience = \"//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/azure-pool/providers/entra\" }]\n",
    );
    let r = emulator().await;
    let flags = [
        "--offline",
        "--issuer",
        &issuer,
        "--subject",
        "d1111111-0000-4000-8000-0000000000c1",
        "--audience",
        "api://idbridge-aws",
    ];
    let run = |route: &'static str, format: &'static str| {
        let mut args = vec![
            "setup",
            "--config",
            cfg.to_str().unwrap(),
            "--route",
            route,
            "--format",
            format,
        ];
        args.extend(flags);
        let r = &r;
        async move { idbridge(r, &args).await }
    };
    let (code, out, err) = run("azure-to-aws", "aws-json").await;
    assert_eq!(code, 0, "{err}");
    let policy = json(&out);
    let statement = &policy["Statement"][0];
    assert_eq!(
        statement["Principal"]["Federated"],
        format!("arn:aws:iam::111122223333:oidc-provider/sts.windows.net/{TENANT}")
    );
    let equals = &statement["Condition"]["StringEquals"];
    assert_eq!(
        equals[format!("sts.windows.net/{TENANT}:aud")],
        "api://idbridge-aws"
    );
    assert_eq!(
        equals[format!("sts.windows.net/{TENANT}:sub")],
        "d1111111-0000-4000-8000-0000000000c1"
    );
    assert!(
        err.contains(&format!("trusts Entra tenant {TENANT}")),
        "{err}"
    );
    let (code, out, err) = run("azure-to-aws", "aws-cli").await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("--url {issuer}"))
            && out.contains("--client-id-list api://idbridge-aws"),
        "{out}"
    );
    let (code, out, err) = run("azure-to-gcp", "gcloud").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("--issuer-uri={issuer}")), "{out}");
    assert!(
        out.contains("--allowed-audiences=api://idbridge-aws"),
        "{out}"
    );
    assert!(err.contains("trusts Entra tenant"), "{err}");
    r.shutdown().await;
}
