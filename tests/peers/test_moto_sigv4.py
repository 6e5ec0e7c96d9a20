"""moto (auth on) as an independent SigV4 verifier of `idbridge request`.

moto verifies SigV4 with botocore's own signers (SigV4Auth / S3SigV4Auth) once auth is on
(`POST /moto-api/reset-auth 0`). Known moto limitation (peers.md §1): a signed request with an
*empty* body whose shape botocore would not produce (POST with the action in the query, GET
with a query) is a false SignatureDoesNotMatch — so the STS check uses a botocore-style form
POST. For S3, botocore itself sends `x-amz-content-sha256`, and with that header moto verifies
empty-body GETs correctly (checked below with boto3 as the control).
"""

from __future__ import annotations

import contextlib

import pytest

from conftest import describe

USER = "alice"
BUCKET = "idbridge-peer-bucket"
KEY = "hello.txt"
BODY = "hello from moto\n"
# A key that needs URI encoding: S3 canonical URIs are encoded once (other services: twice).
SPACED_KEY = "reports/q1 2026.txt"
SPACED_URI = "reports/q1%202026.txt"
SPACED_BODY = "quarterly\n"
MOTO_ACCOUNT = "123456789012"
STS_GCI = ["--service", "sts", "-X", "POST", "-H", "Content-Type: application/x-www-form-urlencoded",
           "-d", "Action=GetCallerIdentity&Version=2011-06-15"]


@pytest.fixture(scope="module")
def alice(moto, tmp_path_factory, idbridge_bin) -> dict:
    """With moto's auth off: IAM user alice (+ key, allow-all inline policy) and a bucket with an object."""
    from conftest import Sandbox

    sb = Sandbox(tmp_path_factory.mktemp("moto-setup"), idbridge_bin)
    keys = sb.client("moto_setup", {"endpoint": moto.url, "user": USER, "bucket": BUCKET,
                                    "objects": {KEY: BODY, SPACED_KEY: SPACED_BODY}}, env=sb.env())
    assert "error" not in keys, keys
    assert keys["access_key_id"].startswith("AKIA"), keys
    return keys


@contextlib.contextmanager
def moto_auth(moto):
    """moto verifies SigV4 + IAM inside the block; auth is always switched off again."""
    try:
        prev = moto.reset_auth("0")
        assert prev["status"] == "ok", prev
        yield
    finally:
        moto.reset_auth("inf")


def wrong(secret: str) -> str:
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


def idbridge_request(sandbox, keys: dict, secret: str, *args: str):
    env = sandbox.env({"AWS_ACCESS_KEY_ID": keys["access_key_id"], "AWS_SECRET_ACCESS_KEY": secret})
    return sandbox.idbridge("request", "--region", "us-east-1", *args, env=env)


def test_idbridge_request_signature_checked_by_moto(sandbox, moto, alice):
    url = f"{moto.url}/"
    with moto_auth(moto):
        ok = idbridge_request(sandbox, alice, alice["secret_access_key"], *STS_GCI, url)
        assert ok.returncode == 0, describe(ok)
        assert f"<Arn>arn:aws:iam::{MOTO_ACCOUNT}:user/{USER}</Arn>" in ok.stdout, describe(ok)

        bad = idbridge_request(sandbox, alice, wrong(alice["secret_access_key"]), *STS_GCI, url)
        assert bad.returncode != 0, describe(bad)
        assert "SignatureDoesNotMatch" in bad.stdout, describe(bad)


S3_HINT = ("idbridge's S3 SigV4 GET was rejected although boto3's identical GET passed. S3 SigV4 needs the "
           "signed x-amz-content-sha256 header (S3 rejects requests without it), single URI encoding and "
           "no path normalization.\n")


@pytest.mark.parametrize(("key", "uri", "body"), [
    pytest.param(KEY, KEY, BODY, id="plain-key"),
    pytest.param(SPACED_KEY, SPACED_URI, SPACED_BODY, id="key-needing-encoding"),
])
def test_idbridge_request_s3_get_signature_checked_by_moto(sandbox, moto, alice, key, uri, body):
    obj = f"{moto.url}/{BUCKET}/{uri}"
    with moto_auth(moto):
        # Control: botocore's S3 signer passes moto's verification for this exact request.
        control = sandbox.client("boto3_s3_get", {"endpoint": moto.url, "bucket": BUCKET, "key": key, **alice},
                                 env=sandbox.env())
        assert control.get("body") == body, control

        got = idbridge_request(sandbox, alice, alice["secret_access_key"], "--service", "s3", obj)
        assert got.returncode == 0, S3_HINT + describe(got)
        assert got.stdout == body, describe(got)

        bad = idbridge_request(sandbox, alice, wrong(alice["secret_access_key"]), "--service", "s3", obj)
        assert bad.returncode != 0, describe(bad)
        assert "SignatureDoesNotMatch" in bad.stdout, describe(bad)
