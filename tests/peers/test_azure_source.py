"""The `azure-managed-identity` source with real peers: the Azure VM's Entra token as the OIDC
subject elsewhere, fetched by idbridge from the emulated Azure IMDS / App Service endpoint.

* boto3 through credential_process (`idbridge credential-process`, route azure-vm-to-aws) calls
  sts GetCallerIdentity as role azure-vm-access, over the App Service protocol and over IMDS;
* google-auth `external_account` with an executable source (`idbridge token --format
  google-executable`) and with a file source (the token idbridge prints) exchanges the VM's token
  at Google STS (provider azure-pool/entra) and impersonates azure-demo;
* a token for the wrong audience gets AWS's AccessDenied and Google's invalid_grant; a token of an
  untrusted tenant (another emulator's Azure VM, same object id) gets AWS's InvalidIdentityToken
  (no OIDC provider for that issuer) and Google's issuer mismatch.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time

import pytest

from conftest import (EXAMPLES, NO_INSTANCE_CREDS, assumed_role_arn, clean_env, describe, parse_env_file,
                      stop_process, tail, web_identity_env)
from test_google_external_account import (JWT_TYPE, assert_service_account_token, ext_refresh,
                                          external_account)

TENANT = "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
FOREIGN_TENANT = "0b0b0b0b-1111-4222-8333-444444444444"
VM_SYSTEM_OID = "e1111111-0000-4000-8000-0000000000d1"
AZURE_POOL = ("//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/"
              "azure-pool/providers/entra")
AZURE_SA = "azure-demo@example-project.iam.gserviceaccount.com"
ROLE = "arn:aws:iam::111122223333:role/azure-vm-access"
IMDS_ONLY = {"IDENTITY_ENDPOINT": None, "IDENTITY_HEADER": None}

# Another tenant's Azure VM whose system-assigned identity has the trusted identity's object id:
# only the issuer (the tenant) tells them apart.
FOREIGN_WORLD = f"""
[[entra_tenant]]
id = "{FOREIGN_TENANT}"

[[entra_app]]
tenant = "{FOREIGN_TENANT}"
display_name = "look-alike"
client_id = "f3333333-0000-4000-8000-000000000003"
object_id = "f3333333-0000-4000-8000-0000000000a3"
identifier_uris = ["api://idbridge-aws", "api://idbridge-gcp"]

[azure_vm]
tenant = "{FOREIGN_TENANT}"
system_assigned = {{ client_id = "f1111111-0000-4000-8000-000000000041", principal_id = "{VM_SYSTEM_OID}" }}
"""


def routes(sandbox, imds_endpoint: str | None = None) -> str:
    """Routes of the Azure source: the token alone, and wrong-audience variants."""
    extra = f', protocol = "imds", endpoint = "{imds_endpoint}"' if imds_endpoint else ""
    path = sandbox.write("azure-routes.toml", "\n".join([
        "[[route]]",
        'name = "gcp-token"',
        f'source = {{ kind = "azure-managed-identity", resource = "api://idbridge-gcp"{extra} }}',
        "",
        "[[route]]",
        'name = "aws-token"',
        f'source = {{ kind = "azure-managed-identity", resource = "api://idbridge-aws"{extra} }}',
        "",
        "[[route]]",
        'name = "wrong-audience-to-aws"',
        f'source = {{ kind = "azure-managed-identity", resource = "api://idbridge-gcp"{extra} }}',
        f'exchange = [{{ kind = "aws-sts", role_arn = "{ROLE}", session_name = "azure-vm" }}]',
        "",
        "[[route]]",
        'name = "foreign-to-aws"',
        f'source = {{ kind = "azure-managed-identity", resource = "api://idbridge-aws"{extra} }}',
        f'exchange = [{{ kind = "aws-sts", role_arn = "{ROLE}", session_name = "azure-vm" }}]',
        "",
    ]))
    assert " " not in str(path)
    return str(path)


def credential_process_profile(sandbox, config, route: str) -> None:
    cmd = shlex.join([str(sandbox.bin), "credential-process", "--config", str(config), "--route", route,
                      "--no-cache"])
    sandbox.aws_config.write_text(f"[profile p]\ncredential_process = {cmd}\nregion = us-east-1\n")


def printed_token(sandbox, config: str, route: str, env: dict) -> str:
    r = sandbox.idbridge("token", "--config", config, "--route", route, "--format", "access-token", "--no-cache",
                         env=env)
    assert r.returncode == 0, describe(r)
    token = r.stdout.strip()
    assert token.count(".") == 2, token[:80]
    return token


@pytest.fixture(scope="module")
def foreign_emulator(idbridge_bin, tmp_path_factory):
    """A second `idbridge emulate` whose world is only another tenant's Azure VM."""
    d = tmp_path_factory.mktemp("foreign")
    world = d / "world.toml"
    world.write_text(FOREIGN_WORLD)
    env_file, log = d / "emulator.env", d / "emulator.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([str(idbridge_bin), "emulate", "--world", str(world), "--env-file", str(env_file)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                env=clean_env(d / "home"), cwd=d)
    try:
        deadline = time.monotonic() + 20
        while not env_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the second emulator did not start:\n{tail(log)}", pytrace=False)
            time.sleep(0.05)
        yield parse_env_file(env_file.read_text())
    finally:
        stop_process(proc)


# ------------------------------------------------------------------------- Azure VM → AWS ---


@pytest.mark.parametrize("protocol", ["app-service", "imds"])
def test_boto3_credential_process_azure_vm_to_aws(sandbox, emulator, protocol):
    credential_process_profile(sandbox, EXAMPLES / "azure-vm-to-aws.toml", "azure-vm-to-aws")
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, IMDS_ONLY if protocol == "imds" else {})
    res = sandbox.client("boto3_caller_identity", {"profile": "p"}, env=env)
    assert "error" not in res, res
    assert res["method"] == "custom-process", res
    assert res["Arn"] == assumed_role_arn("azure-vm-access", "azure-vm"), res


def test_credential_process_output_and_no_token_in_it(sandbox, emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    r = sandbox.idbridge("credential-process", "--config", EXAMPLES / "azure-vm-to-aws.toml",
                         "--route", "azure-vm-to-aws", "--no-cache", env=env)
    assert r.returncode == 0, describe(r)
    out = json.loads(r.stdout)
    assert out["Version"] == 1 and out["AccessKeyId"].startswith("ASIA"), out
    assert out["SessionToken"] and out["Expiration"].endswith("Z"), out
    assert "eyJ" not in r.stdout + r.stderr, "an Entra token was printed"
    assert emulator["IDENTITY_HEADER"] not in r.stdout + r.stderr


def test_wrong_audience_is_refused_by_aws(sandbox, emulator):
    config = routes(sandbox)
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    r = sandbox.idbridge("token", "--config", config, "--route", "wrong-audience-to-aws", "--no-cache", env=env)
    assert r.returncode != 0, describe(r)
    assert "AccessDenied" in r.stderr, describe(r)
    # boto3's own AssumeRoleWithWebIdentity with the same token: AWS's AccessDenied.
    token = printed_token(sandbox, config, "gcp-token", env)
    res = sandbox.client("boto3_caller_identity", {},
                         env=web_identity_env(sandbox, emulator, token, "azure-vm-access", "azvm"))
    assert res.get("error", {}).get("code") == "AccessDenied", res


def test_untrusted_tenant_is_refused_by_aws(sandbox, emulator, foreign_emulator):
    imds = foreign_emulator["AZURE_POD_IDENTITY_AUTHORITY_HOST"]
    config = routes(sandbox, imds_endpoint=imds)
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    r = sandbox.idbridge("token", "--config", config, "--route", "foreign-to-aws", "--no-cache", env=env)
    assert r.returncode != 0, describe(r)
    assert "InvalidIdentityToken" in r.stderr, describe(r)
    assert f"https://sts.windows.net/{FOREIGN_TENANT}/" in r.stderr, describe(r)
    token = printed_token(sandbox, config, "aws-token", env)
    res = sandbox.client("boto3_caller_identity", {},
                         env=web_identity_env(sandbox, emulator, token, "azure-vm-access", "foreign"))
    assert res.get("error", {}).get("code") == "InvalidIdentityToken", res
    assert "No OpenIDConnect provider found" in res["error"]["message"], res


# ---------------------------------------------------------------------- Azure VM → Google ---


def test_google_auth_executable_source_runs_idbridge(sandbox, emulator):
    config = routes(sandbox)
    command = f"{sandbox.bin} token --config {config} --route gcp-token --format google-executable --no-cache"
    assert " " not in str(sandbox.bin)
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, IMDS_ONLY)
    source = {"executable": {"command": command, "timeout_millis": 30000}}
    info = external_account(emulator, AZURE_POOL, JWT_TYPE, source, impersonate=AZURE_SA)
    res = ext_refresh(sandbox, info, env={**env, "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES": "1"})
    assert res["class"] == "google.auth.pluggable.Credentials", res
    assert_service_account_token(emulator, res, AZURE_SA)


def test_google_auth_file_source_fed_by_idbridge(sandbox, emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    token = printed_token(sandbox, routes(sandbox), "gcp-token", env)
    source = {"file": str(sandbox.write("entra.jwt", token))}
    info = external_account(emulator, AZURE_POOL, JWT_TYPE, source, impersonate=AZURE_SA)
    res = ext_refresh(sandbox, info, env=env)
    assert res["class"] == "google.auth.identity_pool.Credentials", res
    assert_service_account_token(emulator, res, AZURE_SA)


def test_google_refuses_the_wrong_audience_and_an_untrusted_tenant(sandbox, emulator, foreign_emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    cases = {
        "wrong audience": printed_token(sandbox, routes(sandbox), "aws-token", env),
        "untrusted tenant": printed_token(
            sandbox, routes(sandbox, imds_endpoint=foreign_emulator["AZURE_POD_IDENTITY_AUTHORITY_HOST"]),
            "gcp-token", env),
    }
    for what, token in cases.items():
        source = {"file": str(sandbox.write(f"{what.replace(' ', '-')}.jwt", token))}
        info = external_account(emulator, AZURE_POOL, JWT_TYPE, source, impersonate=AZURE_SA)
        res = ext_refresh(sandbox, info, env=env)
        message = res.get("error", {}).get("message", "")
        assert "invalid_grant" in message, (what, res)
        if what == "wrong audience":
            assert "audience" in message, res
        else:
            assert "does not match the expected issuer" in message, res
            assert FOREIGN_TENANT in message, res
