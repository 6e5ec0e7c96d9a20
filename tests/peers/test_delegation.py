"""Google delegation chains (IAM Credentials `delegates`) at the emulator, with google-auth and
with idbridge:

* google-auth `impersonated_credentials.Credentials(delegates=[…])` (generateAccessToken) and
  `IDTokenCredentials` on top of it (generateIdToken, the same delegates), the GCE VM's compute
  credentials as the source: psoxy-tenant → deploy-hop → deploy-target. The access token is
  deploy-target's (tokeninfo); the ID token verifies with PyJWT against Google's emulated keys;
* a chain with a missing link (deploy-hop holds nothing on deploy-locked) gets Google's 403
  body, and a delegate written without `projects/-/serviceAccounts/` Google's 400;
* `idbridge token` on examples/gcp-delegation-chain.toml: the chain's token, and the refusal of
  the missing link with Google's code and the chain named.
"""

from __future__ import annotations

import json

import jwt

from conftest import EXAMPLES, HTTP, NO_INSTANCE_CREDS, PYTHON, describe
from test_google_external_account import tokeninfo

CALLER = "psoxy-tenant@saas-tenant.iam.gserviceaccount.com"
HOP = "deploy-hop@gcp-project.iam.gserviceaccount.com"
TARGET = "deploy-target@gcp-project.iam.gserviceaccount.com"
TARGET_ID = "108273645019283746501"
LOCKED = "deploy-locked@gcp-project.iam.gserviceaccount.com"
AUDIENCE = "https://deploy.example.com"
CHAIN = EXAMPLES / "gcp-delegation-chain.toml"

SCRIPT = r'''
import json, sys
import google.auth.exceptions
import google.auth.transport.requests as gtr
from google.auth import compute_engine, iam, impersonated_credentials

a = json.loads(sys.argv[1])
base = a["iam"].rstrip("/") + "/v1/projects/-/serviceAccounts/{}"
iam._IAM_IDTOKEN_ENDPOINT = base + ":generateIdToken"
req = gtr.Request()
source = compute_engine.Credentials()
source.refresh(req)


def creds(target, delegates):
    return impersonated_credentials.Credentials(
        source_credentials=source, target_principal=target, delegates=delegates,
        target_scopes=["https://www.googleapis.com/auth/cloud-platform"], lifetime=600,
        iam_endpoint_override=base.format(target) + ":generateAccessToken")


def refused(target, delegates):
    try:
        creds(target, delegates).refresh(req)
    except google.auth.exceptions.RefreshError as e:
        return {"message": e.args[0], "body": json.loads(e.args[1])}
    return {"unexpected": "no error"}


out = {"source": source.service_account_email}
chain = creds(a["target"], ["projects/-/serviceAccounts/" + a["hop"]])
chain.refresh(req)
out["access_token"] = chain.token
out["expiry"] = chain.expiry.isoformat()
idc = impersonated_credentials.IDTokenCredentials(chain, target_audience=a["audience"], include_email=True)
idc.refresh(req)
out["id_token"] = idc.token
out["missing_link"] = refused(a["locked"], ["projects/-/serviceAccounts/" + a["hop"]])
out["bare_email"] = refused(a["target"], [a["hop"]])
out["no_chain"] = refused(a["target"], None)
print(json.dumps(out))
'''


def forbidden(permission: str) -> dict:
    return {"error": {
        "code": 403,
        "message": f"Permission '{permission}' denied on resource (or it may not exist).",
        "status": "PERMISSION_DENIED",
        "details": [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "IAM_PERMISSION_DENIED",
            "domain": "iam.googleapis.com",
            "metadata": {"permission": permission},
        }],
    }}


def test_google_auth_impersonated_credentials_through_a_delegate(sandbox, emulator):
    args = {"iam": emulator["IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL"], "hop": HOP, "target": TARGET,
            "locked": LOCKED, "audience": AUDIENCE}
    r = sandbox.run([PYTHON, "-c", SCRIPT, json.dumps(args)], env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert r.returncode == 0, describe(r)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["source"] in (CALLER, "default"), out

    info = tokeninfo(emulator, out["access_token"])
    assert info["email"] == TARGET, info
    assert 0 < int(info["expires_in"]) <= 600, info

    certs = HTTP.get(emulator["IDBRIDGE_GOOGLE_CERTS_URL"], timeout=10).json()
    kid = jwt.get_unverified_header(out["id_token"])["kid"]
    key = jwt.PyJWK(next(k for k in certs["keys"] if k["kid"] == kid)).key
    claims = jwt.decode(out["id_token"], key, algorithms=["RS256"], audience=AUDIENCE,
                        issuer="https://accounts.google.com")
    assert claims["sub"] == TARGET_ID and claims["email"] == TARGET, claims

    # deploy-locked trusts the VM's account, not deploy-hop: the chain stops at its last link.
    assert out["missing_link"]["body"] == forbidden("iam.serviceAccounts.getAccessToken"), out
    assert out["missing_link"]["message"].startswith("Unable to acquire impersonated credentials"), out
    # A delegate is a resource name; a bare email is Google's 400.
    assert out["bare_email"]["body"]["error"]["code"] == 400, out
    assert out["bare_email"]["body"]["error"]["status"] == "INVALID_ARGUMENT", out
    assert "projects/-/serviceAccounts/" in out["bare_email"]["body"]["error"]["message"], out
    # Without the chain, the VM's account holds nothing on deploy-target.
    assert out["no_chain"]["body"] == forbidden("iam.serviceAccounts.getAccessToken"), out


def test_idbridge_token_on_the_delegation_example(sandbox, emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    r = sandbox.idbridge("token", "--config", CHAIN, "--route", "gcp-delegation-chain", "--format", "json",
                         "--no-cache", env=env)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    token = doc["access_token"]
    assert token not in r.stderr
    assert tokeninfo(emulator, token)["email"] == TARGET

    r = sandbox.idbridge("token", "--config", CHAIN, "--route", "gcp-delegation-chain-id-token",
                         "--format", "json", "--no-cache", env=env)
    assert r.returncode == 0, describe(r)
    id_token = json.loads(r.stdout)
    id_token = id_token.get("id_token") or id_token.get("token")
    claims = jwt.decode(id_token, options={"verify_signature": False})
    assert claims["aud"] == AUDIENCE and claims["sub"] == TARGET_ID, claims

    r = sandbox.idbridge("token", "--config", CHAIN, "--route", "gcp-delegation-missing-link", "--no-cache",
                         env=env)
    assert r.returncode == 1, describe(r)
    assert "PERMISSION_DENIED" in r.stderr and f"via {HOP}" in r.stderr, describe(r)
    assert "ya29." not in r.stderr, describe(r)
