"""Running the Node.js peers (tests/peers/node/clients.mjs) from the pytest suite.

scripts/test installs them with `npm ci` into tests/peers/node/node_modules, Node itself
included (the node-linux-* package of the lock file: google-auth-library needs Node >= 22). A
missing install is a failure, never a skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import describe

NODE_DIR = Path(__file__).resolve().parent / "node"
CLIENTS_MJS = NODE_DIR / "clients.mjs"
NODE = NODE_DIR / "node_modules" / ".bin" / "node"
PACKAGES = ["google-auth-library", "gcp-metadata", "@aws-sdk/credential-providers", "@aws-sdk/client-sts",
            "@kubernetes/client-node"]


def node_bin() -> Path:
    missing = [str(NODE)] if not NODE.exists() else []
    missing += [p for p in PACKAGES if not (NODE_DIR / "node_modules" / p / "package.json").is_file()]
    if missing:
        pytest.fail(f"Node peers missing: {missing} (run scripts/test, which runs npm ci in {NODE_DIR})",
                    pytrace=False)
    return NODE


def node_client(sandbox, action: str, args: dict, env: dict, timeout: float = 90) -> dict:
    """Runs `node clients.mjs ACTION ARGS` with `env`; returns its JSON result."""
    r = sandbox.run([node_bin(), CLIENTS_MJS, action, json.dumps(args)], env=env, timeout=timeout)
    assert r.returncode == 0 and r.stdout.strip(), describe(r)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    if isinstance(result.get("error"), dict) and result["error"].get("unexpected"):
        pytest.fail(f"node {action} raised unexpectedly: {result['error']}\n{r.stderr}", pytrace=False)
    result["_stderr"] = r.stderr
    return result


def claims_of(jwt: str) -> dict:
    import base64

    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
