"""AWS SDK peers (boto3/botocore, aws cli v1) against idbridge and the emulator's STS."""

from __future__ import annotations

import base64
import json
import shlex

import pytest

from conftest import NO_INSTANCE_CREDS, ACCOUNT, EXAMPLES, VENV_BIN, assumed_role_arn, describe, metadata_id_token, web_identity_env

# (config file, route, role, session name) — each seed route of examples/ that yields AWS credentials.
SEED_ROUTES = [
    pytest.param("seed000-gce-to-aws.toml", "tenant-to-aws", "psoxy-tenant-access", "psoxy-tenant", id="seed000"),
    pytest.param("seed004-sa-key-to-aws.toml", "sa-key-to-aws", "gcp-sa-key-caller", "sa-key-caller", id="seed004"),
    pytest.param("seed002-impersonate-to-aws.toml", "myapp-to-aws", "google-cloud-myapp", "myapp", id="seed002"),
]


def write_credential_process_profile(sandbox, config: str, route: str) -> None:
    cmd = shlex.join([str(sandbox.bin), "credential-process", "--config", str(EXAMPLES / config), "--route", route])
    sandbox.aws_config.write_text(f"[profile p]\ncredential_process = {cmd}\nregion = us-east-1\n")


@pytest.mark.parametrize(("config", "route", "role", "session"), SEED_ROUTES)
def test_boto3_credential_process(sandbox, emulator, config, route, role, session):
    write_credential_process_profile(sandbox, config, route)
    res = sandbox.client("boto3_caller_identity", {"profile": "p"}, env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert "error" not in res, res
    assert res["method"] == "custom-process"
    assert res["access_key_id"].startswith("ASIA"), res
    assert res["Arn"] == assumed_role_arn(role, session)
    assert res["Account"] == ACCOUNT
    assert res["UserId"].endswith(f":{session}"), res


@pytest.mark.parametrize(("config", "route", "role", "session"), SEED_ROUTES)
def test_aws_cli_credential_process(sandbox, emulator, config, route, role, session):
    write_credential_process_profile(sandbox, config, route)
    r = sandbox.run([VENV_BIN / "aws", "sts", "get-caller-identity", "--profile", "p", "--output", "json"],
                    env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert r.returncode == 0, describe(r)
    ident = json.loads(r.stdout)
    assert ident["Arn"] == assumed_role_arn(role, session), ident
    assert ident["Account"] == ACCOUNT


def _tamper_payload(token: str) -> str:
    """Changes the `sub` claim and keeps the original signature."""
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "999999999999999999999"
    forged = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{sig}"


def test_boto3_web_identity_provider(sandbox, emulator):
    token = metadata_id_token(emulator, "https://psoxy.example/aws")

    res = sandbox.client("boto3_caller_identity", {},
                         env=web_identity_env(sandbox, emulator, token, "psoxy-tenant-access", "boto-sess"))
    assert "error" not in res, res
    assert res["method"] == "assume-role-with-web-identity"
    assert res["access_key_id"].startswith("ASIA"), res
    assert res["Arn"] == assumed_role_arn("psoxy-tenant-access", "boto-sess")
    assert res["Arn"].endswith("assumed-role/psoxy-tenant-access/boto-sess")

    # The tenant's token does not satisfy myapp's trust policy (aud/oaud/sub of another account).
    res = sandbox.client("boto3_caller_identity", {},
                         env=web_identity_env(sandbox, emulator, token, "google-cloud-myapp", "boto-sess"))
    assert res.get("error", {}).get("client_error") is True, res
    assert res["error"]["code"] == "AccessDenied", res

    # A token whose payload was altered after signing.
    res = sandbox.client("boto3_caller_identity", {},
                         env=web_identity_env(sandbox, emulator, _tamper_payload(token), "psoxy-tenant-access",
                                               "boto-sess"))
    assert res.get("error", {}).get("client_error") is True, res
    assert res["error"]["code"] == "InvalidIdentityToken", res


def test_emulator_sts_checks_botocore_sigv4(sandbox, emulator):
    """botocore as the signer: the emulator's GetCallerIdentity accepts its SigV4 and rejects forgeries."""
    r = sandbox.idbridge("token", "--config", EXAMPLES / "seed000-gce-to-aws.toml", "--route", "tenant-to-aws",
                         "--format", "json", env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert r.returncode == 0, describe(r)
    c = json.loads(r.stdout)

    def gci(**overrides):
        keys = {"AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
                "AWS_SESSION_TOKEN": c["SessionToken"], "AWS_DEFAULT_REGION": "us-east-1"}
        return sandbox.client("boto3_caller_identity", {}, env=sandbox.env(emulator, NO_INSTANCE_CREDS, keys, overrides))

    ok = gci()
    assert "error" not in ok, ok
    assert ok["method"] == "env"
    assert ok["Arn"] == assumed_role_arn("psoxy-tenant-access", "psoxy-tenant")

    bad_secret = gci(AWS_SECRET_ACCESS_KEY=c["SecretAccessKey"][:-1] + ("A" if c["SecretAccessKey"][-1] != "A" else "B"))
    assert bad_secret.get("error", {}).get("code") == "SignatureDoesNotMatch", bad_secret

    bad_token = gci(AWS_SESSION_TOKEN=c["SessionToken"][:-4] + "AAAA")
    assert bad_token.get("error", {}).get("code") in ("InvalidClientTokenId", "ExpiredToken"), bad_token
