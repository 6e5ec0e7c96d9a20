"""Real-client actions, each run in its own clean subprocess by the tests.

Usage: python clients.py ACTION JSON-ARGS

Every action prints one JSON object on stdout. Client libraries read endpoint overrides from the
environment, and some only at import time (google-auth's GCE_METADATA_HOST), so each call gets a
fresh interpreter with the environment the test built (see conftest.clean_env). Expected
failures are reported as {"error": {"type", "code", "message"}} instead of tracebacks, so the
test can assert on them.
"""

from __future__ import annotations

import json
import sys
import traceback


def _error(e: BaseException) -> dict:
    out = {
        "type": type(e).__name__,
        "module": type(e).__module__,
        "message": str(e),
        # botocore's modeled errors (InvalidIdentityTokenException, …) subclass ClientError.
        "client_error": any(c.__name__ == "ClientError" for c in type(e).__mro__),
    }
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):  # botocore ClientError
        out["code"] = resp.get("Error", {}).get("Code")
    return {"error": out}


# ---------------------------------------------------------------- AWS (boto3) -------------------


def boto3_caller_identity(args: dict) -> dict:
    """Session(profile_name=…).client('sts').get_caller_identity() + the credential method; a
    provider's failure is reported as botocore raises it (CredentialRetrievalError)."""
    import boto3
    from botocore.exceptions import CredentialRetrievalError

    session = boto3.Session(profile_name=args.get("profile"))
    try:
        creds = session.get_credentials()
    except CredentialRetrievalError as e:  # a provider that ran and failed (credential_process)
        return _error(e)
    if creds is None:
        return {"error": {"type": "NoCredentials", "code": None, "message": "no credentials found"}}
    method = creds.method
    try:
        frozen = creds.get_frozen_credentials()
        ident = session.client("sts", region_name=args.get("region", "us-east-1")).get_caller_identity()
    except Exception as e:  # noqa: BLE001 - reported to the test
        return {"method": method, **_error(e)}
    return {
        "method": method,
        "access_key_id": frozen.access_key,
        "Arn": ident["Arn"],
        "Account": ident["Account"],
        "UserId": ident["UserId"],
    }


def moto_setup(args: dict) -> dict:
    """With moto's auth off: IAM user + key + inline admin policy, and an S3 bucket with objects."""
    import boto3

    kw = {"endpoint_url": args["endpoint"], "region_name": "us-east-1",
          "aws_access_key_id": "AKIASETUPSETUPSETUP0", "aws_secret_access_key": "setup-secret"}
    iam = boto3.client("iam", **kw)
    iam.create_user(UserName=args["user"])
    key = iam.create_access_key(UserName=args["user"])["AccessKey"]
    iam.put_user_policy(
        UserName=args["user"],
        PolicyName="peer-test-allow-all",
        PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["sts:*", "s3:*"], "Resource": "*"},
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
            ],
        }),
    )
    s3 = boto3.client("s3", **kw)
    s3.create_bucket(Bucket=args["bucket"])
    for name, body in args["objects"].items():
        s3.put_object(Bucket=args["bucket"], Key=name, Body=body.encode())
    return {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}


def boto3_s3_get(args: dict) -> dict:
    """boto3 S3 GetObject with explicit keys (botocore's own S3 SigV4 signer)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=args["endpoint"], region_name="us-east-1",
                      aws_access_key_id=args["access_key_id"], aws_secret_access_key=args["secret_access_key"])
    try:
        body = s3.get_object(Bucket=args["bucket"], Key=args["key"])["Body"].read()
    except Exception as e:  # noqa: BLE001
        return _error(e)
    return {"body": body.decode()}


# ---------------------------------------------------------------- Google (google-auth, PyJWT) ---


def _claims_unverified(token: str) -> dict:
    from google.auth import jwt as gjwt

    return gjwt.decode(token, verify=False)


def gauth_verify(args: dict) -> dict:
    """google.oauth2.id_token.verify_token against a local certs URL."""
    import google.auth.transport.requests as gtr
    from google.oauth2 import id_token

    try:
        claims = id_token.verify_token(args["token"], gtr.Request(), audience=args["audience"],
                                       certs_url=args["certs_url"])
    except Exception as e:  # noqa: BLE001
        return _error(e)
    return {"claims": claims}


def pyjwt_verify(args: dict) -> dict:
    """PyJWT: PyJWKClient(jwks_url) + jwt.decode(RS256, audience, issuer)."""
    import jwt

    try:
        key = jwt.PyJWKClient(args["jwks_url"]).get_signing_key_from_jwt(args["token"])
        claims = jwt.decode(args["token"], key.key, algorithms=["RS256"], audience=args["audience"],
                            issuer=args["issuer"])
    except Exception as e:  # noqa: BLE001
        return _error(e)
    return {"claims": claims, "kid": key.key_id}


def gauth_compute(args: dict) -> dict:
    """google.auth.default() on the emulated GCE VM, then refresh, ID token and ping."""
    import google.auth
    import google.auth.transport.requests as gtr
    from google.auth import compute_engine
    from google.auth.compute_engine import _metadata

    req = gtr.Request()
    out: dict = {"ping": _metadata.ping(req)}
    creds, project = google.auth.default()
    out["class"] = f"{type(creds).__module__}.{type(creds).__qualname__}"
    out["project"] = project
    creds.refresh(req)  # directly: no AuthorizedSession background lookups
    out["token"] = creds.token
    out["expiry"] = creds.expiry.isoformat() if creds.expiry else None
    out["service_account_email"] = creds.service_account_email
    idc = compute_engine.IDTokenCredentials(req, target_audience=args["audience"],
                                            use_metadata_identity_endpoint=True)
    idc.refresh(req)
    out["id_token"] = idc.token
    out["id_token_claims"] = _claims_unverified(idc.token)
    return out


def gauth_sa_id_token(args: dict) -> dict:
    """service_account.IDTokenCredentials from a key whose token_uri is the emulator's /token."""
    import google.auth.transport.requests as gtr
    from google.oauth2 import service_account

    with open(args["key_file"], encoding="utf-8") as f:
        info = json.load(f)
    info["token_uri"] = args["token_uri"]
    creds = service_account.IDTokenCredentials.from_service_account_info(
        info, target_audience=args["audience"])
    try:
        creds.refresh(gtr.Request())
    except Exception as e:  # noqa: BLE001
        return _error(e)
    return {"token": creds.token, "claims": _claims_unverified(creds.token)}


def boto3_presigned_caller_identity(args: dict) -> dict:
    """sts.generate_presigned_url('get_caller_identity', …) with the session's credentials, then the
    URL fetched as a plain HTTP request (`fetch_method`, GET by default), as Vault-style verifiers do."""
    import boto3
    import requests

    session = boto3.Session()
    sts = session.client("sts", region_name=args.get("region", "us-east-1"))
    kw = {"ExpiresIn": args.get("expires_in", 3600)}
    if args.get("http_method"):
        kw["HttpMethod"] = args["http_method"]
    url = sts.generate_presigned_url("get_caller_identity", **kw)
    if args.get("sleep"):
        import time

        time.sleep(args["sleep"])
    http = requests.Session()
    http.trust_env = False
    r = http.request(args.get("fetch_method", "GET"), url, timeout=10)
    return {"url_has_token": "X-Amz-Security-Token=" in url, "status": r.status_code, "body": r.text}


def gauth_iam_tokens(args: dict) -> dict:
    """google-auth's IAM Credentials callers, with the compute credentials as the source:
    impersonated_credentials.Credentials (generateAccessToken, `"delegates": null`),
    impersonated_credentials.IDTokenCredentials (generateIdToken, `"delegates": null`) and
    oauth2._client.call_iam_generate_id_token_endpoint (`"includeEmail": "true"`,
    `"useEmailAzp": "true"`, as strings)."""
    import google.auth.transport.requests as gtr
    from google.auth import compute_engine, iam, impersonated_credentials
    from google.oauth2 import _client

    base = args["iam"].rstrip("/") + "/v1/projects/-/serviceAccounts/{}"
    iam._IAM_IDTOKEN_ENDPOINT = base + ":generateIdToken"
    req = gtr.Request()
    source = compute_engine.Credentials()
    source.refresh(req)
    target = impersonated_credentials.Credentials(
        source_credentials=source, target_principal=args["target"],
        target_scopes=["https://www.googleapis.com/auth/cloud-platform"], lifetime=600,
        iam_endpoint_override=base.format(args["target"]) + ":generateAccessToken")
    out: dict = {}
    try:
        target.refresh(req)
        out["access_token"] = target.token
        idc = impersonated_credentials.IDTokenCredentials(target, target_audience=args["audience"],
                                                          include_email=True)
        idc.refresh(req)
        out["impersonated_id_token_claims"] = _claims_unverified(idc.token)
        token, _expiry = _client.call_iam_generate_id_token_endpoint(
            req, base + ":generateIdToken", args["target"], args["audience"], source.token)
        out["iam_id_token_claims"] = _claims_unverified(token)
    except Exception as e:  # noqa: BLE001
        return {**out, **_error(e)}
    return out


ACTIONS = {f.__name__: f for f in [boto3_caller_identity, moto_setup, boto3_s3_get, gauth_verify, pyjwt_verify,
                                   gauth_compute, gauth_sa_id_token, boto3_presigned_caller_identity,
                                   gauth_iam_tokens]}


def run_action(actions: dict, error) -> int:
    """Runs `argv[1]` from `actions` with the JSON `argv[2]`; prints one JSON object on stdout.
    `error(e)` turns an exception into `{"error": {...}}`. Shared with ext_clients.py."""
    action, raw = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "{}"
    try:
        result = actions[action](json.loads(raw))
    except Exception as e:  # noqa: BLE001 - unexpected: full traceback on stderr, JSON on stdout
        traceback.print_exc()
        result = {"error": {**error(e)["error"], "unexpected": True}}
    json.dump(result, sys.stdout, default=str)
    sys.stdout.write("\n")
    return 0


def main() -> int:
    return run_action(ACTIONS, _error)


if __name__ == "__main__":
    sys.exit(main())
