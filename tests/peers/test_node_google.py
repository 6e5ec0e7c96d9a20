"""Node's google-auth-library (+ gcp-metadata) against the emulated Google side of `idbridge emulate`:

* GCE detection (`gcpMetadata.isAvailable()`, GoogleAuth picking `Compute`), access and ID tokens
  from the metadata server, `OAuth2Client.getTokenInfo()` (Bearer header, empty POST body);
* `Impersonated`: generateAccessToken, and generateIdToken with `useEmailAzp` (sent by default),
  whose `azp` is then the account's email: AWS refuses it under a policy written for the numeric
  id, `idbridge explain` says why and `setup` warns about it;
* `ExternalAccountClient`: aws (IMDSv2), file and executable (`idbridge token --format
  google-executable`, success and failure) sources, with impersonation.

The emulator's builtin world: the VM account psoxy-tenant is a token creator of myapp.
"""

from __future__ import annotations

import json

from conftest import EXAMPLES, NO_INSTANCE_CREDS, describe
from nodepeers import claims_of, node_client
from test_google_external_account import (
    AWS4_REQUEST,
    AWS_AUDIENCE,
    AWS_SA,
    JWT_TYPE,
    SPIFFE_AUDIENCE,
    SPIFFE_SA,
    external_account,
    imds_source,
    mint_svid_like,
    tokeninfo,
)

GOOGLE_ISSUER = "https://accounts.google.com"
TENANT_EMAIL = "psoxy-tenant@saas-tenant.iam.gserviceaccount.com"
TENANT_UNIQUE_ID = "112233445566778899001"
MYAPP = "myapp@gcp-project.iam.gserviceaccount.com"
MYAPP_UNIQUE_ID = "100367186111111111111"


def tokeninfo_url(emulator: dict) -> str:
    return f"{emulator['IDBRIDGE_EMULATOR_GOOGLE_URL']}/tokeninfo"


def gce_env(sandbox, emulator: dict) -> dict:
    # Detection runs: GCE_METADATA_IP/HOST point at the emulator and NO_GCE_CHECK is unset.
    return sandbox.env(NO_INSTANCE_CREDS, {
        "GCE_METADATA_HOST": emulator["GCE_METADATA_HOST"],
        "GCE_METADATA_IP": emulator["GCE_METADATA_IP"],
    }, gce_check=True)


def test_node_gce_detection_tokens_and_tokeninfo(sandbox, emulator):
    env = gce_env(sandbox, emulator)
    res = node_client(sandbox, "gce_detect", {}, env=env)
    assert res["available"] is True, res
    assert res["client"] == "Compute", res
    assert res["project"] == "saas-tenant", res
    assert res["email"] == TENANT_EMAIL, res

    audience = "https://node.example/api"
    res = node_client(sandbox, "gce_tokens", {"audience": audience, "tokeninfo_url": tokeninfo_url(emulator)},
                      env=env)
    assert "error" not in res, res
    assert res["access_token"], res
    # getTokenInfo() sends the token as Authorization: Bearer with an empty body.
    assert res["tokeninfo"]["email"] == TENANT_EMAIL, res["tokeninfo"]
    assert "https://www.googleapis.com/auth/cloud-platform" in res["tokeninfo"]["scopes"], res["tokeninfo"]
    claims = res["id_token_claims"]
    assert (claims["iss"], claims["aud"]) == (GOOGLE_ISSUER, audience), claims
    assert claims["azp"] == claims["sub"] == TENANT_UNIQUE_ID, claims

    bad = node_client(sandbox, "token_info", {"tokeninfo_url": tokeninfo_url(emulator),
                                              "access_token": "ya29.not-issued-here"}, env=env)
    assert bad["error"]["status"] == 400, bad
    assert "invalid_token" in json.dumps(bad["error"]), bad


def impersonated(sandbox, emulator: dict, **args) -> dict:
    args = {"target": MYAPP, "audience": "aws-trust-1",
            "endpoint": emulator["IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL"],
            "tokeninfo_url": tokeninfo_url(emulator), **args}
    return node_client(sandbox, "impersonated", args, env=gce_env(sandbox, emulator))


def test_node_impersonated_access_and_id_tokens_use_email_azp(sandbox, emulator):
    res = impersonated(sandbox, emulator)
    assert "error" not in res, res
    assert res["tokeninfo"]["email"] == MYAPP, res["tokeninfo"]
    claims = res["id_token_claims"]
    # google-auth-library sends useEmailAzp (= includeEmail, default true): azp is the email.
    assert claims["azp"] == MYAPP, claims
    assert claims["sub"] == MYAPP_UNIQUE_ID and claims["email"] == MYAPP, claims
    assert claims["aud"] == "aws-trust-1", claims

    res = impersonated(sandbox, emulator, include_email=False)
    assert "error" not in res, res
    claims = res["id_token_claims"]
    assert claims["azp"] == claims["sub"] == MYAPP_UNIQUE_ID, claims
    assert "email" not in claims, claims


def test_node_email_azp_token_against_a_numeric_azp_trust_policy(sandbox, emulator):
    email_token = impersonated(sandbox, emulator)["id_token"]
    numeric_token = impersonated(sandbox, emulator, include_email=False)["id_token"]

    def assume(token: str) -> dict:
        token_file = sandbox.write("myapp.jwt", token)
        env = sandbox.env(emulator, NO_INSTANCE_CREDS, {
            "AWS_WEB_IDENTITY_TOKEN_FILE": token_file,
            "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/google-cloud-myapp",
            "AWS_ROLE_SESSION_NAME": "node-myapp",
            "AWS_REGION": "us-east-1",
        })
        return node_client(sandbox, "aws_caller_identity", {"provider": "web_identity"}, env=env)

    # The builtin role trusts accounts.google.com:aud = the numeric id (what idbridge gets).
    ok = assume(numeric_token)
    assert ok.get("Arn", "").endswith(":assumed-role/google-cloud-myapp/node-myapp"), ok
    refused = assume(email_token)
    assert "error" in refused, refused
    assert refused["error"]["name"] == "AccessDenied" or "AccessDenied" in refused["error"]["message"], refused

    # What setup writes for the route (numeric azp, as idbridge's own token has), and what explain
    # says about the Node token under it.
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    r = sandbox.idbridge("setup", "--config", EXAMPLES / "seed002-impersonate-to-aws.toml", "--route",
                         "myapp-to-aws", "--format", "aws-json", env=env)
    assert r.returncode == 0, describe(r)
    policy = json.loads(r.stdout)
    assert policy["Statement"][0]["Condition"]["StringEquals"]["accounts.google.com:aud"] == MYAPP_UNIQUE_ID, policy
    assert "google-azp-forms" in r.stderr and MYAPP in r.stderr, r.stderr
    policy_file = sandbox.write("policy.json", r.stdout)
    token_file = sandbox.write("email.jwt", email_token)
    r = sandbox.idbridge("explain", "--token", f"@{token_file}", "--aws-trust-policy", policy_file,
                         "--format", "json", env=env)
    assert r.returncode == 2, describe(r)
    report = json.loads(r.stdout)
    assert report["decision"] == "deny", report
    codes = {w["code"]: w["message"] for w in report["warnings"]}
    assert "google-azp-forms" in codes, report
    assert f'["{MYAPP_UNIQUE_ID}", "{MYAPP}"]' in codes["google-azp-forms"], codes

    # A policy that lists both forms admits both tokens.
    both = json.loads(policy_file.read_text())
    both["Statement"][0]["Condition"]["StringEquals"]["accounts.google.com:aud"] = [MYAPP_UNIQUE_ID, MYAPP]
    both_file = sandbox.write("both.json", json.dumps(both))
    for token in (email_token, numeric_token):
        f = sandbox.write("t.jwt", token)
        r = sandbox.idbridge("explain", "--token", f"@{f}", "--aws-trust-policy", both_file, "--format", "json",
                             env=env)
        assert r.returncode == 0, describe(r)


# ---------------------------------------------------------------------- external_account ---


def node_external(sandbox, emulator: dict, info: dict, env: dict) -> dict:
    return node_client(sandbox, "external_account", {"info": info, "tokeninfo_url": tokeninfo_url(emulator)},
                       env=env)


def test_node_external_account_aws_source_over_imdsv2(sandbox, emulator):
    info = external_account(emulator, AWS_AUDIENCE, AWS4_REQUEST, imds_source(emulator), impersonate=AWS_SA)
    res = node_external(sandbox, emulator, info, sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert "error" not in res, res
    assert res["client"] == "AwsClient", res
    assert res["tokeninfo"]["email"] == AWS_SA, res
    assert tokeninfo(emulator, res["access_token"])["email"] == AWS_SA


def test_node_external_account_file_source(sandbox, emulator):
    path = sandbox.write("svid.jwt", mint_svid_like(emulator))
    info = external_account(emulator, SPIFFE_AUDIENCE, JWT_TYPE, {"file": str(path)}, impersonate=SPIFFE_SA)
    res = node_external(sandbox, emulator, info, sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert "error" not in res, res
    assert res["client"] == "IdentityPoolClient", res
    assert res["tokeninfo"]["email"] == SPIFFE_SA, res


def executable_routes(sandbox) -> str:
    return str(sandbox.write("routes.toml", "\n".join([
        "[[route]]",
        'name = "svid"',
        f'source = {{ kind = "spiffe", audience = "{SPIFFE_AUDIENCE}" }}',
        "",
        "[[route]]",
        'name = "broken"',
        f'source = {{ kind = "oidc-file", path = "{sandbox.root}/no-such-token.jwt" }}',
        "",
    ])))


def test_node_external_account_executable_source_runs_idbridge(sandbox, emulator):
    routes = executable_routes(sandbox)
    env = {**sandbox.env(emulator, NO_INSTANCE_CREDS), "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES": "1"}
    command = f"{sandbox.bin} token --config {routes} --route svid --format google-executable"
    source = {"executable": {"command": command, "timeout_millis": 30000}}
    info = external_account(emulator, SPIFFE_AUDIENCE, JWT_TYPE, source, impersonate=SPIFFE_SA)
    res = node_external(sandbox, emulator, info, env)
    assert "error" not in res, res
    assert res["client"] == "PluggableAuthClient", res
    assert res["tokeninfo"]["email"] == SPIFFE_SA, res

    # A failing route: idbridge prints Google's error response, which the library surfaces.
    command = f"{sandbox.bin} token --config {routes} --route broken --format google-executable"
    source = {"executable": {"command": command, "timeout_millis": 30000}}
    info = external_account(emulator, SPIFFE_AUDIENCE, JWT_TYPE, source, impersonate=SPIFFE_SA)
    res = node_external(sandbox, emulator, info, env)
    err = res.get("error")
    assert err, res
    assert '"success":false' in err["message"] and '"code":"IO_ERROR"' in err["message"], err
    assert "no-such-token.jwt" in err["message"], err


def test_idbridge_google_executable_error_response(sandbox, emulator):
    routes = executable_routes(sandbox)
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    r = sandbox.idbridge("token", "--config", routes, "--route", "broken", "--format", "google-executable", env=env)
    assert r.returncode == 1, describe(r)
    out = json.loads(r.stdout)
    assert out["version"] == 1 and out["success"] is False, out
    assert out["code"] == "IO_ERROR", out
    assert "no-such-token.jwt" in out["message"], out
    assert "idbridge: error:" in r.stderr, describe(r)

    # A route that yields no OIDC token is a configuration error, in the same shape.
    r = sandbox.idbridge("token", "--config", EXAMPLES / "seed001-aws-to-gcp.toml", "--route", "ec2-to-gcp",
                         "--format", "google-executable", env=sandbox.env(emulator, imds=True))
    assert r.returncode == 64, describe(r)
    out = json.loads(r.stdout)
    assert (out["success"], out["code"]) == (False, "INVALID_CONFIGURATION"), out
    r = sandbox.idbridge("token", "--config", routes, "--route", "svid", "--format", "google-executable", env=env)
    assert r.returncode == 0, describe(r)
    aud = claims_of(json.loads(r.stdout)["id_token"])["aud"]
    assert SPIFFE_AUDIENCE in (aud if isinstance(aud, list) else [aud]), aud
