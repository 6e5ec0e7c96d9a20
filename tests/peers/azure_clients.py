"""azure-identity (and MSAL) actions, each run in its own clean subprocess by test_azure_peers.py.

Usage: python azure_clients.py ACTION JSON-ARGS

azure-identity reads AZURE_AUTHORITY_HOST, AZURE_TENANT_ID, AZURE_CLIENT_ID,
AZURE_FEDERATED_TOKEN_FILE, IDENTITY_ENDPOINT/IDENTITY_HEADER and AZURE_POD_IDENTITY_AUTHORITY_HOST
from the process environment, and requests reads REQUESTS_CA_BUNDLE, so every call gets a fresh
interpreter with the environment the test built (conftest.clean_env). The action prints one JSON
object on stdout; an expected failure is reported as {"error": {...}} rather than a traceback.
"""

from __future__ import annotations

import re
import sys

from clients import run_action


def _error(e: BaseException) -> dict:
    message = str(e)
    codes = re.findall(r"AADSTS(\d+)", message)
    return {"error": {
        "type": type(e).__name__,
        "module": type(e).__module__,
        "message": message,
        "aadsts": int(codes[0]) if codes else None,
    }}


def _token(cred, scope: str) -> dict:
    token = cred.get_token(scope)
    return {"token": token.token, "expires_on": token.expires_on}


def client_assertion(args: dict) -> dict:
    """ClientAssertionCredential(tenant, client, func) against AZURE_AUTHORITY_HOST."""
    from azure.identity import ClientAssertionCredential

    assertion = args["assertion"]
    cred = ClientAssertionCredential(args["tenant_id"], args["client_id"], lambda: assertion)
    try:
        return _token(cred, args["scope"])
    except Exception as e:  # noqa: BLE001 - reported to the test
        return _error(e)


def workload_identity(args: dict) -> dict:
    """WorkloadIdentityCredential() from AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_FEDERATED_TOKEN_FILE."""
    from azure.identity import WorkloadIdentityCredential

    try:
        return _token(WorkloadIdentityCredential(), args["scope"])
    except Exception as e:  # noqa: BLE001 - reported to the test
        return _error(e)


def managed_identity(args: dict) -> dict:
    """ManagedIdentityCredential(client_id=…/identity_config=…): IMDS or App Service, as the
    environment says."""
    from azure.identity import ManagedIdentityCredential

    kwargs = {}
    if args.get("client_id"):
        kwargs["client_id"] = args["client_id"]
    if args.get("identity_config"):
        kwargs["identity_config"] = args["identity_config"]
    try:
        return _token(ManagedIdentityCredential(**kwargs), args["scope"])
    except Exception as e:  # noqa: BLE001 - reported to the test
        return _error(e)


def default_credential(args: dict) -> dict:
    """DefaultAzureCredential() (AZURE_TOKEN_CREDENTIALS from the environment)."""
    from azure.identity import DefaultAzureCredential

    try:
        return _token(DefaultAzureCredential(), args["scope"])
    except Exception as e:  # noqa: BLE001 - reported to the test
        return _error(e)


ACTIONS = {f.__name__: f for f in [client_assertion, workload_identity, managed_identity, default_credential]}


def main() -> int:
    return run_action(ACTIONS, _error)


if __name__ == "__main__":
    sys.exit(main())
