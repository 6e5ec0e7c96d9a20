"""google-auth's `external_account` credentials (workload identity federation) against the emulated
Google STS + IAM Credentials of `idbridge emulate`, and botocore checking the AWS subject token
idbridge itself builds.

* aws source over the emulator's IMDSv2 (with and without impersonation), and from AWS_* env
  credentials of the ECS task role `other-app`, which the provider's attribute condition refuses;
* identity_pool file sources (text and JSON) and url sources (a local server that requires a
  custom header) carrying a JWT-SVID-like token minted for the SPIRE issuer;
* an executable source whose command is `idbridge token --format google-executable`, i.e. idbridge
  behind google-auth's pluggable auth;
* botocore's SigV4Auth recomputing the signature inside the subject token of seed 001's route.

Every access token is identified through the emulator's /tokeninfo. google-auth runs in fresh
interpreters (ext_clients.py) with a clean environment (conftest.clean_env).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ACCOUNT, EXAMPLES, HTTP, NO_INSTANCE_CREDS, PYTHON, describe

EXT_CLIENTS = Path(__file__).resolve().parent / "ext_clients.py"

PROJECT_NUMBER = "836192731250"
POOLS = f"//iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools"
AWS_AUDIENCE = f"{POOLS}/aws-pool/providers/aws-test-account"
SPIFFE_AUDIENCE = f"{POOLS}/spiffe-pool/providers/spire"
AWS_SA = "aws-service-account-demo@example-project.iam.gserviceaccount.com"
SPIFFE_SA = "spiffe-demo@example-project.iam.gserviceaccount.com"
SPIRE_ISSUER = "https://spire.idbridge.test"
BILLING = "spiffe://example.org/ns/prod/sa/billing"
INSTANCE_ID = "i-0a1b2c3d4e5f60718"
AWS_FEDERATED_PREFIX = (f"principal://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/"
                        f"workloadIdentityPools/aws-pool/subject/arn:aws:sts::{ACCOUNT}:assumed-role/gcp-caller/")

AWS4_REQUEST = "urn:ietf:params:aws:token-type:aws4_request"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
CLOUD_PLATFORM = ["https://www.googleapis.com/auth/cloud-platform"]
REGIONAL_CRED_VERIFICATION_URL = "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"

# A local helper server never outlives this, even if a test hangs.
LOCAL_SERVER_MAX_SECONDS = 120


# ----------------------------------------------------------------------------------- helpers ---


def ext_refresh(sandbox, info: dict, env: dict, scopes: list[str] | None = None) -> dict:
    """google-auth `external_account` from_info + refresh in a fresh interpreter."""
    args = {"info": info, "scopes": scopes or CLOUD_PLATFORM}
    r = sandbox.run([PYTHON, EXT_CLIENTS, "ext_refresh", json.dumps(args)], env=env)
    assert r.returncode == 0 and r.stdout.strip(), describe(r)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if res.get("error", {}).get("unexpected"):
        pytest.fail(f"ext_refresh raised unexpectedly: {res['error']}\n{r.stderr}", pytrace=False)
    res["_stderr"] = r.stderr
    return res


def tokeninfo(emulator: dict, access_token: str) -> dict:
    r = HTTP.post(f"{emulator['IDBRIDGE_EMULATOR_GOOGLE_URL']}/tokeninfo", data={"access_token": access_token},
                  timeout=10)
    assert r.status_code == 200, f"tokeninfo -> {r.status_code} {r.text[:500]}"
    return r.json()


def impersonation_url(emulator: dict, email: str) -> str:
    return (f"{emulator['IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL']}/v1/projects/-/serviceAccounts/"
            f"{email}:generateAccessToken")


def external_account(emulator: dict, audience: str, subject_token_type: str, credential_source: dict,
                     impersonate: str | None = None) -> dict:
    info = {
        "type": "external_account",
        "audience": audience,
        "subject_token_type": subject_token_type,
        "token_url": emulator["IDBRIDGE_GOOGLE_STS_URL"],
        "credential_source": credential_source,
    }
    if impersonate:
        info["service_account_impersonation_url"] = impersonation_url(emulator, impersonate)
    return info


def imds_source(emulator: dict) -> dict:
    imds = emulator["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
    assert imds.endswith("/"), imds
    return {
        "environment_id": "aws1",
        "region_url": f"{imds}latest/meta-data/placement/availability-zone",
        "url": f"{imds}latest/meta-data/iam/security-credentials",
        "imdsv2_session_token_url": f"{imds}latest/api/token",
        "regional_cred_verification_url": REGIONAL_CRED_VERIFICATION_URL,
    }


def mint_svid_like(emulator: dict, lifetime_seconds: int = 600) -> str:
    """A JWT-SVID-shaped token of the SPIRE issuer, for the spiffe-pool provider."""
    r = HTTP.post(f"{emulator['IDBRIDGE_EMULATOR_GOOGLE_URL']}/_emulator/mint",
                  json={"issuer": SPIRE_ISSUER, "sub": BILLING, "aud": SPIFFE_AUDIENCE,
                        "lifetime_seconds": lifetime_seconds}, timeout=10)
    assert r.status_code == 200, f"mint -> {r.status_code} {r.text[:500]}"
    token = r.json()["token"]
    assert token.count(".") == 2, token[:100]
    return token


def assert_service_account_token(emulator: dict, res: dict, email: str) -> dict:
    assert "error" not in res, res
    assert res["token"], res
    assert res["expiry"], res
    info = tokeninfo(emulator, res["token"])
    assert info.get("email") == email, info
    assert info.get("email_verified") == "true", info
    assert "https://www.googleapis.com/auth/cloud-platform" in info.get("scope", "").split(), info
    assert int(info["expires_in"]) > 0, info
    return info


@contextlib.contextmanager
def local_http_server(handle):
    """A ThreadingHTTPServer on 127.0.0.1 for the duration of the block (and never longer than
    LOCAL_SERVER_MAX_SECONDS). `handle(method, path, headers, body) -> (status, content_type, body)`.
    Yields (base_url, requests): every request seen, header names lower-cased."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = {"method": self.command, "path": self.path,
                   "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
            seen.append(req)
            status, ctype, payload = handle(self.command, self.path, self.headers, body)
            data = payload.encode() if isinstance(payload, str) else payload
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    watchdog = threading.Timer(LOCAL_SERVER_MAX_SECONDS, server.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------------------- aws source ---


def test_aws_source_over_imdsv2_impersonates_the_bound_service_account(sandbox, emulator):
    info = external_account(emulator, AWS_AUDIENCE, AWS4_REQUEST, imds_source(emulator), impersonate=AWS_SA)
    res = ext_refresh(sandbox, info, env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert res["class"] == "google.auth.aws.Credentials", res
    assert res["service_account_email"] == AWS_SA, res
    assert_service_account_token(emulator, res, AWS_SA)


def test_aws_source_over_imdsv2_federated_token(sandbox, emulator):
    info = external_account(emulator, AWS_AUDIENCE, AWS4_REQUEST, imds_source(emulator))
    res = ext_refresh(sandbox, info, env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert "error" not in res, res
    assert res["token"], res
    info = tokeninfo(emulator, res["token"])
    assert info["sub"].startswith(AWS_FEDERATED_PREFIX), info
    assert info["sub"] == AWS_FEDERATED_PREFIX + INSTANCE_ID, info
    assert "email" not in info, info
    assert int(info["expires_in"]) > 0, info


def test_aws_source_with_the_ecs_role_is_refused_by_the_attribute_condition(sandbox, emulator):
    r = HTTP.get(emulator["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
                 headers={"Authorization": emulator["AWS_CONTAINER_AUTHORIZATION_TOKEN"]}, timeout=10)
    assert r.status_code == 200, r.text
    ecs = r.json()
    assert ecs["AccessKeyId"] and ecs["SecretAccessKey"] and ecs["Token"], ecs

    # No IMDS URLs: google-auth must take the credentials and region from the environment.
    source = {"environment_id": "aws1", "regional_cred_verification_url": REGIONAL_CRED_VERIFICATION_URL}
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, {
        "AWS_ACCESS_KEY_ID": ecs["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": ecs["SecretAccessKey"],
        "AWS_SESSION_TOKEN": ecs["Token"],
        "AWS_REGION": "us-east-1",
    })
    # google-auth 2.62.2 turns an STS error response into google.auth.exceptions.OAuthError
    # (google/oauth2/utils.py handle_error_response), a GoogleAuthError that is *not* a RefreshError.
    for impersonate in (AWS_SA, None):  # refused at STS, before any impersonation
        info = external_account(emulator, AWS_AUDIENCE, AWS4_REQUEST, source, impersonate=impersonate)
        res = ext_refresh(sandbox, info, env=env)
        err = res.get("error")
        assert err, res
        assert (err["module"], err["type"]) == ("google.auth.exceptions", "OAuthError"), res
        assert err["google_auth_error"], res
        assert "unauthorized_client" in err["message"], res
        assert "attribute condition" in err["message"], res


# ------------------------------------------------------------------- identity_pool: file, url ---


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_file_source_jwt_svid_impersonates_spiffe_demo(sandbox, emulator, fmt):
    token = mint_svid_like(emulator)
    if fmt == "text":
        path = sandbox.write("svid.jwt", token)
        source = {"file": str(path)}
    else:
        path = sandbox.write("svid.json", json.dumps({"id_token": token, "other": "x"}))
        source = {"file": str(path), "format": {"type": "json", "subject_token_field_name": "id_token"}}
    info = external_account(emulator, SPIFFE_AUDIENCE, JWT_TYPE, source, impersonate=SPIFFE_SA)
    res = ext_refresh(sandbox, info, env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert res["class"] == "google.auth.identity_pool.Credentials", res
    assert_service_account_token(emulator, res, SPIFFE_SA)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_url_source_with_a_required_header(sandbox, emulator, fmt):
    token = mint_svid_like(emulator)

    def handle(method, path, headers, body):
        if method != "GET" or path not in ("/token", "/token.json"):
            return 404, "text/plain", "not found"
        if headers.get("Metadata") != "True":
            return 403, "text/plain", "Metadata: True header required"
        if path == "/token.json":
            return 200, "application/json", json.dumps({"id_token": token})
        return 200, "text/plain", token

    with local_http_server(handle) as (base, seen):
        if fmt == "text":
            source = {"url": f"{base}/token", "headers": {"Metadata": "True"}}
        else:
            source = {"url": f"{base}/token.json", "headers": {"Metadata": "True"},
                      "format": {"type": "json", "subject_token_field_name": "id_token"}}
        info = external_account(emulator, SPIFFE_AUDIENCE, JWT_TYPE, source, impersonate=SPIFFE_SA)
        res = ext_refresh(sandbox, info, env=sandbox.env(emulator, NO_INSTANCE_CREDS))

        # The header is what the server insists on: without it the source fails.
        bare = {k: v for k, v in source.items() if k != "headers"}
        info_bare = external_account(emulator, SPIFFE_AUDIENCE, JWT_TYPE, bare, impersonate=SPIFFE_SA)
        refused = ext_refresh(sandbox, info_bare, env=sandbox.env(emulator, NO_INSTANCE_CREDS))

    assert_service_account_token(emulator, res, SPIFFE_SA)
    assert seen and seen[0]["headers"].get("metadata") == "True", seen
    assert refused.get("error", {}).get("refresh_error"), refused
    assert "403" in refused["error"]["message"] or "Unable to retrieve" in refused["error"]["message"], refused


# ------------------------------------------------------------ executable: idbridge behind it ---


def test_executable_source_runs_idbridge(sandbox, emulator):
    routes = sandbox.write("routes.toml", "\n".join([
        "[[route]]",
        'name = "svid"',
        'description = "a JWT-SVID for the spiffe-pool provider, for google-auth\'s executable source"',
        f'source = {{ kind = "spiffe", audience = "{SPIFFE_AUDIENCE}" }}',
        "",
    ]))
    command = f"{sandbox.bin} token --config {routes} --route svid --format google-executable"
    assert " " not in str(sandbox.bin) and " " not in str(routes)  # google-auth shlex-splits the command

    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    # What google-auth runs the child with: its own env (which must carry the Workload API socket)
    # plus GOOGLE_EXTERNAL_ACCOUNT_*. Check idbridge's answer on its own first.
    r = sandbox.run(command.split(), env={**env, "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": SPIFFE_AUDIENCE,
                                          "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE": JWT_TYPE,
                                          "GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE": "0",
                                          "GOOGLE_EXTERNAL_ACCOUNT_REVOKE": "0"})
    assert r.returncode == 0, describe(r)
    out = json.loads(r.stdout)
    assert out["version"] == 1 and out["success"] is True, out
    assert out["token_type"] in (JWT_TYPE, ID_TOKEN_TYPE), out
    assert out["id_token"].count(".") == 2, out
    assert out["expiration_time"] > time.time(), out

    assert "SPIFFE_ENDPOINT_SOCKET" in env, env
    source = {"executable": {"command": command, "timeout_millis": 30000}}
    info = external_account(emulator, SPIFFE_AUDIENCE, JWT_TYPE, source, impersonate=SPIFFE_SA)

    # Not allowed unless GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1.
    res = ext_refresh(sandbox, info, env=env)
    assert "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES" in res.get("error", {}).get("message", ""), res

    res = ext_refresh(sandbox, info, env={**env, "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES": "1"})
    assert res["class"] == "google.auth.pluggable.Credentials", res
    assert_service_account_token(emulator, res, SPIFFE_SA)


# ---------------------------------------------- botocore checks idbridge's AWS subject token ---

AUTH_RE = re.compile(r"^AWS4-HMAC-SHA256 Credential=(?P<ak>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
                     r"/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?Signature=(?P<sig>[0-9a-f]{64})$")


def imds_credentials(emulator: dict) -> dict:
    imds = emulator["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
    r = HTTP.put(f"{imds}latest/api/token", headers={"x-aws-ec2-metadata-token-ttl-seconds": "300"}, timeout=10)
    assert r.status_code == 200, r.text
    h = {"x-aws-ec2-metadata-token": r.text}
    r = HTTP.get(f"{imds}latest/meta-data/iam/security-credentials/", headers=h, timeout=10)
    assert r.status_code == 200, r.text
    role = r.text.strip().splitlines()[0]
    r = HTTP.get(f"{imds}latest/meta-data/iam/security-credentials/{role}", headers=h, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_botocore_verifies_the_sigv4_of_idbridges_aws_subject_token(sandbox, emulator):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    def handle(method, path, headers, body):
        return 400, "application/json", json.dumps({"error": "invalid_request", "error_description": "captured"})

    with local_http_server(handle) as (base, seen):
        env = sandbox.env(emulator, {"IDBRIDGE_GOOGLE_STS_URL": f"{base}/v1/token"}, imds=True)
        r = sandbox.idbridge("token", "--config", EXAMPLES / "seed001-aws-to-gcp.toml", "--route", "ec2-to-gcp",
                             env=env)
    assert r.returncode != 0, describe(r)  # our fake STS refused it
    posts = [s for s in seen if s["method"] == "POST" and s["path"].split("?")[0] == "/v1/token"]
    assert len(posts) >= 1, (seen, describe(r))
    sts_req = posts[0]
    assert sts_req["headers"].get("content-type", "").startswith("application/x-www-form-urlencoded"), sts_req
    form = urllib.parse.parse_qs(sts_req["body"].decode(), keep_blank_values=True, strict_parsing=True)
    form = {k: v[0] for k, v in form.items()}
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange", form
    assert form["audience"] == AWS_AUDIENCE, form
    assert form["subject_token_type"] == AWS4_REQUEST, form
    assert form["requested_token_type"] == "urn:ietf:params:oauth:token-type:access_token", form

    raw = form["subject_token"]
    signed = json.loads(urllib.parse.unquote(raw))  # still percent-encoded after form decoding
    assert signed["method"] == "POST", signed
    assert signed["url"] == "https://sts.us-east-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15", signed
    headers: dict[str, str] = {}
    for h in signed["headers"]:
        assert h["key"].lower() not in headers, f"duplicate header {h['key']}: {signed}"
        headers[h["key"].lower()] = h["value"]

    m = AUTH_RE.match(headers["authorization"])
    assert m, headers["authorization"]
    signed_names = m["signed"].split(";")
    assert signed_names == sorted(signed_names), m["signed"]
    assert {"host", "x-amz-date"} <= set(signed_names), m["signed"]
    assert (m["region"], m["service"]) == ("us-east-1", "sts"), m.groupdict()

    x_amz_date = headers["x-amz-date"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", x_amz_date), x_amz_date
    assert m["date"] == x_amz_date[:8], (m["date"], x_amz_date)

    # The audience is carried — and signed — in x-goog-cloud-target-resource.
    assert headers.get("x-goog-cloud-target-resource") == AWS_AUDIENCE, headers
    assert "x-goog-cloud-target-resource" in signed_names, m["signed"]

    # The credentials idbridge signed with are the instance role's (the emulator keeps the IMDS
    # session for an hour, so IMDS hands the same ones to us).
    creds = imds_credentials(emulator)
    assert m["ak"] == creds["AccessKeyId"], (m["ak"], creds["AccessKeyId"])
    assert headers.get("x-amz-security-token") == creds["Token"], "x-amz-security-token differs from IMDS's Token"
    assert "x-amz-security-token" in signed_names, m["signed"]

    # botocore recomputes the signature over exactly the signed headers, at the signed time.
    request = AWSRequest(method=signed["method"], url=signed["url"],
                         headers={k: headers[k] for k in signed_names}, data=b"")
    request.context["timestamp"] = x_amz_date
    auth = SigV4Auth(Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"]), "sts", m["region"])
    canonical = auth.canonical_request(request)
    assert auth.signed_headers(auth.headers_to_sign(request)) == m["signed"], canonical
    string_to_sign = auth.string_to_sign(request, canonical)
    expected = auth.signature(string_to_sign, request)
    assert expected == m["sig"], f"signature mismatch\ncanonical request:\n{canonical}\nstring to sign:\n{string_to_sign}"
