#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers fail loudly"
)]
//! `idbridge demo`: every flow of the table passes against the built-in emulator, the Azure
//! flows included, each with its proof hop.

use std::process::Command;

#[test]
fn every_demo_flow_passes_with_its_proof() {
    let out = Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(["demo", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let flows = report["flows"].as_array().unwrap();
    for f in flows {
        assert_eq!(f["ok"], true, "{f}");
    }
    assert_eq!(report["ok"], true);
    assert!(out.status.success());
    let last_hop = |route: &str| -> String {
        let f = flows
            .iter()
            .find(|f| f["route"] == route)
            .unwrap_or_else(|| panic!("no flow runs route {route}"));
        f["hops"].as_array().unwrap().last().unwrap()["hop"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for (route, proof) in [
        ("gcp-to-azure", "entra keys"),
        ("k8s-to-azure", "entra keys"),
        ("spiffe-to-azure", "entra keys"),
        ("azure-vm-to-aws", "aws-sts GetCallerIdentity"),
        ("azure-vm-to-gcp", "google tokeninfo"),
    ] {
        assert_eq!(last_hop(route), proof, "{route}");
    }
    // Nothing secret in the report.
    assert!(!stdout.contains("eyJ"), "a JWT in the demo's output");
}
