//! `idbridge demo --json`: every flow of the demo passes against the built-in emulator, the
//! expected refusals included, each ending with its proof hop, and no flow prints a token.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::process::Command;

use serde_json::Value;

#[test]
fn every_demo_flow_passes() {
    let out = Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(["demo", "--json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("demo --json printed no JSON ({e}):\n{stdout}\n{stderr}"));
    let flows = doc["flows"].as_array().unwrap();
    let failed: Vec<&Value> = flows.iter().filter(|f| f["ok"] != true).collect();
    assert!(failed.is_empty(), "failed flows: {failed:#?}\n{stderr}");
    assert_eq!(doc["ok"], true, "{doc}");
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains("eyJ") && !stdout.contains("ya29."),
        "{stdout}"
    );

    let flow = |route: &str| {
        flows
            .iter()
            .find(|f| f["route"] == route)
            .unwrap_or_else(|| panic!("no flow for route {route}: {doc}"))
    };
    // The delegation chain: the VM's token, the impersonated token, tokeninfo's proof.
    let chain = flow("gcp-delegation-chain");
    assert_eq!(chain["outcome"], "ok", "{chain}");
    let hops: Vec<&str> = chain["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["identity"].as_str().unwrap())
        .collect();
    assert!(
        hops.iter()
            .any(|h| h.contains("deploy-target@gcp-project.iam.gserviceaccount.com")),
        "{chain}"
    );
    let refused = flow("gcp-delegation-missing-link");
    let outcome = refused["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("refused as expected")
            && outcome.contains("PERMISSION_DENIED")
            && outcome.contains("via deploy-hop@gcp-project.iam.gserviceaccount.com"),
        "{refused}"
    );
    // AWS → Azure: the AWS JWT, then Entra's token.
    let azure = flow("aws-to-azure");
    let hop_names: Vec<&str> = azure["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hop"].as_str().unwrap())
        .collect();
    assert!(hop_names.contains(&"entra"), "{azure}");
    // Each flow ends with its proof hop.
    let last_hop = |route: &str| -> String {
        flow(route)["hops"].as_array().unwrap().last().unwrap()["hop"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for (route, proof) in [
        ("aws-to-azure", "entra keys"),
        ("gcp-to-azure", "entra keys"),
        ("k8s-to-azure", "entra keys"),
        ("spiffe-to-azure", "entra keys"),
        ("azure-vm-to-aws", "aws-sts GetCallerIdentity"),
        ("azure-vm-to-gcp", "google tokeninfo"),
    ] {
        assert_eq!(last_hop(route), proof, "{route}");
    }
}
