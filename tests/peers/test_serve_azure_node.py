"""Node @azure/identity (+ @azure/msal-node) against `idbridge serve`'s Azure frontends
(examples/serve-azure.toml), backed by `idbridge emulate`: ManagedIdentityCredential over IMDS
(AZURE_POD_IDENTITY_AUTHORITY_HOST) and over the App Service protocol (IDENTITY_ENDPOINT +
IDENTITY_HEADER), system-assigned and with selectors, and DefaultAzureCredential in both modes.
Each token is verified with PyJWT against the emulated Entra ID's keys. The clients run with a
clean environment holding only the daemon's `--env-file` settings of one mode."""

from __future__ import annotations

import pytest

from test_azure_peers import CALLER, CALLER_OID, REPORTS_API, V2_ISSUER, entra_claims
from test_node_azure import node_azure
from test_serve_azure import (  # noqa: F401 - the daemon fixture
    APP_SERVICE_VARS, BILLING_SCOPE, IMDS_VARS, REPORTS_SCOPE, billing_claims, client_env, serve,
)


@pytest.mark.parametrize("selector", [{}, {"client_id": CALLER}, {"object_id": CALLER_OID}])
def test_node_managed_identity_imds_mode(sandbox, emulator, serve, selector):  # noqa: F811
    res = node_azure(sandbox, "managed_identity", {"scope": BILLING_SCOPE, **selector},
                     client_env(sandbox, serve, IMDS_VARS))
    assert "error" not in res, res
    billing_claims(emulator, res["token"])


def test_node_managed_identity_imds_mode_unknown_identity_fails(sandbox, serve):  # noqa: F811
    res = node_azure(sandbox, "managed_identity", {"scope": BILLING_SCOPE,
                                                   "client_id": "00000000-0000-4000-8000-000000000000"},
                     client_env(sandbox, serve, IMDS_VARS))
    assert res.get("error"), res


@pytest.mark.parametrize("selector", [{}, {"client_id": CALLER}])
def test_node_managed_identity_app_service_mode(sandbox, emulator, serve, selector):  # noqa: F811
    env = client_env(sandbox, serve, APP_SERVICE_VARS)
    res = node_azure(sandbox, "managed_identity", {"scope": BILLING_SCOPE, **selector}, env)
    assert "error" not in res, res
    billing_claims(emulator, res["token"])
    res = node_azure(sandbox, "managed_identity", {"scope": REPORTS_SCOPE, **selector}, env)
    assert "error" not in res, res
    assert entra_claims(emulator, res["token"], REPORTS_API, V2_ISSUER)["azp"] == CALLER


def test_node_managed_identity_app_service_wrong_header_fails(sandbox, serve):  # noqa: F811
    env = client_env(sandbox, serve, APP_SERVICE_VARS, {"IDENTITY_HEADER": "not-the-secret"})
    res = node_azure(sandbox, "managed_identity", {"scope": BILLING_SCOPE}, env)
    assert res.get("error"), res


@pytest.mark.parametrize("names", [IMDS_VARS, APP_SERVICE_VARS], ids=["imds", "app-service"])
def test_node_default_credential(sandbox, emulator, serve, names):  # noqa: F811
    env = client_env(sandbox, serve, names, {"AZURE_TOKEN_CREDENTIALS": "prod"})
    res = node_azure(sandbox, "default_credential", {"scope": BILLING_SCOPE}, env)
    assert "error" not in res, res
    billing_claims(emulator, res["token"])
