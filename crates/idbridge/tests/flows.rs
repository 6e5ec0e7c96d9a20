#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers fail loudly"
)]
//! Every hop of every example route against the in-process emulator, and the failure modes
//! a user meets: refused roles, unreachable endpoints, unparsable answers, bad files.

mod common;
use common::*;

use std::sync::Arc;

use idbridge_broker::exchange::aws_sts;
use idbridge_broker::{Config, Context, ErrorKind, Route};
use idbridge_core::Credential;
use idbridge_core::env::MapEnv;
use idbridge_emulator::Running;

fn ctx(running: &Running, overrides: &[(&str, &str)]) -> Context {
    let mut env: std::collections::BTreeMap<String, String> =
        running.env_pairs().into_iter().collect();
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Context::new(
        Arc::new(MapEnv(env)),
        idbridge_core::clock::system(),
        &Default::default(),
    )
    .unwrap()
}

async fn run(
    running: &Running,
    file: &str,
    route: &str,
    overrides: &[(&str, &str)],
) -> Result<idbridge_broker::RouteOutput, idbridge_broker::BrokerError> {
    let config = Config::load(&examples().join(file)).unwrap();
    let route = Route::new(config.route(route).unwrap().clone());
    route
        .run(&ctx(running, overrides))
        .await
        .map_err(|(e, _)| e)
}

async fn assert_aws(
    running: &Running,
    out: &idbridge_broker::RouteOutput,
    role: &str,
    session: &str,
) {
    let Credential::Aws(c) = &out.credential else {
        panic!("expected AWS credentials, got {}", out.credential.kind());
    };
    assert!(c.access_key_id.starts_with("ASIA"), "{c:?}");
    let expected = format!("arn:aws:sts::111122223333:assumed-role/{role}/{session}");
    assert_eq!(c.arn.as_deref(), Some(expected.as_str()));
    let hop = aws_sts::get_caller_identity(&ctx(running, &[]), c, None)
        .await
        .unwrap();
    assert_eq!(hop.identity, format!("caller: {expected}"));
}

#[tokio::test]
async fn seed000_gce_metadata_to_aws() {
    let r = emulator().await;
    let out = run(&r, "seed000-gce-to-aws.toml", "tenant-to-aws", &[])
        .await
        .unwrap();
    assert_eq!(
        out.hops.iter().map(|h| h.hop.as_str()).collect::<Vec<_>>(),
        ["gce-metadata", "aws-sts"]
    );
    assert!(
        out.hops[0].identity.contains("sub=112233445566778899001"),
        "{:?}",
        out.hops[0]
    );
    assert_aws(&r, &out, "psoxy-tenant-access", "psoxy-tenant").await;
    assert_eq!(r.emulator.count("metadata.identity"), 1);
    assert_eq!(r.emulator.count("aws_sts.AssumeRoleWithWebIdentity"), 1);
}

#[tokio::test]
async fn seed002_impersonation_to_aws_and_the_trap() {
    let r = emulator().await;
    let out = run(&r, "seed002-impersonate-to-aws.toml", "myapp-to-aws", &[])
        .await
        .unwrap();
    assert_eq!(
        out.hops.iter().map(|h| h.hop.as_str()).collect::<Vec<_>>(),
        ["gce-metadata", "impersonate", "aws-sts"]
    );
    assert!(
        out.hops[1].identity.contains("aud=aws-trust-1"),
        "{:?}",
        out.hops[1]
    );
    assert_aws(&r, &out, "google-cloud-myapp", "myapp").await;

    let err = run(
        &r,
        "seed002-impersonate-to-aws.toml",
        "myapp-to-aws-naive",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code.as_deref(), Some("AccessDenied"), "{err}");
    assert_eq!(err.kind, ErrorKind::Rejected);
    assert_eq!(err.hop, "aws-sts");
}

#[tokio::test]
async fn seed004_service_account_key_to_aws() {
    let r = emulator().await;
    let out = run(&r, "seed004-sa-key-to-aws.toml", "sa-key-to-aws", &[])
        .await
        .unwrap();
    assert_eq!(
        out.hops.iter().map(|h| h.hop.as_str()).collect::<Vec<_>>(),
        ["service-account-key", "aws-sts"]
    );
    assert!(
        out.hops[0].identity.contains("sub=104729384756102938475"),
        "{:?}",
        out.hops[0]
    );
    assert_aws(&r, &out, "gcp-sa-key-caller", "sa-key-caller").await;
    assert_eq!(r.emulator.count("google.oauth2.token"), 1);
}

#[tokio::test]
async fn oidc_file_to_aws_rereads_the_file() {
    let r = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let mint = |sub: &str| {
        let key = &r.emulator.issuer_keys["https://kubernetes.idbridge.test"];
        let now = r.emulator.clock.unix();
        key.sign(&serde_json::json!({"iss": "https://kubernetes.idbridge.test", "sub": sub, "aud": ["sts.amazonaws.com"], "iat": now, "exp": now + 600}))
            .unwrap()
    };
    let token = dir.path().join("token");
    std::fs::write(&token, mint("system:serviceaccount:default:my-app")).unwrap();
    let text = format!(
        "[[route]]\nname = \"k\"\nsource = {{ kind = \"oidc-file\", path = \"{}\" }}\nexchange = [{{ kind = \"aws-sts\", role_arn = \"arn:aws:iam::111122223333:role/k8s-workload\", session_name = \"my-app\" }}]\n",
        token.display()
    );
    let config = Config::parse(&text, "k.toml", None).unwrap();
    let route = Route::new(config.routes[0].clone());
    let out = route.run(&ctx(&r, &[])).await.map_err(|(e, _)| e).unwrap();
    assert_aws(&r, &out, "k8s-workload", "my-app").await;
    // The kubelet rotates the file: a token for another account is read and refused.
    std::fs::write(&token, mint("system:serviceaccount:default:intruder")).unwrap();
    let (err, _) = route.run(&ctx(&r, &[])).await.unwrap_err();
    assert_eq!(err.code.as_deref(), Some("AccessDenied"), "{err}");
    std::fs::remove_file(&token).unwrap();
    let (err, _) = route.run(&ctx(&r, &[])).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Io, "{err}");
}

#[tokio::test]
async fn unreachable_endpoint_is_one_transient_line() {
    let r = emulator().await;
    let err = run(
        &r,
        "seed000-gce-to-aws.toml",
        "tenant-to-aws",
        &[("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1")],
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains("could not connect") && line.contains("127.0.0.1:1"),
        "{line}"
    );

    let err = run(
        &r,
        "seed000-gce-to-aws.toml",
        "tenant-to-aws",
        &[("GCE_METADATA_HOST", "127.0.0.1:1")],
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.kind, err.hop.as_str()),
        (ErrorKind::Transient, "gce-metadata"),
        "{err}"
    );
}

#[tokio::test]
async fn unparsable_answers_are_transient_errors() {
    let r = emulator().await;
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = garbage.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(|| async { ([("content-type", "text/xml")], "<<<this is not xml") });
    tokio::spawn(async move { axum::serve(garbage, app).await });
    let url = format!("http://{addr}");
    let err = run(
        &r,
        "seed000-gce-to-aws.toml",
        "tenant-to-aws",
        &[("AWS_ENDPOINT_URL_STS", &url)],
    )
    .await
    .unwrap_err();
    // A garbage 200 says nothing about whether asking again works: retried, not refused.
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(!err.to_string().contains("this is not xml"), "{err}");

    let err = run(
        &r,
        "seed004-sa-key-to-aws.toml",
        "sa-key-to-aws",
        &[("IDBRIDGE_GOOGLE_OAUTH2_URL", &format!("{url}/token"))],
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
}

#[tokio::test]
async fn bad_key_file_is_a_configuration_error() {
    let r = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.json"), r#"{"type":"authorized_user"}"#).unwrap();
    let text = "[[route]]\nname = \"k\"\nsource = { kind = \"service-account-key\", key_file = \"key.json\", target_audience = \"a\" }\n";
    let config = Config::parse(text, "k.toml", Some(dir.path())).unwrap();
    let (err, _) = Route::new(config.routes[0].clone())
        .run(&ctx(&r, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidConfiguration, "{err}");
}

#[tokio::test]
async fn seed001_aws_instance_role_to_gcp() {
    let r = emulator().await;
    let out = run(&r, "seed001-aws-to-gcp.toml", "ec2-to-gcp", &[])
        .await
        .unwrap();
    assert_eq!(
        out.hops.iter().map(|h| h.hop.as_str()).collect::<Vec<_>>(),
        ["aws", "google-sts", "impersonate"]
    );
    let Credential::GoogleAccessToken(t) = &out.credential else {
        panic!(
            "expected a Google access token, got {}",
            out.credential.kind()
        );
    };
    assert_eq!(
        t.principal.as_deref(),
        Some("aws-service-account-demo@example-project.iam.gserviceaccount.com")
    );
    let proof = idbridge_broker::source::impersonate::tokeninfo(&ctx(&r, &[]), t)
        .await
        .unwrap();
    assert_eq!(
        proof.identity,
        "token of aws-service-account-demo@example-project.iam.gserviceaccount.com"
    );
    assert_eq!(r.emulator.count("google.sts.token"), 1);
    // The ECS task role is refused by the provider's attribute condition.
    let err = run(&r, "seed001-aws-to-gcp.toml", "ecs-to-gcp", &[])
        .await
        .unwrap_err();
    assert_eq!(
        (err.hop.as_str(), err.code.as_deref()),
        ("google-sts", Some("unauthorized_client")),
        "{err}"
    );
}

#[tokio::test]
async fn seed003_spiffe_to_gcp() {
    let r = emulator().await;
    let out = run(&r, "seed003-spiffe-to-gcp.toml", "spiffe-to-gcp", &[])
        .await
        .unwrap();
    assert_eq!(
        out.hops.iter().map(|h| h.hop.as_str()).collect::<Vec<_>>(),
        ["spiffe", "google-sts", "impersonate"]
    );
    assert!(
        out.hops[0]
            .identity
            .contains("sub=spiffe://example.org/ns/prod/sa/billing"),
        "{:?}",
        out.hops[0]
    );
    let Credential::GoogleAccessToken(t) = &out.credential else {
        panic!("expected a Google access token");
    };
    assert_eq!(
        t.principal.as_deref(),
        Some("spiffe-demo@example-project.iam.gserviceaccount.com")
    );
}

#[tokio::test]
async fn aws_subject_token_verifies_at_the_emulated_sts() {
    // The subject token idbridge builds is accepted by Google STS (above) *and* its signature is
    // the one an independent SigV4 implementation computes: tests/peers checks it with botocore.
    let r = emulator().await;
    let out = run(&r, "seed001-aws-to-gcp.toml", "ec2-to-gcp", &[])
        .await
        .unwrap();
    assert!(
        out.hops[1]
            .identity
            .starts_with("federated access token for signed GetCallerIdentity of ASIA"),
        "{:?}",
        out.hops[1]
    );
}

#[tokio::test]
async fn external_account_file_as_a_route() {
    let r = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let env: std::collections::BTreeMap<String, String> = r.env_pairs().into_iter().collect();
    let ea = serde_json::json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/aws-pool/providers/aws-test-account",
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "token_url": "https://sts.googleapis.com/v1/token",
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/aws-service-account-demo@example-project.iam.gserviceaccount.com:generateAccessToken",
        "credential_source": {
            "environment_id": "aws1",
            "region_url": format!("{}latest/meta-data/placement/availability-zone", env["AWS_EC2_METADATA_SERVICE_ENDPOINT"]),
            "url": format!("{}latest/meta-data/iam/security-credentials", env["AWS_EC2_METADATA_SERVICE_ENDPOINT"]),
            "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
            "imdsv2_session_token_url": format!("{}latest/api/token", env["AWS_EC2_METADATA_SERVICE_ENDPOINT"]),
        },
    });
    std::fs::write(dir.path().join("ea.json"), ea.to_string()).unwrap();
    let config = Config::parse(
        "[[route]]\nname = \"ea\"\nexternal_account = \"ea.json\"\n",
        "ea.toml",
        Some(dir.path()),
    )
    .unwrap();
    let out = Route::new(config.routes[0].clone())
        .run(&ctx(&r, &[]))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(
        out.hops.iter().map(|h| h.hop.as_str()).collect::<Vec<_>>(),
        ["aws", "google-sts", "impersonate"]
    );
}

/// A one-route config of `source` alone.
fn source_only(source: &str) -> Route {
    let text = format!("[[route]]\nname = \"az\"\nsource = {source}\n");
    let config = Config::parse(&text, "az.toml", None).unwrap();
    Route::new(config.routes[0].clone())
}

#[tokio::test]
async fn azure_vm_to_aws_over_imds_and_app_service() {
    let r = emulator().await;
    // The env file sets IDENTITY_ENDPOINT + IDENTITY_HEADER: App Service, as azure-identity picks.
    let out = run(&r, "azure-vm-to-aws.toml", "azure-vm-to-aws", &[])
        .await
        .unwrap();
    assert!(
        out.hops[0].endpoint.ends_with("/msi/token"),
        "{:?}",
        out.hops[0]
    );
    assert_aws(&r, &out, "azure-vm-access", "azure-vm").await;
    // Without IDENTITY_HEADER: IMDS at AZURE_POD_IDENTITY_AUTHORITY_HOST.
    let out = run(
        &r,
        "azure-vm-to-aws.toml",
        "azure-vm-to-aws",
        &[("IDENTITY_HEADER", "")],
    )
    .await
    .unwrap();
    assert!(
        out.hops[0]
            .endpoint
            .ends_with("/metadata/identity/oauth2/token"),
        "{:?}",
        out.hops[0]
    );
    assert!(
        out.hops[0].identity.contains("(IMDS)")
            && out.hops[0].identity.contains("aud=api://idbridge-aws"),
        "{:?}",
        out.hops[0]
    );
    assert_aws(&r, &out, "azure-vm-access", "azure-vm").await;
    assert_eq!(r.emulator.count("azure.imds.token"), 1);
    assert_eq!(r.emulator.count("azure.app_service.token"), 1);
}

#[tokio::test]
async fn azure_managed_identity_selectors_and_refusals() {
    const WORKER_OID: &str = "d1111111-0000-4000-8000-0000000000c1";
    const WORKER_RES: &str = "/subscriptions/0f1e2d3c-4b5a-4968-8776-655443322110/resourceGroups/idbridge-demo/providers/Microsoft.ManagedIdentity/userAssignedIdentities/worker-identity";
    let r = emulator().await;
    let imds = [("IDENTITY_HEADER", "")];
    for (selector, env) in [
        (
            "client_id = \"d1111111-0000-4000-8000-000000000031\"",
            &imds[..],
        ),
        (&*format!("msi_res_id = \"{WORKER_RES}\""), &imds[..]),
        (&*format!("object_id = \"{WORKER_OID}\""), &[][..]),
        (&*format!("msi_res_id = \"{WORKER_RES}\""), &[][..]),
    ] {
        let route = source_only(&format!(
            "{{ kind = \"azure-managed-identity\", resource = \"api://idbridge-billing/.default\", {selector} }}"
        ));
        let out = route.run(&ctx(&r, env)).await.map_err(|(e, _)| e).unwrap();
        let Credential::IdToken(t) = &out.credential else {
            panic!("{}", out.credential.kind());
        };
        let claims = idbridge_core::jwt::UnverifiedJwt::parse(t.token.expose_secret()).unwrap();
        assert_eq!(claims.str_claim("sub"), Some(WORKER_OID), "{selector}");
        assert_eq!(claims.str_claim("aud"), Some("api://idbridge-billing"));
        assert!(!format!("{t:?}").contains(t.token.expose_secret()));
    }
    // A resource the tenant does not have: IMDS's invalid_resource (AADSTS500011).
    let route = source_only(
        r#"{ kind = "azure-managed-identity", resource = "api://nobody", protocol = "imds" }"#,
    );
    let (err, _) = route.run(&ctx(&r, &[])).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Rejected, "{err}");
    assert_eq!(err.code.as_deref(), Some("invalid_resource"), "{err}");
    assert!(err.message.contains("AADSTS500011"), "{err}");
    // A wrong App Service secret: 401, and the secret is not repeated.
    let route = source_only(
        r#"{ kind = "azure-managed-identity", resource = "api://idbridge-aws", identity_header = "not-the-secret" }"#,
    );
    let (err, _) = route.run(&ctx(&r, &[])).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Rejected, "{err}");
    assert!(err.message.contains("401"), "{err}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
    // No App Service endpoint anywhere.
    let route = source_only(
        r#"{ kind = "azure-managed-identity", resource = "api://idbridge-aws", protocol = "app-service" }"#,
    );
    let (err, _) = route
        .run(&ctx(&r, &[("IDENTITY_ENDPOINT", "")]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotConfigured, "{err}");
}

#[tokio::test]
async fn gcp_delegation_chain_and_its_missing_link() {
    let r = emulator().await;
    let file = "gcp-delegation-chain.toml";
    let out = run(&r, file, "gcp-delegation-chain", &[]).await.unwrap();
    let Credential::GoogleAccessToken(t) = &out.credential else {
        panic!(
            "expected a Google access token, got {}",
            out.credential.kind()
        );
    };
    assert_eq!(
        t.principal.as_deref(),
        Some("deploy-target@gcp-project.iam.gserviceaccount.com")
    );
    let owner = idbridge_broker::proof::tokeninfo(&ctx(&r, &[]), t)
        .await
        .unwrap();
    assert!(
        owner
            .identity
            .contains("deploy-target@gcp-project.iam.gserviceaccount.com"),
        "{owner:?}"
    );

    // The exchange form, the delegate by unique id, an ID token.
    let out = run(&r, file, "gcp-delegation-chain-id-token", &[])
        .await
        .unwrap();
    let Credential::IdToken(id) = &out.credential else {
        panic!("expected an ID token, got {}", out.credential.kind());
    };
    let claims = idbridge_core::jwt::UnverifiedJwt::parse(id.token.expose_secret())
        .unwrap()
        .claims;
    assert_eq!(claims["aud"], "https://deploy.example.com");
    assert_eq!(claims["sub"], "108273645019283746501");
    assert_eq!(
        claims["email"],
        "deploy-target@gcp-project.iam.gserviceaccount.com"
    );

    let err = run(&r, file, "gcp-delegation-missing-link", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code.as_deref(), Some("PERMISSION_DENIED"), "{err}");
    assert_eq!(err.kind, ErrorKind::Rejected);
    assert_eq!(err.hop, "impersonate");
    assert!(
        err.message
            .contains("via deploy-hop@gcp-project.iam.gserviceaccount.com"),
        "{err}"
    );
}

#[tokio::test]
async fn aws_outbound_jwt_to_entra() {
    let mut world = idbridge_emulator::World::builtin().unwrap();
    for account in &mut world.aws_accounts {
        account.outbound_federation_enabled = true;
    }
    let r = emulator_of(world).await;
    let env: std::collections::BTreeMap<String, String> = r.env_pairs().into_iter().collect();
    let http = env["IDBRIDGE_EMULATOR_ENTRA_HTTP_URL"].clone();
    let out = run(
        &r,
        "aws-to-azure.toml",
        "aws-to-azure",
        &[("AZURE_AUTHORITY_HOST", &http)],
    )
    .await
    .unwrap();
    assert_eq!(
        out.hops.iter().map(|h| h.hop.as_str()).collect::<Vec<_>>(),
        ["aws", "aws-sts", "entra"],
        "{:?}",
        out.hops
    );
    let Credential::AzureAccessToken(t) = &out.credential else {
        panic!("expected an Entra token, got {}", out.credential.kind());
    };
    let claims = idbridge_core::jwt::UnverifiedJwt::parse(t.token.expose_secret())
        .unwrap()
        .claims;
    assert_eq!(claims["appid"], "c3333333-0000-4000-8000-000000000033");
    assert_eq!(claims["aud"], "api://idbridge-billing");
    assert_eq!(claims["roles"], serde_json::json!(["Billing.Read"]));
}
