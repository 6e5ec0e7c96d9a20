"""The AWS SDK for JavaScript v3 (@aws-sdk/credential-providers + @aws-sdk/client-sts) and Node's
google-auth-library against the emulator and against the daemon (`idbridge serve`
examples/serve.toml, backed by the emulator):

* the SDK's SigV4 presigner on GetCallerIdentity (a plain GET of the URL), and its expiry;
* the credential chain through IMDSv2, the ECS container endpoint, `credential_process`
  (`idbridge credential-process`) and web identity (a Google ID token from the metadata server);
  each set of credentials is then used for a GetCallerIdentity at the emulator's STS;
* against the daemon: GCE detection and tokens (google-auth-library + gcp-metadata), IMDSv2,
  ECS and the default chain.
"""

from __future__ import annotations

import shlex

import pytest

from conftest import ACCOUNT, EXAMPLES, NO_INSTANCE_CREDS, assumed_role_arn, metadata_id_token, stop_process, tail
from nodepeers import node_client
from test_serve import start_serve

INSTANCE_ID = "i-0a1b2c3d4e5f60718"
MYAPP = "myapp@gcp-project.iam.gserviceaccount.com"
MYAPP_UNIQUE_ID = "100367186111111111111"
NO_ECS = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": None, "AWS_CONTAINER_AUTHORIZATION_TOKEN": None}
NO_IMDS = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": None}
REGION = {"AWS_REGION": "us-east-1"}


def caller(sandbox, provider: str, env: dict, **args) -> dict:
    return node_client(sandbox, "aws_caller_identity", {"provider": provider, **args}, env=env)


# ------------------------------------------------------------------------------- emulator ---


def test_node_imds_and_ecs_against_the_emulator(sandbox, emulator):
    imds = sandbox.env(emulator, NO_ECS, REGION, imds=True)
    for provider in ("imds", "chain"):
        res = caller(sandbox, provider, imds)
        assert "error" not in res, (provider, res)
        assert res["Arn"] == assumed_role_arn("gcp-caller", INSTANCE_ID), (provider, res)
        assert res["access_key_id"].startswith("ASIA") and res["expiration"], res

    ecs = sandbox.env(emulator, NO_IMDS, REGION)
    for provider in ("ecs", "chain"):
        res = caller(sandbox, provider, ecs)
        assert "error" not in res, (provider, res)
        assert res["Arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/other-app/ecs-task-"), (provider, res)

    bad = caller(sandbox, "ecs", sandbox.env(emulator, NO_IMDS, REGION,
                                             {"AWS_CONTAINER_AUTHORIZATION_TOKEN": "not-the-token"}))
    assert "error" in bad, bad


@pytest.mark.parametrize(("config", "route", "role", "session"), [
    pytest.param("seed000-gce-to-aws.toml", "tenant-to-aws", "psoxy-tenant-access", "psoxy-tenant", id="seed000"),
    pytest.param("seed002-impersonate-to-aws.toml", "myapp-to-aws", "google-cloud-myapp", "myapp", id="seed002"),
])
def test_node_credential_process_runs_idbridge(sandbox, emulator, config, route, role, session):
    cmd = shlex.join([str(sandbox.bin), "credential-process", "--config", str(EXAMPLES / config), "--route", route])
    sandbox.aws_config.write_text(f"[profile p]\ncredential_process = {cmd}\nregion = us-east-1\n")
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, REGION)
    res = caller(sandbox, "process", env, profile="p")
    assert "error" not in res, res
    assert res["Arn"] == assumed_role_arn(role, session), res
    assert res["expiration"], res
    # The default chain finds the same profile.
    res = caller(sandbox, "chain", {**env, "AWS_PROFILE": "p"})
    assert res.get("Arn") == assumed_role_arn(role, session), res


def test_node_web_identity_with_a_metadata_id_token(sandbox, emulator):
    token = metadata_id_token(emulator, "https://psoxy.example/aws")
    token_file = sandbox.write("tenant.jwt", token)
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, REGION, {
        "AWS_WEB_IDENTITY_TOKEN_FILE": token_file,
        "AWS_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/psoxy-tenant-access",
        "AWS_ROLE_SESSION_NAME": "node-sess",
    })
    for provider in ("web_identity", "chain"):
        res = caller(sandbox, provider, env)
        assert res.get("Arn") == assumed_role_arn("psoxy-tenant-access", "node-sess"), (provider, res)
    refused = caller(sandbox, "web_identity", {**env, "AWS_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/google-cloud-myapp"})
    assert "AccessDenied" in (refused.get("error", {}).get("name", "") + refused.get("error", {}).get("message", "")), refused


def test_node_sdk_presigned_get_caller_identity(sandbox, emulator):
    """The JavaScript SDK's SigV4 presigner (query-string signing, session token in the URL)."""
    env = sandbox.env(emulator, NO_ECS, REGION, imds=True)
    args = {"sts": emulator["AWS_ENDPOINT_URL_STS"]}
    res = node_client(sandbox, "presigned_caller_identity", args, env=env)
    assert res.get("status") == 200 and res["has_token"], res
    assert f"<Arn>{assumed_role_arn('gcp-caller', INSTANCE_ID)}</Arn>" in res["body"], res
    res = node_client(sandbox, "presigned_caller_identity", {**args, "expires_in": 1, "sleep_ms": 2500}, env=env)
    assert res.get("status") == 403 and "<Code>SignatureDoesNotMatch</Code>" in res["body"], res


# --------------------------------------------------------------------------------- daemon ---


@pytest.fixture(scope="module")
def serve(idbridge_bin, emulator, tmp_path_factory):
    d = tmp_path_factory.mktemp("node-serve")
    s = start_serve(idbridge_bin, emulator, d, EXAMPLES / "serve.toml")
    try:
        yield s
    finally:
        stop_process(s.proc)
        assert s.proc.returncode == 0, f"idbridge serve exited with {s.proc.returncode}:\n{tail(s.log)}"


def daemon_env(sandbox, emulator, serve, *overlays, **kw) -> dict:
    """A workload's view: only the daemon's settings, plus the emulator's STS to check credentials."""
    return sandbox.env(NO_INSTANCE_CREDS, {"AWS_ENDPOINT_URL_STS": emulator["AWS_ENDPOINT_URL_STS"]}, REGION,
                       *overlays, **kw)


def test_node_google_clients_against_the_daemon(sandbox, emulator, serve):
    env = daemon_env(sandbox, emulator, serve, {
        "GCE_METADATA_HOST": serve.env["GCE_METADATA_HOST"],
        "GCE_METADATA_IP": serve.env["GCE_METADATA_IP"],
    }, gce_check=True)
    res = node_client(sandbox, "gce_detect", {}, env=env)
    assert res.get("available") is True, res
    assert res["client"] == "Compute" and res["project"] == "gcp-project", res
    assert res["email"] == MYAPP, res

    audience = "https://api.example/node-serve"
    res = node_client(sandbox, "gce_tokens", {
        "audience": audience, "tokeninfo_url": f"{emulator['IDBRIDGE_EMULATOR_GOOGLE_URL']}/tokeninfo"}, env=env)
    assert "error" not in res, res
    assert res["tokeninfo"]["email"] == MYAPP, res["tokeninfo"]
    claims = res["id_token_claims"]
    assert claims["aud"] == audience and claims["sub"] == MYAPP_UNIQUE_ID, claims
    log = serve.log.read_text()
    assert res["access_token"] not in log and res["id_token"] not in log, "a credential reached the log"


def test_node_aws_clients_against_the_daemon(sandbox, emulator, serve):
    imds = daemon_env(sandbox, emulator, serve, {
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": serve.env["AWS_EC2_METADATA_SERVICE_ENDPOINT"],
        "AWS_EC2_METADATA_V1_DISABLED": "true",
    }, imds=True)
    for provider in ("imds", "chain"):
        res = caller(sandbox, provider, imds)
        assert res.get("Arn") == assumed_role_arn("psoxy-tenant-access", "psoxy-tenant"), (provider, res)

    ecs = daemon_env(sandbox, emulator, serve, {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": serve.env["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": serve.env["AWS_CONTAINER_AUTHORIZATION_TOKEN"],
    })
    for provider in ("ecs", "chain"):
        res = caller(sandbox, provider, ecs)
        assert res.get("Arn") == assumed_role_arn("psoxy-tenant-access", "psoxy-tenant"), (provider, res)


def test_node_external_account_aws_source_over_the_daemons_imds(sandbox, emulator, serve):
    """google-auth-library's AwsClient reads the region, role and credentials from the daemon's
    IMDSv2 and signs GetCallerIdentity with them; the emulated Google STS verifies that request
    and then refuses the caller by the provider's attribute condition (the daemon serves the
    tenant role, the provider admits only gcp-caller): a refusal after the signature checked out."""
    from test_google_external_account import AWS4_REQUEST, AWS_AUDIENCE, external_account, imds_source

    daemon_imds = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": serve.env["AWS_EC2_METADATA_SERVICE_ENDPOINT"]}
    info = external_account(emulator, AWS_AUDIENCE, AWS4_REQUEST, imds_source(daemon_imds))
    res = node_client(sandbox, "external_account", {"info": info}, env=daemon_env(sandbox, emulator, serve))
    err = res.get("error")
    assert err, res
    assert "unauthorized_client" in err["message"] and "attribute condition" in err["message"], err
