"""Wire details real clients depend on, each checked with a real client (Python here; the Node
suite covers the same endpoints from google-auth-library and the AWS SDK for JavaScript):

* presigned GetCallerIdentity (boto3 generate_presigned_url + a plain GET), and its expiry;
* proto3 JSON at the emulated IAM Credentials and STS (google-auth's `"delegates": null` and
  string booleans, snake_case names, Google's exact 400 for unknown fields), and `useEmailAzp`;
* /tokeninfo with `Authorization: Bearer`;
* `setup --format external-account --endpoints effective`: a file that works against the
  emulator as it is.
"""

from __future__ import annotations

import json

from conftest import ACCOUNT, EXAMPLES, HTTP, NO_INSTANCE_CREDS, PYTHON, assumed_role_arn, describe
from nodepeers import node_client
from test_google_external_account import AWS_SA, EXT_CLIENTS, ext_refresh, tokeninfo

INSTANCE_ID = "i-0a1b2c3d4e5f60718"
NO_ECS = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": None, "AWS_CONTAINER_AUTHORIZATION_TOKEN": None}
MYAPP = "myapp@gcp-project.iam.gserviceaccount.com"
MYAPP_UNIQUE_ID = "100367186111111111111"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


# ------------------------------------------------------------- presigned GetCallerIdentity ---


def presigned(sandbox, emulator, **args) -> dict:
    env = sandbox.env(emulator, NO_ECS, {"AWS_EC2_METADATA_V1_DISABLED": "true"}, imds=True)
    return sandbox.client("boto3_presigned_caller_identity", args, env=env)


def test_boto3_presigned_get_caller_identity_fetched_with_get(sandbox, emulator):
    res = presigned(sandbox, emulator, http_method="GET")
    assert res["url_has_token"], res  # IMDS session credentials: X-Amz-Security-Token in the URL
    assert res["status"] == 200, res
    assert f"<Arn>{assumed_role_arn('gcp-caller', INSTANCE_ID)}</Arn>" in res["body"], res
    assert f"<Account>{ACCOUNT}</Account>" in res["body"], res

    # boto3's default presign signs the operation's own method (POST): fetched with POST it
    # verifies; fetched with GET the method differs from the signed one, and STS says
    # SignatureDoesNotMatch, as real STS does (boto/boto3#756).
    res = presigned(sandbox, emulator, fetch_method="POST")
    assert res["status"] == 200, res
    res = presigned(sandbox, emulator)
    assert res["status"] == 403 and "<Code>SignatureDoesNotMatch</Code>" in res["body"], res


def test_presigned_url_expires_after_x_amz_expires(sandbox, emulator):
    res = presigned(sandbox, emulator, http_method="GET", expires_in=1, sleep=2.5)
    assert res["status"] == 403, res
    assert "<Code>SignatureDoesNotMatch</Code>" in res["body"], res
    assert "Signature expired:" in res["body"] and "- 1 sec.)" in res["body"], res
    assert "<Type>Sender</Type>" in res["body"], res


# ------------------------------------------------------------------------------ proto3 JSON ---


def vm_access_token(emulator: dict) -> str:
    url = f"http://{emulator['GCE_METADATA_HOST']}/computeMetadata/v1/instance/service-accounts/default/token"
    r = HTTP.get(url, headers={"Metadata-Flavor": "Google"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def test_google_auth_iam_credentials_calls(sandbox, emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    res = sandbox.client("gauth_iam_tokens", {"iam": emulator["IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL"],
                                              "target": MYAPP, "audience": "aws-trust-1"}, env=env)
    assert "error" not in res, res
    assert tokeninfo(emulator, res["access_token"])["email"] == MYAPP
    # impersonated IDTokenCredentials: no useEmailAzp, the numeric id in azp.
    claims = res["impersonated_id_token_claims"]
    assert claims["azp"] == claims["sub"] == MYAPP_UNIQUE_ID and claims["email"] == MYAPP, claims
    # The IAM ID-token path: "includeEmail": "true", "useEmailAzp": "true" (strings).
    claims = res["iam_id_token_claims"]
    assert claims["azp"] == MYAPP and claims["sub"] == MYAPP_UNIQUE_ID, claims


def test_google_auth_external_account_impersonation_sends_delegates_null(sandbox, emulator):
    # google-auth 2.63's external_account impersonation sends {"delegates": null, …}.
    from test_google_external_account import AWS4_REQUEST, AWS_AUDIENCE, external_account, imds_source

    info = external_account(emulator, AWS_AUDIENCE, AWS4_REQUEST, imds_source(emulator), impersonate=AWS_SA)
    res = ext_refresh(sandbox, info, env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert "error" not in res, res
    assert tokeninfo(emulator, res["token"])["email"] == AWS_SA


def test_unknown_fields_get_googles_exact_400(emulator):
    iam = emulator["IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL"]
    auth = {"Authorization": f"Bearer {vm_access_token(emulator)}"}
    url = f"{iam}/v1/projects/-/serviceAccounts/{MYAPP}:generateAccessToken"
    r = HTTP.post(url, json={"scope": [CLOUD_PLATFORM], "lifetme": "600s"}, headers=auth, timeout=10)
    assert r.status_code == 400, r.text
    message = 'Invalid JSON payload received. Unknown name "lifetme": Cannot find field.'
    assert r.json() == {"error": {
        "code": 400, "message": message, "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                     "fieldViolations": [{"description": message}]}],
    }}, r.text

    # snake_case names, nulls and string booleans are what Google accepts.
    url = f"{iam}/v1/projects/-/serviceAccounts/{MYAPP}:generateIdToken"
    r = HTTP.post(url, json={"audience": "a", "include_email": "true", "use_email_azp": None, "delegates": None},
                  headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    r = HTTP.post(url, json={"audience": "a", "includeEmail": "maybe"}, headers=auth, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == "Invalid value at 'include_email' (TYPE_BOOL), \"maybe\"", r.text

    # STS /v1/token with a JSON body: the same transcoder rules.
    sts = emulator["IDBRIDGE_GOOGLE_STS_URL"]
    r = HTTP.post(sts, json={"grantType": "urn:ietf:params:oauth:grant-type:token-exchange", "subjectTokn": "x"},
                  timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == 'Invalid JSON payload received. Unknown name "subjectTokn": Cannot find field.'


def test_tokeninfo_accepts_a_bearer_header(emulator):
    token = vm_access_token(emulator)
    g = emulator["IDBRIDGE_EMULATOR_GOOGLE_URL"]
    for method in ("POST", "GET"):
        r = HTTP.request(method, f"{g}/tokeninfo", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200, (method, r.text)
        assert r.json()["email"] == "psoxy-tenant@saas-tenant.iam.gserviceaccount.com", r.text


# ---------------------------------------------------------------- setup --endpoints effective ---


def test_setup_external_account_with_the_effective_endpoints(sandbox, emulator):
    args = ["setup", "--config", EXAMPLES / "seed001-aws-to-gcp.toml", "--route", "ec2-to-gcp",
            "--format", "external-account"]
    env = sandbox.env(emulator, NO_ECS, imds=True)
    r = sandbox.idbridge(*args, env=env)
    assert r.returncode == 0, describe(r)
    prod = json.loads(r.stdout)
    assert prod["token_url"] == "https://sts.googleapis.com/v1/token", prod
    assert prod["service_account_impersonation_url"].startswith("https://iamcredentials.googleapis.com/"), prod
    assert prod["credential_source"]["url"].startswith("http://169.254.169.254/"), prod

    r = sandbox.idbridge(*args, "--endpoints", "effective", env=env)
    assert r.returncode == 0, describe(r)
    info = json.loads(r.stdout)
    assert info["token_url"] == emulator["IDBRIDGE_GOOGLE_STS_URL"], info
    assert info["service_account_impersonation_url"].startswith(emulator["IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL"]), info
    imds = emulator["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
    assert info["credential_source"]["imdsv2_session_token_url"] == f"{imds}/latest/api/token", info
    # The file as written works with google-auth against the emulator.
    path = sandbox.write("cred.json", r.stdout)
    r = sandbox.run([PYTHON, EXT_CLIENTS, "ext_refresh", json.dumps({"info": json.loads(path.read_text()),
                                                                     "scopes": [CLOUD_PLATFORM]})],
                    env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert "error" not in res, (res, r.stderr)
    assert tokeninfo(emulator, res["token"])["email"] == AWS_SA
    # …and with google-auth-library for Node.
    res = node_client(sandbox, "external_account", {"info": json.loads(path.read_text())},
                      env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert "error" not in res, res
    assert tokeninfo(emulator, res["access_token"])["email"] == AWS_SA


def test_google_auth_surfaces_idbridges_executable_error_response(sandbox, emulator):
    from test_google_external_account import JWT_TYPE, SPIFFE_AUDIENCE, external_account

    routes = sandbox.write("routes.toml", "\n".join([
        "[[route]]",
        'name = "broken"',
        f'source = {{ kind = "oidc-file", path = "{sandbox.root}/no-such-token.jwt" }}',
        "",
    ]))
    command = f"{sandbox.bin} token --config {routes} --route broken --format google-executable"
    info = external_account(emulator, SPIFFE_AUDIENCE, JWT_TYPE,
                            {"executable": {"command": command, "timeout_millis": 30000}})
    env = {**sandbox.env(emulator, NO_INSTANCE_CREDS), "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES": "1"}
    res = ext_refresh(sandbox, info, env=env)
    err = res.get("error")
    assert err and err["google_auth_error"], res
    assert '"success":false' in err["message"] and '"code":"IO_ERROR"' in err["message"], err


# --------------------------------------------------------------------- doctor and azp forms ---


def test_doctor_names_both_azp_forms_for_a_refused_google_token(sandbox, emulator):
    r = sandbox.idbridge("doctor", "--config", EXAMPLES / "seed002-impersonate-to-aws.toml", "--route",
                         "myapp-to-aws-naive", env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert r.returncode == 1, describe(r)
    assert f"azp={MYAPP_UNIQUE_ID}" in r.stdout, describe(r)
    # The token carries the email too: doctor says which clients get it in azp, and what admits both.
    assert "useEmailAzp" in r.stdout, describe(r)
    assert f'"accounts.google.com:aud": ["{MYAPP_UNIQUE_ID}", "{MYAPP}"]' in r.stdout, describe(r)
