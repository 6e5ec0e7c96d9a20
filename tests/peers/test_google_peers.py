"""google-auth and PyJWT against the emulated Google endpoints (metadata server, OAuth2, certs)."""

from __future__ import annotations

from conftest import NO_INSTANCE_CREDS, REPO, assumed_role_arn, metadata_id_token, web_identity_env

GOOGLE_ISSUER = "https://accounts.google.com"
TENANT_EMAIL = "psoxy-tenant@saas-tenant.iam.gserviceaccount.com"
TENANT_UNIQUE_ID = "112233445566778899001"
SA_KEY_FILE = REPO / "examples" / "keys" / "seed004-sa-key.json"
SA_KEY_UNIQUE_ID = "104729384756102938475"
SA_KEY_AUDIENCE = "https://myservice.aud.my-corp.net"


def certs_urls(emulator: dict) -> dict[str, str]:
    g = emulator["IDBRIDGE_EMULATOR_GOOGLE_URL"]
    return {"v1 (kid -> x509 PEM)": f"{g}/oauth2/v1/certs", "v3 (JWKS)": f"{g}/oauth2/v3/certs"}


def test_google_auth_verifies_emulator_id_tokens(sandbox, emulator):
    audience = "https://verifier.example/api"
    token = metadata_id_token(emulator, audience)
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)

    for name, url in certs_urls(emulator).items():
        res = sandbox.client("gauth_verify", {"token": token, "audience": audience, "certs_url": url}, env=env)
        assert "error" not in res, (name, res)
        claims = res["claims"]
        assert claims["iss"] == GOOGLE_ISSUER, (name, claims)
        assert claims["aud"] == audience, (name, claims)
        assert claims["sub"] == TENANT_UNIQUE_ID, (name, claims)
        assert claims["azp"] == TENANT_UNIQUE_ID, (name, claims)
        assert claims["email"] == TENANT_EMAIL, (name, claims)
        assert claims["exp"] > claims["iat"], (name, claims)

        wrong = sandbox.client("gauth_verify", {"token": token, "audience": "https://WRONG.example",
                                                "certs_url": url}, env=env)
        assert "error" in wrong, (name, wrong)
        assert "audience" in wrong["error"]["message"].lower(), (name, wrong)

    g = emulator["IDBRIDGE_EMULATOR_GOOGLE_URL"]
    jwks = f"{g}/oauth2/v3/certs"
    res = sandbox.client("pyjwt_verify", {"token": token, "jwks_url": jwks, "audience": audience,
                                          "issuer": GOOGLE_ISSUER}, env=env)
    assert "error" not in res, res
    assert res["claims"]["sub"] == TENANT_UNIQUE_ID
    assert res["claims"]["email"] == TENANT_EMAIL
    assert res["kid"], res

    res = sandbox.client("pyjwt_verify", {"token": token, "jwks_url": jwks, "audience": audience,
                                          "issuer": "https://not-google.example"}, env=env)
    assert res.get("error", {}).get("type") == "InvalidIssuerError", res

    res = sandbox.client("pyjwt_verify", {"token": token, "jwks_url": jwks, "audience": "https://WRONG.example",
                                          "issuer": GOOGLE_ISSUER}, env=env)
    assert res.get("error", {}).get("type") == "InvalidAudienceError", res


def test_google_auth_compute_credentials(sandbox, emulator):
    # GCE detection must run here: GCE_METADATA_IP (ping) and GCE_METADATA_HOST both point at the
    # emulator, and NO_GCE_CHECK is unset.
    env = sandbox.env(emulator, NO_INSTANCE_CREDS, gce_check=True)
    assert "NO_GCE_CHECK" not in env and env["GCE_METADATA_IP"] == emulator["GCE_METADATA_IP"]
    res = sandbox.client("gauth_compute", {"audience": "https://aud.example"}, env=env)
    assert "error" not in res, res
    assert res["ping"] is True
    assert res["class"] == "google.auth.compute_engine.credentials.Credentials", res
    assert res["project"] == "saas-tenant"
    assert res["token"], res
    assert res["expiry"], res
    assert res["service_account_email"] == TENANT_EMAIL
    claims = res["id_token_claims"]
    assert claims["aud"] == "https://aud.example", claims
    assert claims["iss"] == GOOGLE_ISSUER, claims
    assert claims["sub"] == TENANT_UNIQUE_ID, claims


def test_google_auth_service_account_id_token_against_emulated_oauth2(sandbox, emulator):
    env = sandbox.env(emulator, NO_INSTANCE_CREDS)
    res = sandbox.client("gauth_sa_id_token", {"key_file": str(SA_KEY_FILE),
                                               "token_uri": emulator["IDBRIDGE_GOOGLE_OAUTH2_URL"],
                                               "audience": SA_KEY_AUDIENCE}, env=env)
    assert "error" not in res, res
    token = res["token"]

    g = emulator["IDBRIDGE_EMULATOR_GOOGLE_URL"]
    ver = sandbox.client("gauth_verify", {"token": token, "audience": SA_KEY_AUDIENCE,
                                          "certs_url": f"{g}/oauth2/v1/certs"}, env=env)
    assert "error" not in ver, ver
    claims = ver["claims"]
    assert claims["iss"] == GOOGLE_ISSUER, claims
    assert claims["aud"] == SA_KEY_AUDIENCE, claims
    assert claims["azp"] == SA_KEY_UNIQUE_ID, claims
    assert claims["sub"] == SA_KEY_UNIQUE_ID, claims

    # …and AWS accepts that Google-signed token under seed 004's trust policy (oaud + aud + Null).
    ident = sandbox.client("boto3_caller_identity", {},
                           env=web_identity_env(sandbox, emulator, token, "gcp-sa-key-caller", "sa-key-sess"))
    assert "error" not in ident, ident
    assert ident["method"] == "assume-role-with-web-identity"
    assert ident["Arn"] == assumed_role_arn("gcp-sa-key-caller", "sa-key-sess")
