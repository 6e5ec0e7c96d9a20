#!/usr/bin/env python3
"""The fleet cache's figures for BENCHMARKS.md, all on 127.0.0.1, bounded in time and count.

1. Exchanges per refresh window for N `idbridge serve` daemons (N = 1, 8, 32) polled by two
   clients each (10 requests/s per client) for SECONDS, with and without a shared `[cache]` on a
   fresh redis-server each time. The route mints 20-second access tokens; a window opens at most
   every 11.7 s (20 s minus the refresh-ahead and its largest jitter). The emulator counts mints.
2. Hot-path latency of one daemon's GCE metadata token endpoint, fleet cache on vs off: one
   keep-alive client, REQUESTS sequential requests after a warm-up; p50 / p99 / mean.

    bench/fleet.py [--bin target/release/idbridge] [--seconds 30] [--replicas 1,8,32] [--requests 5000]

Needs redis-server on PATH (scripts/test installs it) and the idbridge binary.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MINTS = "google.iamcredentials.generateAccessToken"
FRESH_FOR = 20 - 20 / 3 * 1.25
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} not listening on {port}")


def config(port: int, redis_port: int | None, key: Path) -> str:
    cache = f'\n[cache]\nredis_url = "redis://127.0.0.1:{redis_port}/0"\nkey_file = "{key}"\n' if redis_port else ""
    return f"""
[[route]]
name = "short"
source = {{ kind = "impersonate", service_account = "myapp@gcp-project.iam.gserviceaccount.com", scopes = ["https://www.googleapis.com/auth/cloud-platform"], lifetime_seconds = 20 }}
{cache}
[serve]
bind = "127.0.0.1"
[serve.gce_metadata]
port = {port}
token_route = "short"
project_id = "gcp-project"
numeric_project_id = "271828182845"
"""


class Fleet:
    def __init__(self, bin_: Path, env: dict, tmp: Path, n: int, shared: bool):
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.redis = None
        redis_port = None
        key = tmp / "cache.key"
        if not key.exists():
            key.write_text(KEY)
            key.chmod(0o600)
        if shared:
            redis_port = free_port()
            rdir = tempfile.mkdtemp(dir=tmp)
            self.redis = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                cwd=rdir, stdout=subprocess.DEVNULL)
            wait_port(redis_port, self.redis, "redis-server")
        for i in range(n):
            port = free_port()
            cfg = tmp / f"fleet-{n}-{shared}-{i}.toml"
            cfg.write_text(config(port, redis_port, key))
            p = subprocess.Popen([str(bin_), "serve", "--config", str(cfg)], env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append(p)
            self.ports.append(port)
        for port, p in zip(self.ports, self.procs):
            wait_port(port, p, "idbridge serve")

    def close(self) -> None:
        for p in [*self.procs, *([self.redis] if self.redis else [])]:
            p.terminate()
        for p in [*self.procs, *([self.redis] if self.redis else [])]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def get(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", TOKEN_PATH, headers={"Metadata-Flavor": "Google"})
    r = conn.getresponse()
    r.read()
    return r.status


def poll(port: int, until: float, errors: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    while time.monotonic() < until:
        try:
            if get(conn) != 200:
                errors.append(port)
        except OSError:
            errors.append(port)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        time.sleep(0.1)


def stats(google: str) -> dict:
    with urllib.request.urlopen(f"{google}/_emulator/stats", timeout=10) as r:
        return json.load(r)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "idbridge"))
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--replicas", default="1,8,32")
    ap.add_argument("--requests", type=int, default=5000)
    a = ap.parse_args()
    bin_ = Path(a.bin).resolve()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        env_file = tmp / "emulator.env"
        emu = subprocess.Popen([str(bin_), "emulate", "--env-file", str(env_file)], cwd=tmp,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={"PATH": os.environ["PATH"], "HOME": str(tmp)})
        try:
            while not env_file.exists():
                time.sleep(0.05)
            time.sleep(0.2)
            env = {"PATH": os.environ["PATH"], "HOME": str(tmp)}
            for line in env_file.read_text().splitlines():
                k, _, v = line.partition("=")
                env[k] = v
            google = env["IDBRIDGE_EMULATOR_GOOGLE_URL"]
            print("| daemons | fleet cache | mints in run | windows | exchanges per window | client errors |")
            print("|---|---|---|---|---|---|")
            for n in [int(x) for x in a.replicas.split(",")]:
                for shared in (False, True):
                    fleet = Fleet(bin_, env, tmp, n, shared)
                    try:
                        for port in fleet.ports:  # cold start, not counted
                            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                            while get(conn) != 200:
                                time.sleep(0.1)
                        before = stats(google).get(MINTS, 0)
                        start = time.monotonic()
                        until = start + a.seconds
                        errors: list = []
                        threads = [threading.Thread(target=poll, args=(p, until, errors)) for p in fleet.ports for _ in range(2)]
                        for th in threads:
                            th.start()
                        for th in threads:
                            th.join()
                        mints = stats(google).get(MINTS, 0) - before
                        windows = (time.monotonic() - start) / FRESH_FOR
                        print(f"| {n} | {'on' if shared else 'off'} | {mints} | {windows:.1f} | {mints / windows:.2f} | {len(errors)} |", flush=True)
                    finally:
                        fleet.close()
            print()
            print("| fleet cache | requests | p50 µs | p99 µs | mean µs |")
            print("|---|---|---|---|---|")
            for shared in (False, True):
                fleet = Fleet(bin_, env, tmp, 1, shared)
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", fleet.ports[0], timeout=5)
                    for _ in range(200):
                        get(conn)
                    lat = []
                    for _ in range(a.requests):
                        t0 = time.perf_counter_ns()
                        assert get(conn) == 200
                        lat.append((time.perf_counter_ns() - t0) / 1000)
                    lat.sort()
                    print(f"| {'on' if shared else 'off'} | {len(lat)} | {lat[len(lat) // 2]:.0f} | {lat[int(len(lat) * 0.99)]:.0f} | {statistics.fmean(lat):.0f} |", flush=True)
                finally:
                    fleet.close()
        finally:
            emu.terminate()
            emu.wait(10)


if __name__ == "__main__":
    main()
