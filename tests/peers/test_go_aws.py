"""The AWS SDKs for Go (Debian's aws-sdk-go-v2 and aws-sdk-go v1) through their default chains
against `idbridge serve` and the emulator: IMDSv2 with the region taken from the instance
identity document (aws-sdk-go-v2's config.LoadDefaultConfig with WithEC2IMDSRegion, v1's
ec2metadata Region), the ECS container endpoint, credential_process and web identity. Each ends
with a GetCallerIdentity signed by the SDK and answered by the emulator's STS.
"""

from __future__ import annotations

import pytest

from conftest import HTTP, NO_INSTANCE_CREDS, assumed_role_arn, metadata_id_token, web_identity_env
from go_peers import go_peers, run_go  # noqa: F401 - fixture
from test_aws_peers import write_credential_process_profile
from test_serve import SA_KEY_ARN, TENANT_ARN, ecs_client_env, serve, sts_only  # noqa: F401 - fixture

VM_ARN = assumed_role_arn("gcp-caller", "i-0a1b2c3d4e5f60718")
NO_REGION = {"AWS_DEFAULT_REGION": None, "AWS_REGION": None}


def imds_env(sandbox, emulator, endpoint: str) -> dict:
    return sandbox.env(NO_INSTANCE_CREDS, sts_only(emulator), NO_REGION,
                       {"AWS_EC2_METADATA_SERVICE_ENDPOINT": endpoint}, imds=True)


@pytest.fixture(params=["serve", "emulator"])
def imds_target(request, emulator):
    """(IMDS endpoint, expected region, zone, caller ARN) of the daemon or the emulator."""
    if request.param == "serve":
        s = request.getfixturevalue("serve")
        return s.env["AWS_EC2_METADATA_SERVICE_ENDPOINT"], "us-east-1", "us-east-1a", TENANT_ARN
    return emulator["AWS_EC2_METADATA_SERVICE_ENDPOINT"], "us-east-1", "us-east-1a", VM_ARN


def test_go_v2_region_and_credentials_from_imds(sandbox, go_peers, emulator, imds_target):
    endpoint, region, zone, arn = imds_target
    res = run_go(sandbox, go_peers, "awsclient", "v2-imds", env=imds_env(sandbox, emulator, endpoint))
    assert "error" not in res, res
    assert res["region"] == region, res
    assert res["document"]["region"] == region and res["document"]["availabilityZone"] == zone, res
    assert res["document"]["accountId"] == "111122223333", res
    assert res["instance_profile_arn"].startswith("arn:aws:iam::111122223333:instance-profile/"), res
    assert res["source"] == "EC2RoleProvider", res
    assert res["arn"] == arn, res


def test_go_v1_region_and_credentials_from_imds(sandbox, go_peers, emulator, imds_target):
    endpoint, region, zone, arn = imds_target
    res = run_go(sandbox, go_peers, "awsclient", "v1-imds", env=imds_env(sandbox, emulator, endpoint))
    assert "error" not in res, res
    assert res["region"] == region, res
    assert res["document"]["availabilityZone"] == zone, res
    assert res["source"] == "EC2RoleProvider", res
    assert res["arn"] == arn, res


@pytest.mark.parametrize("sdk", ["v2-chain", "v1-chain"])
def test_go_ecs_provider_against_the_daemon(sandbox, go_peers, emulator, serve, sdk):
    for path, arn in [(None, TENANT_ARN), ("/role/sa-key", SA_KEY_ARN)]:
        res = run_go(sandbox, go_peers, "awsclient", sdk, env=ecs_client_env(sandbox, emulator, serve, path))
        assert "error" not in res, (path, res)
        assert res["arn"] == arn, res


@pytest.mark.parametrize("sdk", ["v2-chain", "v1-chain"])
def test_go_ecs_provider_against_the_emulator(sandbox, go_peers, emulator, sdk):
    env = sandbox.env(emulator, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": None, "AWS_DEFAULT_REGION": "us-east-1"})
    res = run_go(sandbox, go_peers, "awsclient", sdk, env=env)
    assert "error" not in res, res
    assert res["arn"].startswith(assumed_role_arn("other-app", "ecs-task-")), res


@pytest.mark.parametrize("sdk", ["v2-chain", "v1-chain"])
def test_go_credential_process(sandbox, go_peers, emulator, sdk):
    write_credential_process_profile(sandbox, "seed000-gce-to-aws.toml", "tenant-to-aws")
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, {"AWS_PROFILE": "p"})
    res = run_go(sandbox, go_peers, "awsclient", sdk, env=env)
    assert "error" not in res, res
    assert res["arn"] == TENANT_ARN, res
    assert res["region"] == "us-east-1", res


@pytest.mark.parametrize("sdk", ["v2-chain", "v1-chain"])
def test_go_web_identity(sandbox, go_peers, emulator, sdk):
    token = metadata_id_token(emulator, "https://psoxy.example/aws")
    env = web_identity_env(sandbox, emulator, token, "psoxy-tenant-access", f"go-{sdk}")
    res = run_go(sandbox, go_peers, "awsclient", sdk, env=env)
    assert "error" not in res, res
    assert res["arn"] == assumed_role_arn("psoxy-tenant-access", f"go-{sdk}"), res


def test_python_reads_the_daemons_identity_document(serve):
    # The same document as a plain IMDSv2 client sees it (token PUT, then GET).
    base = serve.env["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
    token = HTTP.put(f"{base}/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
                     timeout=10).text
    h = {"X-aws-ec2-metadata-token": token}
    assert HTTP.get(f"{base}/latest/dynamic/", headers=h, timeout=10).text == "instance-identity/"
    doc = HTTP.get(f"{base}/latest/dynamic/instance-identity/document", headers=h, timeout=10)
    assert doc.status_code == 200 and doc.headers["Content-Type"] == "text/plain", doc.text
    d = doc.json()
    assert (d["region"], d["availabilityZone"], d["accountId"]) == ("us-east-1", "us-east-1a", "111122223333"), d
    zone = HTTP.get(f"{base}/latest/meta-data/placement/availability-zone", headers=h, timeout=10).text
    assert zone == d["availabilityZone"]
    info = HTTP.get(f"{base}/latest/meta-data/iam/info", headers=h, timeout=10).json()
    assert info["InstanceProfileArn"] == "arn:aws:iam::111122223333:instance-profile/psoxy-tenant-access", info
    assert HTTP.get(f"{base}/latest/dynamic/instance-identity/document", timeout=10).status_code == 401
