"""moto as the verifier of credentials that did not come from moto, run in-process.

Usage: python moto_clients.py ACTION JSON-ARGS   (prints one JSON object on stdout)

moto checks a SigV4 signature with the secret of an access key it knows: an IAM user's key, or
the key of a session in its STS backend (`moto/iam/access_control.py`, `AssumedRoleAccessKey`).
It has no API to import a key minted elsewhere, so `moto_known_session` runs moto in this
process (`ThreadedMotoServer` on 127.0.0.1) as the account of the credentials
(`MOTO_ACCOUNT_ID`, moto's multi-account setting) and, with auth off:

* creates the role and its permissions policy through moto's IAM API;
* opens a session of that role through moto's STS API (`AssumeRole`, same session name);
* gives that session the key id, secret and session token boto3 got from its own credential
  provider (`credential_process` → `idbridge credential-process`): the only write into moto's
  backend, three attributes of the session it just created.

Then auth goes on (`POST /moto-api/reset-auth 0`) and boto3 calls moto with those credentials:
every request is verified by moto's SigV4 check (botocore's signers) and its IAM evaluation.
"""

from __future__ import annotations

import json
import os
import sys

from clients import _error, run_action


def _call(fn, *args, **kw) -> dict:
    """A boto3 call → its response, or {"error": {..., "code", "status"}} for a ClientError."""
    try:
        return fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 - reported to the test
        out = _error(e)
        resp = getattr(e, "response", None)
        if isinstance(resp, dict):
            out["error"]["status"] = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return out


def _off_by_one(value: str) -> str:
    return value[:-1] + ("A" if value[-1] != "A" else "B")


def moto_known_session(args: dict) -> dict:
    import boto3
    import requests
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.sts.models import sts_backends

    account = os.environ["MOTO_ACCOUNT_ID"]
    session = boto3.Session(profile_name=args["profile"])
    creds = session.get_credentials()
    out: dict = {"method": creds.method}
    frozen = creds.get_frozen_credentials()
    out["access_key_id"] = frozen.access_key

    # The issuer's own view of the credentials: the emulator's STS.
    emulator_sts = session.client("sts", region_name="us-east-1", endpoint_url=args["emulator_sts"])
    out["emulator_arn"] = emulator_sts.get_caller_identity()["Arn"]
    role_name, session_name = out["emulator_arn"].split(":assumed-role/", 1)[1].split("/", 1)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        http = requests.Session()
        http.trust_env = False
        setup = {"endpoint_url": url, "region_name": "us-east-1",
                 "aws_access_key_id": "AKIASETUPSETUPSETUP0", "aws_secret_access_key": "setup-secret"}
        iam = boto3.client("iam", **setup)
        iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "rolesanywhere.amazonaws.com"},
                           "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]}],
        }))
        iam.put_role_policy(RoleName=role_name, PolicyName="read-reports", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"},
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{args['bucket']}/*"},
            ],
        }))
        s3_setup = boto3.client("s3", **setup)
        s3_setup.create_bucket(Bucket=args["bucket"])
        s3_setup.put_object(Bucket=args["bucket"], Key=args["key"], Body=args["body"].encode())
        role_arn = f"arn:aws:iam::{account}:role/{role_name}"
        opened = boto3.client("sts", **setup).assume_role(RoleArn=role_arn, RoleSessionName=session_name)
        known = sts_backends[account]["aws"].get_assumed_role_from_access_key(opened["Credentials"]["AccessKeyId"])
        known.access_key_id = frozen.access_key
        known.secret_access_key = frozen.secret_key
        known.session_token = frozen.token

        r = http.post(f"{url}/moto-api/reset-auth", data="0", timeout=10)
        assert r.status_code == 200, r.text
        try:
            # boto3 signs with the credentials of its credential_process provider.
            sts = session.client("sts", region_name="us-east-1", endpoint_url=url)
            s3 = session.client("s3", region_name="us-east-1", endpoint_url=url)
            ident = _call(sts.get_caller_identity)
            out["moto_arn"] = ident.get("Arn", ident)
            got = _call(s3.get_object, Bucket=args["bucket"], Key=args["key"])
            out["s3_get"] = got["Body"].read().decode() if "Body" in got else got
            # Signed correctly, but not allowed by the role's policy.
            out["s3_put"] = _call(s3.put_object, Bucket=args["bucket"], Key="other.txt", Body=b"x")

            # The same key id and session token with a secret one character off.
            tampered = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": frozen.access_key,
                        "aws_secret_access_key": _off_by_one(frozen.secret_key), "aws_session_token": frozen.token}
            out["tampered_sts"] = _call(boto3.client("sts", **tampered).get_caller_identity)
            out["tampered_s3"] = _call(boto3.client("s3", **tampered).get_object, Bucket=args["bucket"],
                                       Key=args["key"])
            # The right secret with another session token.
            other_token = {**tampered, "aws_secret_access_key": frozen.secret_key,
                           "aws_session_token": _off_by_one(frozen.token)}
            out["wrong_token_sts"] = _call(boto3.client("sts", **other_token).get_caller_identity)
        finally:
            http.post(f"{url}/moto-api/reset-auth", data="inf", timeout=10)
    finally:
        server.stop()
    return out


ACTIONS = {f.__name__: f for f in [moto_known_session]}


def main() -> int:
    return run_action(ACTIONS, _error)


if __name__ == "__main__":
    sys.exit(main())
