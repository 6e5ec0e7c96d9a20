"""Go's Google clients (Debian's cloud.google.com/go/compute/metadata, golang.org/x/oauth2/google,
google.golang.org/api/idtoken) against `idbridge serve`'s GCE metadata frontend and the emulator's
VM metadata server: detection and the instance values, ComputeTokenSource and default
credentials, idtoken, and metadata.Subscribe (hanging GETs with ETags, no hot loop).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time

import pytest

from conftest import HTTP
from go_peers import go_peers, run_go  # noqa: F401 - fixture
from test_serve import MYAPP, MYAPP_UNIQUE_ID, serve  # noqa: F401 - fixture

VM_SA = "psoxy-tenant@saas-tenant.iam.gserviceaccount.com"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def metadata_env(sandbox, host: str) -> dict:
    # GCE_METADATA_HOST alone makes Go's clients trust they are on GCE.
    return sandbox.env({"GCE_METADATA_HOST": host})


def claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(params=["serve", "emulator"])
def target(request, emulator):
    """(metadata host, expected values) of the daemon or of the emulator's VM."""
    if request.param == "serve":
        s = request.getfixturevalue("serve")
        return s.env["GCE_METADATA_HOST"], {
            "project_id": "gcp-project", "numeric_project_id": "271828182845", "instance_name": "idbridge",
            "zone": "us-central1-a", "email": MYAPP, "sub": MYAPP_UNIQUE_ID,
            "hostname": "idbridge.us-central1-a.c.gcp-project.internal",
        }
    return emulator["GCE_METADATA_HOST"], {
        "project_id": "saas-tenant", "numeric_project_id": "314159265358", "instance_name": "tenant-worker-1",
        "zone": "us-central1-b", "email": VM_SA, "sub": "112233445566778899001",
        "instance_id": "4520031799277581759",
        "hostname": "tenant-worker-1.us-central1-b.c.saas-tenant.internal",
    }


def test_go_detection_and_instance_values(sandbox, go_peers, target):
    host, want = target
    res = run_go(sandbox, go_peers, "gcpclient", "detect", env=metadata_env(sandbox, host))
    assert "error" not in res, res
    assert res["on_gce"] is True
    for key in ("project_id", "numeric_project_id", "instance_name", "zone", "email", "hostname"):
        assert res[key] == want[key], (key, res)
    assert res["instance_id"].isdigit(), res
    if "instance_id" in want:
        assert res["instance_id"] == want["instance_id"]
    assert res["scopes"] == [CLOUD_PLATFORM], res


def test_go_compute_token_source(sandbox, go_peers, emulator, target):
    host, want = target
    res = run_go(sandbox, go_peers, "gcpclient", "token", env=metadata_env(sandbox, host))
    assert "error" not in res, res
    assert res["token_type"] == "Bearer" and res["expires_in"] > 60, res
    assert res["default_project"] == want["project_id"], res
    g = emulator["IDBRIDGE_EMULATOR_GOOGLE_URL"]
    for token in (res["token"], res["default_token"]):
        info = HTTP.post(f"{g}/tokeninfo", data={"access_token": token}, timeout=10)
        assert info.status_code == 200, info.text
        assert info.json()["email"] == want["email"], info.json()


def test_go_idtoken(sandbox, go_peers, emulator, target):
    host, want = target
    audience = "https://go.example/aud"
    res = run_go(sandbox, go_peers, "gcpclient", "idtoken", audience, env=metadata_env(sandbox, host))
    assert "error" not in res, res
    c = claims(res["token"])
    assert c["aud"] == audience and c["iss"] == "https://accounts.google.com", c
    assert c["sub"] == want["sub"], c
    g = emulator["IDBRIDGE_EMULATOR_GOOGLE_URL"]
    verified = sandbox.client("gauth_verify", {"token": res["token"], "audience": audience,
                                               "certs_url": f"{g}/oauth2/v3/certs"}, env=sandbox.env())
    assert "error" not in verified, verified
    assert verified["claims"]["sub"] == want["sub"]


def test_go_subscribe_waits_instead_of_spinning(sandbox, go_peers, serve):
    # Before hanging GETs, Subscribe got an answer at once on every call: 20 callbacks in 3 ms.
    env = metadata_env(sandbox, serve.env["GCE_METADATA_HOST"])
    env["SUBSCRIBE_SECONDS"] = "4"
    res = run_go(sandbox, go_peers, "gcpclient", "subscribe", "project/project-id", "5", env=env)
    assert "error" not in res, res
    assert res["finished"] is False, res
    assert [c["value"] for c in res["calls"]] == ["gcp-project"], res


def test_go_subscribe_wakes_on_a_change(sandbox, go_peers, emulator):
    g = emulator["IDBRIDGE_EMULATOR_GOOGLE_URL"]
    attr = f"{g}/_emulator/metadata/instance/attributes/go-role"
    assert HTTP.put(attr, data="blue", timeout=10).status_code == 204
    env = metadata_env(sandbox, emulator["GCE_METADATA_HOST"])
    env["SUBSCRIBE_SECONDS"] = "30"
    proc = subprocess.Popen(
        [str(go_peers / "gcpclient"), "subscribe", "instance/attributes/?recursive=true", "2"],
        env=env, cwd=sandbox.root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        time.sleep(2)
        assert proc.poll() is None, proc.communicate()
        assert HTTP.put(attr, data="green", timeout=10).status_code == 204
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        HTTP.delete(attr, timeout=10)
    res = json.loads(out.strip().splitlines()[-1])
    assert res["finished"] is True, (res, err)
    values = [json.loads(c["value"]).get("go-role") for c in res["calls"]]
    assert values == ["blue", "green"], res
    assert res["calls"][1]["seconds"] >= 1.5, res


def test_python_hanging_get_returns_the_same_etag_on_timeout(serve):
    # GCE's rules as a plain HTTP client sees them: an ETag on every value, at once with a
    # stale last_etag, 200 with the same ETag after timeout_sec.
    url = f"http://{serve.env['GCE_METADATA_HOST']}/computeMetadata/v1/instance/?recursive=true"
    h = {"Metadata-Flavor": "Google"}
    first = HTTP.get(url, headers=h, timeout=10)
    etag = first.headers["ETag"]
    assert first.json()["name"] == "idbridge"
    stale = HTTP.get(url, params={"wait_for_change": "true", "last_etag": "0"}, headers=h, timeout=10)
    assert stale.status_code == 200 and stale.headers["ETag"] == etag
    start = time.monotonic()
    same = HTTP.get(url, params={"wait_for_change": "true", "last_etag": etag, "timeout_sec": "2"}, headers=h,
                    timeout=20)
    assert same.status_code == 200 and same.headers["ETag"] == etag, same.text
    assert time.monotonic() - start >= 1.9
