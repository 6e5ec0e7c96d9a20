"""py-spiffe's X.509 profile against the emulated Workload API, and the X.509-SVID it gets used at
the emulated IAM Roles Anywhere (whose built-in trust anchor is the trust domain's CA):

* `X509Source` (FetchX509SVID stream) and `WorkloadApiClient.fetch_x509_bundles`;
* py-spiffe's own SVID checks (leaf constraints, SPIFFE ID from the URI SAN) and the leaf verified
  against the bundle's authority with `cryptography`;
* the SVID's key signs a CreateSession request (tests/peers/x509_sigv4_ref.py, botocore's
  canonicalisation), and boto3 uses the session it returns.
"""

from __future__ import annotations

import datetime
import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization

import x509_sigv4_ref as ref
from conftest import ACCOUNT, HTTP, PYTHON, describe

BILLING = "spiffe://example.org/ns/prod/sa/billing"
REGION = "us-east-1"
ANCHOR = f"arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:trust-anchor/0c9d1f7e-5a1b-4c2d-9e3f-7a6b5c4d3e21"
PROFILE = f"arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:profile/3f2e1d0c-9b8a-4765-8432-10fedcba9876"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/spiffe-billing"

X509_SCRIPT = r'''
import json, sys, time
from cryptography.hazmat.primitives import serialization
from spiffe import TrustDomain, WorkloadApiClient, X509Source

socket = sys.argv[1]
out = {}
with X509Source(socket_path=socket, timeout_in_seconds=10) as source:
    svid = source.svid
    out["spiffe_id"] = str(svid.spiffe_id)
    out["chain_len"] = len(svid.cert_chain)
    out["cert_pem"] = svid.leaf.public_bytes(serialization.Encoding.PEM).decode()
    out["key_pem"] = svid.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()).decode()
    bundle = source.get_bundle_for_trust_domain(TrustDomain("example.org"))
    out["authorities"] = [a.public_bytes(serialization.Encoding.PEM).decode() for a in bundle.x509_authorities]
with WorkloadApiClient(socket_path=socket, default_timeout=10) as client:
    bundles = client.fetch_x509_bundles()
    b = bundles.get_bundle_for_trust_domain(TrustDomain("example.org"))
    out["fetched_authorities"] = [a.public_bytes(serialization.Encoding.PEM).decode() for a in b.x509_authorities]
print(json.dumps(out))
'''


def test_py_spiffe_x509_source_and_roles_anywhere(sandbox, emulator):
    socket = emulator["SPIFFE_ENDPOINT_SOCKET"]
    r = sandbox.run([PYTHON, "-c", X509_SCRIPT, socket], env=sandbox.env(emulator))
    assert r.returncode == 0, describe(r)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["spiffe_id"] == BILLING, out
    assert out["chain_len"] == 1
    assert out["authorities"] == out["fetched_authorities"]
    (ca_pem,) = out["authorities"]
    leaf = x509.load_pem_x509_certificate(out["cert_pem"].encode())
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    leaf.verify_directly_issued_by(ca)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc
    assert 3000 < (leaf.not_valid_after_utc - now).total_seconds() <= 3600

    # The SVID at Roles Anywhere: the anchor is the trust domain's CA.
    key = serialization.load_pem_private_key(out["key_pem"].encode(), password=None)
    base = emulator["AWS_ENDPOINT_URL_ROLESANYWHERE"]
    query = {"profileArn": PROFILE, "roleArn": ROLE, "trustAnchorArn": ANCHOR}
    body = b'{"durationSeconds":900}'
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    signed = ref.sign(leaf, [], key, REGION, f"{base}/sessions", query, {"Content-Type": "application/json"},
                      body, amz_date)
    resp = HTTP.post(f"{base}/sessions", params=query, data=body, headers=signed["headers"], timeout=10)
    assert resp.status_code == 201, f"{resp.status_code} {resp.text[:500]}"
    cs = resp.json()["credentialSet"][0]
    session = format(leaf.serial_number, "x")
    assert cs["assumedRoleUser"]["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/spiffe-billing/{session}"

    script = r'''
import json, sys, boto3
a = json.loads(sys.argv[1])
c = a["credentials"]
sts = boto3.client("sts", region_name="us-east-1", endpoint_url=a["endpoint"], aws_access_key_id=c["accessKeyId"],
                   aws_secret_access_key=c["secretAccessKey"], aws_session_token=c["sessionToken"])
print(json.dumps(sts.get_caller_identity()))
'''
    r = sandbox.run([PYTHON, "-c", script, json.dumps({"credentials": cs["credentials"],
                                                        "endpoint": emulator["AWS_ENDPOINT_URL_STS"]})],
                    env=sandbox.env())
    assert r.returncode == 0, describe(r)
    assert json.loads(r.stdout)["Arn"] == cs["assumedRoleUser"]["arn"]
