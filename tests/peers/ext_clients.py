"""google-auth `external_account` actions, each run in its own clean subprocess by
test_google_external_account.py.

Usage: python ext_clients.py ACTION JSON-ARGS

google-auth reads its environment (AWS_* credentials and region, GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES,
the env an executable source hands to its child) in the process that refreshes, so every call gets a fresh
interpreter with the environment the test built (conftest.clean_env). The action prints one JSON object
on stdout; an expected failure is reported as {"error": {...}} rather than a traceback.
"""

from __future__ import annotations

import sys

from clients import run_action


def _error(e: BaseException) -> dict:
    from google.auth import exceptions

    return {"error": {
        "type": type(e).__name__,
        "module": type(e).__module__,
        "message": str(e),
        "refresh_error": isinstance(e, exceptions.RefreshError),
        "google_auth_error": isinstance(e, exceptions.GoogleAuthError),
    }}


def _credentials_class(info: dict):
    """The class google-auth's own loader (`google.auth._default`) would pick for this info."""
    from google.auth import aws, identity_pool, pluggable

    source = info.get("credential_source") or {}
    if "environment_id" in source:
        return aws.Credentials
    if "executable" in source:
        return pluggable.Credentials
    return identity_pool.Credentials


def ext_refresh(args: dict) -> dict:
    """`<cls>.from_info(info, scopes=…)` then `creds.refresh(Request())` (directly: no
    AuthorizedSession, so no background Regional Access Boundary lookups)."""
    import google.auth.transport.requests as gtr

    cls = _credentials_class(args["info"])
    creds = cls.from_info(args["info"], scopes=args.get("scopes"))
    out = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    try:
        creds.refresh(gtr.Request())
    except Exception as e:  # noqa: BLE001 - reported to the test
        return {**out, **_error(e)}
    out["token"] = creds.token
    out["expiry"] = creds.expiry.isoformat() if creds.expiry else None
    out["service_account_email"] = creds.service_account_email
    return out


ACTIONS = {f.__name__: f for f in [ext_refresh]}


def main() -> int:
    return run_action(ACTIONS, _error)


if __name__ == "__main__":
    sys.exit(main())
