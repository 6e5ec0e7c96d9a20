"""Node @azure/identity (+ @azure/msal-node) against the emulated Entra ID (HTTPS, trusted through
NODE_EXTRA_CA_CERTS) and the Azure VM's managed identity endpoints: ClientAssertionCredential,
WorkloadIdentityCredential, ManagedIdentityCredential over IMDS and App Service,
DefaultAzureCredential, and the bad assertions with Entra's AADSTS codes as msal-node reports them.
MSAL Node fetches the tenant's OpenID configuration first, so these also check that document."""

from __future__ import annotations

import json

import pytest

from conftest import describe
from nodepeers import NODE_DIR, node_bin
from test_azure_peers import (
    BILLING_SCOPE, CALLER, EXCHANGE, K8S_ISSUER, REPORTS_API, SPIFFE_APP, SPIRE_ISSUER, TENANT, V1_ISSUER, V2_ISSUER,
    VM_SYSTEM, WORKER, WORKER_OID, WORKER_RES, _bad_assertions, entra_claims, entra_env, metadata_id_token, mint,
)

AZURE_MJS = NODE_DIR / "azure.mjs"


def node_azure(sandbox, action: str, args: dict, env: dict) -> dict:
    if not (NODE_DIR / "node_modules" / "@azure" / "identity" / "package.json").is_file():
        pytest.fail(f"@azure/identity missing from {NODE_DIR}/node_modules (npm ci there)", pytrace=False)
    r = sandbox.run([node_bin(), AZURE_MJS, action, json.dumps(args)], env=env, timeout=90)
    assert r.returncode == 0 and r.stdout.strip(), describe(r)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if res.get("error", {}).get("unexpected"):
        pytest.fail(f"node {action} raised unexpectedly: {res['error']}\n{r.stderr}", pytrace=False)
    return res


def test_node_client_assertion_with_a_google_id_token(sandbox, emulator):
    res = node_azure(sandbox, "client_assertion", {"tenant_id": TENANT, "client_id": CALLER, "scope": BILLING_SCOPE,
                                                   "assertion": metadata_id_token(emulator, EXCHANGE)},
                     entra_env(sandbox, emulator))
    assert "error" not in res, res
    claims = entra_claims(emulator, res["token"], "api://idbridge-billing", V1_ISSUER)
    assert claims["appid"] == CALLER and claims["roles"] == ["Billing.Read"], claims


def test_node_workload_identity_kubernetes_and_spiffe(sandbox, emulator):
    k8s = sandbox.write("k8s.jwt", mint(emulator, K8S_ISSUER, "system:serviceaccount:default:my-app", EXCHANGE))
    env = entra_env(sandbox, emulator, {"AZURE_CLIENT_ID": CALLER, "AZURE_FEDERATED_TOKEN_FILE": k8s})
    res = node_azure(sandbox, "workload_identity", {"scope": "api://idbridge-reports/.default"}, env)
    assert "error" not in res, res
    assert entra_claims(emulator, res["token"], REPORTS_API, V2_ISSUER)["azp"] == CALLER

    svid = sandbox.write("svid.jwt", mint(emulator, SPIRE_ISSUER, "spiffe://example.org/ns/prod/sa/billing",
                                          EXCHANGE))
    env = entra_env(sandbox, emulator, {"AZURE_CLIENT_ID": SPIFFE_APP, "AZURE_FEDERATED_TOKEN_FILE": svid})
    res = node_azure(sandbox, "workload_identity", {"scope": BILLING_SCOPE}, env)
    assert "error" not in res, res
    assert entra_claims(emulator, res["token"], "api://idbridge-billing", V1_ISSUER)["appid"] == SPIFFE_APP


def test_node_bad_assertions_get_entras_codes(sandbox, emulator):
    env = entra_env(sandbox, emulator)
    for name, assertion, code in _bad_assertions(emulator):
        res = node_azure(sandbox, "client_assertion", {"tenant_id": TENANT, "client_id": CALLER,
                                                       "assertion": assertion, "scope": BILLING_SCOPE}, env)
        assert res.get("error", {}).get("aadsts") == code, (name, res)


@pytest.mark.parametrize("selector,expected", [
    ({}, VM_SYSTEM), ({"client_id": WORKER}, WORKER), ({"object_id": WORKER_OID}, WORKER),
    ({"resource_id": WORKER_RES}, WORKER),
])
def test_node_managed_identity_over_imds(sandbox, emulator, selector, expected):
    env = entra_env(sandbox, emulator, {"AZURE_POD_IDENTITY_AUTHORITY_HOST":
                                        emulator["AZURE_POD_IDENTITY_AUTHORITY_HOST"]})
    res = node_azure(sandbox, "managed_identity", {"scope": BILLING_SCOPE, **selector}, env)
    assert "error" not in res, res
    assert entra_claims(emulator, res["token"], "api://idbridge-billing", V1_ISSUER)["appid"] == expected


@pytest.mark.parametrize("selector,expected", [({}, VM_SYSTEM), ({"client_id": WORKER}, WORKER)])
def test_node_managed_identity_app_service(sandbox, emulator, selector, expected):
    env = entra_env(sandbox, emulator, {"IDENTITY_ENDPOINT": emulator["IDENTITY_ENDPOINT"],
                                        "IDENTITY_HEADER": emulator["IDENTITY_HEADER"]})
    res = node_azure(sandbox, "managed_identity", {"scope": "https://vault.azure.net/.default", **selector}, env)
    assert "error" not in res, res
    assert entra_claims(emulator, res["token"], "https://vault.azure.net", V1_ISSUER)["appid"] == expected


def test_node_default_credential(sandbox, emulator):
    k8s = sandbox.write("k8s.jwt", mint(emulator, K8S_ISSUER, "system:serviceaccount:default:worker", EXCHANGE))
    env = entra_env(sandbox, emulator, {"AZURE_CLIENT_ID": WORKER, "AZURE_FEDERATED_TOKEN_FILE": k8s,
                                        "AZURE_TOKEN_CREDENTIALS": "prod"})
    res = node_azure(sandbox, "default_credential", {"scope": BILLING_SCOPE}, env)
    assert "error" not in res, res
    assert entra_claims(emulator, res["token"], "api://idbridge-billing", V1_ISSUER)["oid"] == WORKER_OID

    env = entra_env(sandbox, emulator, {"IDENTITY_ENDPOINT": emulator["IDENTITY_ENDPOINT"],
                                        "IDENTITY_HEADER": emulator["IDENTITY_HEADER"],
                                        "AZURE_TOKEN_CREDENTIALS": "prod"})
    res = node_azure(sandbox, "default_credential", {"scope": BILLING_SCOPE}, env)
    assert "error" not in res, res
    assert entra_claims(emulator, res["token"], "api://idbridge-billing", V1_ISSUER)["appid"] == VM_SYSTEM
