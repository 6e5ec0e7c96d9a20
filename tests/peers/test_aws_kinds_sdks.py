"""Chained role credentials (GCP → psoxy-tenant-access → chained-reader,
examples/gcp-to-aws-chained.toml) and IAM Roles Anywhere credentials (the SPIFFE X.509-SVID,
examples/spiffe-x509-to-aws.toml) in every AWS SDK of the suite — boto3, the SDK for
JavaScript v3 (@aws-sdk/credential-providers), aws-sdk-go-v2 and aws-sdk-go (Debian's) — each
way idbridge hands them out: `credential_process = idbridge credential-process --route …` and
the daemon's IMDSv2 frontend (`idbridge serve`, `[serve.aws_imds] route = …`). Every case ends
with a GetCallerIdentity the SDK signs and the emulator's STS answers with the assumed-role ARN.

Bad input: a chained session over one hour, asked with role credentials from a shared-credentials
profile, reaches each SDK as AWS's ValidationError, in `idbridge credential-process`'s message:
botocore's CredentialRetrievalError, the JavaScript SDK's CredentialsProviderError, the Go SDKs'
credential_process error (and the process's stderr, which they pass through).
"""

from __future__ import annotations

import json
import re
import shlex

import pytest

from conftest import ACCOUNT, EXAMPLES, NO_INSTANCE_CREDS, assumed_role_arn, describe, stop_process, tail
from go_peers import go_peers, run_go  # noqa: F401 - fixture
from nodepeers import node_client
from test_serve import imds_client_env, start_serve, sts_only

KINDS = {
    "chained": ("gcp-to-aws-chained.toml", "gcp-to-chained"),
    "roles-anywhere": ("spiffe-x509-to-aws.toml", "spiffe-x509-to-aws"),
}
ARNS = {
    "chained": re.compile(re.escape(assumed_role_arn("chained-reader", "tenant-7-reader"))),
    # Roles Anywhere names the session after the certificate's serial number.
    "roles-anywhere": re.compile(rf"arn:aws:sts::{ACCOUNT}:assumed-role/spiffe-billing/[0-9a-f]+"),
}
SDKS = ["boto3", "node", "go-v2", "go-v1"]


def process_profile(sandbox, kind: str) -> None:
    config, route = KINDS[kind]
    cmd = shlex.join([str(sandbox.bin), "credential-process", "--config", str(EXAMPLES / config), "--route", route])
    sandbox.aws_config.write_text(f"[profile p]\ncredential_process = {cmd}\nregion = us-east-1\n")


@pytest.fixture(scope="module")
def daemons(idbridge_bin, emulator, tmp_path_factory):
    """`idbridge serve` with a kind's example route behind its IMDSv2 frontend, one daemon per
    kind, started on first use and stopped at the end of the module."""
    running = {}

    def get(kind: str):
        if kind not in running:
            config, route = KINDS[kind]
            d = tmp_path_factory.mktemp(f"serve-{kind}")
            conf = d / "serve.toml"
            conf.write_text((EXAMPLES / config).read_text() + f'''
[serve]
bind = "127.0.0.1"

[serve.aws_imds]
port = 0
route = "{route}"

[serve.metrics]
port = 0
''')
            running[kind] = start_serve(idbridge_bin, emulator, d, conf)
        return running[kind]

    try:
        yield get
    finally:
        for s in running.values():
            stop_process(s.proc)
        for kind, s in running.items():
            assert s.proc.returncode == 0, f"idbridge serve ({kind}) exited with {s.proc.returncode}:\n{tail(s.log)}"


def caller_arn(sandbox, sdk: str, via: str, env: dict, go_dir) -> tuple[str, dict]:
    """(the ARN GetCallerIdentity returned, the peer's whole result) for one SDK."""
    if sdk == "boto3":
        res = sandbox.client("boto3_caller_identity", {"profile": "p"} if via == "process" else {}, env=env)
        assert "error" not in res, res
        assert res["method"] == ("custom-process" if via == "process" else "iam-role"), res
        return res["Arn"], res
    if sdk == "node":
        args = {"provider": "process", "profile": "p"} if via == "process" else {"provider": "imds"}
        res = node_client(sandbox, "aws_caller_identity", args, env=env)
        assert "error" not in res, res
        assert res["access_key_id"].startswith("ASIA") and res["expiration"], res
        return res["Arn"], res
    version = sdk.split("-")[1]
    action = f"{version}-chain" if via == "process" else f"{version}-imds"
    res = run_go(sandbox, go_dir, "awsclient", action, env=env)
    assert "error" not in res, res
    assert res["region"] == "us-east-1", res
    assert res["source"] == ("ProcessProvider" if via == "process" else "EC2RoleProvider"), res
    return res["arn"], res


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("sdk", SDKS)
def test_sdk_credential_process(sandbox, emulator, request, sdk, kind):
    process_profile(sandbox, kind)
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, {"AWS_REGION": "us-east-1"})
    if sdk.startswith("go"):
        env["AWS_PROFILE"] = "p"
    go_dir = request.getfixturevalue("go_peers") if sdk.startswith("go") else None
    arn, res = caller_arn(sandbox, sdk, "process", env, go_dir)
    assert ARNS[kind].fullmatch(arn), res


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("sdk", SDKS)
def test_sdk_daemon_imds(sandbox, emulator, daemons, request, sdk, kind):
    serve = daemons(kind)
    if sdk.startswith("go"):
        # aws-sdk-go v1 and v2 take the region from the instance identity document.
        env = sandbox.env(NO_INSTANCE_CREDS, sts_only(emulator), {"AWS_DEFAULT_REGION": None, "AWS_REGION": None},
                          {"AWS_EC2_METADATA_SERVICE_ENDPOINT": serve.env["AWS_EC2_METADATA_SERVICE_ENDPOINT"]},
                          imds=True)
    else:
        env = imds_client_env(sandbox, emulator, serve)
        env["AWS_REGION"] = "us-east-1"
    go_dir = request.getfixturevalue("go_peers") if sdk.startswith("go") else None
    arn, res = caller_arn(sandbox, sdk, "imds", env, go_dir)
    assert ARNS[kind].fullmatch(arn), res


@pytest.mark.parametrize("sdk", SDKS)
def test_sdk_sees_aws_validation_error_for_a_chained_session_over_an_hour(sandbox, emulator, request, sdk):
    # The first role's credentials in a shared-credentials profile that idbridge's `aws` source
    # reads: only AWS can tell that this is a chained session. (After another role in the same
    # route, the config is refused before any request: test_aws_kinds.py.)
    t = sandbox.idbridge("token", "--config", EXAMPLES / "seed000-gce-to-aws.toml", "--route", "tenant-to-aws",
                         env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert t.returncode == 0, describe(t)
    c = json.loads(t.stdout)
    (sandbox.home / "aws-credentials").write_text(
        f"[tenant]\naws_access_key_id = {c['AccessKeyId']}\naws_secret_access_key = {c['SecretAccessKey']}\n"
        f"aws_session_token = {c['SessionToken']}\n")
    config = sandbox.write("long-chain.toml", '''
[[route]]
name = "long"
source = { kind = "aws", profile = "tenant" }
exchange = [
  { kind = "aws-assume-role", role_arn = "arn:aws:iam::111122223333:role/chained-reader", external_id = "tenant-7", duration_seconds = 7200 },
]
''')
    cmd = shlex.join([str(sandbox.bin), "credential-process", "--config", str(config), "--route", "long"])
    sandbox.aws_config.write_text(f"[profile p]\ncredential_process = {cmd}\nregion = us-east-1\n"
                                  "[profile tenant]\nregion = us-east-1\n")
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, {"AWS_REGION": "us-east-1"})
    if sdk == "boto3":
        res = sandbox.client("boto3_caller_identity", {"profile": "p"}, env=env)
        err = res.get("error")
        assert err and err["type"] == "CredentialRetrievalError", res
        message = err["message"]
    elif sdk == "node":
        res = node_client(sandbox, "aws_caller_identity", {"provider": "process", "profile": "p"}, env=env)
        err = res.get("error")
        assert err and err["name"] == "CredentialsProviderError", res
        message = err["message"]
    else:
        res = run_go(sandbox, request.getfixturevalue("go_peers"), "awsclient", f"{sdk.split('-')[1]}-chain",
                     env={**env, "AWS_PROFILE": "p"})
        # Both SDKs name credential_process; the process's own message reaches their stderr or error.
        assert "error in credential_process" in res.get("error", ""), res
        message = res["error"] + res["_stderr"]
    assert "ValidationError" in message, res
    assert "1 hour session limit for roles assumed by role chaining" in message, res
    assert c["SecretAccessKey"] not in json.dumps(res), "a secret reached the error"
