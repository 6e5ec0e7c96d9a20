"""AWS → Azure through AWS outbound identity federation, at the emulator:

* `idbridge token` on examples/aws-to-azure.toml: the EC2 instance role's JWT
  (sts:GetWebIdentityToken, audience api://AzureADTokenExchange) exchanged at the emulated Entra
  ID for an access token, which PyJWT verifies against the keys Entra publishes;
* boto3 `get_web_identity_token` with the instance role's credentials (IMDS), the token handed to
  azure-identity's ClientAssertionCredential for the app aws-workloads: Entra accepts it;
* the ECS task role other-app's JWT — the same issuer and audience, another subject — gets
  Entra's AADSTS700213 from azure-identity, and so does `idbridge token` from that role.

The account's outbound switch is turned on for the test (and back off when the test turned it
on: the emulator is shared by the session).
"""

from __future__ import annotations

import json

import jwt
import pytest

from conftest import EXAMPLES, NO_INSTANCE_CREDS, PYTHON, describe, role_arn
from test_aws_kinds import SWITCH
from test_azure_peers import MI_VARS, TENANT, V1_ISSUER, azure, entra_claims

ISSUER = "https://5e1f0c2a-7b3d-4e8f-9a6c-1d2e3f4a5b6c.tokens.sts.global.api.aws"
EXCHANGE = "api://AzureADTokenExchange"
APP = "c3333333-0000-4000-8000-000000000033"  # aws-workloads
APP_OID = "c3333333-0000-4000-8000-0000000000b3"
BILLING_API = "api://idbridge-billing"
ROUTE = EXAMPLES / "aws-to-azure.toml"

JWT_SCRIPT = r'''
import json, sys
import boto3, botocore.exceptions
sts = boto3.client("sts", region_name="us-east-1")
try:
    r = sts.get_web_identity_token(Audience=[sys.argv[1]], SigningAlgorithm="RS256")
    print(json.dumps({"token": r["WebIdentityToken"]}))
except botocore.exceptions.ClientError as e:
    print(json.dumps({"error": e.response["Error"]["Code"]}))
'''


def imds_env(sandbox, emulator: dict, *overlays: dict) -> dict:
    """The EC2 instance (role gcp-caller) through IMDS, Entra over HTTPS with the emulator's CA."""
    return sandbox.env(emulator, {"AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
                                  "AWS_CONTAINER_AUTHORIZATION_TOKEN": None}, MI_VARS, *overlays, imds=True)


def ecs_env(sandbox, emulator: dict) -> dict:
    """The ECS task (role other-app) through the container credentials endpoint."""
    return sandbox.env(emulator, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": None}, MI_VARS)


@pytest.fixture
def outbound_on(sandbox, emulator):
    env = imds_env(sandbox, emulator)

    def switch(on: bool) -> bool:
        r = sandbox.run([PYTHON, "-c", SWITCH, json.dumps({"iam": emulator["AWS_ENDPOINT_URL_IAM"], "on": on})],
                        env=env)
        assert r.returncode == 0, describe(r)
        return json.loads(r.stdout.strip().splitlines()[-1])

    turned_on = switch(True)
    try:
        yield
    finally:
        if turned_on:
            switch(False)


def aws_jwt(sandbox, env: dict) -> str:
    r = sandbox.run([PYTHON, "-c", JWT_SCRIPT, EXCHANGE], env=env)
    assert r.returncode == 0, describe(r)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "token" in out, out
    return out["token"]


def test_idbridge_token_prints_an_entra_token_pyjwt_verifies(sandbox, emulator, outbound_on):
    env = imds_env(sandbox, emulator)
    r = sandbox.idbridge("token", "--config", ROUTE, "--route", "aws-to-azure", "--format", "access-token",
                         "--no-cache", env=env)
    assert r.returncode == 0, describe(r)
    token = r.stdout.strip()
    claims = entra_claims(emulator, token, BILLING_API, V1_ISSUER)
    assert claims["tid"] == TENANT and claims["appid"] == APP and claims["oid"] == APP_OID, claims
    assert claims["roles"] == ["Billing.Read"], claims

    r = sandbox.idbridge("token", "--config", ROUTE, "--route", "aws-to-azure", "--format", "json", "--no-cache",
                         env=env)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    assert doc["tenant"] == TENANT and doc["client_id"] == APP and doc["scope"] == f"{BILLING_API}/.default", doc
    assert doc["access_token"] not in r.stderr


def test_azure_identity_takes_the_aws_jwt_and_refuses_another_role(sandbox, emulator, outbound_on):
    token = aws_jwt(sandbox, imds_env(sandbox, emulator))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == ISSUER and claims["aud"] == EXCHANGE, claims
    assert claims["sub"] == role_arn("gcp-caller"), claims

    env = sandbox.env(emulator, NO_INSTANCE_CREDS, MI_VARS)
    res = azure(sandbox, "client_assertion", {"tenant_id": TENANT, "client_id": APP, "assertion": token,
                                              "scope": f"{BILLING_API}/.default"}, env)
    assert "error" not in res, res
    got = entra_claims(emulator, res["token"], BILLING_API, V1_ISSUER)
    assert got["appid"] == APP and got["roles"] == ["Billing.Read"], got

    # other-app's token: the trusted issuer and audience, a subject no credential names.
    other = aws_jwt(sandbox, ecs_env(sandbox, emulator))
    assert jwt.decode(other, options={"verify_signature": False})["sub"] == role_arn("other-app")
    res = azure(sandbox, "client_assertion", {"tenant_id": TENANT, "client_id": APP, "assertion": other,
                                              "scope": f"{BILLING_API}/.default"}, env)
    assert res.get("error", {}).get("aadsts") == 700213, res
    assert role_arn("other-app") in res["error"]["message"], res

    config = sandbox.write("other.toml", f'''
[[route]]
name = "other"
source = {{ kind = "aws-web-identity-token", audience = "{EXCHANGE}", caller = {{ kind = "aws" }} }}
exchange = [{{ kind = "entra", tenant = "{TENANT}", client_id = "{APP}", scope = "{BILLING_API}/.default" }}]
''')
    r = sandbox.idbridge("token", "--config", config, "--route", "other", "--no-cache",
                         env=sandbox.env(ecs_env(sandbox, emulator), {"AWS_REGION": "us-east-1"}))
    assert r.returncode == 1, describe(r)
    assert "entra: AADSTS700213" in r.stderr, describe(r)
    assert "eyJ" not in r.stderr, describe(r)
