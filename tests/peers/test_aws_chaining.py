"""Role chaining at the emulated STS with boto3: AssumeRoleWithWebIdentity (a GCE ID token from the
emulated metadata server), then `sts.assume_role` signed with those credentials, then
GetCallerIdentity with the chained ones; and AWS's refusals (external id, untrusted caller, the
1-hour limit of a chained session).
"""

from __future__ import annotations

import json

from conftest import ACCOUNT, PYTHON, assumed_role_arn, describe, metadata_id_token, role_arn

CHAIN_SCRIPT = r'''
import json, sys, time
import boto3, botocore.exceptions

a = json.loads(sys.argv[1])
kw = dict(region_name="us-east-1", endpoint_url=a["endpoint"])
first = boto3.client("sts", aws_access_key_id="unused", aws_secret_access_key="unused", **kw)
web = first.assume_role_with_web_identity(RoleArn=a["first_role"], RoleSessionName="tenant-sess",
                                          WebIdentityToken=a["token"])["Credentials"]
sts = boto3.client("sts", aws_access_key_id=web["AccessKeyId"], aws_secret_access_key=web["SecretAccessKey"],
                   aws_session_token=web["SessionToken"], **kw)
out = {}
for name, call in a["calls"].items():
    try:
        r = sts.assume_role(**call)
        c = r["Credentials"]
        chained = boto3.client("sts", aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
                               aws_session_token=c["SessionToken"], **kw)
        out[name] = {"arn": r["AssumedRoleUser"]["Arn"], "source_identity": r.get("SourceIdentity"),
                     "lifetime": int(c["Expiration"].timestamp() - time.time()),
                     "caller": chained.get_caller_identity()["Arn"]}
    except botocore.exceptions.ClientError as e:
        out[name] = {"error": e.response["Error"]["Code"], "message": e.response["Error"]["Message"],
                     "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}
print(json.dumps(out))
'''


def test_boto3_assume_role_chains_from_web_identity_credentials(sandbox, emulator):
    token = metadata_id_token(emulator, "https://psoxy.example/aws")
    target = role_arn("chained-reader")
    base = {"RoleArn": target, "RoleSessionName": "chained", "ExternalId": "tenant-7"}
    calls = {
        "ok": {**base, "DurationSeconds": 3600, "SourceIdentity": "alice",
               "Tags": [{"Key": "team", "Value": "billing"}], "TransitiveTagKeys": ["team"]},
        "wrong_external_id": {**base, "ExternalId": "tenant-8"},
        "no_external_id": {"RoleArn": target, "RoleSessionName": "chained"},
        "over_an_hour": {**base, "DurationSeconds": 7200},
        "untrusted_role": {"RoleArn": role_arn("google-cloud-myapp"), "RoleSessionName": "chained"},
        "unknown_role": {"RoleArn": role_arn("no-such-role"), "RoleSessionName": "chained"},
    }
    args = {"endpoint": emulator["AWS_ENDPOINT_URL_STS"], "token": token,
            "first_role": role_arn("psoxy-tenant-access"), "calls": calls}
    r = sandbox.run([PYTHON, "-c", CHAIN_SCRIPT, json.dumps(args)], env=sandbox.env())
    assert r.returncode == 0, describe(r)
    out = json.loads(r.stdout)

    ok = out["ok"]
    assert "error" not in ok, ok
    assert ok["arn"] == assumed_role_arn("chained-reader", "chained")
    assert ok["caller"] == ok["arn"]
    assert ok["source_identity"] == "alice"
    assert 3500 < ok["lifetime"] <= 3600, ok

    caller = assumed_role_arn("psoxy-tenant-access", "tenant-sess")
    for name in ("wrong_external_id", "no_external_id", "untrusted_role", "unknown_role"):
        res = out[name]
        assert (res.get("error"), res.get("status")) == ("AccessDenied", 403), (name, res)
        assert res["message"].startswith(f"User: {caller} is not authorized to perform: sts:AssumeRole"), res
    res = out["over_an_hour"]
    assert (res.get("error"), res.get("status")) == ("ValidationError", 400), res
    assert "1 hour session limit for roles assumed by role chaining" in res["message"], res
    assert ACCOUNT in ok["arn"]
