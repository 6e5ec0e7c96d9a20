"""The broker's AWS kinds with real peers: role chaining (`aws-assume-role`) to boto3 through
credential_process, Roles Anywhere (`spiffe` X.509-SVID and `x509-file` → `roles-anywhere`) to
the AWS CLI through credential_process, and the AWS outbound JWT (`aws-web-identity-token`) as
the OIDC file subject of google-auth's `external_account`. Bad input through the CLI: a chained
session over one hour (refused when the config is read after another role, AWS's
ValidationError otherwise) and a certificate from another CA (Roles Anywhere's
AccessDeniedException).
"""

from __future__ import annotations

import datetime
import json
import shlex

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import (ACCOUNT, EXAMPLES, NO_INSTANCE_CREDS, PYTHON, VENV_BIN, assumed_role_arn, describe,
                      role_arn)
from test_google_external_account import ext_refresh, external_account, tokeninfo

PROVIDER = ("//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/"
            "aws-outbound-pool/providers/aws-jwt")
RA = ('trust_anchor_arn = "arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/'
      '0c9d1f7e-5a1b-4c2d-9e3f-7a6b5c4d3e21", profile_arn = "arn:aws:rolesanywhere:us-east-1:111122223333:'
      'profile/3f2e1d0c-9b8a-4765-8432-10fedcba9876", role_arn = "arn:aws:iam::111122223333:role/spiffe-billing"')


def credential_process_profile(sandbox, config, route: str) -> None:
    cmd = shlex.join([str(sandbox.bin), "credential-process", "--config", str(config), "--route", route])
    sandbox.aws_config.write_text(f"[profile p]\ncredential_process = {cmd}\nregion = us-east-1\n")


def test_boto3_uses_chained_credentials_from_credential_process(sandbox, emulator):
    credential_process_profile(sandbox, EXAMPLES / "gcp-to-aws-chained.toml", "gcp-to-chained")
    res = sandbox.client("boto3_caller_identity", {"profile": "p"}, env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert "error" not in res, res
    assert res["method"] == "custom-process"
    assert res["Arn"] == assumed_role_arn("chained-reader", "tenant-7-reader"), res
    assert res["Account"] == ACCOUNT


def test_aws_cli_uses_roles_anywhere_credentials_of_the_x509_svid(sandbox, emulator):
    credential_process_profile(sandbox, EXAMPLES / "spiffe-x509-to-aws.toml", "spiffe-x509-to-aws")
    r = sandbox.run([VENV_BIN / "aws", "sts", "get-caller-identity", "--profile", "p", "--output", "json"],
                    env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert r.returncode == 0, describe(r)
    ident = json.loads(r.stdout)
    assert ident["Arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/spiffe-billing/"), ident


def _cert(subject: str, issuer_key, issuer_name, key, ca: bool, uri: str | None = None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if uri:
        b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def test_x509_file_from_another_ca_is_refused_with_roles_anywhere_error(sandbox, emulator):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("not the SPIFFE CA", ca_key, None, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("billing", ca_key, ca.subject, key, False, "spiffe://example.org/ns/prod/sa/billing")
    sandbox.write("leaf.pem", leaf.public_bytes(serialization.Encoding.PEM).decode())
    sandbox.write("leaf.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()).decode())
    config = sandbox.write("ra.toml", f'''
[[route]]
name = "file"
source = {{ kind = "x509-file", certificate = "leaf.pem", private_key = "leaf.key" }}
exchange = [{{ kind = "roles-anywhere", {RA} }}]
''')
    r = sandbox.idbridge("token", "--config", config, "--route", "file", env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert r.returncode != 0, describe(r)
    assert "AccessDeniedException" in r.stderr and "roles-anywhere" in r.stderr, describe(r)
    assert "PRIVATE KEY" not in r.stderr + r.stdout

    # doctor names the cause and the fix.
    d = sandbox.idbridge("doctor", "--config", config, "--route", "file", "--format", "json",
                         env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert d.returncode != 0, describe(d)
    diag = json.loads(d.stdout)["diagnosis"]
    assert diag["hop"] == "roles-anywhere" and diag["code"] == "AccessDeniedException", diag
    assert "does not trust the signing certificate" in diag["cause"], diag
    assert any("trust anchor" in f for f in diag["fix"]), diag


def test_chained_session_over_an_hour(sandbox, emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    # After another role in the same route: a config error naming file, line and field.
    config = sandbox.write("chain.toml", '''
[[route]]
name = "long"
source = { kind = "gce-metadata", audience = "https://psoxy.example/aws" }
exchange = [
  { kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/psoxy-tenant-access" },
  { kind = "aws-assume-role", role_arn = "arn:aws:iam::111122223333:role/chained-reader", external_id = "tenant-7", duration_seconds = 7200 },
]
''')
    r = sandbox.idbridge("token", "--config", config, "--route", "long", env=env)
    assert r.returncode != 0, describe(r)
    assert "chain.toml, line" in r.stderr and "duration_seconds" in r.stderr and "exchange[1]" in r.stderr, describe(r)

    # Role credentials from the environment: only AWS can tell, and says so with its code.
    t = sandbox.idbridge("token", "--config", EXAMPLES / "seed000-gce-to-aws.toml", "--route", "tenant-to-aws",
                         env=env)
    assert t.returncode == 0, describe(t)
    c = json.loads(t.stdout)
    keys = {"AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
            "AWS_SESSION_TOKEN": c["SessionToken"], "AWS_REGION": "us-east-1"}
    config = sandbox.write("env-chain.toml", '''
[[route]]
name = "long"
source = { kind = "aws" }
exchange = [
  { kind = "aws-assume-role", role_arn = "arn:aws:iam::111122223333:role/chained-reader", external_id = "tenant-7", duration_seconds = 7200 },
]
''')
    r = sandbox.idbridge("token", "--config", config, "--route", "long", env=sandbox.env(emulator, NO_INSTANCE_CREDS, keys))
    assert r.returncode != 0, describe(r)
    assert "ValidationError" in r.stderr and "1 hour" in r.stderr, describe(r)
    d = sandbox.idbridge("doctor", "--config", config, "--route", "long", "--format", "json",
                         env=sandbox.env(emulator, NO_INSTANCE_CREDS, keys))
    diag = json.loads(d.stdout)["diagnosis"]
    assert diag["code"] == "ValidationError" and "role chaining" in diag["cause"], diag
    assert any("3600" in f for f in diag["fix"]), diag
    assert c["SecretAccessKey"] not in r.stderr + r.stdout


SWITCH = r'''
import json, sys
import boto3
a = json.loads(sys.argv[1])
iam = boto3.client("iam", endpoint_url=a["iam"], region_name="us-east-1")
if a["on"]:
    try:
        iam.enable_outbound_web_identity_federation()
        changed = True
    except iam.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "FeatureEnabled", e.response
        changed = False
    assert iam.get_outbound_web_identity_federation_info()["JwtVendingEnabled"] is True
else:
    iam.disable_outbound_web_identity_federation()
    changed = True
print(json.dumps(changed))
'''


def test_google_auth_takes_the_aws_jwt_from_idbridge_token_as_an_oidc_file(sandbox, emulator):
    # The account's switch, turned on with the EC2 instance role (boto3 through IMDS), and back
    # off afterwards when this test turned it on (the emulator is shared by the session).
    imds_env = sandbox.env(emulator, {"AWS_CONTAINER_CREDENTIALS_FULL_URI": None}, imds=True)

    def switch(on: bool) -> bool:
        r = sandbox.run([PYTHON, "-c", SWITCH, json.dumps({"iam": emulator["AWS_ENDPOINT_URL_IAM"], "on": on})],
                        env=imds_env)
        assert r.returncode == 0, describe(r)
        return json.loads(r.stdout.strip().splitlines()[-1])

    turned_on = switch(True)
    try:
        config = sandbox.write("jwt.toml", '''
[[route]]
name = "jwt"
source = { kind = "aws-web-identity-token", audience = "https://gcp.idbridge.test/aws-outbound", caller = { kind = "aws", provider = "imds", region = "us-east-1" } }
''')
        r = sandbox.idbridge("token", "--config", config, "--route", "jwt", "--format", "access-token",
                             env=imds_env)
        assert r.returncode == 0, describe(r)
        token = r.stdout.strip()
        assert token.count(".") == 2, token[:80]
        path = sandbox.write("aws.jwt", token)
        info = external_account(emulator, PROVIDER, "urn:ietf:params:oauth:token-type:jwt", {"file": str(path)})
        res = ext_refresh(sandbox, info, env=sandbox.env(emulator))
        assert "error" not in res, res
        ti = tokeninfo(emulator, res["token"])
        assert ti["sub"].endswith("/aws-outbound-pool/subject/" + role_arn("gcp-caller")), ti
    finally:
        if turned_on:
            switch(False)

    if turned_on:
        # Off again: idbridge says so (past its file cache, which still holds the token minted
        # while the switch was on), and doctor names the switch.
        r = sandbox.idbridge("token", "--config", config, "--route", "jwt", "--no-cache", env=imds_env)
        assert r.returncode != 0 and "OutboundWebIdentityFederationDisabledException" in r.stderr, describe(r)
        d = sandbox.idbridge("doctor", "--config", config, "--route", "jwt", "--format", "json", env=imds_env)
        diag = json.loads(d.stdout)["diagnosis"]
        assert "outbound identity federation is off" in diag["cause"], diag
        assert "aws iam enable-outbound-web-identity-federation" in diag["commands"], diag


def test_boto3_uses_chained_credentials_from_the_daemons_imds(sandbox, emulator, idbridge_bin, tmp_path):
    from test_serve import imds_client_env, start_serve
    from conftest import stop_process, tail

    chained = (EXAMPLES / "gcp-to-aws-chained.toml").read_text()
    config = sandbox.write("serve-chained.toml", chained + '''
[serve]
bind = "127.0.0.1"

[serve.aws_imds]
port = 0
route = "gcp-to-chained"

[serve.metrics]
port = 0
''')
    d = tmp_path / "serve"
    d.mkdir()
    s = start_serve(idbridge_bin, emulator, d, config)
    try:
        res = sandbox.client("boto3_caller_identity", {}, env=imds_client_env(sandbox, emulator, s))
        assert "error" not in res, res
        assert res["method"] == "iam-role", res
        assert res["Arn"] == assumed_role_arn("chained-reader", "tenant-7-reader"), res
    finally:
        stop_process(s.proc)
    assert s.proc.returncode == 0, tail(s.log)
