//! `CreateSession` driven through the router, with certificates made by rcgen and requests
//! signed by rcgen's keys over the shared canonicalisation. The independent signer is the
//! peer test's (tests/peers/test_roles_anywhere.py).

use super::*;
use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use idbridge_core::clock::ManualClock;
use idbridge_core::timefmt::amz_date;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
    SigningKey as _,
};
use tower::ServiceExt;

const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const ANCHOR: &str = "arn:aws:rolesanywhere:us-east-2:111122223333:trust-anchor/a1";
const PROFILE: &str = "arn:aws:rolesanywhere:us-east-2:111122223333:profile/p1";
const ROLE: &str = "arn:aws:iam::111122223333:role/ra";
const BILLING: &str = "spiffe://example.org/billing";

struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    ca_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        Pki {
            ca_params,
            ca_key,
            ca_pem,
        }
    }

    fn leaf(&self, uri: &str, serial: u64, not_after: Option<i64>) -> (Vec<u8>, KeyPair) {
        let key =
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "billing");
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.serial_number = Some(SerialNumber::from(serial));
        if let Some(t) = not_after {
            params.not_after = time::OffsetDateTime::from_unix_timestamp(t).unwrap();
        }
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.der().to_vec(), key)
    }

    fn crl(&self, revoked: u64) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp(NOW - 3600).unwrap();
        let params = CertificateRevocationListParams {
            this_update: t,
            next_update: t + time::Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(revoked),
                revocation_time: t,
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        params.signed_by(&issuer).unwrap().pem().unwrap()
    }
}

fn world(pki: &Pki, crl: Option<String>) -> crate::World {
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "rolesanywhere.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
            "Condition": {"StringEquals": {"aws:PrincipalTag/x509SAN/URI": BILLING,
                                           "aws:PrincipalTag/x509Issuer/CN": "test CA"}}
        }]
    });
    let mut text = format!(
        "[[aws_role]]\narn = \"{ROLE}\"\ntrust_policy = '''{policy}'''\n\
         [[roles_anywhere.trust_anchor]]\narn = \"{ANCHOR}\"\ncertificate_bundle_pem = '''{}'''\n\
         [[roles_anywhere.profile]]\narn = \"{PROFILE}\"\nrole_arns = [\"{ROLE}\"]\n",
        pki.ca_pem
    );
    if let Some(crl) = crl {
        text.push_str(&format!(
            "[[roles_anywhere.crl]]\ntrust_anchor_arn = \"{ANCHOR}\"\ncrl_pem = '''{crl}'''\n"
        ));
    }
    crate::World::from_str_at(&text, "w.toml", None).unwrap()
}

fn emulator(world: crate::World) -> Arc<Emulator> {
    Emulator::new(world, Arc::new(ManualClock::at(NOW))).unwrap()
}

fn signed_request(leaf: &[u8], key: &KeyPair, body: &str, tamper: bool) -> Request<Body> {
    let date = amz_date(time::OffsetDateTime::from_unix_timestamp(NOW).unwrap());
    let query = serde_urlencoded::to_string([
        ("profileArn", PROFILE),
        ("roleArn", ROLE),
        ("trustAnchorArn", ANCHOR),
    ])
    .unwrap();
    let headers: Vec<(String, String)> = vec![
        ("content-type".into(), "application/json".into()),
        ("host".into(), "127.0.0.1:1".into()),
        ("x-amz-date".into(), date.clone()),
        (wire::X509_HEADER.into(), STANDARD.encode(leaf)),
    ];
    let signed: Vec<String> = headers.iter().map(|(k, _)| k.clone()).collect();
    let canonical = wire::canonical_request(
        "POST",
        "/sessions",
        &query,
        &headers,
        &signed,
        body.as_bytes(),
    );
    let to_sign = wire::string_to_sign(Algorithm::Rsa, &date, "us-east-2", &canonical);
    let mut signature = key.sign(to_sign.as_bytes()).unwrap();
    if tamper {
        signature[0] ^= 1;
    }
    let (_, cert) = X509Certificate::from_der(leaf).unwrap();
    let auth = Authorization {
        algorithm: Algorithm::Rsa,
        serial: cert.tbs_certificate.serial.to_string(),
        date: date[..8].to_owned(),
        region: "us-east-2".into(),
        service: wire::SERVICE.into(),
        signed_headers: signed,
        signature: hex::encode(signature),
    };
    let mut builder =
        Request::post(format!("/sessions?{query}")).header("authorization", auth.to_header());
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

async fn send(
    state: &Arc<Emulator>,
    req: Request<Body>,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let response = router(state.clone()).oneshot(req).await.unwrap();
    let status = response.status();
    let kind = response
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, kind, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_certificate_of_the_anchor_gets_a_session_sts_knows() {
    let pki = Pki::new();
    let state = emulator(world(&pki, None));
    let (leaf, key) = pki.leaf(BILLING, 0x2a, None);
    let (status, kind, doc) = send(
        &state,
        signed_request(&leaf, &key, "{\"durationSeconds\":900}", false),
    )
    .await;
    assert_eq!((status, kind), (StatusCode::CREATED, None), "{doc}");
    let set = &doc["credentialSet"][0];
    assert_eq!(
        set["assumedRoleUser"]["arn"],
        "arn:aws:sts::111122223333:assumed-role/ra/2a"
    );
    assert_eq!(set["sourceIdentity"], "billing");
    let akid = set["credentials"]["accessKeyId"].as_str().unwrap();
    let session = state.session(akid).unwrap();
    assert_eq!(session.role_arn, ROLE);
    assert_eq!(session.expires_at.unix_timestamp(), NOW + 900);
    assert_eq!(state.count("roles_anywhere.CreateSession"), 1);
}

#[tokio::test]
async fn tampered_revoked_expired_and_unmatched_certificates_are_refused() {
    let pki = Pki::new();
    let crl = pki.crl(7);
    let state = emulator(world(&pki, Some(crl)));
    let body = "{}";
    let cases = [
        (
            pki.leaf(BILLING, 8, None),
            true,
            "does not match the signature",
        ),
        (pki.leaf(BILLING, 7, None), false, "Certificate is revoked"),
        (
            pki.leaf(BILLING, 9, Some(NOW - 60)),
            false,
            "Certificate is expired",
        ),
        (
            pki.leaf("spiffe://example.org/other", 10, None),
            false,
            "not authorized to perform sts:AssumeRole",
        ),
        (
            Pki::new().leaf(BILLING, 11, None),
            false,
            "Untrusted signing certificate",
        ),
    ];
    for ((leaf, key), tamper, needle) in cases {
        let (status, kind, doc) = send(&state, signed_request(&leaf, &key, body, tamper)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{needle}: {doc}");
        assert_eq!(kind.as_deref(), Some("AccessDeniedException"));
        let message = doc["message"].as_str().unwrap();
        assert!(message.contains(needle), "{needle}: {message}");
    }
    assert!(state.aws_sessions.lock().unwrap().is_empty());
}

#[tokio::test]
async fn missing_parameters_and_bad_durations_are_validation_errors() {
    let pki = Pki::new();
    let state = emulator(world(&pki, None));
    let req = Request::post("/sessions").body(Body::from("{}")).unwrap();
    let (status, kind, doc) = send(&state, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}");
    assert_eq!(kind.as_deref(), Some("ValidationException"));
    let (leaf, key) = pki.leaf(BILLING, 3, None);
    for body in [
        "{\"durationSeconds\":899}",
        "{\"durationSeconds\":3601}",
        "{\"roleSessionName\":\"x1\"}",
        "[1",
    ] {
        let (status, kind, doc) = send(&state, signed_request(&leaf, &key, body, false)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {doc}");
        assert_eq!(kind.as_deref(), Some("ValidationException"), "{body}");
    }
}

#[test]
fn world_errors_name_the_object_and_field() {
    let pki = Pki::new();
    for (text, needle) in [
        (
            "[[roles_anywhere.trust_anchor]]\narn = \"arn:aws:iam::1:role/x\"\ncertificate_bundle_pem = \"\"\n".to_owned(),
            "roles_anywhere.trust_anchor[0]",
        ),
        (
            format!("[[roles_anywhere.trust_anchor]]\narn = \"{ANCHOR}\"\ncertificate_bundle_pem = \"no pem\"\n"),
            "holds no certificate",
        ),
        (
            format!(
                "[[roles_anywhere.trust_anchor]]\narn = \"{ANCHOR}\"\ncertificate_bundle_pem = '''{}'''\n\
                 [[roles_anywhere.profile]]\narn = \"{PROFILE}\"\nrole_arns = [\"{ROLE}\"]\n",
                pki.ca_pem
            ),
            "field `role_arns`: unknown aws_role",
        ),
        (
            format!("[[roles_anywhere.crl]]\ntrust_anchor_arn = \"{ANCHOR}\"\ncrl_pem = \"x\"\n"),
            "field `trust_anchor_arn`",
        ),
    ] {
        let err = crate::World::from_str_at(&text, "w.toml", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("w.toml") && err.contains(needle), "{err}");
    }
}
