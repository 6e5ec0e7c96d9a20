"""`idbridge serve` against a hostile local neighbour with a real uid of its own.

The neighbour (uid 65534, a separate process) holds idle connections far beyond its share and
trickles slowloris request heads at the GCE metadata port; meanwhile a normal client (this
process's uid) keeps getting tokens from it and from IMDS, within 2 s each. The daemon tells the
two apart by the kernel's socket owner (netlink sock_diag), sheds the neighbour's connections
beyond `max_per_caller`, closes its slowloris and idle ones, and counts all of it in /metrics.
The same scenario runs without root in `cargo test` (crates/serve, isolation tests).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time

import pytest

from conftest import EXAMPLES, HTTP, stop_process, tail
from test_serve import start_serve

NEIGHBOUR_UID = 65534
IDLE = 120
SLOW = 8

def neighbour_main(host: str, port: int, ready_fd: int) -> None:
    """The neighbour, in a forked child that has dropped to its own uid (no exec: the test's
    interpreter need not be readable by that uid)."""
    os.setgroups([])
    os.setgid(NEIGHBOUR_UID)
    os.setuid(NEIGHBOUR_UID)
    slow_socks = [socket.create_connection((host, port)) for _ in range(SLOW)]
    idle_socks = [socket.create_connection((host, port)) for _ in range(IDLE)]
    os.write(ready_fd, b"ready\n")
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    for i in range(len(head)):
        for s in slow_socks:
            try:
                s.send(head[i:i + 1])
            except OSError:
                pass
        time.sleep(0.1)
    del idle_socks


def start_neighbour(host: str, port: int) -> int:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            os.close(r)
            neighbour_main(host, port, w)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as ready:
        line = ready.readline()
    assert line.strip() == b"ready", line
    return pid


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_neighbour_with_its_own_uid_cannot_stop_a_normal_client(idbridge_bin, emulator, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("running the neighbour as another uid needs root (CI is root); "
                    "cargo test runs the same scenario with a fixed resolver")
    text = (EXAMPLES / "serve.toml").read_text()
    text = text.replace('key_file = "keys/', f'key_file = "{EXAMPLES}/keys/')
    text = text.replace("[serve.gce_metadata]", "[serve.connections]\nmax_per_listener = 64\n"
                        "max_per_caller = 16\nheader_read_timeout_ms = 500\nidle_timeout_ms = 2000\n\n"
                        "[serve.gce_metadata]", 1)
    config = tmp_path / "serve.toml"
    config.write_text(text)
    s = start_serve(idbridge_bin, emulator, tmp_path, config)
    neighbour = None
    try:
        host, port = s.env["GCE_METADATA_HOST"].rsplit(":", 1)
        neighbour = start_neighbour(host, int(port))

        token_url = f"http://{s.env['GCE_METADATA_HOST']}/computeMetadata/v1/instance/service-accounts/default/token"
        imds = s.env["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
        for _ in range(10):
            started = time.monotonic()
            r = HTTP.get(token_url, headers={"Metadata-Flavor": "Google"}, timeout=2)
            assert r.status_code == 200 and r.json()["access_token"], r.text
            t = HTTP.put(f"{imds}/latest/api/token",
                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}, timeout=2)
            assert t.status_code == 200, t.text
            assert time.monotonic() - started < 2.0
        time.sleep(0.3)
        m = HTTP.get(f"{s.metrics}/metrics", timeout=5).text
        shed = metric(m, 'idbridge_serve_connections_shed_total{frontend="gce_metadata",reason="caller_cap"}')
        assert shed == IDLE + SLOW - 16, m
        # The slowloris heads are cut by the header-read timeout, the idle ones by the idle timeout.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = HTTP.get(f"{s.metrics}/metrics", timeout=5).text
            slow = metric(m, 'idbridge_serve_connections_closed_total{frontend="gce_metadata",reason="header_read"}')
            idle = metric(m, 'idbridge_serve_connections_closed_total{frontend="gce_metadata",reason="idle"}')
            if slow >= SLOW and idle >= 16 - SLOW:
                break
            time.sleep(0.2)
        assert slow == SLOW and idle >= 16 - SLOW, m
    finally:
        if neighbour is not None:
            os.kill(neighbour, signal.SIGKILL)
            os.waitpid(neighbour, 0)
        stop_process(s.proc)
    log = s.log.read_text()
    assert re.search(r"connection shed: over the per-caller connection cap.*uid 65534", log), tail(s.log)
