"""The per-user credential file cache of `idbridge credential-process`, as the real AWS CLI uses
it: a `credential_process` profile called 100 times in a loop costs one STS exchange (the
emulator's counter), the cache lives under XDG_CACHE_HOME with private modes, and
`--no-cache` / IDBRIDGE_NO_CACHE=1 exchange on every call."""

from __future__ import annotations

import json
import shlex
import stat

import pytest

from conftest import ACCOUNT, EXAMPLES, HTTP, NO_INSTANCE_CREDS, VENV_BIN, assumed_role_arn, describe

CONFIG = EXAMPLES / "seed004-sa-key-to-aws.toml"
ROUTE = "sa-key-to-aws"
CALLS = 100
EXCHANGES = "aws_sts.AssumeRoleWithWebIdentity"


def exchanges(emulator: dict) -> int:
    r = HTTP.get(f"{emulator['IDBRIDGE_EMULATOR_GOOGLE_URL']}/_emulator/stats", timeout=10)
    assert r.status_code == 200, r.text[:300]
    return int(r.json().get(EXCHANGES, 0))


def profile(sandbox, *extra: str) -> None:
    cmd = shlex.join([str(sandbox.bin), "credential-process", "--config", str(CONFIG), "--route", ROUTE, *extra])
    sandbox.aws_config.write_text(f"[profile p]\ncredential_process = {cmd}\nregion = us-east-1\n")


# A hundred AWS CLI processes take a minute or two (more on a busy machine): a wider bound.
@pytest.mark.timeout(900)
def test_aws_cli_in_a_loop_does_one_exchange(sandbox, emulator):
    profile(sandbox)
    cache_home = sandbox.root / "xdg-cache"
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, {"XDG_CACHE_HOME": cache_home})
    before = exchanges(emulator)
    for i in range(CALLS):
        r = sandbox.run([VENV_BIN / "aws", "sts", "get-caller-identity", "--profile", "p", "--output", "json"], env=env)
        assert r.returncode == 0, f"call {i}: {describe(r)}"
        ident = json.loads(r.stdout)
        assert ident["Arn"] == assumed_role_arn("gcp-sa-key-caller", "sa-key-caller"), ident
        assert ident["Account"] == ACCOUNT
    assert exchanges(emulator) - before == 1, f"{CALLS} AWS CLI calls, {exchanges(emulator) - before} exchanges"

    d = cache_home / "idbridge"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    files = sorted(p.name for p in d.iterdir())
    assert "key" in files and any(f.endswith(".cred") for f in files), files
    for p in d.iterdir():
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    entry = next(p for p in d.iterdir() if p.name.endswith(".cred")).read_bytes()
    assert b"ASIA" not in entry and b"SessionToken" not in entry, "the entry is sealed"


def test_opting_out_exchanges_every_time(sandbox, emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    args = ["credential-process", "--config", CONFIG, "--route", ROUTE]
    before = exchanges(emulator)
    for extra_args, extra_env in ((["--no-cache"], {}), ([], {"IDBRIDGE_NO_CACHE": "1"})):
        for _ in range(2):
            r = sandbox.idbridge(*args, *extra_args, env={**env, **extra_env})
            assert r.returncode == 0, describe(r)
            assert json.loads(r.stdout)["Version"] == 1
    assert exchanges(emulator) - before == 4
    assert not (sandbox.home / ".cache" / "idbridge").exists()


def test_a_tampered_cache_entry_is_replaced(sandbox, emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    args = ["credential-process", "--config", CONFIG, "--route", ROUTE]
    before = exchanges(emulator)
    first = sandbox.idbridge(*args, env=env)
    assert first.returncode == 0, describe(first)
    d = sandbox.home / ".cache" / "idbridge"
    entry = next(p for p in d.iterdir() if p.name.endswith(".cred"))
    data = bytearray(entry.read_bytes())
    data[-1] ^= 1
    entry.write_bytes(bytes(data))
    second = sandbox.idbridge(*args, env=env)
    assert second.returncode == 0, describe(second)
    assert json.loads(second.stdout)["AccessKeyId"] != json.loads(first.stdout)["AccessKeyId"]
    assert exchanges(emulator) - before == 2, "the tampered entry was not served"
    third = sandbox.idbridge(*args, env=env)
    assert json.loads(third.stdout)["AccessKeyId"] == json.loads(second.stdout)["AccessKeyId"]
    assert exchanges(emulator) - before == 2
