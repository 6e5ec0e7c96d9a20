"""moto (IAM auth on) verifies requests boto3 signs with credentials idbridge obtained from the
emulator: the IAM Roles Anywhere session of the SPIFFE X.509-SVID (examples/spiffe-x509-to-aws.toml)
and the chained role session (examples/gcp-to-aws-chained.toml), each through
`credential_process = idbridge credential-process --route …`.

moto knows only keys it issued, so moto_clients.py runs it in-process and hands it the session boto3
got (see there). Then: GetCallerIdentity (botocore's SigV4Auth) and S3 GetObject (S3SigV4Auth) are
accepted and moto names the same assumed role as the emulator's STS; a PutObject the role's
policy does not allow is AccessDenied; a secret one character off is SignatureDoesNotMatch; a
changed session token is InvalidClientTokenId.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from conftest import ACCOUNT, EXAMPLES, NO_INSTANCE_CREDS, PYTHON, assumed_role_arn, describe

MOTO_CLIENTS = Path(__file__).resolve().parent / "moto_clients.py"
BUCKET = "idbridge-ra-reports"
KEY = "q3.csv"
BODY = "region,total\nus-east-1,42\n"


def run_moto_session(sandbox, emulator, config: str, route: str) -> dict:
    cmd = shlex.join([str(sandbox.bin), "credential-process", "--config", str(EXAMPLES / config), "--route", route])
    sandbox.aws_config.write_text(f"[profile p]\ncredential_process = {cmd}\nregion = us-east-1\n")
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, {"MOTO_ACCOUNT_ID": ACCOUNT})
    args = {"profile": "p", "emulator_sts": emulator["AWS_ENDPOINT_URL_STS"], "bucket": BUCKET, "key": KEY,
            "body": BODY}
    r = sandbox.run([PYTHON, MOTO_CLIENTS, "moto_known_session", json.dumps(args)], env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip(), describe(r)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if isinstance(out.get("error"), dict) and out["error"].get("unexpected"):
        pytest.fail(f"moto_known_session raised unexpectedly: {out['error']}\n{r.stderr}", pytrace=False)
    return out


def code_of(res) -> tuple:
    assert isinstance(res, dict) and "error" in res, res
    return res["error"].get("code"), res["error"].get("status")


@pytest.mark.parametrize(("config", "route", "arn"), [
    pytest.param("spiffe-x509-to-aws.toml", "spiffe-x509-to-aws",
                 re.compile(rf"arn:aws:sts::{ACCOUNT}:assumed-role/spiffe-billing/[0-9a-f]+"), id="roles-anywhere"),
    pytest.param("gcp-to-aws-chained.toml", "gcp-to-chained",
                 re.compile(re.escape(assumed_role_arn("chained-reader", "tenant-7-reader"))), id="chained"),
])
def test_moto_verifies_sigv4_of_idbridge_session_credentials(sandbox, emulator, config, route, arn):
    out = run_moto_session(sandbox, emulator, config, route)
    assert out["method"] == "custom-process", out
    assert out["access_key_id"].startswith("ASIA"), out
    assert arn.fullmatch(out["emulator_arn"]), out

    # Accepted: moto recomputed both signatures with the session's secret.
    assert out["moto_arn"] == out["emulator_arn"], out
    assert out["s3_get"] == BODY, out
    # Authenticated, then authorised by the role's policy: PutObject is not in it.
    assert code_of(out["s3_put"]) == ("AccessDenied", 403), out["s3_put"]

    # Refused: a tampered secret, and a session token moto does not hold.
    assert code_of(out["tampered_sts"]) == ("SignatureDoesNotMatch", 403), out["tampered_sts"]
    assert code_of(out["tampered_s3"]) == ("SignatureDoesNotMatch", 403), out["tampered_s3"]
    assert code_of(out["wrong_token_sts"]) == ("InvalidClientTokenId", 403), out["wrong_token_sts"]
