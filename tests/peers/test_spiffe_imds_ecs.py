"""Real peers against the emulated SPIRE agent (SPIFFE Workload API over a unix socket), EC2 IMDSv2
and the ECS container credential endpoint of `idbridge emulate`:

* py-spiffe (grpcio) — WorkloadApiClient, JwtSvid.parse_and_validate, JwtSource, and the raw
  generated stub for the security-header rule;
* botocore / boto3 — the `iam-role` (IMDSv2 only) and `container-role` credential providers, with
  the credentials checked by the emulator's own STS GetCallerIdentity;
* the aws CLI (v1, its own vendored botocore) through IMDS and ECS;
* google-auth's AWS credential source (IMDSv2 token, region from the zone, role credentials),
  whose signed GetCallerIdentity request is replayed to the emulator's STS.

The peers' code runs in fresh interpreters with a clean environment (conftest.clean_env); the
scripts below print one JSON object each.
"""

from __future__ import annotations

import json
import urllib.parse

import pytest

from conftest import ACCOUNT, HTTP, PYTHON, VENV_BIN, assumed_role_arn, describe

INSTANCE_ID = "i-0a1b2c3d4e5f60718"
BILLING = "spiffe://example.org/ns/prod/sa/billing"
REPORTS = "spiffe://example.org/ns/prod/sa/reports"

# Run as `python -c PEER_SCRIPT ACTION JSON-ARGS`.
PEER_SCRIPT = r'''
import json, sys, time


def err(e):
    out = {"type": type(e).__name__, "message": str(e)}
    code = getattr(e, "code", None)
    if callable(code):
        out["code"] = str(code())
    cause = e.__cause__
    if cause is not None and callable(getattr(cause, "code", None)):
        out["code"] = str(cause.code())
    return out


def spiffe_client(args):
    from spiffe import JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient

    out = {}
    with WorkloadApiClient(socket_path=args["socket"], default_timeout=10) as client:
        svid = client.fetch_jwt_svid(audience={"aud-1", "aud-2"})
        out["spiffe_id"] = str(svid.spiffe_id)
        out["audience"] = sorted(svid.audience)
        out["lifetime_left"] = svid.expiry - int(time.time())
        out["svid_count"] = len(client.fetch_jwt_svids(audience={"aud-1"}))
        bundles = client.fetch_jwt_bundles()
        bundle = bundles.get_bundle_for_trust_domain(TrustDomain("example.org"))
        out["bundle_kids"] = sorted(bundle.jwt_authorities) if bundle else None
        out["offline"] = str(JwtSvid.parse_and_validate(svid.token, bundle, {"aud-1"}).spiffe_id)
        try:
            JwtSvid.parse_and_validate(svid.token, bundle, {"aud-9"})
            out["offline_wrong_aud"] = None
        except Exception as e:
            out["offline_wrong_aud"] = err(e)
        out["server"] = str(client.validate_jwt_svid(svid.token, "aud-1").spiffe_id)
        try:
            client.validate_jwt_svid(svid.token, "aud-9")
            out["server_wrong_aud"] = None
        except Exception as e:
            out["server_wrong_aud"] = err(e)
        try:
            client.fetch_jwt_svid(audience={"aud-1"}, subject=SpiffeId(args["denied_id"]))
            out["denied"] = None
        except Exception as e:
            out["denied"] = err(e)
    return out


def spiffe_source(args):
    """JwtSource keeps a FetchJWTBundles stream open; the socket comes from SPIFFE_ENDPOINT_SOCKET."""
    from spiffe import JwtSource, TrustDomain

    with JwtSource(timeout_in_seconds=10) as source:
        svid = source.fetch_svid(audience={"aud-1"})
        bundle = source.get_bundle_for_trust_domain(TrustDomain("example.org"))
        time.sleep(0.5)  # the stream stays up
        return {"spiffe_id": str(svid.spiffe_id), "bundle": bundle is not None,
                "closed": source.is_closed()}


def spiffe_raw(args):
    """The generated stub without py-spiffe's header interceptor."""
    import grpc
    from spiffe._proto import workload_pb2, workload_pb2_grpc

    out = {}
    with grpc.insecure_channel("unix:" + args["path"]) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        req = workload_pb2.JWTSVIDRequest(audience=["aud-1"])
        for name, md in [("no_header", None), ("wrong_header", [("workload.spiffe.io", "yes")])]:
            try:
                stub.FetchJWTSVID(req, metadata=md, timeout=10)
                out[name] = None
            except grpc.RpcError as e:
                out[name] = {"code": e.code().name, "details": e.details()}
        md = [("workload.spiffe.io", "true")]
        try:
            stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(), metadata=md, timeout=10)
            out["no_audience"] = None
        except grpc.RpcError as e:
            out["no_audience"] = {"code": e.code().name, "details": e.details()}
        first = stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=md, timeout=10).next()
        out["x509"] = [svid.spiffe_id for svid in first.svids]
        try:
            stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=10).next()
            out["x509_no_header"] = None
        except grpc.RpcError as e:
            out["x509_no_header"] = {"code": e.code().name, "details": e.details()}
    return out


def boto3_credentials_error(args):
    import boto3

    try:
        creds = boto3.Session().get_credentials()
        return {"method": getattr(creds, "method", None)}
    except Exception as e:
        return {"error": err(e)}


def gauth_aws_subject_token(args):
    """google-auth's AWS credential source against IMDSv2: the signed GetCallerIdentity request."""
    import google.auth.transport.requests as gtr
    from google.auth import aws

    imds = args["imds"]
    info = {
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/aws",
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "token_url": "http://127.0.0.1:9/v1/token",
        "credential_source": {
            "environment_id": "aws1",
            "region_url": imds + "latest/meta-data/placement/availability-zone",
            "url": imds + "latest/meta-data/iam/security-credentials",
            "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
            "imdsv2_session_token_url": imds + "latest/api/token",
        },
    }
    creds = aws.Credentials.from_info(info)
    return {"subject_token": creds.retrieve_subject_token(gtr.Request())}


ACTIONS = {f.__name__: f for f in [spiffe_client, spiffe_source, spiffe_raw, boto3_credentials_error,
                                   gauth_aws_subject_token]}
result = ACTIONS[sys.argv[1]](json.loads(sys.argv[2]))
json.dump(result, sys.stdout, default=str)
sys.stdout.write("\n")
'''


def peer(sandbox, action: str, args: dict, env: dict) -> dict:
    r = sandbox.run([PYTHON, "-c", PEER_SCRIPT, action, json.dumps(args)], env=env)
    assert r.returncode == 0 and r.stdout.strip(), describe(r)
    return json.loads(r.stdout.strip().splitlines()[-1])


def socket_path(emulator: dict) -> str:
    uri = emulator["SPIFFE_ENDPOINT_SOCKET"]
    assert uri.startswith("unix:///"), uri
    return uri[len("unix://"):]


# The AWS credential sources of the emulator env, removed so that one source is tested at a time.
NO_ECS = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": None, "AWS_CONTAINER_AUTHORIZATION_TOKEN": None}
NO_IMDS = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": None}


def imds_env(sandbox, emulator: dict) -> dict:
    """Only IMDS (v2 only) as a credential source, plus the emulator's STS."""
    return sandbox.env(emulator, NO_ECS, {"AWS_EC2_METADATA_V1_DISABLED": "true",
                                          "AWS_DEFAULT_REGION": "us-east-1"}, imds=True)


def ecs_env(sandbox, emulator: dict, **overrides) -> dict:
    """Only the ECS container endpoint as a credential source, plus the emulator's STS."""
    return sandbox.env(emulator, NO_IMDS, {"AWS_DEFAULT_REGION": "us-east-1"}, overrides)


# ------------------------------------------------------------------------------------- SPIFFE ---


def test_py_spiffe_workload_api_client(sandbox, emulator):
    res = peer(sandbox, "spiffe_client", {"socket": emulator["SPIFFE_ENDPOINT_SOCKET"], "denied_id": REPORTS},
               env=sandbox.env(emulator))
    assert res["spiffe_id"] == BILLING, res
    assert res["audience"] == ["aud-1", "aud-2"]
    assert 250 < res["lifetime_left"] <= 300, res
    assert res["svid_count"] == 1, res  # reports is for another uid
    assert res["bundle_kids"] and len(res["bundle_kids"]) == 1, res
    assert res["offline"] == BILLING
    assert res["offline_wrong_aud"] and "udience" in res["offline_wrong_aud"]["message"], res
    assert res["server"] == BILLING
    wrong = res["server_wrong_aud"]
    assert wrong and "INVALID_ARGUMENT" in wrong["message"] + str(wrong.get("code")), res
    denied = res["denied"]
    assert denied and "PERMISSION_DENIED" in denied["message"] + str(denied.get("code")), res


def test_py_spiffe_jwt_source_from_the_env_var(sandbox, emulator):
    res = peer(sandbox, "spiffe_source", {}, env=sandbox.env(emulator))
    assert res == {"spiffe_id": BILLING, "bundle": True, "closed": False}, res


def test_grpc_stub_without_the_security_header(sandbox, emulator):
    res = peer(sandbox, "spiffe_raw", {"path": socket_path(emulator)}, env=sandbox.env(emulator))
    for case in ("no_header", "wrong_header"):
        assert res[case] == {"code": "INVALID_ARGUMENT", "details": "security header missing from request"}, res
    assert res["no_audience"]["code"] == "INVALID_ARGUMENT", res
    assert res["x509"] == [BILLING], res  # the stream's first message; reports is for another uid
    assert res["x509_no_header"] == {"code": "INVALID_ARGUMENT", "details": "security header missing from request"}, res


def test_spiffe_issuer_discovery(emulator):
    base = emulator["IDBRIDGE_EMULATOR_SPIFFE_OIDC_URL"]
    doc = HTTP.get(f"{base}/.well-known/openid-configuration", timeout=10).json()
    assert doc["issuer"] == "https://spire.idbridge.test"
    keys = HTTP.get(doc["jwks_uri"], timeout=10).json()
    assert keys["keys"] and all(k.get("kid") for k in keys["keys"]), keys


# ---------------------------------------------------------------------------------- IMDS, ECS ---


def test_boto3_instance_role_through_imdsv2(sandbox, emulator):
    res = sandbox.client("boto3_caller_identity", {}, env=imds_env(sandbox, emulator))
    assert "error" not in res, res
    assert res["method"] == "iam-role"
    assert res["access_key_id"].startswith("ASIA"), res
    assert res["Arn"] == assumed_role_arn("gcp-caller", INSTANCE_ID)
    assert res["Arn"].endswith("assumed-role/gcp-caller/i-0a1b2c3d4e5f60718")
    assert res["Account"] == ACCOUNT
    assert res["UserId"].endswith(f":{INSTANCE_ID}"), res


def test_boto3_container_role_through_ecs(sandbox, emulator):
    res = sandbox.client("boto3_caller_identity", {}, env=ecs_env(sandbox, emulator))
    assert "error" not in res, res
    assert res["method"] == "container-role"
    assert res["Arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/other-app/ecs-task-"), res
    assert res["Account"] == ACCOUNT


def test_botocore_ecs_wrong_token_is_refused(sandbox, emulator):
    res = peer(sandbox, "boto3_credentials_error", {},
               env=ecs_env(sandbox, emulator, AWS_CONTAINER_AUTHORIZATION_TOKEN="not-the-token"))
    assert res.get("error", {}).get("type") == "CredentialRetrievalError", res
    assert "401" in res["error"]["message"], res


def test_aws_cli_through_imds_and_ecs(sandbox, emulator):
    for env, role in [(imds_env(sandbox, emulator), "gcp-caller"), (ecs_env(sandbox, emulator), "other-app")]:
        r = sandbox.run([VENV_BIN / "aws", "sts", "get-caller-identity", "--output", "json"], env=env)
        assert r.returncode == 0, describe(r)
        ident = json.loads(r.stdout)
        assert ident["Account"] == ACCOUNT
        assert ident["Arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/"), ident
    assert ident["Arn"].split("/")[-1].startswith("ecs-task-")


def test_google_auth_aws_source_signs_with_imds_credentials(sandbox, emulator):
    """google-auth reads the zone (cutting its last character), the role and its credentials over
    IMDSv2; the GetCallerIdentity request it signs is accepted by the emulator's STS."""
    res = peer(sandbox, "gauth_aws_subject_token", {"imds": emulator["AWS_EC2_METADATA_SERVICE_ENDPOINT"]},
               env=sandbox.env(emulator, NO_ECS, imds=True))
    signed = json.loads(urllib.parse.unquote(res["subject_token"]))
    assert signed["url"] == "https://sts.us-east-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
    assert signed["method"] == "POST"
    headers = {h["key"]: h["value"] for h in signed["headers"]}
    assert "us-east-1/sts/aws4_request" in headers["Authorization"], headers
    assert headers["x-amz-security-token"], headers
    sts = emulator["AWS_ENDPOINT_URL_STS"]
    r = HTTP.post(f"{sts}/?Action=GetCallerIdentity&Version=2011-06-15", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert f"<Arn>{assumed_role_arn('gcp-caller', INSTANCE_ID)}</Arn>" in r.text, r.text


def test_imds_is_v2_only_and_refuses_forwarded_token_requests(emulator):
    imds = emulator["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
    r = HTTP.get(f"{imds}latest/meta-data/instance-id", timeout=10)
    assert r.status_code == 401
    r = HTTP.put(f"{imds}latest/api/token", headers={"x-aws-ec2-metadata-token-ttl-seconds": "60",
                                                     "X-Forwarded-For": "203.0.113.9"}, timeout=10)
    assert r.status_code == 403
    r = HTTP.put(f"{imds}latest/api/token", timeout=10)
    assert r.status_code == 400
    r = HTTP.put(f"{imds}latest/api/token", headers={"x-aws-ec2-metadata-token-ttl-seconds": "60"}, timeout=10)
    assert r.status_code == 200 and r.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "60"
    token = r.text
    r = HTTP.get(f"{imds}latest/meta-data/placement/availability-zone",
                 headers={"x-aws-ec2-metadata-token": token}, timeout=10)
    assert (r.status_code, r.text, r.headers["Server"]) == (200, "us-east-1a", "EC2ws")
    r = HTTP.get(f"{imds}latest/meta-data/iam/security-credentials-extended/",
                 headers={"x-aws-ec2-metadata-token": token}, timeout=10)
    assert r.status_code == 404


@pytest.mark.parametrize("path", ["/v2/credentials/unknown", "/"])
def test_ecs_unknown_paths(emulator, path):
    base = emulator["AWS_CONTAINER_CREDENTIALS_FULL_URI"].split("/v2/")[0]
    r = HTTP.get(f"{base}{path}", headers={"Authorization": emulator["AWS_CONTAINER_AUTHORIZATION_TOKEN"]},
                 timeout=10)
    assert r.status_code == 404
    assert set(r.json()) == {"code", "message"}
