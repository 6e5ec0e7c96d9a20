"""AWS outbound identity federation at the emulator, with boto3 and google-auth:

* boto3 `iam.enable_outbound_web_identity_federation` / `get_outbound_web_identity_federation_info`
  (and `FeatureEnabled` on a second enable), signed with role credentials from
  AssumeRoleWithWebIdentity;
* boto3 `sts.get_web_identity_token` (RS256 and ES384; refused while the switch is off, and for a
  bad duration), the tokens verified by PyJWT against the issuer's discovery + JWKS;
* the RS256 token as the subject token of google-auth's `external_account` at the emulated
  Google STS, whose OIDC provider names the account's issuer: AWS → Google without a signed
  GetCallerIdentity — from a file, and from a URL (`credential_source.url`, text and JSON
  formats, with a required header) served by a local token server, as a sidecar would.
"""

from __future__ import annotations

import json

import jwt

from conftest import ACCOUNT, HTTP, PYTHON, describe, metadata_id_token, role_arn
from test_aws_kinds import SWITCH
from test_google_external_account import ext_refresh, external_account, local_http_server, tokeninfo

ISSUER = "https://5e1f0c2a-7b3d-4e8f-9a6c-1d2e3f4a5b6c.tokens.sts.global.api.aws"
GCP_AUDIENCE = "https://gcp.idbridge.test/aws-outbound"
PROVIDER = ("//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/"
            "aws-outbound-pool/providers/aws-jwt")
NAMESPACE = "https://sts.amazonaws.com/"

SCRIPT = r'''
import json, sys
import boto3, botocore.exceptions

a = json.loads(sys.argv[1])
kw = dict(region_name="us-east-2")
first = boto3.client("sts", endpoint_url=a["sts"], aws_access_key_id="unused", aws_secret_access_key="unused", **kw)
c = first.assume_role_with_web_identity(RoleArn=a["role"], RoleSessionName="outbound",
                                        WebIdentityToken=a["token"])["Credentials"]
creds = dict(aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
             aws_session_token=c["SessionToken"], **kw)
sts = boto3.client("sts", endpoint_url=a["sts"], **creds)
iam = boto3.client("iam", endpoint_url=a["iam"], **creds)


def call(f, **kwargs):
    try:
        r = f(**kwargs)
        r.pop("ResponseMetadata", None)
        return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
    except botocore.exceptions.ClientError as e:
        return {"error": e.response["Error"]["Code"], "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
                "message": e.response["Error"].get("Message", "")}


aud = [a["audience"]]
out = {
    "disabled": call(sts.get_web_identity_token, Audience=aud, SigningAlgorithm="RS256"),
    "enable": call(iam.enable_outbound_web_identity_federation),
    "enable_again": call(iam.enable_outbound_web_identity_federation),
    "info": call(iam.get_outbound_web_identity_federation_info),
    "rs256": call(sts.get_web_identity_token, Audience=aud, SigningAlgorithm="RS256", DurationSeconds=600,
                  Tags=[{"Key": "team", "Value": "billing"}]),
    "es384": call(sts.get_web_identity_token, Audience=aud + ["second"], SigningAlgorithm="ES384"),
    "bad_alg": call(sts.get_web_identity_token, Audience=aud, SigningAlgorithm="HS256"),
}
print(json.dumps(out))
'''


def test_boto3_outbound_federation_and_google_accepts_the_token(sandbox, emulator):
    args = {"sts": emulator["AWS_ENDPOINT_URL_STS"], "iam": emulator["AWS_ENDPOINT_URL_IAM"],
            "role": role_arn("psoxy-tenant-access"), "audience": GCP_AUDIENCE,
            "token": metadata_id_token(emulator, "https://psoxy.example/aws")}
    r = sandbox.run([PYTHON, "-c", SCRIPT, json.dumps(args)], env=sandbox.env())
    assert r.returncode == 0, describe(r)
    out = json.loads(r.stdout.strip().splitlines()[-1])

    assert (out["disabled"].get("error"), out["disabled"].get("status")) == (
        "OutboundWebIdentityFederationDisabledException", 403), out["disabled"]
    assert out["enable"] == {"IssuerIdentifier": ISSUER}, out["enable"]
    assert (out["enable_again"].get("error"), out["enable_again"].get("status")) == ("FeatureEnabled", 409), out
    assert out["info"] == {"IssuerIdentifier": ISSUER, "JwtVendingEnabled": True}, out["info"]
    assert (out["bad_alg"].get("error"), out["bad_alg"].get("status")) == ("ValidationError", 400), out

    # The issuer's discovery and keys, as a relying party finds them.
    iam = emulator["AWS_ENDPOINT_URL_IAM"]
    disc = HTTP.get(f"{iam}/{ACCOUNT}/.well-known/openid-configuration", timeout=10).json()
    assert disc["issuer"] == ISSUER
    jwks = jwt.PyJWKClient(disc["jwks_uri"])
    for name, alg, aud in (("rs256", "RS256", GCP_AUDIENCE), ("es384", "ES384", "second")):
        token = out[name]["WebIdentityToken"]
        key = jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=[alg], audience=aud, issuer=ISSUER)
        assert claims["sub"] == role_arn("psoxy-tenant-access"), claims
        ns = claims[NAMESPACE]
        assert ns["aws_account"] == ACCOUNT and ns["source_region"] == "us-east-2", ns
        assert ns["principal_id"].endswith(":assumed-role/psoxy-tenant-access/outbound"), ns
    rs = jwt.decode(out["rs256"]["WebIdentityToken"], options={"verify_signature": False})
    assert rs["exp"] - rs["iat"] == 600 and rs["aud"] == GCP_AUDIENCE, rs
    assert rs[NAMESPACE]["request_tags"] == {"team": "billing"}, rs

    # google-auth: the token file as an OIDC subject at the emulated Google STS.
    path = sandbox.write("aws-outbound.jwt", out["rs256"]["WebIdentityToken"])
    info = external_account(emulator, PROVIDER, "urn:ietf:params:oauth:token-type:jwt", {"file": str(path)})
    res = ext_refresh(sandbox, info, env=sandbox.env(emulator))
    assert "error" not in res, res
    ti = tokeninfo(emulator, res["token"])
    assert ti["sub"].endswith("/aws-outbound-pool/subject/" + role_arn("psoxy-tenant-access")), ti


URL_JWT_SCRIPT = r'''
import json, sys
import boto3
sts = boto3.client("sts", region_name="us-east-1")
print(json.dumps({"token": sts.get_web_identity_token(Audience=[sys.argv[1]], SigningAlgorithm="RS256")
                  ["WebIdentityToken"]}))
'''


def test_google_auth_takes_the_aws_jwt_from_a_url(sandbox, emulator):
    # The EC2 instance role's token (boto3 through IMDS), with the account's switch on for the
    # test (off again afterwards when this test turned it on).
    imds_env = sandbox.env(emulator, {"AWS_CONTAINER_CREDENTIALS_FULL_URI": None}, imds=True)

    def switch(on: bool) -> bool:
        r = sandbox.run([PYTHON, "-c", SWITCH, json.dumps({"iam": emulator["AWS_ENDPOINT_URL_IAM"], "on": on})],
                        env=imds_env)
        assert r.returncode == 0, describe(r)
        return json.loads(r.stdout.strip().splitlines()[-1])

    turned_on = switch(True)
    try:
        r = sandbox.run([PYTHON, "-c", URL_JWT_SCRIPT, GCP_AUDIENCE], env=imds_env)
        assert r.returncode == 0, describe(r)
        token = json.loads(r.stdout.strip().splitlines()[-1])["token"]
    finally:
        if turned_on:
            switch(False)

    def handle(method, path, headers, body):
        if headers.get("X-Token-Key") != "sidecar":
            return 403, "text/plain", "X-Token-Key required"
        if method == "GET" and path == "/aws-jwt":
            return 200, "text/plain", token
        if method == "GET" and path == "/aws-jwt.json":
            return 200, "application/json", json.dumps({"web_identity_token": token})
        return 404, "text/plain", "not found"

    results = {}
    with local_http_server(handle) as (base, seen):
        for fmt, source in (
            ("text", {"url": f"{base}/aws-jwt", "headers": {"X-Token-Key": "sidecar"}}),
            ("json", {"url": f"{base}/aws-jwt.json", "headers": {"X-Token-Key": "sidecar"},
                      "format": {"type": "json", "subject_token_field_name": "web_identity_token"}}),
        ):
            info = external_account(emulator, PROVIDER, "urn:ietf:params:oauth:token-type:jwt", source)
            results[fmt] = ext_refresh(sandbox, info, env=sandbox.env(emulator))
    assert {s["path"] for s in seen} == {"/aws-jwt", "/aws-jwt.json"}, seen
    assert all(s["headers"].get("x-token-key") == "sidecar" for s in seen), seen
    for fmt, res in results.items():
        assert "error" not in res, (fmt, res)
        ti = tokeninfo(emulator, res["token"])
        assert ti["sub"].endswith("/aws-outbound-pool/subject/" + role_arn("gcp-caller")), (fmt, ti)
