"""Python azure-identity's ClientAssertionCredential against an emulated Entra ID whose app has a
federated identity credential for an issuer Entra cannot resolve (its OpenID discovery document
and JWKS are out of reach): Entra answers 400 `invalid_request` AADSTS50166 "Request to External
OIDC endpoint failed.", and azure-identity surfaces it as a ClientAuthenticationError.

An issuer no credential names is still AADSTS700211 (the issuer match comes first), and an
issuer the emulator runs (Google) still federates, in the same world.
"""

from __future__ import annotations

import subprocess
import time

import jwt
import pytest

from conftest import NO_INSTANCE_CREDS, clean_env, parse_env_file, stop_process, tail
from test_azure_peers import MI_VARS, azure, mint

TENANT = "5b0c1d2e-3f40-4a5b-8c6d-7e8f9a0b1c2d"
CALLER = "a1111111-0000-4000-8000-000000000051"
EXCHANGE = "api://AzureADTokenExchange"
OFFLINE_ISSUER = "https://oidc.unreachable.example"
GOOGLE = "https://accounts.google.com"
SCOPE = "api://discovery-api/.default"

WORLD = f"""
[[entra_tenant]]
id = "{TENANT}"

[[entra_app]]
tenant = "{TENANT}"
display_name = "discovery-api"
client_id = "a2222222-0000-4000-8000-000000000052"
object_id = "a2222222-0000-4000-8000-0000000000f2"
identifier_uris = ["api://discovery-api"]

[[entra_app]]
tenant = "{TENANT}"
display_name = "discovery-caller"
client_id = "{CALLER}"
object_id = "a1111111-0000-4000-8000-0000000000f1"

[[entra_app.federated_credential]]
name = "offline-issuer"
issuer = "{OFFLINE_ISSUER}"
subject = "workload"

[[entra_app.federated_credential]]
name = "google"
issuer = "{GOOGLE}"
subject = "100000000000000000051"
"""


@pytest.fixture(scope="module")
def discovery_emulator(idbridge_bin, tmp_path_factory):
    """`idbridge emulate --world` with the world above."""
    d = tmp_path_factory.mktemp("entra-discovery")
    world = d / "world.toml"
    world.write_text(WORLD)
    env_file, log = d / "emulator.env", d / "emulator.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([str(idbridge_bin), "emulate", "--world", str(world), "--env-file", str(env_file)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                env=clean_env(d / "home"), cwd=d)
    try:
        deadline = time.monotonic() + 20
        while not env_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the emulator did not start:\n{tail(log)}", pytrace=False)
            time.sleep(0.05)
        yield parse_env_file(env_file.read_text())
    finally:
        stop_process(proc)


def foreign_assertion(issuer: str, sub: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    return jwt.encode({"iss": issuer, "sub": sub, "aud": EXCHANGE, "iat": now, "exp": now + 600}, key,
                      algorithm="RS256", headers={"kid": "k1"})


def client_assertion(sandbox, emu: dict, assertion: str) -> dict:
    env = sandbox.env(emu, NO_INSTANCE_CREDS, MI_VARS)
    return azure(sandbox, "client_assertion", {"tenant_id": TENANT, "client_id": CALLER, "assertion": assertion,
                                               "scope": SCOPE}, env)


def test_an_issuer_out_of_reach_is_aadsts50166(sandbox, discovery_emulator):
    res = client_assertion(sandbox, discovery_emulator, foreign_assertion(OFFLINE_ISSUER, "workload"))
    err = res.get("error")
    assert err, res
    assert err["type"] == "ClientAuthenticationError", err
    assert err["aadsts"] == 50166, err
    assert "Request to External OIDC endpoint failed." in err["message"], err
    assert "invalid_request" in err["message"], err


def test_an_issuer_no_credential_names_is_still_aadsts700211(sandbox, discovery_emulator):
    res = client_assertion(sandbox, discovery_emulator, foreign_assertion("https://issuer.evil.example", "workload"))
    assert res.get("error"), res
    assert res["error"]["aadsts"] == 700211, res["error"]


def test_an_issuer_the_emulator_runs_still_federates(sandbox, discovery_emulator):
    assertion = mint(discovery_emulator, GOOGLE, "100000000000000000051", EXCHANGE)
    res = client_assertion(sandbox, discovery_emulator, assertion)
    assert "error" not in res, res
    assert res["expires_on"] > time.time() + 600, res
