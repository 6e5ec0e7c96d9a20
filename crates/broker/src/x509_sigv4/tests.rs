//! The signer against a vector derived independently (botocore's canonical request and
//! `cryptography`'s RSA PKCS#1 v1.5, in tests/peers/x509_sigv4_ref.py; the peer test
//! tests/peers/test_roles_anywhere.py re-derives the same vector). RSA PKCS#1 v1.5 is
//! deterministic, so the whole `Authorization` header must match byte for byte.

use super::*;

const VECTOR: &str = include_str!("../../../../tests/peers/vectors/x509_sigv4_rsa.json");

fn vector() -> serde_json::Value {
    serde_json::from_str(VECTOR).unwrap()
}

fn request(v: &serde_json::Value) -> http::Request<Vec<u8>> {
    let query: Vec<(String, String)> = v["query"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let url = format!(
        "{}?{}",
        v["url"].as_str().unwrap(),
        serde_urlencoded::to_string(&query).unwrap()
    );
    let mut builder = http::Request::post(url);
    for (k, value) in v["headers"].as_object().unwrap() {
        builder = builder.header(k.as_str(), value.as_str().unwrap());
    }
    builder
        .body(v["body"].as_str().unwrap().as_bytes().to_vec())
        .unwrap()
}

#[test]
fn rsa_signature_matches_the_independent_vector() {
    let v = vector();
    let signer = X509Signer::from_pem(
        v["cert_pem"].as_str().unwrap(),
        v["key_pem"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(signer.serial(), v["serial"].as_str().unwrap());
    assert_eq!(signer.algorithm(), Algorithm::Rsa);
    let at = idbridge_core::timefmt::parse_amz_date(v["amz_date"].as_str().unwrap()).unwrap();
    let mut req = request(&v);
    signer
        .sign(&mut req, v["region"].as_str().unwrap(), at)
        .unwrap();
    let auth = req.headers()["authorization"].to_str().unwrap();
    assert_eq!(auth, v["authorization"].as_str().unwrap());
    assert_eq!(req.headers()["x-amz-date"], v["amz_date"].as_str().unwrap());
    assert!(!req.headers().contains_key(wire::X509_CHAIN_HEADER));
}

#[test]
fn canonical_request_matches_botocore() {
    let v = vector();
    let mut req = request(&v);
    let signer = X509Signer::from_pem(
        v["cert_pem"].as_str().unwrap(),
        v["key_pem"].as_str().unwrap(),
    )
    .unwrap();
    let at = idbridge_core::timefmt::parse_amz_date(v["amz_date"].as_str().unwrap()).unwrap();
    signer.sign(&mut req, "us-east-1", at).unwrap();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let signed: Vec<String> = ["content-type", "host", "x-amz-date", "x-amz-x509"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let canonical = wire::canonical_request(
        "POST",
        req.uri().path(),
        req.uri().query().unwrap(),
        &headers,
        &signed,
        req.body(),
    );
    assert_eq!(canonical, v["canonical_request"].as_str().unwrap());
    assert_eq!(
        wire::string_to_sign(
            Algorithm::Rsa,
            v["amz_date"].as_str().unwrap(),
            "us-east-1",
            &canonical
        ),
        v["string_to_sign"].as_str().unwrap()
    );
}

#[test]
fn ecdsa_p256_signs_a_der_signature_the_public_key_verifies() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["w.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let signer = X509Signer::from_pem(&cert.pem(), &key.serialize_pem()).unwrap();
    assert_eq!(signer.algorithm(), Algorithm::Ecdsa);
    let sig = signer.sign_bytes(b"string to sign").unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        key.public_key_raw(),
    )
    .verify(b"string to sign", &sig)
    .unwrap();
}

#[test]
fn chain_header_and_bad_material() {
    let v = vector();
    let cert = v["cert_pem"].as_str().unwrap();
    let key = v["key_pem"].as_str().unwrap();
    let chained = X509Signer::from_pem(&format!("{cert}{cert}"), key).unwrap();
    let mut req = request(&v);
    chained
        .sign(&mut req, "us-east-1", OffsetDateTime::UNIX_EPOCH)
        .unwrap();
    let auth = req.headers()["authorization"].to_str().unwrap();
    assert!(auth.contains("x-amz-x509;x-amz-x509-chain"), "{auth}");

    assert!(matches!(
        X509Signer::from_pem("", key),
        Err(X509SignError::Certificate(_))
    ));
    assert!(matches!(
        X509Signer::from_pem(cert, ""),
        Err(X509SignError::Key(_))
    ));
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    assert_eq!(
        X509Signer::from_pem(cert, &other.serialize_pem()).unwrap_err(),
        X509SignError::Mismatch
    );
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let p384_cert = rcgen::CertificateParams::new(vec!["w.example".to_owned()])
        .unwrap()
        .self_signed(&p384)
        .unwrap();
    assert!(matches!(
        X509Signer::from_pem(&p384_cert.pem(), &p384.serialize_pem()),
        Err(X509SignError::Key(_))
    ));
}

#[test]
fn debug_shows_no_key_material() {
    let v = vector();
    let signer = X509Signer::from_pem(
        v["cert_pem"].as_str().unwrap(),
        v["key_pem"].as_str().unwrap(),
    )
    .unwrap();
    let printed = format!("{signer:?}");
    assert!(printed.contains(signer.serial()), "{printed}");
    assert!(!printed.contains("MII"), "{printed}");
}
