"""The Go test peers (tests/peers/go/*, built by tests/peers/go/build.sh from Debian's packaged
Go libraries): a fixture with their directory and a runner that returns their JSON result.

scripts/test builds them once and passes the directory as IDBRIDGE_GO_PEERS; without it the
fixture builds them itself. A missing Go toolchain or library fails the tests, never skips them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import describe

GO_DIR = Path(__file__).resolve().parent / "go"
BUILD_TIMEOUT = 600


@pytest.fixture(scope="session")
def go_peers() -> Path:
    raw = os.environ.get("IDBRIDGE_GO_PEERS")
    if not raw:
        r = subprocess.run([str(GO_DIR / "build.sh")], capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                           stdin=subprocess.DEVNULL, check=False)
        if r.returncode != 0:
            pytest.fail(f"building the Go peers failed (scripts/test installs Go and its libraries):\n{describe(r)}",
                        pytrace=False)
        raw = r.stdout.strip().splitlines()[-1]
    d = Path(raw)
    for client in ("gcpclient", "awsclient", "azureclient"):
        if not os.access(d / client, os.X_OK):
            pytest.fail(f"Go peer {client} missing from {d}", pytrace=False)
    return d


def run_go(sandbox, go_peers: Path, client: str, *args: str, env: dict, timeout: float = 60) -> dict:
    """Runs a Go peer in the sandbox; returns its JSON result (with its stderr under _stderr)."""
    r = sandbox.run([go_peers / client, *args], env=env, timeout=timeout)
    assert r.returncode == 0 and r.stdout.strip(), describe(r)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    result["_stderr"] = r.stderr
    return result
