"""Clients run inside a pod's network namespace (`ip netns exec NS python pod_clients.py ACTION JSON`).

Prints one JSON object. The daemon's address comes from the environment each SDK reads
(AWS_EC2_METADATA_SERVICE_ENDPOINT, GCE_METADATA_HOST)."""
import json
import os
import sys
import urllib.error
import urllib.request


def boto3_imds_credentials(args):
    """boto3's credential chain on an EC2-like host: IMDSv2 at AWS_EC2_METADATA_SERVICE_ENDPOINT."""
    import boto3
    s = boto3.Session(region_name="us-east-1")
    c = s.get_credentials()
    if c is None:
        return {"credentials": None}
    f = c.get_frozen_credentials()
    return {"method": c.method, "access_key_id": f.access_key, "secret_access_key": f.secret_key, "token": f.token}


def gauth_metadata_id_token(args):
    """google-auth's compute_engine.IDTokenCredentials through the metadata identity endpoint."""
    import google.auth.transport.requests
    from google.auth import compute_engine
    req = google.auth.transport.requests.Request()
    creds = compute_engine.IDTokenCredentials(req, args["audience"], use_metadata_identity_endpoint=True)
    creds.refresh(req)
    return {"token": creds.token}


def _http(method, url, headers):
    r = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def raw_imds(args):
    """IMDSv2 by hand: PUT a token, list the role, GET its credentials."""
    base = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
    st, tok = _http("PUT", f"{base}/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    if st != 200:
        return {"status": st, "body": tok}
    h = {"X-aws-ec2-metadata-token": tok}
    st, role = _http("GET", f"{base}/latest/meta-data/iam/security-credentials/", h)
    if st != 200:
        return {"status": st, "body": role}
    st, body = _http("GET", f"{base}/latest/meta-data/iam/security-credentials/{role.strip()}", h)
    return {"status": st, "body": body}


def raw_gce_identity(args):
    """The metadata identity endpoint by hand."""
    host = os.environ["GCE_METADATA_HOST"]
    url = f"http://{host}/computeMetadata/v1/instance/service-accounts/default/identity?audience={args['audience']}"
    st, body = _http("GET", url, {"Metadata-Flavor": "Google"})
    return {"status": st, "body": body}


ACTIONS = {f.__name__: f for f in [boto3_imds_credentials, gauth_metadata_id_token, raw_imds, raw_gce_identity]}

if __name__ == "__main__":
    print(json.dumps(ACTIONS[sys.argv[1]](json.loads(sys.argv[2]))))
