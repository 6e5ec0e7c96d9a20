"""IAM Roles Anywhere `CreateSession` of `idbridge emulate`, against an independent signer.

* x509_sigv4_ref (botocore's SigV4 canonical request + `cryptography`'s RSA / ECDSA) signs every
  request here, so the emulator's verifier is checked by code that shares nothing with it;
* the same reference signer re-derives tests/peers/vectors/x509_sigv4_rsa.json, the vector the
  broker's signer must reproduce byte for byte (crates/broker/src/x509_sigv4/tests.rs);
* boto3 then uses the session credentials (the emulator's STS verifies their SigV4);
* bad input gets Roles Anywhere's JSON errors: a certificate from another CA, expired, revoked, a
  SAN the trust policy does not allow, a tampered signature or body, a too-long session.

The world (CAs, certificates, CRL, trust anchor, profile, role) is made here with `cryptography`.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

import x509_sigv4_ref as ref
from conftest import (EMULATOR_START_TIMEOUT, HTTP, PYTHON, _SERVER_LOGS, clean_env, describe, parse_env_file,
                      stop_process, tail)

VECTORS = Path(__file__).resolve().parent / "vectors"
ACCOUNT = "111122223333"
REGION = "us-east-2"
ANCHOR = f"arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:trust-anchor/6e5c1a7e-0000-4000-8000-000000000001"
PROFILE = f"arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:profile/6e5c1a7e-0000-4000-8000-000000000002"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/ra-billing"
BILLING = "spiffe://example.org/ns/prod/sa/billing"
REPORTS = "spiffe://example.org/ns/prod/sa/reports"
NOW = datetime.datetime.now(datetime.timezone.utc)

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "rolesanywhere.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
        "Condition": {
            "StringEquals": {"aws:PrincipalTag/x509SAN/URI": BILLING,
                             "aws:PrincipalTag/x509Issuer/O": "idbridge test"},
            "ArnEquals": {"aws:SourceArn": ANCHOR},
        },
    }],
}


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "idbridge test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str, issuer=None, issuer_key=None):
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(name(cn))
               .issuer_name(issuer.subject if issuer else name(cn)).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True))
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def make_leaf(issuer, issuer_key, cn: str, uri: str, key=None, expired: bool = False):
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = NOW - datetime.timedelta(days=10 if expired else 1)
    end = NOW - datetime.timedelta(days=1) if expired else NOW + datetime.timedelta(days=7)
    cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .sign(issuer_key, hashes.SHA256()))
    return cert, key


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def pki():
    ca, ca_key = make_ca("idbridge test CA")
    inter, inter_key = make_ca("idbridge test intermediate", ca, ca_key)
    other, other_key = make_ca("another CA")
    out = {
        "ca": (ca, ca_key),
        "rsa": make_leaf(ca, ca_key, "billing", BILLING),
        "p256": make_leaf(ca, ca_key, "billing", BILLING, key=ec.generate_private_key(ec.SECP256R1())),
        "p384": make_leaf(ca, ca_key, "billing", BILLING, key=ec.generate_private_key(ec.SECP384R1())),
        "via_intermediate": make_leaf(inter, inter_key, "billing", BILLING),
        "intermediate": (inter, inter_key),
        "other_ca": make_leaf(other, other_key, "billing", BILLING),
        "expired": make_leaf(ca, ca_key, "billing", BILLING, expired=True),
        "revoked": make_leaf(ca, ca_key, "billing", BILLING),
        "reports": make_leaf(ca, ca_key, "reports", REPORTS),
    }
    revoked = (x509.RevokedCertificateBuilder().serial_number(out["revoked"][0].serial_number)
               .revocation_date(NOW - datetime.timedelta(hours=1)).build())
    out["crl"] = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
                  .last_update(NOW - datetime.timedelta(hours=1)).next_update(NOW + datetime.timedelta(days=1))
                  .add_revoked_certificate(revoked)
                  .add_extension(x509.CRLNumber(1), critical=False)
                  .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                 critical=False)
                  .sign(ca_key, hashes.SHA256()))
    return out


@pytest.fixture(scope="module")
def ra_emulator(idbridge_bin: Path, tmp_path_factory, pki):
    """`idbridge emulate --world` with a Roles Anywhere trust anchor, profile, CRL and role."""
    d = tmp_path_factory.mktemp("ra-emulator")
    (d / "ca.pem").write_text(pem(pki["ca"][0]))
    (d / "revoked.crl").write_bytes(pki["crl"].public_bytes(serialization.Encoding.DER))
    world = d / "world.toml"
    world.write_text(f"""
[[aws_account]]
id = "{ACCOUNT}"

[[aws_role]]
arn = "{ROLE}"
max_session_duration = 7200
trust_policy = '''{json.dumps(TRUST_POLICY)}'''

[[roles_anywhere.trust_anchor]]
arn = "{ANCHOR}"
certificate_bundle_file = "ca.pem"

[[roles_anywhere.profile]]
arn = "{PROFILE}"
role_arns = ["{ROLE}"]
duration_seconds = 3600
accept_role_session_name = true

[[roles_anywhere.crl]]
trust_anchor_arn = "{ANCHOR}"
crl_file = "revoked.crl"
""")
    env_file, log = d / "emulator.env", d / "emulator.log"
    _SERVER_LOGS["idbridge emulate (roles anywhere)"] = log
    with open(log, "wb") as logf:
        proc = subprocess.Popen([str(idbridge_bin), "emulate", "--world", str(world), "--env-file", str(env_file)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                env=clean_env(d / "home"), cwd=d)
    try:
        deadline = time.monotonic() + EMULATOR_START_TIMEOUT
        while not env_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"idbridge emulate did not start:\n{tail(log)}", pytrace=False)
            time.sleep(0.05)
        values = parse_env_file(env_file.read_text())
        assert values["AWS_ENDPOINT_URL_ROLESANYWHERE"].startswith("http://127.0.0.1:"), values
        yield values
    finally:
        stop_process(proc)


def amz_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def create_session(emu: dict, cert, key, intermediates=(), body: dict | None = None, in_body: bool = False,
                   tamper=None, amz_date: str | None = None):
    """Signs a CreateSession request with the reference signer and sends it; returns the response."""
    base = emu["AWS_ENDPOINT_URL_ROLESANYWHERE"]
    arns = {"profileArn": PROFILE, "roleArn": ROLE, "trustAnchorArn": ANCHOR}
    payload = dict(body or {"durationSeconds": 900})
    query = {}
    if in_body:
        payload.update(arns)
    else:
        query = arns
    raw = json.dumps(payload, separators=(",", ":")).encode()
    signed = ref.sign(cert, list(intermediates), key, REGION, f"{base}/sessions", query,
                      {"Content-Type": "application/json"}, raw, amz_date or amz_now())
    headers = signed["headers"]
    if tamper == "signature":
        auth = headers["Authorization"]
        last = auth[-1]
        headers["Authorization"] = auth[:-1] + ("0" if last != "0" else "1")
    if tamper == "body":
        raw = raw.replace(b"900", b"901")
    return HTTP.post(f"{base}/sessions", params=query, data=raw, headers=headers, timeout=10)


def assert_error(r, status: int, error_type: str, needle: str = ""):
    assert r.status_code == status, f"{r.status_code} {r.headers} {r.text[:500]}"
    assert r.headers.get("X-Amzn-ErrorType") == error_type, r.headers
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    message = r.json()["message"]
    assert needle in message, message


def caller_identity(emu: dict, creds: dict, sandbox) -> dict:
    script = r'''
import json, sys, boto3
a = json.loads(sys.argv[1])
sts = boto3.client("sts", region_name="us-east-1", endpoint_url=a["endpoint"],
                   aws_access_key_id=a["accessKeyId"], aws_secret_access_key=a["secretAccessKey"],
                   aws_session_token=a["sessionToken"])
print(json.dumps(sts.get_caller_identity()))
'''
    arg = json.dumps({**creds, "endpoint": emu["AWS_ENDPOINT_URL_STS"]})
    r = sandbox.run([PYTHON, "-c", script, arg], env=sandbox.env())
    assert r.returncode == 0, describe(r)
    return json.loads(r.stdout)


# ------------------------------------------------------------------------------ the vector ---


def test_the_signer_vector_is_rederived_by_the_reference_signer():
    v = json.loads((VECTORS / "x509_sigv4_rsa.json").read_text())
    cert = x509.load_pem_x509_certificate(v["cert_pem"].encode())
    key = serialization.load_pem_private_key(v["key_pem"].encode(), password=None)
    out = ref.sign(cert, [], key, v["region"], v["url"], v["query"], v["headers"], v["body"].encode(),
                   v["amz_date"])
    assert out["canonical_request"] == v["canonical_request"]
    assert out["string_to_sign"] == v["string_to_sign"]
    assert out["headers"]["Authorization"] == v["authorization"]
    assert v["serial"] == str(cert.serial_number)


# ------------------------------------------------------------------------------ accepted ---


@pytest.mark.parametrize("leaf", ["rsa", "p256", "p384"])
def test_create_session_with_each_key_type(ra_emulator, pki, sandbox, leaf):
    cert, key = pki[leaf]
    r = create_session(ra_emulator, cert, key)
    assert r.status_code == 201, f"{r.status_code} {r.text[:500]}"
    doc = r.json()
    assert doc["subjectArn"].startswith(f"arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:subject/")
    (cs,) = doc["credentialSet"]
    assert cs["roleArn"] == ROLE
    assert cs["sourceIdentity"] == "billing"
    session = format(cert.serial_number, "x")
    assert cs["assumedRoleUser"]["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/ra-billing/{session}"
    creds = cs["credentials"]
    expiry = datetime.datetime.fromisoformat(creds["expiration"].replace("Z", "+00:00"))
    assert 800 < (expiry - datetime.datetime.now(datetime.timezone.utc)).total_seconds() <= 900
    who = caller_identity(ra_emulator, creds, sandbox)
    assert who["Arn"] == cs["assumedRoleUser"]["arn"], who
    assert who["Account"] == ACCOUNT


def test_chain_through_an_intermediate_and_arns_in_the_body(ra_emulator, pki):
    cert, key = pki["via_intermediate"]
    r = create_session(ra_emulator, cert, key, intermediates=[pki["intermediate"][0]], in_body=True)
    assert r.status_code == 201, f"{r.status_code} {r.text[:500]}"
    # Without the intermediate the chain does not reach the anchor.
    r = create_session(ra_emulator, cert, key)
    assert_error(r, 403, "AccessDeniedException", "Untrusted signing certificate")


def test_role_session_name_and_profile_duration(ra_emulator, pki):
    cert, key = pki["rsa"]
    r = create_session(ra_emulator, cert, key, body={"durationSeconds": 3600, "roleSessionName": "batch-7"})
    assert r.status_code == 201, r.text[:500]
    assert r.json()["credentialSet"][0]["assumedRoleUser"]["arn"].endswith("/ra-billing/batch-7")
    r = create_session(ra_emulator, cert, key, body={"durationSeconds": 3601})
    assert_error(r, 400, "ValidationException", "DurationSeconds")
    r = create_session(ra_emulator, cert, key, body={"durationSeconds": 60})
    assert_error(r, 400, "ValidationException", "durationSeconds")


# ------------------------------------------------------------------------------ refused ---


@pytest.mark.parametrize("leaf,needle", [
    ("other_ca", "Untrusted signing certificate"),
    ("expired", "expired"),
    ("revoked", "revoked"),
    ("reports", "not authorized to perform sts:AssumeRole"),
])
def test_refused_certificates(ra_emulator, pki, leaf, needle):
    cert, key = pki[leaf]
    assert_error(create_session(ra_emulator, cert, key), 403, "AccessDeniedException", needle)


@pytest.mark.parametrize("tamper", ["signature", "body"])
def test_tampered_requests(ra_emulator, pki, tamper):
    cert, key = pki["rsa"]
    assert_error(create_session(ra_emulator, cert, key, tamper=tamper), 403, "AccessDeniedException",
                 "signature")


def test_stale_signature_and_missing_parameters(ra_emulator, pki):
    cert, key = pki["p256"]
    stale = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)).strftime("%Y%m%dT%H%M%SZ")
    assert_error(create_session(ra_emulator, cert, key, amz_date=stale), 403, "AccessDeniedException", "expired")
    r = HTTP.post(f"{ra_emulator['AWS_ENDPOINT_URL_ROLESANYWHERE']}/sessions", data=b"{}",
                  headers={"Content-Type": "application/json"}, timeout=10)
    assert_error(r, 400, "ValidationException", "profileArn")
    r = HTTP.post(f"{ra_emulator['AWS_ENDPOINT_URL_ROLESANYWHERE']}/sessions",
                  params={"profileArn": PROFILE, "roleArn": ROLE, "trustAnchorArn": ANCHOR}, data=b"{}",
                  headers={"Content-Type": "application/json"}, timeout=10)
    assert_error(r, 403, "AccessDeniedException", "Missing Authentication Token")
