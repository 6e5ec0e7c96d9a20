"""The idbridge CLI itself: output formats, exec, and failures on bad input."""

from __future__ import annotations

import json
import re

import pytest

from conftest import NO_INSTANCE_CREDS, ACCOUNT, EXAMPLES, assumed_role_arn, describe

SEED000 = EXAMPLES / "seed000-gce-to-aws.toml"
ROUTE = "tenant-to-aws"
EXPIRATION = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def stderr_lines(r) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.strip()]


def test_idbridge_token_formats(sandbox, emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    route = ["--config", SEED000, "--route", ROUTE]

    r = sandbox.idbridge("token", *route, "--format", "json", env=env)
    assert r.returncode == 0, describe(r)
    j = json.loads(r.stdout)
    assert j["AccessKeyId"].startswith("ASIA"), j
    assert j["SecretAccessKey"] and j["SessionToken"], j
    assert EXPIRATION.match(j["Expiration"]), j
    assert j["Arn"] == assumed_role_arn("psoxy-tenant-access", "psoxy-tenant"), j
    assert j["AccountId"] == ACCOUNT, j

    r = sandbox.idbridge("token", *route, "--format", "env", env=env)
    assert r.returncode == 0, describe(r)
    pairs = dict(line.split("=", 1) for line in r.stdout.splitlines() if line)
    assert set(pairs) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                          "AWS_CREDENTIAL_EXPIRATION"}, pairs.keys()
    assert pairs["AWS_ACCESS_KEY_ID"].startswith("ASIA")
    assert EXPIRATION.match(pairs["AWS_CREDENTIAL_EXPIRATION"]), pairs["AWS_CREDENTIAL_EXPIRATION"]

    for cmd in (["token", *route, "--format", "credential-process"], ["credential-process", *route]):
        r = sandbox.idbridge(*cmd, env=env)
        assert r.returncode == 0, describe(r)
        cp = json.loads(r.stdout)
        assert cp["Version"] == 1 and type(cp["Version"]) is int, cp  # a number, not "1"
        assert cp["AccessKeyId"].startswith("ASIA"), cp
        assert cp["SecretAccessKey"] and cp["SessionToken"], cp
        assert EXPIRATION.match(cp["Expiration"]), cp
        if "AccountId" in cp:
            assert cp["AccountId"] == ACCOUNT, cp

    r = sandbox.idbridge("exec", *route, "--", "python", "-c",
                         'import os; print(os.environ["AWS_ACCESS_KEY_ID"]); print(bool(os.environ["AWS_SESSION_TOKEN"]))',
                         env=env)
    assert r.returncode == 0, describe(r)
    key, has_token = r.stdout.split()
    assert re.fullmatch(r"ASIA[A-Z0-9]{12,}", key), describe(r)
    assert has_token == "True"

    # exec passes the child's exit status through.
    r = sandbox.idbridge("exec", *route, "--", "python", "-c", "raise SystemExit(7)", env=env)
    assert r.returncode == 7, describe(r)


def test_bad_input_cli(sandbox, emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)

    # A route the file doesn't define: usage error, one line naming it.
    r = sandbox.idbridge("token", "--config", SEED000, "--route", "no-such-route", env=env)
    assert r.returncode == 64, describe(r)
    assert len(stderr_lines(r)) == 1, describe(r)
    assert "no-such-route" in r.stderr, describe(r)

    # An unknown field: usage error naming the file, the line and the field.
    bad = sandbox.write("bad-config.toml", "\n".join([
        "# a route with a typo",
        "[[route]]",
        'name = "r"',
        'source = { kind = "gce-metadata", audience = "https://a.example" }',
        "frobnicate = true",
        'exchange = [ { kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/x", session_name = "s" } ]',
        "",
    ]))
    r = sandbox.idbridge("token", "--config", bad, "--route", "r", env=env)
    assert r.returncode == 64, describe(r)
    assert "bad-config.toml" in r.stderr, describe(r)
    assert re.search(r"\bline 5\b", r.stderr), describe(r)
    assert "frobnicate" in r.stderr, describe(r)
    assert "panicked" not in r.stderr, describe(r)

    # An unreachable STS endpoint: a runtime failure, one line, no panic.
    r = sandbox.idbridge("token", "--config", SEED000, "--route", ROUTE,
                         env=sandbox.env(env, {"AWS_ENDPOINT_URL_STS": "http://127.0.0.1:1"}))
    assert r.returncode not in (0, 64), describe(r)
    assert len(stderr_lines(r)) == 1, describe(r)
    assert "panicked" not in r.stderr, describe(r)


@pytest.mark.parametrize(("text", "line", "needle"), [
    pytest.param('[[project]]\nid = "p"\nnumber = \n', 3, None, id="syntax-error"),
    pytest.param('[[project]]\nid = "p"\nnumber = "1"\nfrobnicate = 1\n', 4, "frobnicate", id="unknown-field"),
])
def test_emulate_rejects_bad_world(sandbox, text, line, needle):
    world = sandbox.write("bad-world.toml", text)
    # A valid world would make `emulate` serve until killed: the timeout turns that into a failure.
    r = sandbox.idbridge("emulate", "--world", world, "--env-file", sandbox.root / "never.env",
                         env=sandbox.env(), timeout=20)
    assert r.returncode == 64, describe(r)
    assert "bad-world.toml" in r.stderr, describe(r)
    assert re.search(rf"\bline {line}\b", r.stderr), describe(r)
    if needle:
        assert needle in r.stderr, describe(r)
    assert "panicked" not in r.stderr, describe(r)
    assert not (sandbox.root / "never.env").exists()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "oversized"])
def test_config_and_world_files_must_be_small_regular_files(sandbox, kind):
    import os

    if kind == "fifo":
        path = sandbox.root / "routes.fifo"
        os.mkfifo(path)  # nobody writes: reading it would hang
        needle = "a FIFO is not a regular file"
    elif kind == "dev-zero":
        path = "/dev/zero"  # reading it would grow without bound
        needle = "a character device is not a regular file"
    elif kind == "directory":
        path = sandbox.root
        needle = "a directory is not a regular file"
    else:
        path = sandbox.write("huge.toml", "# padding\n" * (500 * 1024))  # 5 MB
        needle = "byte limit"
    env = sandbox.env()
    for args in (["token", "--config", path, "--route", "r"],
                 ["serve", "--check", "--config", path],
                 ["emulate", "--world", path, "--env-file", sandbox.root / "never.env"]):
        r = sandbox.idbridge(*args, env=env, timeout=20)
        assert r.returncode == 64, describe(r)
        assert needle in r.stderr and str(path) in r.stderr, describe(r)
        assert len(stderr_lines(r)) == 1, describe(r)
    assert not (sandbox.root / "never.env").exists()
