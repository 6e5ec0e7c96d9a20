"""Python azure-identity (+ MSAL) against the emulated Entra ID and the Azure VM's managed identity
endpoints of `idbridge emulate`, and boto3 / google-auth taking an Entra token as their subject.

* ClientAssertionCredential with the GCE VM's Google ID token; WorkloadIdentityCredential
  (AZURE_FEDERATED_TOKEN_FILE) with a Kubernetes-style token and a JWT-SVID-shaped token; each
  token verified with PyJWT against the keys Entra publishes, claims checked (v1 and v2);
* ManagedIdentityCredential over IMDS (AZURE_POD_IDENTITY_AUTHORITY_HOST) and the App Service
  protocol (IDENTITY_ENDPOINT + IDENTITY_HEADER), system- and user-assigned;
* DefaultAzureCredential choosing workload identity, then managed identity;
* every bad assertion (untrusted issuer, wrong subject, wrong audience, expired, alg none, bad
  signature) and bad request (unknown client, unknown tenant, bad scope, unknown resource) gets
  Entra's AADSTS code through azure-identity's own error;
* boto3 AssumeRoleWithWebIdentity and google-auth external_account (url source on IMDS, exactly
  the credential configuration Google documents for Azure) with the VM's Entra token.

Entra is served over HTTPS with the emulator's CA (REQUESTS_CA_BUNDLE from its env file).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
import requests

from conftest import HTTP, NO_INSTANCE_CREDS, PYTHON, assumed_role_arn, describe, metadata_id_token, web_identity_env

AZURE_CLIENTS = Path(__file__).resolve().parent / "azure_clients.py"

TENANT = "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
CALLER = "c1111111-0000-4000-8000-000000000011"  # multicloud-caller
CALLER_OID = "c1111111-0000-4000-8000-0000000000b1"
SPIFFE_APP = "c2222222-0000-4000-8000-000000000022"
REPORTS_API = "b2222222-0000-4000-8000-000000000002"
VM_SYSTEM = "e1111111-0000-4000-8000-000000000041"
VM_SYSTEM_OID = "e1111111-0000-4000-8000-0000000000d1"
WORKER = "d1111111-0000-4000-8000-000000000031"
WORKER_OID = "d1111111-0000-4000-8000-0000000000c1"
WORKER_RES = ("/subscriptions/0f1e2d3c-4b5a-4968-8776-655443322110/resourceGroups/idbridge-demo/providers/"
              "Microsoft.ManagedIdentity/userAssignedIdentities/worker-identity")
EXCHANGE = "api://AzureADTokenExchange"
K8S_ISSUER = "https://kubernetes.idbridge.test"
SPIRE_ISSUER = "https://spire.idbridge.test"
BILLING_SCOPE = "api://idbridge-billing/.default"
V1_ISSUER = f"https://sts.windows.net/{TENANT}/"
V2_ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
POOLS = "//iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools"
AZURE_SA = "azure-demo@example-project.iam.gserviceaccount.com"

# Variables of the emulator's env file that select a managed-identity mode; each test sets the ones
# it means.
MI_VARS = {"IDENTITY_ENDPOINT": None, "IDENTITY_HEADER": None, "AZURE_POD_IDENTITY_AUTHORITY_HOST": None}


def azure(sandbox, action: str, args: dict, env: dict) -> dict:
    r = sandbox.run([PYTHON, AZURE_CLIENTS, action, json.dumps(args)], env=env)
    assert r.returncode == 0 and r.stdout.strip(), describe(r)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if res.get("error", {}).get("unexpected"):
        pytest.fail(f"{action} raised unexpectedly: {res['error']}\n{r.stderr}", pytrace=False)
    res["_stderr"] = r.stderr
    return res


def entra_env(sandbox, emulator: dict, *overlays: dict) -> dict:
    return sandbox.env(emulator, NO_INSTANCE_CREDS, MI_VARS, *overlays)


def mint(emulator: dict, issuer: str, sub: str, aud, **extra) -> str:
    r = HTTP.post(f"{emulator['IDBRIDGE_EMULATOR_GOOGLE_URL']}/_emulator/mint",
                  json={"issuer": issuer, "sub": sub, "aud": aud, **extra}, timeout=10)
    assert r.status_code == 200, f"mint -> {r.status_code} {r.text[:500]}"
    return r.json()["token"]


def entra_claims(emulator: dict, token: str, audience: str, issuer: str) -> dict:
    """PyJWT verifies the token against the keys Entra publishes (over HTTPS, the emulator's CA)."""
    base = emulator["AZURE_AUTHORITY_HOST"]
    conf = requests.get(f"{base}/{TENANT}/v2.0/.well-known/openid-configuration",
                        verify=emulator["REQUESTS_CA_BUNDLE"], timeout=10).json()
    assert conf["issuer"] == f"{base}/{TENANT}/v2.0", conf
    keys = requests.get(conf["jwks_uri"], verify=emulator["REQUESTS_CA_BUNDLE"], timeout=10).json()
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in keys["keys"] if k["kid"] == kid)
    key = jwt.PyJWK(jwk).key
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=issuer)


def b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# ------------------------------------------------------------------------- federation to Entra ---


def test_client_assertion_with_the_gce_vms_google_id_token(sandbox, emulator):
    assertion = metadata_id_token(emulator, EXCHANGE)
    res = azure(sandbox, "client_assertion", {"tenant_id": TENANT, "client_id": CALLER, "assertion": assertion,
                                              "scope": BILLING_SCOPE}, entra_env(sandbox, emulator))
    assert "error" not in res, res
    assert res["expires_on"] > time.time() + 600, res
    claims = entra_claims(emulator, res["token"], "api://idbridge-billing", V1_ISSUER)
    assert claims["ver"] == "1.0" and claims["appid"] == CALLER, claims
    assert claims["tid"] == TENANT and claims["oid"] == CALLER_OID == claims["sub"], claims
    assert claims["roles"] == ["Billing.Read"] and claims["idtyp"] == "app", claims
    assert jwt.get_unverified_header(res["token"])["x5t"], res


def test_workload_identity_with_a_kubernetes_token_gets_a_v2_token(sandbox, emulator):
    token_file = sandbox.write("k8s.jwt", mint(emulator, K8S_ISSUER, "system:serviceaccount:default:my-app",
                                               EXCHANGE))
    env = entra_env(sandbox, emulator, {"AZURE_CLIENT_ID": CALLER, "AZURE_FEDERATED_TOKEN_FILE": token_file})
    res = azure(sandbox, "workload_identity", {"scope": "api://idbridge-reports/.default"}, env)
    assert "error" not in res, res
    claims = entra_claims(emulator, res["token"], REPORTS_API, V2_ISSUER)
    assert claims["ver"] == "2.0" and claims["azp"] == CALLER and claims["roles"] == ["Reports.Read"], claims


def test_workload_identity_with_a_jwt_svid(sandbox, emulator):
    token_file = sandbox.write("svid.jwt", mint(emulator, SPIRE_ISSUER, "spiffe://example.org/ns/prod/sa/billing",
                                                [EXCHANGE]))
    env = entra_env(sandbox, emulator, {"AZURE_CLIENT_ID": SPIFFE_APP, "AZURE_FEDERATED_TOKEN_FILE": token_file})
    res = azure(sandbox, "workload_identity", {"scope": BILLING_SCOPE}, env)
    assert "error" not in res, res
    claims = entra_claims(emulator, res["token"], "api://idbridge-billing", V1_ISSUER)
    assert claims["appid"] == SPIFFE_APP and claims["roles"] == ["Billing.Read", "Billing.Write"], claims


def _forged(emulator: dict, header: dict, claims: dict) -> str:
    return f"{b64(header)}.{b64(claims)}."


def _bad_assertions(emulator: dict) -> list[tuple[str, str, int]]:
    now = int(time.time())
    from cryptography.hazmat.primitives.asymmetric import rsa

    foreign_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = mint(emulator, K8S_ISSUER, "system:serviceaccount:default:my-app", EXCHANGE)
    head, body, sig = good.split(".")
    flipped = sig[:-4] + ("AAAA" if not sig.endswith("AAAA") else "BBBB")
    return [
        ("untrusted issuer", jwt.encode({"iss": "https://issuer.evil.example", "sub": "x", "aud": EXCHANGE,
                                          "iat": now, "exp": now + 600}, foreign_key, algorithm="RS256",
                                         headers={"kid": "k1"}), 700211),
        ("wrong subject", mint(emulator, K8S_ISSUER, "system:serviceaccount:default:someone-else", EXCHANGE),
         700213),
        ("wrong audience", mint(emulator, K8S_ISSUER, "system:serviceaccount:default:my-app", "api://other"),
         700212),
        ("expired", mint(emulator, K8S_ISSUER, "system:serviceaccount:default:my-app", EXCHANGE,
                         iat=now - 7200, exp=now - 3600), 700024),
        ("alg none", _forged(emulator, {"alg": "none", "typ": "JWT"},
                             {"iss": K8S_ISSUER, "sub": "system:serviceaccount:default:my-app", "aud": EXCHANGE,
                              "iat": now, "exp": now + 600}), 50027),
        ("bad signature", f"{head}.{body}.{flipped}", 700027),
        ("not a JWT", "definitely-not-a-jwt", 50027),
    ]


def test_bad_assertions_get_entras_codes(sandbox, emulator):
    env = entra_env(sandbox, emulator)
    seen = {}
    for name, assertion, code in _bad_assertions(emulator):
        res = azure(sandbox, "client_assertion", {"tenant_id": TENANT, "client_id": CALLER, "assertion": assertion,
                                                  "scope": BILLING_SCOPE}, env)
        assert res.get("error"), (name, res)
        assert res["error"]["type"] == "ClientAuthenticationError", (name, res)
        seen[name] = res["error"]["aadsts"]
        assert res["error"]["aadsts"] == code, (name, res["error"]["message"])
    assert len(seen) == 7, seen


@pytest.mark.parametrize("case,code", [
    ("unknown client", 700016), ("unknown tenant", 90002), ("scope without /.default", 1002012),
    ("unknown resource", 500011),
])
def test_bad_requests_get_entras_codes(sandbox, emulator, case, code):
    args = {"tenant_id": TENANT, "client_id": CALLER, "assertion": metadata_id_token(emulator, EXCHANGE),
            "scope": BILLING_SCOPE}
    if case == "unknown client":
        args["client_id"] = "00000000-0000-4000-8000-00000000dead"
    elif case == "unknown tenant":
        args["tenant_id"] = "00000000-0000-4000-8000-00000000beef"
    elif case == "scope without /.default":
        args["scope"] = "api://idbridge-billing/Billing.Read"
    else:
        args["scope"] = "api://nobody-registered-this/.default"
    res = azure(sandbox, "client_assertion", args, entra_env(sandbox, emulator))
    assert res.get("error", {}).get("aadsts") == code, res


def test_entra_error_body_shape(emulator):
    """The raw body: error, error_description starting with the code, error_codes, ids, timestamp."""
    r = requests.post(f"{emulator['AZURE_AUTHORITY_HOST']}/{TENANT}/oauth2/v2.0/token",
                      data={"grant_type": "client_credentials", "client_id": CALLER, "scope": BILLING_SCOPE,
                            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                            "client_assertion": "x.y.z"},
                      headers={"client-request-id": "11111111-2222-4333-8444-555555555555"},
                      verify=emulator["REQUESTS_CA_BUNDLE"], timeout=10)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "invalid_request", body
    assert body["error_description"].startswith("AADSTS50027: "), body
    assert body["error_codes"] == [50027], body
    assert body["correlation_id"] == "11111111-2222-4333-8444-555555555555", body
    assert body["trace_id"] and body["timestamp"].endswith("Z"), body
    assert "Correlation ID: 11111111-2222-4333-8444-555555555555" in body["error_description"], body


# ----------------------------------------------------------------------- managed identity ---


@pytest.mark.parametrize("selector,expected", [
    ({}, VM_SYSTEM), ({"client_id": WORKER}, WORKER), ({"identity_config": {"object_id": WORKER_OID}}, WORKER),
    ({"identity_config": {"resource_id": WORKER_RES}}, WORKER),
])
def test_managed_identity_over_imds(sandbox, emulator, selector, expected):
    env = entra_env(sandbox, emulator, {"AZURE_POD_IDENTITY_AUTHORITY_HOST":
                                        emulator["AZURE_POD_IDENTITY_AUTHORITY_HOST"]})
    res = azure(sandbox, "managed_identity", {"scope": BILLING_SCOPE, **selector}, env)
    assert "error" not in res, res
    claims = entra_claims(emulator, res["token"], "api://idbridge-billing", V1_ISSUER)
    assert claims["appid"] == expected, claims


@pytest.mark.parametrize("selector,expected", [({}, VM_SYSTEM), ({"client_id": WORKER}, WORKER)])
def test_managed_identity_app_service(sandbox, emulator, selector, expected):
    env = entra_env(sandbox, emulator, {"IDENTITY_ENDPOINT": emulator["IDENTITY_ENDPOINT"],
                                        "IDENTITY_HEADER": emulator["IDENTITY_HEADER"]})
    res = azure(sandbox, "managed_identity", {"scope": "https://vault.azure.net/.default", **selector}, env)
    assert "error" not in res, res
    claims = entra_claims(emulator, res["token"], "https://vault.azure.net", V1_ISSUER)
    assert claims["appid"] == expected and "roles" not in claims, claims


def test_managed_identity_app_service_wrong_header_fails(sandbox, emulator):
    env = entra_env(sandbox, emulator, {"IDENTITY_ENDPOINT": emulator["IDENTITY_ENDPOINT"],
                                        "IDENTITY_HEADER": "not-the-secret"})
    res = azure(sandbox, "managed_identity", {"scope": BILLING_SCOPE}, env)
    assert res.get("error"), res


def test_imds_rules_raw(emulator):
    url = f"{emulator['AZURE_POD_IDENTITY_AUTHORITY_HOST']}/metadata/identity/oauth2/token"
    q = {"api-version": "2018-02-01", "resource": "api://idbridge-billing"}
    r = HTTP.get(url, params=q, timeout=10)
    assert r.status_code == 400 and r.json()["error_description"] == "Required metadata header not specified", r.text
    r = HTTP.get(url, params=q, headers={"Metadata": "true", "X-Forwarded-For": "10.0.0.9"}, timeout=10)
    assert r.status_code == 400, r.text
    r = HTTP.get(url, params={**q, "client_id": "00000000-0000-4000-8000-000000000000"},
                 headers={"Metadata": "true"}, timeout=10)
    assert r.status_code == 400 and r.json()["error_description"] == "Identity not found", r.text
    r = HTTP.get(url, params={**q, "resource": "api://nobody"}, headers={"Metadata": "true"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_resource", r.text
    r = HTTP.get(url, params=q, headers={"Metadata": "true"}, timeout=10)
    doc = r.json()
    assert r.status_code == 200 and all(isinstance(doc[k], str) for k in ("expires_in", "expires_on")), doc


def test_default_credential_workload_identity_then_managed_identity(sandbox, emulator):
    token_file = sandbox.write("k8s.jwt", mint(emulator, K8S_ISSUER, "system:serviceaccount:default:worker",
                                               EXCHANGE))
    wi = entra_env(sandbox, emulator, {"AZURE_CLIENT_ID": WORKER, "AZURE_FEDERATED_TOKEN_FILE": token_file,
                                       "AZURE_TOKEN_CREDENTIALS": "prod"})
    res = azure(sandbox, "default_credential", {"scope": BILLING_SCOPE}, wi)
    assert "error" not in res, res
    assert entra_claims(emulator, res["token"], "api://idbridge-billing", V1_ISSUER)["oid"] == WORKER_OID

    mi = entra_env(sandbox, emulator, {"AZURE_POD_IDENTITY_AUTHORITY_HOST":
                                       emulator["AZURE_POD_IDENTITY_AUTHORITY_HOST"],
                                       "AZURE_TOKEN_CREDENTIALS": "prod"})
    res = azure(sandbox, "default_credential", {"scope": BILLING_SCOPE}, mi)
    assert "error" not in res, res
    assert entra_claims(emulator, res["token"], "api://idbridge-billing", V1_ISSUER)["oid"] == VM_SYSTEM_OID


# ------------------------------------------------------------- Entra as a subject elsewhere ---


def vm_token(emulator: dict, resource: str) -> str:
    r = HTTP.get(f"{emulator['AZURE_POD_IDENTITY_AUTHORITY_HOST']}/metadata/identity/oauth2/token",
                 params={"api-version": "2018-02-01", "resource": resource}, headers={"Metadata": "true"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def test_boto3_web_identity_with_the_vms_entra_token(sandbox, emulator):
    env = web_identity_env(sandbox, emulator, vm_token(emulator, "api://idbridge-aws"), "azure-vm-access", "azvm")
    res = sandbox.client("boto3_caller_identity", {}, env=env)
    assert res.get("Arn") == assumed_role_arn("azure-vm-access", "azvm"), res
    assert res["method"] == "assume-role-with-web-identity", res

    # A token for another audience is refused by the trust policy.
    env = web_identity_env(sandbox, emulator, vm_token(emulator, "api://idbridge-gcp"), "azure-vm-access", "azvm2")
    res = sandbox.client("boto3_caller_identity", {}, env=env)
    assert res.get("error", {}).get("code") == "AccessDenied", res


def test_google_external_account_url_source_on_imds(sandbox, emulator):
    """The credential configuration Google documents for Azure: a url source on IMDS."""
    from test_google_external_account import JWT_TYPE, assert_service_account_token, ext_refresh, external_account

    audience = f"{POOLS}/azure-pool/providers/entra"
    url = (f"{emulator['AZURE_POD_IDENTITY_AUTHORITY_HOST']}/metadata/identity/oauth2/token"
           f"?api-version=2018-02-01&resource=api://idbridge-gcp")
    source = {"url": url, "headers": {"Metadata": "True"},
              "format": {"type": "json", "subject_token_field_name": "access_token"}}
    info = external_account(emulator, audience, JWT_TYPE, source, impersonate=AZURE_SA)
    res = ext_refresh(sandbox, info, env=sandbox.env(emulator, NO_INSTANCE_CREDS))
    assert_service_account_token(emulator, res, AZURE_SA)


def test_discovery_documents_and_plain_http_listener(emulator):
    """v1 configuration, instance discovery as MSAL asks for it, and the same token endpoint over
    plain HTTP (for clients that are not Azure SDKs)."""
    base, ca = emulator["AZURE_AUTHORITY_HOST"], emulator["REQUESTS_CA_BUNDLE"]
    v1 = requests.get(f"{base}/idbridge-demo.onmicrosoft.com/.well-known/openid-configuration", verify=ca,
                      timeout=10).json()
    assert v1["issuer"] == V1_ISSUER and v1["jwks_uri"] == f"{base}/common/discovery/keys", v1
    keys = requests.get(v1["jwks_uri"], verify=ca, timeout=10).json()["keys"]
    assert keys and all(k["kid"] == k["x5t"] and k["x5c"] for k in keys), keys
    inst = requests.get(f"{base}/common/discovery/instance",
                        params={"api-version": "1.1", "authorization_endpoint": f"{base}/{TENANT}/oauth2/v2.0/authorize"},
                        verify=ca, timeout=10).json()
    assert inst["tenant_discovery_endpoint"] == f"{base}/{TENANT}/v2.0/.well-known/openid-configuration", inst
    host = base.split("://")[1]
    assert inst["metadata"][0]["aliases"] == [host], inst
    unknown = requests.get(f"{base}/nobody.example/v2.0/.well-known/openid-configuration", verify=ca, timeout=10)
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [90002], unknown.text

    http_base = emulator["IDBRIDGE_EMULATOR_ENTRA_HTTP_URL"]
    r = HTTP.post(f"{http_base}/{TENANT}/oauth2/v2.0/token",
                  data={"grant_type": "client_credentials", "client_id": CALLER, "scope": BILLING_SCOPE,
                        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        "client_assertion": metadata_id_token(emulator, EXCHANGE)}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and isinstance(body["expires_in"], int), body
    assert entra_claims(emulator, body["access_token"], "api://idbridge-billing", V1_ISSUER)["appid"] == CALLER
