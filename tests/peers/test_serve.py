"""Real clients against `idbridge serve` (examples/serve.toml) backed by `idbridge emulate`:

* google-auth `default()`, compute `Credentials` and `IDTokenCredentials` through the GCE metadata
  frontend; the access token is then checked live at the emulator's tokeninfo, the ID token
  verified against the emulator's Google certs;
* boto3 through the IMDSv2 frontend and through the ECS frontend (two roles), and the AWS CLI
  through IMDS; each ends with the emulator's STS answering the assumed-role ARN;
* per-workload identity over loopback TCP (the daemon asks the kernel for the socket owner): a caller whose uid is
  not granted the route gets 403 naming its uid and the route;
* `--check`, exit 64 on a bad config, `/metrics`, `/readyz`, and no credential in the daemon's log.

The daemon runs with the emulator's environment (its routes talk to the emulator); the clients
run with a clean environment holding only the daemon's `--env-file` settings and the emulator's
STS endpoint (to check the credentials).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import (
    EXAMPLES,
    HTTP,
    NO_INSTANCE_CREDS,
    VENV_BIN,
    assumed_role_arn,
    clean_env,
    describe,
    parse_env_file,
    stop_process,
    tail,
)

SERVE_START_TIMEOUT = 20.0
MYAPP = "myapp@gcp-project.iam.gserviceaccount.com"
MYAPP_UNIQUE_ID = "100367186111111111111"
GOOGLE_ISSUER = "https://accounts.google.com"
TENANT_ARN = assumed_role_arn("psoxy-tenant-access", "psoxy-tenant")
SA_KEY_ARN = assumed_role_arn("gcp-sa-key-caller", "sa-key-caller")


@dataclass
class Serve:
    env: dict[str, str]  # the --env-file settings
    metrics: str  # base URL of the metrics listener
    log: Path
    proc: subprocess.Popen


def start_serve(idbridge_bin: Path, emulator: dict, d: Path, config: Path) -> Serve:
    env_file = d / "serve.env"
    log = d / "serve.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [str(idbridge_bin), "serve", "--config", str(config), "--env-file", str(env_file)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            env=clean_env(d / "home", emulator), cwd=d,
        )
    deadline = time.monotonic() + SERVE_START_TIMEOUT
    while not env_file.exists():
        if proc.poll() is not None:
            pytest.fail(f"idbridge serve exited with {proc.returncode}:\n{tail(log)}", pytrace=False)
        if time.monotonic() > deadline:
            stop_process(proc)
            pytest.fail(f"idbridge serve did not write {env_file} in time:\n{tail(log)}", pytrace=False)
        time.sleep(0.05)
    assert (env_file.stat().st_mode & 0o777) == 0o600, oct(env_file.stat().st_mode)
    m = re.search(r"metrics\s+(http://127\.0\.0\.1:\d+)/metrics", log.read_text())
    assert m, f"no metrics URL in the daemon's output:\n{tail(log)}"
    return Serve(env=parse_env_file(env_file.read_text()), metrics=m.group(1), log=log, proc=proc)


@pytest.fixture(scope="module")
def serve(idbridge_bin, emulator, tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    s = start_serve(idbridge_bin, emulator, d, EXAMPLES / "serve.toml")
    try:
        yield s
    finally:
        stop_process(s.proc)
        assert s.proc.returncode == 0, f"idbridge serve exited with {s.proc.returncode}:\n{tail(s.log)}"


def sts_only(emulator: dict) -> dict:
    """What a client needs to check its credentials: the emulator's STS, nothing else of it."""
    return {"AWS_ENDPOINT_URL_STS": emulator["AWS_ENDPOINT_URL_STS"], "AWS_DEFAULT_REGION": "us-east-1"}


def imds_client_env(sandbox, emulator, serve) -> dict:
    return sandbox.env(NO_INSTANCE_CREDS, sts_only(emulator), {
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": serve.env["AWS_EC2_METADATA_SERVICE_ENDPOINT"],
        "AWS_EC2_METADATA_V1_DISABLED": "true",
    }, imds=True)


def ecs_client_env(sandbox, emulator, serve, path: str | None = None) -> dict:
    uri = serve.env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
    if path is not None:
        uri = re.sub(r"(http://[^/]+).*", lambda m: m.group(1) + path, uri)
    return sandbox.env(NO_INSTANCE_CREDS, sts_only(emulator), {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": uri,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": serve.env["AWS_CONTAINER_AUTHORIZATION_TOKEN"],
    })


def test_env_file_holds_every_frontend(serve):
    assert set(serve.env) == {
        "GCE_METADATA_HOST", "GCE_METADATA_IP", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    }, serve.env
    assert serve.env["GCE_METADATA_HOST"] == serve.env["GCE_METADATA_IP"]
    for key, value in serve.env.items():
        if key != "AWS_CONTAINER_AUTHORIZATION_TOKEN":
            assert "127.0.0.1" in value, (key, value)
    assert serve.env["AWS_CONTAINER_CREDENTIALS_FULL_URI"].endswith("/role/tenant")
    assert len(serve.env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]) >= 40


def test_google_auth_default_and_id_tokens(sandbox, emulator, serve):
    # GCE detection runs (NO_GCE_CHECK unset): the ping goes to GCE_METADATA_IP.
    env = sandbox.env(NO_INSTANCE_CREDS, {
        "GCE_METADATA_HOST": serve.env["GCE_METADATA_HOST"],
        "GCE_METADATA_IP": serve.env["GCE_METADATA_IP"],
    }, gce_check=True)
    audience = "https://api.example/serve"
    res = sandbox.client("gauth_compute", {"audience": audience}, env=env)
    assert "error" not in res, res
    assert res["ping"] is True
    assert res["class"] == "google.auth.compute_engine.credentials.Credentials", res
    assert res["project"] == "gcp-project"
    assert res["service_account_email"] == MYAPP
    assert res["token"] and res["expiry"], res

    # The access token is live and is myapp's: the emulator's tokeninfo says so.
    g = emulator["IDBRIDGE_EMULATOR_GOOGLE_URL"]
    info = HTTP.post(f"{g}/tokeninfo", data={"access_token": res["token"]}, timeout=10)
    assert info.status_code == 200, info.text
    assert info.json()["email"] == MYAPP, info.json()

    claims = res["id_token_claims"]
    assert claims["aud"] == audience, claims
    assert claims["iss"] == GOOGLE_ISSUER, claims
    assert claims["sub"] == MYAPP_UNIQUE_ID, claims
    verified = sandbox.client("gauth_verify", {"token": res["id_token"], "audience": audience,
                                               "certs_url": f"{g}/oauth2/v3/certs"}, env=env)
    assert "error" not in verified, verified
    assert verified["claims"]["sub"] == MYAPP_UNIQUE_ID

    log = serve.log.read_text()
    assert res["token"] not in log and res["id_token"] not in log, "a credential reached the log"


def test_metadata_wire_rules_seen_by_curl_like_clients(serve):
    base = f"http://{serve.env['GCE_METADATA_HOST']}"
    ping = HTTP.get(f"{base}/", timeout=10)
    assert ping.status_code == 200 and ping.headers["Metadata-Flavor"] == "Google"
    url = f"{base}/computeMetadata/v1/instance/service-accounts/default/token"
    bare = HTTP.get(url, timeout=10)
    assert bare.status_code == 403 and bare.headers["Metadata-Flavor"] == "Google", bare.text
    proxied = HTTP.get(url, headers={"Metadata-Flavor": "Google", "X-Forwarded-For": "10.1.2.3"}, timeout=10)
    assert proxied.status_code == 403
    ok = HTTP.get(url, headers={"Metadata-Flavor": "Google"}, timeout=10)
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "application/json"
    assert ok.json()["expires_in"] > 0
    big = HTTP.get(url, headers={"Metadata-Flavor": "Google", "X-Big": "x" * 20000}, timeout=10)
    assert big.status_code == 431


def test_boto3_through_imds(sandbox, emulator, serve):
    res = sandbox.client("boto3_caller_identity", {}, env=imds_client_env(sandbox, emulator, serve))
    assert "error" not in res, res
    assert res["method"] == "iam-role", res
    assert res["access_key_id"].startswith("ASIA"), res
    assert res["Arn"] == TENANT_ARN, res


def test_boto3_through_ecs_both_roles(sandbox, emulator, serve):
    for path, arn in [(None, TENANT_ARN), ("/role/sa-key", SA_KEY_ARN)]:
        res = sandbox.client("boto3_caller_identity", {}, env=ecs_client_env(sandbox, emulator, serve, path))
        assert "error" not in res, (path, res)
        assert res["method"] == "container-role", res
        assert res["Arn"] == arn, res


def test_ecs_wrong_token_and_unknown_role(serve):
    base = re.match(r"http://[^/]+", serve.env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]).group(0)
    token = serve.env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    wrong = HTTP.get(f"{base}/role/tenant", headers={"Authorization": "not-the-token"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["code"] == "AccessDenied", wrong.text
    unknown = HTTP.get(f"{base}/role/nobody", headers={"Authorization": token}, timeout=10)
    assert unknown.status_code == 404, unknown.text


def test_aws_cli_through_imds(sandbox, emulator, serve):
    r = sandbox.run([VENV_BIN / "aws", "sts", "get-caller-identity", "--output", "json"],
                    env=imds_client_env(sandbox, emulator, serve))
    assert r.returncode == 0, describe(r)
    assert json.loads(r.stdout)["Arn"] == TENANT_ARN, r.stdout


def test_metrics_and_readiness(serve):
    assert HTTP.get(f"{serve.metrics}/readyz", timeout=10).status_code == 200
    assert HTTP.get(f"{serve.metrics}/healthz", timeout=10).status_code == 200
    text = HTTP.get(f"{serve.metrics}/metrics", timeout=10).text
    assert re.search(r'^idbridge_serve_requests_total\{frontend="gce_metadata",status="200"\} \d+$', text, re.M), text
    assert re.search(r'^idbridge_serve_upstream_loads_total\{route="tenant-to-aws",keys="route"\} 1$',
                     text, re.M), text
    assert re.search(r'^idbridge_serve_credential_expiry_seconds\{route="tenant-to-aws",[^}]*\} \d', text, re.M), text
    assert "idbridge_serve_ready 1" in text


def test_no_credential_in_the_log(serve):
    log = serve.log.read_text()
    assert serve.env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] not in log
    assert "SecretAccessKey" not in log and "ya29." not in log, tail(serve.log)


def test_per_workload_identity_over_loopback_tcp(idbridge_bin, emulator, tmp_path):
    """Our uid may use myapp-gcp only: its GCE token works, the IMDS role is refused with a body
    naming the uid and the route (the daemon found our uid as the owner of our socket)."""
    uid = os.getuid()
    text = (EXAMPLES / "serve.toml").read_text()
    text = text.replace('key_file = "keys/', f'key_file = "{EXAMPLES}/keys/')
    text += f'\n[[serve.caller]]\nuid = {uid}\nroutes = ["myapp-gcp"]\n'
    config = tmp_path / "serve.toml"
    config.write_text(text)
    s = start_serve(idbridge_bin, emulator, tmp_path, config)
    try:
        gce = f"http://{s.env['GCE_METADATA_HOST']}/computeMetadata/v1/instance/service-accounts/default/token"
        r = HTTP.get(gce, headers={"Metadata-Flavor": "Google"}, timeout=10)
        assert r.status_code == 200, r.text
        imds = s.env["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
        t = HTTP.put(f"{imds}/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}, timeout=10)
        assert t.status_code == 200 and t.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "60"
        role = HTTP.get(f"{imds}/latest/meta-data/iam/security-credentials/", headers={
            "X-aws-ec2-metadata-token": t.text}, timeout=10)
        assert role.text == "psoxy-tenant-access"
        denied = HTTP.get(f"{imds}/latest/meta-data/iam/security-credentials/psoxy-tenant-access",
                          headers={"X-aws-ec2-metadata-token": t.text}, timeout=10)
        assert denied.status_code == 403, denied.text
        body = denied.json()
        assert body["Code"] == "AccessDenied"
        assert f"uid {uid}" in body["Message"] and '"tenant-to-aws"' in body["Message"], body
        ecs = s.env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
        r = HTTP.get(ecs, headers={"Authorization": s.env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]}, timeout=10)
        assert r.status_code == 403 and f"uid {uid}" in r.json()["message"], r.text
    finally:
        stop_process(s.proc)
    log = s.log.read_text()
    assert "refused: the caller may not use this route" in log, tail(s.log)
    assert f"uid {uid}" in log


def test_check_and_config_errors(sandbox):
    ok = sandbox.idbridge("serve", "--check", "--config", EXAMPLES / "serve.toml", env=sandbox.env())
    assert ok.returncode == 0, describe(ok)
    bad = sandbox.write("bad.toml", (EXAMPLES / "serve.toml").read_text().replace(
        'route = "tenant-to-aws"\n# role_name', 'route = "myapp-gcp"\n# role_name'))
    r = sandbox.idbridge("serve", "--check", "--config", bad, env=sandbox.env())
    assert r.returncode == 64, describe(r)
    assert "bad.toml, line" in r.stderr and "[serve.aws_imds] field `route`" in r.stderr, r.stderr
    # Without --check too, and before binding anything.
    r = sandbox.idbridge("serve", "--config", bad, env=sandbox.env(), timeout=20)
    assert r.returncode == 64, describe(r)
