"""bench/run: every figure of BENCHMARKS.md beside its reference, measured side by side in one run.

Everything listens on 127.0.0.1, every load is bounded in time (DURATION seconds per case) and in
count (FILL_SESSIONS, FILL_MAX_SECONDS). Run through bench/run, which checks the tools first.
Prints one table (figure, reference, ratio, target) and writes it as JSON to $BENCH_JSON when set.
"""

import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("IDBRIDGE_BIN", ROOT / "target/release/idbridge"))
REF = Path(os.environ.get("REFSERVER_BIN", ROOT / "target/release/bench-refserver"))
PY = Path(os.environ.get("BENCH_PYTHON", ROOT / ".venv/bin/python"))
MOTO = Path(os.environ.get("MOTO_SERVER", ROOT / ".venv/bin/moto_server"))
DURATION = int(os.environ.get("DURATION", "10"))
CONNS = int(os.environ.get("CONNS", "32"))
MANY_CONNS = int(os.environ.get("MANY_CONNS", "10000"))
IDLE_SOCKETS = int(os.environ.get("IDLE_SOCKETS", "10000"))
FILL_SESSIONS = int(os.environ.get("FILL_SESSIONS", "1000000"))
FILL_MAX_SECONDS = int(os.environ.get("FILL_MAX_SECONDS", "180"))
CLI_RUNS = int(os.environ.get("CLI_RUNS", "20"))
PY_RUNS = int(os.environ.get("PY_RUNS", "5"))

SEED004 = ROOT / "examples/seed004-sa-key-to-aws.toml"
SA_KEY = ROOT / "examples/keys/seed004-sa-key.json"
GCE_TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token"
ARWWI_ROLE = "arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2Fpsoxy-tenant-access"

rows = []  # (group, figure, value, reference, ratio, target, verdict)
procs = []


def log(msg):
    print(f"-- {msg}", file=sys.stderr, flush=True)


def row(group, figure, value, reference="", ratio="", target="", verdict=""):
    rows.append(
        {
            "group": group,
            "figure": figure,
            "value": value,
            "reference": reference,
            "ratio": ratio,
            "target": target,
            "verdict": verdict,
        }
    )


def start(cmd, log_path, **kw):
    p = subprocess.Popen(
        cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True, **kw
    )
    procs.append(p)
    return p


def stop(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def wait_file(path, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.stat().st_size > 0:
            return
        time.sleep(0.002)
    sys.exit(f"bench: timed out waiting for {path}")


def read_env(path):
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v.strip().strip("'\"")
    return out


def status_kb(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def mb(kb):
    return f"{kb / 1024:.1f} MB"


def http(url, headers=None, method="GET", data=None):
    req = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def capture(url, headers, path):
    """The endpoint's response as `curl -si` prints it: the reference server repeats it."""
    args = ["curl", "-sfi", url]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    raw = subprocess.run(args, check=True, capture_output=True).stdout
    path.write_bytes(raw)
    return raw


WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_LAT = re.compile(r"^\s+(50|90|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url, headers=None, conns=CONNS, duration=DURATION, script=None, threads=2):
    args = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency"]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    if script:
        args += ["-s", str(script)]
    args.append(url)
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    m = WRK_RPS.search(out)
    if not m:
        sys.exit(f"bench: unreadable wrk output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"bench: {url} answered {errors.group(1)} errors under load:\n{out}")
    lat = {p: float(v) * UNIT[u] for p, v, u in WRK_LAT.findall(out)}
    return float(m.group(1)), lat


def paced(url, headers, rate, tmp, duration=DURATION):
    """Latency at a fixed request rate: wrk with every connection waiting 1 ms after each
    answer (its `delay()` hook), and about as many connections as `rate` needs (1.3 rate /
    1000: a millisecond plus the answer), so the offered load stays near `rate` whatever the
    server does. Latency is timed from each request's send (no coordinated-omission
    correction)."""
    script = tmp / "paced.lua"
    script.write_text("function delay()\n  return 1\nend\n")
    conns = max(2, round(rate * 1.3 / 1000))
    rps, lat = wrk(url, headers, conns=conns, duration=duration, script=script)
    return {"rps": rps, "p50": lat.get("50", 0), "p99": lat.get("99", 0)}


def ratio(a, b):
    return f"{a / b:.2f}" if b else ""


def verdict(ok):
    return "met" if ok else "NOT MET"


def ms(v):
    return f"{v:.3f} ms" if v < 1 else f"{v:.2f} ms" if v < 10 else f"{v:.0f} ms"


class IdleSockets:
    """`n` open loopback sockets (n/2 connected pairs) held by a child process."""

    CODE = r"""
import socket, sys, time
n = int(sys.argv[1]) // 2
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(4096)
keep = []
for _ in range(n):
    c = socket.create_connection(srv.getsockname()); s, _ = srv.accept(); keep += [c, s]
print("ready", flush=True)
time.sleep(3600)
"""

    def __init__(self, n):
        self.p = subprocess.Popen(
            [sys.executable, "-c", self.CODE, str(n)], stdout=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        procs.append(self.p)
        if self.p.stdout.readline().strip() != "ready":
            sys.exit("bench: could not open the idle sockets (fd limit?)")

    def close(self):
        stop(self.p)


def proc_net_rows():
    return sum(
        max(0, len(Path(f"/proc/net/{f}").read_text().splitlines()) - 1) for f in ("tcp", "tcp6")
    )


def serve(config, tmp, name):
    env_file = tmp / f"{name}.env"
    t0 = time.monotonic()
    p = start([str(BIN), "serve", "--config", str(config), "--env-file", str(env_file)],
              tmp / f"{name}.log", env=os.environ | EMU, cwd=ROOT)
    wait_file(env_file)
    ready = time.monotonic() - t0
    return p, read_env(env_file), ready


def main():
    tmp = Path(tempfile.mkdtemp(prefix="idbridge-bench-"))
    try:
        run(tmp)
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    print_table()


EMU = {}


def run(tmp):
    global EMU
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    # --- binary ----------------------------------------------------------------------------
    size = BIN.stat().st_size
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        subprocess.run([str(BIN), "--version"], check=True, capture_output=True)
        times.append((time.perf_counter() - t0) * 1000)
    row("binary", "idbridge release binary size", f"{size / 1e6:.1f} MB")
    row("binary", "`idbridge --version` wall time (median of 20)", ms(statistics.median(times)))

    # --- emulator + daemon -----------------------------------------------------------------
    log("starting the emulator and the daemon")
    emu = start([str(BIN), "emulate", "--env-file", str(tmp / "emu.env")], tmp / "emu.log")
    wait_file(tmp / "emu.env")
    EMU = read_env(tmp / "emu.env")
    daemon, denv, ready = serve(ROOT / "examples/serve.toml", tmp, "serve")
    row("binary", "`idbridge serve` start to listening (env file written)", ms(ready * 1000))
    time.sleep(0.5)
    idle_cold = status_kb(daemon.pid, "VmRSS")

    gce = f"http://{denv['GCE_METADATA_HOST']}{GCE_TOKEN}"
    gce_h = {"Metadata-Flavor": "Google"}
    imds = denv["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
    token = http(f"{imds}/latest/api/token", {"x-aws-ec2-metadata-token-ttl-seconds": "21600"},
                 method="PUT")
    imds_h = {"x-aws-ec2-metadata-token": token}
    role = http(f"{imds}/latest/meta-data/iam/security-credentials/", imds_h).strip()
    imds_url = f"{imds}/latest/meta-data/iam/security-credentials/{role}"
    ecs_url = denv["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
    ecs_h = {"Authorization": denv["AWS_CONTAINER_AUTHORIZATION_TOKEN"]}

    cases = [("GCE metadata token", gce, gce_h), ("IMDSv2 role credentials", imds_url, imds_h),
             ("ECS container credentials", ecs_url, ecs_h)]
    specs = []
    for i, (_, url, h) in enumerate(cases):
        capture(url, h, tmp / f"answer{i}.http")  # also warms the cache
        specs.append(f"c{i}={tmp / f'answer{i}.http'}")
    time.sleep(0.5)
    idle_warm = status_kb(daemon.pid, "VmRSS")
    ref = start([str(REF), *specs], tmp / "ref.out")
    time.sleep(0.3)
    for _ in range(50):
        refs = read_env(tmp / "ref.out") if (tmp / "ref.out").exists() else {}
        if len(refs) == len(cases):
            break
        time.sleep(0.1)
    ref_urls = []
    for i, (_, url, _) in enumerate(cases):
        path = "/" + url.split("/", 3)[3]
        ref_urls.append(f"http://{refs[f'c{i}']}{path}")
        # Same body but for the seconds left (`expires_in` counts down).
        if re.sub(r"\d+", "", http(ref_urls[-1])) != re.sub(r"\d+", "", http(url, cases[i][2])):
            sys.exit(f"bench: the reference server's body differs from {url}'s")

    # --- peak throughput, daemon vs bare hyper ----------------------------------------------
    peaks = {}
    for i, (name, url, h) in enumerate(cases):
        log(f"wrk: {name}")
        d_rps, d_lat = wrk(url, h)
        r_rps, r_lat = wrk(ref_urls[i], h)
        peaks[i] = (d_rps, r_rps)
        row("daemon", f"{name}: req/s, wrk {CONNS} conns (daemon vs bare hyper)",
            f"{d_rps:,.0f}", f"{r_rps:,.0f}", ratio(d_rps, r_rps), ">= 0.85",
            verdict(d_rps / r_rps >= 0.85))
        row("daemon", f"{name}: p99 at peak (wrk)", ms(d_lat.get("99", 0)),
            ms(r_lat.get("99", 0)))

    # --- latency at half of peak -------------------------------------------------------------
    rate = int(peaks[0][0] / 2)
    log(f"paced wrk: GCE token at most {rate} req/s")
    d = paced(gce, gce_h, rate, tmp)
    r = paced(ref_urls[0], gce_h, rate, tmp)
    row("daemon", f"GCE metadata token: p99 at half of peak ({d['rps']:,.0f} vs "
        f"{r['rps']:,.0f} req/s offered at most {rate:,})",
        ms(d["p99"]), ms(r["p99"]), "", "< 1 ms", verdict(d["p99"] < 1.0))
    row("daemon", "GCE metadata token: p50 at half of peak", ms(d["p50"]), ms(r["p50"]))

    peak32 = status_kb(daemon.pid, "VmHWM")

    # --- many open keep-alive connections ----------------------------------------------------
    log(f"wrk: GCE token over {MANY_CONNS} keep-alive connections")
    d_rps, _ = wrk(gce, gce_h, conns=MANY_CONNS)
    r_rps, _ = wrk(ref_urls[0], gce_h, conns=MANY_CONNS)
    row("daemon", f"GCE metadata token: req/s over {MANY_CONNS:,} keep-alive connections",
        f"{d_rps:,.0f}", f"{r_rps:,.0f}", ratio(d_rps, r_rps), ">= 0.8",
        verdict(d_rps / r_rps >= 0.8))

    loaded = status_kb(daemon.pid, "VmHWM")
    after = status_kb(daemon.pid, "VmRSS")
    row("memory", "daemon RSS idle, just started", mb(idle_cold), "", "", "< 12 MB",
        verdict(idle_cold < 12 * 1024))
    row("memory", "daemon RSS idle, every route cached", mb(idle_warm), "", "", "< 12 MB",
        verdict(idle_warm < 12 * 1024))
    row("memory", f"daemon peak RSS under load, {CONNS} connections (VmHWM)", mb(peak32), "",
        "", "< 40 MB", verdict(peak32 < 40 * 1024))
    row("memory", f"daemon peak RSS with {MANY_CONNS:,} connections open (VmHWM)", mb(loaded))
    row("memory", "daemon RSS after the loads", mb(after))

    # --- caller rules with many open sockets -------------------------------------------------
    log(f"caller rules: {IDLE_SOCKETS} idle sockets")
    rules = tmp / "serve-callers.toml"
    rules.write_text(
        (ROOT / "examples/serve.toml").read_text().replace("keys/", str(ROOT / "examples/keys") + "/")
        + f'\n[[serve.caller]]\nuid = {os.getuid()}\nroutes = ["myapp-gcp", "tenant-to-aws", "sa-key-to-aws"]\n'
    )
    cdaemon, cenv, _ = serve(rules, tmp, "serve-callers")
    cgce = f"http://{cenv['GCE_METADATA_HOST']}{GCE_TOKEN}"
    http(cgce, gce_h)
    few = proc_net_rows()
    c_rps, _ = wrk(cgce, gce_h)
    n_rps, _ = wrk(gce, gce_h)
    row("callers", f"GCE token req/s, caller rules on vs off ({few} sockets open)",
        f"{c_rps:,.0f}", f"{n_rps:,.0f}", ratio(c_rps, n_rps), "cost < 10%",
        verdict(c_rps / n_rps >= 0.9))
    idle = IdleSockets(IDLE_SOCKETS)
    many = proc_net_rows()
    c_rps, _ = wrk(cgce, gce_h)
    n_rps, _ = wrk(gce, gce_h)
    idle.close()
    row("callers", f"GCE token req/s, caller rules on vs off ({many:,} sockets open)",
        f"{c_rps:,.0f}", f"{n_rps:,.0f}", ratio(c_rps, n_rps), "cost < 10%",
        verdict(c_rps / n_rps >= 0.9))
    stop(cdaemon)
    stop(daemon)
    stop(ref)

    # --- emulator AssumeRoleWithWebIdentity vs moto ------------------------------------------
    log("emulator AssumeRoleWithWebIdentity vs moto")
    jwt = http(
        f"http://{EMU['GCE_METADATA_HOST']}/computeMetadata/v1/instance/service-accounts/default/"
        "identity?audience=https://psoxy.example/aws&format=full", gce_h)
    lua = tmp / "arwwi.lua"
    lua.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        f'wrk.body = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={ARWWI_ROLE}'
        f'&RoleSessionName=bench&WebIdentityToken={jwt}"\n')
    sts = EMU["AWS_ENDPOINT_URL_STS"].rstrip("/") + "/"

    def issued():
        stats = json.loads(http(EMU["IDBRIDGE_EMULATOR_GOOGLE_URL"] + "/_emulator/stats"))
        return stats.get("aws_sts.AssumeRoleWithWebIdentity", 0)

    rss0 = status_kb(emu.pid, "VmRSS")
    early, _ = wrk(sts, script=lua)
    n_early = issued()
    rss_early = status_kb(emu.pid, "VmRSS")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = start([str(MOTO), "-p", str(port), "-H", "127.0.0.1"], tmp / "moto.log")
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    moto_rps, _ = wrk(f"http://127.0.0.1:{port}/", script=lua, conns=8)
    stop(moto)
    row("emulator", "AssumeRoleWithWebIdentity req/s, first run (emulator vs moto)",
        f"{early:,.0f}", f"{moto_rps:,.0f}", f"{early / moto_rps:.0f}x", ">= 30x",
        verdict(early / moto_rps >= 30))

    log(f"issuing sessions up to {FILL_SESSIONS:,} (at most {FILL_MAX_SECONDS} s)")
    t0 = time.monotonic()
    while issued() < FILL_SESSIONS and time.monotonic() - t0 < FILL_MAX_SECONDS:
        left = FILL_SESSIONS - issued()
        wrk(sts, script=lua, duration=max(1, min(10, int(left / max(early, 1)) + 1)))
    n_late = issued()
    late, _ = wrk(sts, script=lua)
    rss_late = status_kb(emu.pid, "VmRSS")
    row("emulator", f"AssumeRoleWithWebIdentity req/s after {n_late:,} sessions vs after "
        f"{n_early:,}", f"{late:,.0f}", f"{early:,.0f}", ratio(late, early), "flat (~1.0)",
        verdict(late / early >= 0.9))
    row("emulator", f"emulator RSS: start / after {n_early:,} / after {n_late:,} sessions",
        f"{mb(rss0)} / {mb(rss_early)} / {mb(rss_late)}", "", "", "bounded (200k cap)")
    stop(emu)

    # --- cold CLI vs google-auth + boto3 -----------------------------------------------------
    log("cold CLI vs Python flow")
    emu = start([str(BIN), "emulate", "--env-file", str(tmp / "emu2.env")], tmp / "emu2.log")
    wait_file(tmp / "emu2.env")
    env = os.environ | read_env(tmp / "emu2.env")

    def timed(cmd, n):
        walls, cpus = [], []
        for _ in range(n):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=ROOT)
            walls.append((time.perf_counter() - t0) * 1000)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
        return statistics.median(walls), statistics.median(cpus)

    # --no-cache: every run exchanges (the per-user file cache would answer all but the first).
    cli = [str(BIN), "token", "--config", str(SEED004), "--route", "sa-key-to-aws", "--format", "env",
           "--no-cache"]
    timed(cli, 2)  # page cache
    cw, cc = timed(cli, CLI_RUNS)
    pw, pc = timed([str(PY), str(ROOT / "bench/python_flow.py"), str(SA_KEY)], PY_RUNS)
    row("cli", f"cold `idbridge token` seed 004, wall (median of {CLI_RUNS} vs {PY_RUNS})",
        ms(cw), ms(pw), f"{cw / pw:.3f}", "<= 0.03", verdict(cw / pw <= 0.03))
    row("cli", "cold `idbridge token` seed 004, CPU user+sys", ms(cc), ms(pc), f"{cc / pc:.3f}")
    stop(emu)


def print_table():
    head = ("figure", "idbridge", "reference", "ratio", "target", "")
    table = [head] + [
        (r["figure"], r["value"], r["reference"], r["ratio"], r["target"], r["verdict"]) for r in rows
    ]
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    for i, t in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(t, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if os.environ.get("BENCH_JSON"):
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
