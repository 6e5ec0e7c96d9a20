"""The broker's `entra` exchange: a GCE VM's Google ID token → an Entra ID access token
(`idbridge token`), verified by a third party (PyJWT, with the keys the emulated Entra ID
publishes through its OpenID configuration over HTTPS). Bad input: a route whose client has no
federated credential for the caller gets Entra's AADSTS code, and the command fails.
"""

from __future__ import annotations

import json

from conftest import EXAMPLES, NO_INSTANCE_CREDS, describe
from test_azure_peers import CALLER, CALLER_OID, MI_VARS, TENANT, V1_ISSUER, entra_claims

BILLING_API = "api://idbridge-billing"


def test_token_prints_an_entra_access_token_pyjwt_verifies(sandbox, emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, MI_VARS)
    r = sandbox.idbridge("token", "--config", EXAMPLES / "gcp-to-azure.toml", "--route", "gcp-to-azure",
                         "--format", "access-token", env=env)
    assert r.returncode == 0, describe(r)
    token = r.stdout.strip()
    claims = entra_claims(emulator, token, BILLING_API, V1_ISSUER)
    assert claims["tid"] == TENANT and claims["appid"] == CALLER and claims["oid"] == CALLER_OID, claims
    assert claims["roles"] == ["Billing.Read"], claims

    r = sandbox.idbridge("token", "--config", EXAMPLES / "gcp-to-azure.toml", "--route", "gcp-to-azure",
                         "--format", "json", env=env)
    assert r.returncode == 0, describe(r)
    assert token not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["token_type"] == "Bearer" and doc["tenant"] == TENANT and doc["client_id"] == CALLER, doc
    assert doc["scope"] == f"{BILLING_API}/.default", doc
    assert entra_claims(emulator, doc["access_token"], BILLING_API, V1_ISSUER)["appid"] == CALLER


def test_a_client_without_a_matching_federated_credential_gets_entras_code(sandbox, emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, MI_VARS)
    # billing-api itself has no federated credential for the VM's service account.
    config = sandbox.write("entra.toml", f'''
[[route]]
name = "r"
source = {{ kind = "gce-metadata", audience = "api://AzureADTokenExchange" }}
exchange = [{{ kind = "entra", tenant = "{TENANT}", client_id = "b1111111-0000-4000-8000-000000000001", scope = "api://idbridge-reports/.default" }}]
''')
    r = sandbox.idbridge("token", "--config", config, "--route", "r", "--no-cache", env=env)
    assert r.returncode == 1, describe(r)
    assert "entra: AADSTS700211" in r.stderr, describe(r)
    assert "eyJ" not in r.stderr, describe(r)
