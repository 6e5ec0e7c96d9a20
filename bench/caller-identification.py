#!/usr/bin/env python3
"""Cost of identifying a caller while other local users hold many sockets.

Starts `idbridge emulate` and `idbridge serve` (examples/serve.toml plus a [[serve.caller]]
rule, so every connection is attributed to a uid), then measures the median time of one GCE
token request on a fresh connection, with the host's sockets as they are and again with 16,000
more loopback sockets open (8,000 connected pairs). For comparison it times one read of
/proc/net/tcp{,6} in both states, which is what each request cost before the daemon asked the
kernel by exact address pair.

    python3 bench/caller-identification.py target/release/idbridge
"""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAIRS = 8000
REQUESTS = 300


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"{path} did not appear")
        time.sleep(0.05)


def main() -> None:
    binary = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/idbridge")
    d = Path(tempfile.mkdtemp(prefix="idbridge-bench-"))
    procs = []
    try:
        procs.append(subprocess.Popen([binary, "emulate", "--env-file", d / "emu.env"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(d / "emu.env")
        env = dict(os.environ)
        env.update(line.split("=", 1) for line in (d / "emu.env").read_text().splitlines() if "=" in line)
        text = (ROOT / "examples/serve.toml").read_text()
        text = text.replace('key_file = "keys/', f'key_file = "{ROOT}/examples/keys/')
        text += f'\n[[serve.caller]]\nuid = {os.getuid()}\nroutes = ["*"]\n'
        (d / "serve.toml").write_text(text)
        procs.append(subprocess.Popen([binary, "serve", "--config", d / "serve.toml", "--env-file", d / "serve.env"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(d / "serve.env")
        settings = dict(line.split("=", 1) for line in (d / "serve.env").read_text().splitlines() if "=" in line)
        host, port = settings["GCE_METADATA_HOST"].rsplit(":", 1)
        request = (b"GET /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.1\r\n"
                   b"Host: x\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n")

        def one() -> None:
            with socket.create_connection((host, int(port))) as s:
                s.sendall(request)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            assert b" 200 " in data[:16], data[:200]

        def request_ms() -> float:
            one()
            times = []
            for _ in range(REQUESTS):
                t = time.perf_counter()
                one()
                times.append(time.perf_counter() - t)
            return statistics.median(times) * 1000

        def proc_read_ms() -> float:
            t = time.perf_counter()
            for _ in range(20):
                Path("/proc/net/tcp").read_text()
                Path("/proc/net/tcp6").read_text()
            return (time.perf_counter() - t) / 20 * 1000

        print(f"as is:            request {request_ms():.2f} ms   /proc/net/tcp{{,6}} read {proc_read_ms():.2f} ms")
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        held = []
        for _ in range(PAIRS):
            held.append(socket.create_connection(listener.getsockname()))
            held.append(listener.accept()[0])
        print(f"+{2 * PAIRS} sockets:  request {request_ms():.2f} ms   /proc/net/tcp{{,6}} read {proc_read_ms():.2f} ms")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=15)


if __name__ == "__main__":
    main()
