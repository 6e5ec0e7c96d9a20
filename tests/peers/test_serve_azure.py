"""Real Azure clients against `idbridge serve`'s Azure frontends (examples/serve-azure.toml),
backed by `idbridge emulate`: the daemon's routes federate the emulated GCE VM's Google ID token
into the emulated Entra ID (exchange `entra`), and serve the access tokens as

* Azure IMDS: azure-identity `ManagedIdentityCredential` with AZURE_POD_IDENTITY_AUTHORITY_HOST
  (system-assigned, and the `client_id` / `object_id` selectors), and `DefaultAzureCredential`;
* the App Service / Container Apps protocol: the same credentials with IDENTITY_ENDPOINT and
  IDENTITY_HEADER;
* Go: go-autorest's adal MSI token source (Debian's package) on the IMDS frontend, through
  adal's custom MSI endpoint (tests/peers/go/azureclient).

Every token is verified with PyJWT against the keys the emulated Entra ID publishes. The clients
run with a clean environment holding only the daemon's `--env-file` settings. Bad requests get
Azure's statuses and bodies; a caller rule denying our uid gets 403 naming the uid and the route.
"""

from __future__ import annotations

import os

import pytest

from conftest import EXAMPLES, HTTP, NO_INSTANCE_CREDS, stop_process, tail
from go_peers import go_peers, run_go  # noqa: F401 - fixture
from test_azure_peers import CALLER, CALLER_OID, REPORTS_API, TENANT, V1_ISSUER, V2_ISSUER, azure, entra_claims
from test_serve import start_serve

BILLING_API = "api://idbridge-billing"
BILLING_SCOPE = f"{BILLING_API}/.default"
REPORTS_SCOPE = "api://idbridge-reports/.default"
IMDS_VARS = ("AZURE_POD_IDENTITY_AUTHORITY_HOST",)
APP_SERVICE_VARS = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")


@pytest.fixture(scope="module")
def serve(idbridge_bin, emulator, tmp_path_factory):
    d = tmp_path_factory.mktemp("serve-azure")
    s = start_serve(idbridge_bin, emulator, d, EXAMPLES / "serve-azure.toml")
    try:
        yield s
    finally:
        stop_process(s.proc)
        assert s.proc.returncode == 0, f"idbridge serve exited with {s.proc.returncode}:\n{tail(s.log)}"


def client_env(sandbox, serve, names, *overlays) -> dict:
    """A workload's environment: only the daemon's settings of one mode."""
    return sandbox.env(NO_INSTANCE_CREDS, {k: serve.env[k] for k in names}, *overlays)


def imds_url(serve) -> str:
    return f"{serve.env['AZURE_POD_IDENTITY_AUTHORITY_HOST']}/metadata/identity/oauth2/token"


def billing_claims(emulator, token: str) -> dict:
    claims = entra_claims(emulator, token, BILLING_API, V1_ISSUER)
    assert claims["tid"] == TENANT and claims["appid"] == CALLER and claims["oid"] == CALLER_OID, claims
    assert claims["roles"] == ["Billing.Read"], claims
    return claims


def test_env_file_holds_both_modes(serve):
    assert set(serve.env) == {"AZURE_POD_IDENTITY_AUTHORITY_HOST", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"}, serve.env
    assert serve.env["AZURE_POD_IDENTITY_AUTHORITY_HOST"].startswith("http://127.0.0.1:")
    assert serve.env["IDENTITY_ENDPOINT"].startswith("http://127.0.0.1:")
    assert serve.env["IDENTITY_ENDPOINT"].endswith("/msi/token")
    assert len(serve.env["IDENTITY_HEADER"]) >= 40


@pytest.mark.parametrize("selector", [{}, {"client_id": CALLER}, {"identity_config": {"object_id": CALLER_OID}}])
def test_managed_identity_imds_mode(sandbox, emulator, serve, selector):
    res = azure(sandbox, "managed_identity", {"scope": BILLING_SCOPE, **selector},
                client_env(sandbox, serve, IMDS_VARS))
    assert "error" not in res, res
    billing_claims(emulator, res["token"])


def test_managed_identity_imds_mode_second_resource_is_a_v2_token(sandbox, emulator, serve):
    res = azure(sandbox, "managed_identity", {"scope": REPORTS_SCOPE}, client_env(sandbox, serve, IMDS_VARS))
    assert "error" not in res, res
    claims = entra_claims(emulator, res["token"], REPORTS_API, V2_ISSUER)
    assert claims["azp"] == CALLER and claims["roles"] == ["Reports.Read"], claims


def test_managed_identity_imds_mode_unknown_identity_fails(sandbox, serve):
    res = azure(sandbox, "managed_identity", {"scope": BILLING_SCOPE, "client_id": "00000000-0000-4000-8000-000000000000"},
                client_env(sandbox, serve, IMDS_VARS))
    assert res.get("error"), res
    assert "Identity not found" in res["error"]["message"], res


@pytest.mark.parametrize("selector", [{}, {"client_id": CALLER}])
def test_managed_identity_app_service_mode(sandbox, emulator, serve, selector):
    res = azure(sandbox, "managed_identity", {"scope": BILLING_SCOPE, **selector},
                client_env(sandbox, serve, APP_SERVICE_VARS))
    assert "error" not in res, res
    billing_claims(emulator, res["token"])
    res = azure(sandbox, "managed_identity", {"scope": REPORTS_SCOPE, **selector},
                client_env(sandbox, serve, APP_SERVICE_VARS))
    assert "error" not in res, res
    assert entra_claims(emulator, res["token"], REPORTS_API, V2_ISSUER)["azp"] == CALLER


def test_managed_identity_app_service_wrong_header_fails(sandbox, serve):
    env = client_env(sandbox, serve, APP_SERVICE_VARS, {"IDENTITY_HEADER": "not-the-secret"})
    res = azure(sandbox, "managed_identity", {"scope": BILLING_SCOPE}, env)
    assert res.get("error"), res
    assert "eyJ" not in res["error"]["message"], res


@pytest.mark.parametrize("names", [IMDS_VARS, APP_SERVICE_VARS], ids=["imds", "app-service"])
def test_default_azure_credential(sandbox, emulator, serve, names):
    # The whole chain runs: no environment or workload-identity variables, so it reaches
    # managed identity; "prod" keeps the developer tools (az, azd, …) out of it.
    env = client_env(sandbox, serve, names, {"AZURE_TOKEN_CREDENTIALS": "prod"})
    res = azure(sandbox, "default_credential", {"scope": BILLING_SCOPE}, env)
    assert "error" not in res, res
    billing_claims(emulator, res["token"])


@pytest.mark.parametrize("client_id", [None, CALLER])
def test_go_adal_msi_over_imds(sandbox, emulator, serve, go_peers, client_id):  # noqa: F811
    args = ["imds", BILLING_API] + ([client_id] if client_id else [])
    res = run_go(sandbox, go_peers, "azureclient", *args, env=client_env(sandbox, serve, IMDS_VARS))
    assert "error" not in res, res
    assert res["resource"] == BILLING_API and res["type"] == "Bearer" and res["expired"] is False, res
    billing_claims(emulator, res["token"])


def test_go_adal_msi_unknown_identity_fails(sandbox, serve, go_peers):  # noqa: F811
    res = run_go(sandbox, go_peers, "azureclient", "imds", BILLING_API, "00000000-0000-4000-8000-000000000000",
                 env=client_env(sandbox, serve, IMDS_VARS))
    assert "Identity not found" in res.get("error", ""), res


def test_imds_wire_rules(serve):
    url = imds_url(serve)
    q = {"api-version": "2018-02-01", "resource": BILLING_API}
    r = HTTP.get(url, params=q, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "invalid_request", "error_description": "Required metadata header not specified"}
    r = HTTP.get(url, params=q, headers={"Metadata": "true", "X-Forwarded-For": "10.0.0.9"}, timeout=10)
    assert r.status_code == 400 and "X-Forwarded-For" in r.json()["error_description"], r.text
    r = HTTP.get(url, params={**q, "resource": "api://nobody"}, headers={"Metadata": "true"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_resource", r.text
    r = HTTP.get(url, params={**q, "client_id": CALLER, "object_id": CALLER_OID}, headers={"Metadata": "true"},
                 timeout=10)
    assert r.status_code == 400, r.text
    r = HTTP.get(url, params={"resource": BILLING_API}, headers={"Metadata": "true"}, timeout=10)
    assert r.status_code == 400 and "api-version" in r.json()["error_description"], r.text
    r = HTTP.get(url, params=q, headers={"Metadata": "true"}, timeout=10)
    doc = r.json()
    assert r.status_code == 200, r.text
    assert all(isinstance(doc[k], str) for k in ("expires_in", "expires_on", "not_before", "ext_expires_in")), doc
    assert doc["resource"] == BILLING_API and doc["token_type"] == "Bearer" and doc["client_id"] == CALLER, doc


def test_app_service_wire_rules(serve):
    url = serve.env["IDENTITY_ENDPOINT"]
    q = {"api-version": "2019-08-01", "resource": BILLING_API}
    r = HTTP.get(url, params=q, timeout=10)
    assert r.status_code == 400 and r.json()["statusCode"] == 400, r.text
    r = HTTP.get(url, params=q, headers={"X-IDENTITY-HEADER": "wrong"}, timeout=10)
    assert r.status_code == 401 and r.json()["statusCode"] == 401 and r.json()["correlationId"], r.text
    good = {"X-IDENTITY-HEADER": serve.env["IDENTITY_HEADER"]}
    r = HTTP.get(url, params={**q, "api-version": "2018-02-01"}, headers=good, timeout=10)
    assert r.status_code == 400, r.text
    r = HTTP.get(url, params=q, headers=good, timeout=10)
    doc = r.json()
    assert r.status_code == 200 and isinstance(doc["expires_on"], str) and "expires_in" not in doc, doc
    assert set(doc) == {"access_token", "expires_on", "resource", "token_type", "client_id"}, doc


def test_caller_rule_denies_our_uid(idbridge_bin, emulator, sandbox, tmp_path):
    """Our uid may use the reports route only: billing is refused with 403 by both frontends,
    the body naming the uid and the route, and azure-identity fails."""
    uid = os.getuid()
    text = (EXAMPLES / "serve-azure.toml").read_text()
    text += f'\n[[serve.caller]]\nuid = {uid}\nroutes = ["gcp-to-azure-reports"]\n'
    config = tmp_path / "serve.toml"
    config.write_text(text)
    s = start_serve(idbridge_bin, emulator, tmp_path, config)
    try:
        r = HTTP.get(f"{s.env['AZURE_POD_IDENTITY_AUTHORITY_HOST']}/metadata/identity/oauth2/token",
                     params={"api-version": "2018-02-01", "resource": BILLING_API}, headers={"Metadata": "true"},
                     timeout=10)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "access_denied", r.text
        assert f"uid {uid}" in r.json()["error_description"] and '"gcp-to-azure"' in r.json()["error_description"]
        r = HTTP.get(s.env["IDENTITY_ENDPOINT"], params={"api-version": "2019-08-01", "resource": BILLING_API},
                     headers={"X-IDENTITY-HEADER": s.env["IDENTITY_HEADER"]}, timeout=10)
        assert r.status_code == 403 and f"uid {uid}" in r.json()["message"], r.text
        res = azure(sandbox, "managed_identity", {"scope": BILLING_SCOPE}, client_env(sandbox, s, APP_SERVICE_VARS))
        assert res.get("error"), res
        res = azure(sandbox, "managed_identity", {"scope": REPORTS_SCOPE}, client_env(sandbox, s, APP_SERVICE_VARS))
        assert "error" not in res, res
    finally:
        stop_process(s.proc)
    log = s.log.read_text()
    assert f"uid {uid}" in log, tail(s.log)
    assert s.env["IDENTITY_HEADER"] not in log and "eyJ" not in log, tail(s.log)
