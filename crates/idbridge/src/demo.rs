//! `idbridge demo`: every seed flow against the built-in emulator, hop by hop.
//!
//! The emulator runs in-process on loopback ports; the flows are the configs in `examples/`
//! (compiled in), so the demo proves the examples work. A flow that is expected to be refused
//! passes when the cloud refuses it with the expected code: seed 002's naive trust policy
//! (AWS's `AccessDenied`), a delegation chain with a missing link (Google's
//! `PERMISSION_DENIED`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use idbridge_broker::proof;
use idbridge_broker::{Config, Context, HopReport, Route};
use idbridge_core::Credential;
use idbridge_core::env::MapEnv;
use idbridge_emulator::{Emulator, Ports, World};

use crate::cli::DemoArgs;
use crate::commands::CliError;

struct Flow {
    seed: &'static str,
    title: &'static str,
    file: &'static str,
    config: &'static str,
    route: &'static str,
    expect_code: Option<&'static str>,
}

const FLOWS: &[Flow] = &[
    Flow {
        seed: "000",
        title: "GCE VM account → AWS role (numeric-id audience)",
        file: "seed000-gce-to-aws.toml",
        config: include_str!("../../../examples/seed000-gce-to-aws.toml"),
        route: "tenant-to-aws",
        expect_code: None,
    },
    Flow {
        seed: "001",
        title: "EC2 instance role → Google STS → impersonate aws-service-account-demo",
        file: "seed001-aws-to-gcp.toml",
        config: include_str!("../../../examples/seed001-aws-to-gcp.toml"),
        route: "ec2-to-gcp",
        expect_code: None,
    },
    Flow {
        seed: "001",
        title: "ECS task role other-app: refused by the attribute condition",
        file: "seed001-aws-to-gcp.toml",
        config: include_str!("../../../examples/seed001-aws-to-gcp.toml"),
        route: "ecs-to-gcp",
        expect_code: Some("unauthorized_client"),
    },
    Flow {
        seed: "002",
        title: "impersonated ID token → AWS role (aud = azp, oaud = audience)",
        file: "seed002-impersonate-to-aws.toml",
        config: include_str!("../../../examples/seed002-impersonate-to-aws.toml"),
        route: "myapp-to-aws",
        expect_code: None,
    },
    Flow {
        seed: "002",
        title: "the trap: audience written into accounts.google.com:aud",
        file: "seed002-impersonate-to-aws.toml",
        config: include_str!("../../../examples/seed002-impersonate-to-aws.toml"),
        route: "myapp-to-aws-naive",
        expect_code: Some("AccessDenied"),
    },
    Flow {
        seed: "004",
        title: "service-account key → OAuth2 ID token → AWS role (oaud + Null)",
        file: "seed004-sa-key-to-aws.toml",
        config: include_str!("../../../examples/seed004-sa-key-to-aws.toml"),
        route: "sa-key-to-aws",
        expect_code: None,
    },
    Flow {
        seed: "003",
        title: "SPIFFE JWT-SVID → Google STS → impersonate spiffe-demo",
        file: "seed003-spiffe-to-gcp.toml",
        config: include_str!("../../../examples/seed003-spiffe-to-gcp.toml"),
        route: "spiffe-to-gcp",
        expect_code: None,
    },
    Flow {
        seed: "k8s",
        title: "projected token file → AWS role (generic OIDC provider)",
        file: "k8s-oidc-file-to-aws.toml",
        config: include_str!("../../../examples/k8s-oidc-file-to-aws.toml"),
        route: "k8s-to-aws",
        expect_code: None,
    },
    Flow {
        seed: "chain",
        title: "GCE VM account → AWS role → chained role chained-reader (external id)",
        file: "gcp-to-aws-chained.toml",
        config: include_str!("../../../examples/gcp-to-aws-chained.toml"),
        route: "gcp-to-chained",
        expect_code: None,
    },
    Flow {
        seed: "x509",
        title: "SPIFFE X.509-SVID → IAM Roles Anywhere → role spiffe-billing",
        file: "spiffe-x509-to-aws.toml",
        config: include_str!("../../../examples/spiffe-x509-to-aws.toml"),
        route: "spiffe-x509-to-aws",
        expect_code: None,
    },
    Flow {
        seed: "jwt",
        title: "EC2 instance role → AWS web identity token → Google STS (no SigV4 subject)",
        file: "ec2-aws-jwt-to-gcp.toml",
        config: include_str!("../../../examples/ec2-aws-jwt-to-gcp.toml"),
        route: "ec2-jwt-to-gcp",
        expect_code: None,
    },
    Flow {
        seed: "azure",
        title: "GCE VM account → Entra ID (federated credential) → billing-api token",
        file: "gcp-to-azure.toml",
        config: include_str!("../../../examples/gcp-to-azure.toml"),
        route: "gcp-to-azure",
        expect_code: None,
    },
    Flow {
        seed: "azure",
        title: "Kubernetes projected token → Entra ID (managed identity worker-identity)",
        file: "k8s-to-azure.toml",
        config: include_str!("../../../examples/k8s-to-azure.toml"),
        route: "k8s-to-azure",
        expect_code: None,
    },
    Flow {
        seed: "azure",
        title: "SPIFFE JWT-SVID → Entra ID (app spiffe-billing)",
        file: "spiffe-to-azure.toml",
        config: include_str!("../../../examples/spiffe-to-azure.toml"),
        route: "spiffe-to-azure",
        expect_code: None,
    },
    Flow {
        seed: "azure",
        title: "Azure VM managed identity → AWS role (OIDC provider sts.windows.net/{tid}/)",
        file: "azure-vm-to-aws.toml",
        config: include_str!("../../../examples/azure-vm-to-aws.toml"),
        route: "azure-vm-to-aws",
        expect_code: None,
    },
    Flow {
        seed: "azure",
        title: "Azure VM managed identity → Google STS → impersonate azure-demo",
        file: "azure-vm-to-gcp.toml",
        config: include_str!("../../../examples/azure-vm-to-gcp.toml"),
        route: "azure-vm-to-gcp",
        expect_code: None,
    },
    Flow {
        seed: "deleg",
        title: "GCE VM account → deploy-hop → deploy-target (IAM Credentials delegates)",
        file: "gcp-delegation-chain.toml",
        config: include_str!("../../../examples/gcp-delegation-chain.toml"),
        route: "gcp-delegation-chain",
        expect_code: None,
    },
    Flow {
        seed: "deleg",
        title: "a missing link: deploy-hop holds no grant on deploy-locked",
        file: "gcp-delegation-chain.toml",
        config: include_str!("../../../examples/gcp-delegation-chain.toml"),
        route: "gcp-delegation-missing-link",
        expect_code: Some("PERMISSION_DENIED"),
    },
    Flow {
        seed: "azure",
        title: "EC2 instance role → AWS web identity token → Entra ID (federated credential on the AWS issuer)",
        file: "aws-to-azure.toml",
        config: include_str!("../../../examples/aws-to-azure.toml"),
        route: "aws-to-azure",
        expect_code: None,
    },
];

const SEED004_KEY: &str = include_str!("../../../examples/keys/seed004-sa-key.json");
const K8S_ISSUER: &str = "https://kubernetes.idbridge.test";

pub(crate) async fn run(a: DemoArgs) -> Result<ExitCode, CliError> {
    let mut world = World::builtin().map_err(|e| CliError::Failed(e.to_string()))?;
    // The AWS account's outbound identity federation on, as
    // `aws iam enable-outbound-web-identity-federation` leaves it.
    for account in &mut world.aws_accounts {
        account.outbound_federation_enabled |= account.outbound_issuer.is_some();
    }
    let emulator = Emulator::new(world, idbridge_core::clock::system())
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let running =
        idbridge_emulator::serve(emulator.clone(), [127, 0, 0, 1].into(), Ports::default())
            .await
            .map_err(|e| CliError::Failed(format!("demo: cannot start the emulator: {e}")))?;
    let dir = tempfile::tempdir().map_err(|e| CliError::Failed(format!("demo: temp dir: {e}")))?;
    prepare_files(dir.path(), &emulator)?;
    // Entra over its plain-HTTP listener: the demo's HTTP client trusts only the platform's
    // roots, not the emulator's CA.
    let entra_http = format!("http://{}", running.entra_http);
    let env = Arc::new(MapEnv(
        running
            .env_pairs()
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "AZURE_AUTHORITY_HOST" => (k, entra_http.clone()),
                _ => (k, v),
            })
            .collect(),
    ));

    let mut all_ok = true;
    let mut json_flows = Vec::new();
    if !a.json {
        println!(
            "idbridge demo — built-in emulator: AWS STS http://{}, Google http://{}, metadata http://{}\n",
            running.aws_sts, running.google, running.metadata
        );
    }
    for flow in FLOWS {
        let (ok, hops, outcome) = run_flow(flow, dir.path(), env.clone()).await;
        all_ok &= ok;
        if a.json {
            json_flows.push(serde_json::json!({
                "seed": flow.seed, "title": flow.title, "config": format!("examples/{}", flow.file),
                "route": flow.route, "ok": ok, "outcome": outcome,
                "hops": hops.iter().map(|h| serde_json::json!({
                    "hop": h.hop, "endpoint": h.endpoint, "identity": h.identity,
                    "expires_at": h.expires_at.map(idbridge_core::timefmt::rfc3339_seconds),
                    "millis": h.elapsed.as_millis() as u64,
                })).collect::<Vec<_>>(),
            }));
        } else {
            print_flow(flow, ok, &hops, &outcome);
        }
    }
    if a.json {
        println!("{}", serde_json::json!({"ok": all_ok, "flows": json_flows}));
    } else {
        let passed = FLOWS.len();
        println!(
            "{}",
            if all_ok {
                format!("all {passed} flows passed")
            } else {
                "some flows FAILED".to_owned()
            }
        );
    }
    running.shutdown().await;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn prepare_files(dir: &std::path::Path, emulator: &Emulator) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::Failed(format!("demo: writing temp files: {e}"));
    std::fs::create_dir_all(dir.join("keys")).map_err(fail)?;
    std::fs::write(dir.join("keys/seed004-sa-key.json"), SEED004_KEY).map_err(fail)?;
    let key = emulator.issuer_keys.get(K8S_ISSUER).ok_or_else(|| {
        CliError::Failed("demo: the built-in world lacks the Kubernetes issuer".into())
    })?;
    let now = emulator.clock.unix();
    let token = key
        .sign(&serde_json::json!({
            "iss": K8S_ISSUER, "sub": "system:serviceaccount:default:my-app",
            "aud": ["sts.amazonaws.com"], "iat": now, "nbf": now, "exp": now + 3600,
            "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "my-app"}},
        }))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    std::fs::write(dir.join("k8s-token.jwt"), token).map_err(fail)?;
    // AKS workload identity's projection: audience api://AzureADTokenExchange.
    let token = key
        .sign(&serde_json::json!({
            "iss": K8S_ISSUER, "sub": "system:serviceaccount:default:worker",
            "aud": ["api://AzureADTokenExchange"], "iat": now, "nbf": now, "exp": now + 3600,
            "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "worker"}},
        }))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    std::fs::write(dir.join("k8s-azure-token.jwt"), token).map_err(fail)?;
    Ok(())
}

async fn run_flow(
    flow: &Flow,
    dir: &std::path::Path,
    env: Arc<MapEnv>,
) -> (bool, Vec<HopReport>, String) {
    let config = match Config::parse(flow.config, flow.file, Some(dir)) {
        Ok(c) => c,
        Err(e) => return (false, Vec::new(), e.to_string()),
    };
    let route = match config.route(flow.route) {
        Ok(r) => Route::new(r.clone()),
        Err(e) => return (false, Vec::new(), e.to_string()),
    };
    let ctx = match Context::new(env, idbridge_core::clock::system(), &config.endpoints) {
        Ok(c) => c,
        Err(e) => return (false, Vec::new(), e.to_string()),
    };
    match route.run(&ctx).await {
        Ok(mut out) => {
            if flow.expect_code.is_some() {
                return (
                    false,
                    out.hops,
                    "expected a refusal, but the flow succeeded".into(),
                );
            }
            let proof = match &out.credential {
                Credential::Aws(c) => Some(proof::get_caller_identity(&ctx, c, None).await),
                Credential::GoogleAccessToken(t) => Some(proof::tokeninfo(&ctx, t).await),
                Credential::AzureAccessToken(t) => Some(proof::entra_token(&ctx, t).await),
                _ => None,
            };
            match proof {
                Some(Ok(h)) => out.hops.push(h),
                Some(Err(e)) => return (false, out.hops, e.to_string()),
                None => {}
            }
            (true, out.hops, "ok".into())
        }
        Err((e, hops)) => match flow.expect_code {
            Some(code) if e.code.as_deref() == Some(code) => {
                (true, hops, format!("refused as expected: {e}"))
            }
            _ => (false, hops, e.to_string()),
        },
    }
}

fn print_flow(flow: &Flow, ok: bool, hops: &[HopReport], outcome: &str) {
    let mark = if ok { "PASS" } else { "FAIL" };
    println!(
        "[{mark}] seed {} — {}   (examples/{}, route {})",
        flow.seed, flow.title, flow.file, flow.route
    );
    let rows: Vec<[String; 5]> = hops
        .iter()
        .map(|h| {
            [
                h.hop.to_string(),
                shorten(&h.endpoint, 64),
                h.identity.clone(),
                h.expires_at
                    .map(idbridge_core::timefmt::rfc3339_seconds)
                    .unwrap_or_else(|| "-".into()),
                format_ms(h.elapsed),
            ]
        })
        .collect();
    let header = ["hop", "endpoint", "identity obtained", "expires", "time"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |r: &[String; 5]| {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("    {}", cells.join("  "));
    };
    line(&header);
    for r in &rows {
        line(r);
    }
    if !ok || outcome != "ok" {
        println!("    → {outcome}");
    }
    println!();
}

fn format_ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Keeps the start and end of a long endpoint (`http://127.0.0.1:4002/v1/proj…:generateIdToken`).
fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_owned();
    }
    let head: String = s.chars().take(max / 2).collect();
    let tail: String = s.chars().skip(n - (max / 2 - 1)).collect();
    format!("{head}…{tail}")
}
