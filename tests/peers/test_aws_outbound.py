"""AWS outbound identity federation at the emulator, with boto3 and google-auth:

* boto3 `iam.enable_outbound_web_identity_federation` / `get_outbound_web_identity_federation_info`
  (and `FeatureEnabled` on a second enable), signed with role credentials from
  AssumeRoleWithWebIdentity;
* boto3 `sts.get_web_identity_token` (RS256 and ES384; refused while the switch is off, and for a
  bad duration), the tokens verified by PyJWT against the issuer's discovery + JWKS;
* the RS256 token as the subject token of google-auth's `external_account` (file source) at the
  emulated Google STS, whose OIDC provider names the account's issuer: AWS → Google without a
  signed GetCallerIdentity.
"""

from __future__ import annotations

import json

import jwt

from conftest import ACCOUNT, HTTP, PYTHON, describe, metadata_id_token, role_arn
from test_google_external_account import ext_refresh, external_account, tokeninfo

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
