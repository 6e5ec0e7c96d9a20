"""Fixtures for the real-peer suite: the idbridge binary, a running `idbridge emulate`, a running
moto server, and a per-test sandbox that runs every client in a clean environment.

Hermeticity rules (peers.md): every subprocess gets an `env -i`-like environment — PATH, HOME
(a temp dir), AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE pointing at temp files,
AWS_EC2_METADATA_DISABLED=true and NO_GCE_CHECK=true unless a test asks for IMDS / GCE
detection — so no ambient credential or endpoint leaks in. Servers bind 127.0.0.1 only; every
wait is bounded; every process we start is stopped by its own handle at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CLIENTS = Path(__file__).resolve().parent / "clients.py"
# The venv running pytest holds every peer (scripts/test runs `.venv/bin/python -m pytest`).
VENV_BIN = Path(sys.prefix) / "bin"
PYTHON = VENV_BIN / "python"

EMULATOR_START_TIMEOUT = 20.0
MOTO_START_TIMEOUT = 60.0  # moto imports every service backend on start; slow on 2 cores
SUBPROCESS_TIMEOUT = 60

# Logs of the servers we started, attached to the report of any failing test.
_SERVER_LOGS: dict[str, Path] = {}

# HTTP from the test process itself: never through a proxy from the ambient environment.
HTTP = requests.Session()
HTTP.trust_env = False


# ----------------------------------------------------------------------------------- helpers ---


def clean_env(home: Path, *overlays: dict | None, imds: bool = False, gce_check: bool = False) -> dict:
    """An `env -i`-like environment rooted at `home`, plus overlays (a None value removes a key)."""
    home.mkdir(parents=True, exist_ok=True)
    aws_config = home / "aws-config"
    aws_creds = home / "aws-credentials"
    for f in (aws_config, aws_creds):
        if not f.exists():
            f.write_text("")
    env = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
        "TMPDIR": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_CONFIG_FILE": str(aws_config),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws_creds),
    }
    if not imds:
        env["AWS_EC2_METADATA_DISABLED"] = "true"
    if not gce_check:
        env["NO_GCE_CHECK"] = "true"
    for overlay in overlays:
        for k, v in (overlay or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; only this process (and its own group)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"<cannot read {path}: {e}>"


def describe(r: subprocess.CompletedProcess) -> str:
    return f"argv={r.args!r}\nexit={r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"


def parse_env_file(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        k, sep, v = line.partition("=")
        assert sep, f"env file line without '=': {line!r}"
        out[k.strip()] = v.strip()
    return out


def metadata_id_token(emulator: dict, audience: str, fmt: str = "full") -> str:
    """GET …/service-accounts/default/identity from the emulated GCE metadata server."""
    url = f"http://{emulator['GCE_METADATA_HOST']}/computeMetadata/v1/instance/service-accounts/default/identity"
    r = HTTP.get(url, params={"audience": audience, "format": fmt}, headers={"Metadata-Flavor": "Google"},
                 timeout=10)
    assert r.status_code == 200, f"GET {r.url} -> {r.status_code} {r.headers} {r.text[:500]}"
    token = r.text.strip()
    assert token.count(".") == 2, f"not a JWT: {token[:100]!r}"
    return token


# ------------------------------------------------------------------------- shared AWS helpers ---

ACCOUNT = "111122223333"

# Overlay that drops the emulator's instance-credential endpoints (ECS container credentials,
# EC2 IMDS) from an environment: tests of other credential sources pass it so botocore cannot
# silently fall back to them.
NO_INSTANCE_CREDS = {
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": None,
    "AWS_EC2_METADATA_SERVICE_ENDPOINT": None,
}


def assumed_role_arn(role: str, session: str) -> str:
    return f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}"


def role_arn(role: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{role}"


def web_identity_env(sandbox, emulator: dict, token: str, role: str, session: str) -> dict:
    """botocore's web-identity provider env: token file, role, session, and the emulator's STS."""
    token_file = sandbox.write(f"token-{role}-{session}.jwt", token)
    return sandbox.env(emulator, NO_INSTANCE_CREDS, {
        "AWS_WEB_IDENTITY_TOKEN_FILE": token_file,
        "AWS_ROLE_ARN": role_arn(role),
        "AWS_ROLE_SESSION_NAME": session,
        "AWS_DEFAULT_REGION": "us-east-1",
    })


# ---------------------------------------------------------------------------------- fixtures ---


@pytest.fixture(scope="session")
def idbridge_bin() -> Path:
    raw = os.environ.get("IDBRIDGE_BIN")
    path = Path(raw) if raw else REPO / "target" / "debug" / "idbridge"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"idbridge binary not found at {path} (build it: cargo build -p idbridge, or set IDBRIDGE_BIN)",
                    pytrace=False)
    return path.resolve()


@pytest.fixture(scope="session", autouse=True)
def _peers_present() -> None:
    """A missing peer fails the suite; it is never a skip."""
    missing = [str(p) for p in (VENV_BIN / "moto_server", VENV_BIN / "aws", PYTHON) if not p.exists()]
    if missing:
        pytest.fail(f"test peers missing from {VENV_BIN}: {missing} (run scripts/test)", pytrace=False)


@pytest.fixture(scope="session")
def emulator(idbridge_bin: Path, tmp_path_factory: pytest.TempPathFactory):
    """`idbridge emulate --env-file …` running for the session; yields the env file as a dict."""
    d = tmp_path_factory.mktemp("emulator")
    env_file = d / "emulator.env"
    log = d / "emulator.log"
    _SERVER_LOGS["idbridge emulate"] = log
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [str(idbridge_bin), "emulate", "--env-file", str(env_file)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            env=clean_env(d / "home"), cwd=d,
        )
    try:
        deadline = time.monotonic() + EMULATOR_START_TIMEOUT
        while not env_file.exists():
            if proc.poll() is not None:
                pytest.fail(f"idbridge emulate exited with {proc.returncode} before writing {env_file}:\n{tail(log)}",
                            pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"idbridge emulate did not write {env_file} within {EMULATOR_START_TIMEOUT:.0f}s:\n{tail(log)}",
                            pytrace=False)
            time.sleep(0.05)
        values = parse_env_file(env_file.read_text())
        for key in ("AWS_ENDPOINT_URL_STS", "GCE_METADATA_HOST", "GCE_METADATA_IP", "IDBRIDGE_GOOGLE_OAUTH2_URL",
                    "IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL", "IDBRIDGE_EMULATOR_GOOGLE_URL"):
            assert key in values, f"{key} missing from the emulator env file: {values}"
        for key, value in values.items():
            # Not endpoints: the ECS task's token, the App Service secret, the Entra tenant, the CA files.
            if key in ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "IDENTITY_HEADER", "AZURE_TENANT_ID"):
                continue
            if key in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"):
                assert Path(value).is_file(), f"{key}={value} is not a file"
                continue
            if key == "SPIFFE_ENDPOINT_SOCKET":  # the Workload API is a unix socket
                assert value.startswith("unix:///"), f"{key}={value} is not an absolute unix socket URI"
                continue
            assert "127.0.0.1" in value, f"emulator endpoint {key}={value} is not on 127.0.0.1"
        yield values
    finally:
        stop_process(proc)


@dataclass
class MotoServer:
    url: str
    log: Path

    def reset_auth(self, count: str) -> dict:
        """POST /moto-api/reset-auth: '0' = verify SigV4 + IAM from now on, 'inf' = no auth."""
        r = HTTP.post(f"{self.url}/moto-api/reset-auth", data=count, timeout=10)
        assert r.status_code == 200, f"reset-auth {count}: {r.status_code} {r.text[:300]}"
        return r.json()


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory):
    """A moto_server on 127.0.0.1 with IAM auth off (INITIAL_NO_AUTH_ACTION_COUNT=inf)."""
    d = tmp_path_factory.mktemp("moto")
    log = d / "moto.log"
    _SERVER_LOGS["moto_server"] = log
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            env=clean_env(d / "home", {"INITIAL_NO_AUTH_ACTION_COUNT": "inf"}), cwd=d,
        )
    try:
        deadline = time.monotonic() + MOTO_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}:\n{tail(log)}", pytrace=False)
            try:
                HTTP.get(f"{url}/moto-api/data.json", timeout=2)
                break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"moto_server not answering on {url} within {MOTO_START_TIMEOUT:.0f}s:\n{tail(log)}",
                            pytrace=False)
            time.sleep(0.2)
        yield MotoServer(url=url, log=log)
    finally:
        stop_process(proc)


class Sandbox:
    """Per-test scratch space: a HOME, AWS config files, and runners with a clean environment."""

    def __init__(self, root: Path, idbridge_bin: Path):
        self.root = root
        self.home = root / "home"
        self.bin = idbridge_bin
        clean_env(self.home)  # creates home + empty AWS files
        self.aws_config = self.home / "aws-config"

    def env(self, *overlays: dict | None, imds: bool = False, gce_check: bool = False) -> dict:
        return clean_env(self.home, *overlays, imds=imds, gce_check=gce_check)

    def write(self, name: str, text: str) -> Path:
        p = self.root / name
        p.write_text(text)
        return p

    def run(self, argv: list, env: dict, timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in argv], env=env, cwd=self.root, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def idbridge(self, *args, env: dict, timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
        return self.run([self.bin, *args], env=env, timeout=timeout)

    def client(self, action: str, args: dict, env: dict, timeout: float = SUBPROCESS_TIMEOUT) -> dict:
        """Runs clients.py ACTION in a fresh interpreter; returns its JSON result."""
        r = self.run([PYTHON, CLIENTS, action, json.dumps(args)], env=env, timeout=timeout)
        assert r.returncode == 0 and r.stdout.strip(), describe(r)
        result = json.loads(r.stdout.strip().splitlines()[-1])
        if isinstance(result.get("error"), dict) and result["error"].get("unexpected"):
            pytest.fail(f"{action} raised unexpectedly: {result['error']}\n{r.stderr}", pytrace=False)
        result["_stderr"] = r.stderr
        return result


@pytest.fixture
def sandbox(tmp_path: Path, idbridge_bin: Path) -> Sandbox:
    return Sandbox(tmp_path, idbridge_bin)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for name, path in _SERVER_LOGS.items():
            rep.sections.append((f"{name} log (last lines)", tail(path, 40)))


# A skipped peer test would hide a missing peer or endpoint: count skips as failures.
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _SKIPPED:
        terminalreporter.write_line(f"peer suite: {len(_SKIPPED)} skipped test(s) count as failures: {_SKIPPED}",
                                    red=True)
