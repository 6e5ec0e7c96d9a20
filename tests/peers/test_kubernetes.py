"""The official Kubernetes Python client against the emulated Kubernetes API server of
`idbridge emulate` (built-in world: pods my-app-0 and web-0 on node-1, the node agent's user
idbridge-node):

* CoreV1Api.list_pod_for_all_namespaces by `status.podIP` and `spec.nodeName` field selectors
  — how a node agent finds the pod behind a source IP;
* watch.Watch().stream from a resourceVersion (changes replayed) and live, with a pod added
  through the emulator's control path;
* create_namespaced_service_account_token (TokenRequest) bound to a pod, then the token
  verified with PyJWT against the issuer's keys found through its OIDC discovery, and accepted
  by the emulated AWS STS (boto3 assume_role_with_web_identity) for role k8s-workload — and
  refused for a pod whose service account the role does not trust;
* the API server's errors as the client raises them: 401, 403 (RBAC), 404, 422, 400.

The client runs in a fresh interpreter with a clean environment (no kubeconfig); the script
below prints one JSON object per action.
"""

from __future__ import annotations

import json

import jwt
import pytest

from conftest import ACCOUNT, HTTP, PYTHON, assumed_role_arn, describe

NODE_TOKEN = "emulator-kubernetes-token"
ISSUER = "https://kubernetes.idbridge.test"

PEER_SCRIPT = r'''
import json, sys, threading, time, urllib.request

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

ACTION, ARGS = sys.argv[1], json.loads(sys.argv[2])


def api(token):
    c = client.Configuration()
    c.host = ARGS["url"]
    c.api_key = {"BearerToken": token}
    c.api_key_prefix = {"BearerToken": "Bearer"}
    return client.CoreV1Api(client.ApiClient(c))


def pod_view(p):
    return {
        "name": p.metadata.name, "namespace": p.metadata.namespace, "uid": p.metadata.uid,
        "service_account": p.spec.service_account_name, "node": p.spec.node_name,
        "pod_ip": p.status.pod_ip, "phase": p.status.phase, "labels": p.metadata.labels,
        "annotations": p.metadata.annotations, "resource_version": p.metadata.resource_version,
    }


def put_pod(ns, name, entry):
    req = urllib.request.Request(f"{ARGS['url']}/_emulator/kubernetes/namespaces/{ns}/pods/{name}",
                                 data=json.dumps(entry).encode(), method="PUT",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def error(e):
    body = json.loads(e.body) if e.body else None
    return {"status": e.status, "body": body}


out = {}
v1 = api(ARGS.get("token", ""))
if ACTION == "list":
    pods = v1.list_pod_for_all_namespaces(field_selector=ARGS["selector"], _request_timeout=10)
    out = {"pods": [pod_view(p) for p in pods.items], "resource_version": pods.metadata.resource_version}
elif ACTION == "watch":
    listed = v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-7", _request_timeout=10)
    rv = listed.metadata.resource_version
    # Before the watch: replayed from rv. During it: delivered live.
    put_pod("default", "batch-0", {"service_account": "my-app", "pod_ip": "10.88.7.1", "node": "node-7"})
    put_pod("default", "batch-0", {"service_account": "my-app", "pod_ip": "10.88.7.1", "node": "node-8"})
    live = threading.Timer(0.5, put_pod, ("default", "batch-1", {"pod_ip": "10.88.7.2", "node": "node-7"}))
    live.start()
    events = []
    w = watch.Watch()
    for e in w.stream(v1.list_pod_for_all_namespaces, field_selector="spec.nodeName=node-7",
                      resource_version=rv, timeout_seconds=20, _request_timeout=30):
        events.append({"type": e["type"], "name": e["object"].metadata.name,
                       "kind": type(e["object"]).__name__,
                       "resource_version": e["object"].metadata.resource_version})
        if len(events) == 3:
            w.stop()
    live.join()
    out = {"listed_rv": rv, "events": events}
elif ACTION == "token":
    pod = v1.read_namespaced_pod(ARGS["pod"], ARGS["namespace"], _request_timeout=10)
    body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
        audiences=ARGS["audiences"], expiration_seconds=ARGS.get("expiration"),
        bound_object_ref=client.V1BoundObjectReference(kind="Pod", api_version="v1",
                                                       name=pod.metadata.name, uid=pod.metadata.uid)))
    try:
        tr = v1.create_namespaced_service_account_token(ARGS["service_account"], ARGS["namespace"], body,
                                                        _request_timeout=10)
        out = {"token": tr.status.token, "expires": tr.status.expiration_timestamp.isoformat(),
               "audiences": tr.spec.audiences, "expiration_seconds": tr.spec.expiration_seconds,
               "pod_uid": pod.metadata.uid, "kind": tr.kind}
    except ApiException as e:
        out = {"error": error(e)}
elif ACTION == "call":
    try:
        if ARGS["what"] == "list_pods":
            v1.list_pod_for_all_namespaces(field_selector=ARGS.get("selector"), _request_timeout=10)
        elif ARGS["what"] == "read_pod":
            v1.read_namespaced_pod(ARGS["name"], "default", _request_timeout=10)
        out = {"ok": True}
    except ApiException as e:
        out = {"error": error(e)}
print(json.dumps(out))
'''


def peer(sandbox, emulator: dict, action: str, **args) -> dict:
    args["url"] = emulator["IDBRIDGE_EMULATOR_KUBERNETES_URL"]
    r = sandbox.run([str(PYTHON), "-c", PEER_SCRIPT, action, json.dumps(args)], env=sandbox.env())
    assert r.returncode == 0, describe(r)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_client_finds_a_pod_by_its_ip_and_node(sandbox, emulator):
    out = peer(sandbox, emulator, "list", token=NODE_TOKEN, selector="status.podIP=10.88.0.10")
    assert [p["name"] for p in out["pods"]] == ["my-app-0"], out
    pod = out["pods"][0]
    assert pod["namespace"] == "default" and pod["service_account"] == "my-app", pod
    assert pod["node"] == "node-1" and pod["phase"] == "Running", pod
    assert pod["labels"] == {"app": "my-app"} and pod["annotations"] == {"idbridge.dev/route": "k8s-to-aws"}, pod
    on_node = peer(sandbox, emulator, "list", token=NODE_TOKEN, selector="spec.nodeName=node-1,status.phase=Running")
    assert {"my-app-0", "web-0"} <= {p["name"] for p in on_node["pods"]}, on_node
    nobody = peer(sandbox, emulator, "list", token=NODE_TOKEN, selector="status.podIP=10.88.0.250")
    assert nobody["pods"] == [], nobody


def test_the_client_watches_pods_from_a_resource_version(sandbox, emulator):
    out = peer(sandbox, emulator, "watch", token=NODE_TOKEN)
    seen = [(e["type"], e["name"]) for e in out["events"]]
    # batch-0 added on node-7, then moved to node-8 (it leaves the selector: DELETED), then
    # batch-1 added while the watch is open.
    assert seen == [("ADDED", "batch-0"), ("DELETED", "batch-0"), ("ADDED", "batch-1")], out
    assert {e["kind"] for e in out["events"]} == {"V1Pod"}, out
    versions = [int(e["resource_version"]) for e in out["events"]]
    assert versions == sorted(versions) and versions[0] > int(out["listed_rv"]), out


def test_a_pod_bound_token_request_is_accepted_by_aws_sts(sandbox, emulator):
    out = peer(sandbox, emulator, "token", token=NODE_TOKEN, namespace="default", pod="my-app-0",
               service_account="my-app", audiences=["sts.amazonaws.com"])
    assert out.get("kind") == "TokenRequest", out
    assert out["audiences"] == ["sts.amazonaws.com"] and out["expiration_seconds"] == 3600, out
    token = out["token"]

    # The token as any OIDC relying party checks it: discovery, then the JWKS it names.
    base = emulator["IDBRIDGE_EMULATOR_KUBERNETES_URL"]
    disco = HTTP.get(f"{base}/.well-known/openid-configuration", timeout=10).json()
    assert disco["issuer"] == ISSUER, disco
    key = jwt.PyJWKClient(disco["jwks_uri"]).get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=disco["id_token_signing_alg_values_supported"],
                        audience="sts.amazonaws.com", issuer=ISSUER)
    assert claims["sub"] == "system:serviceaccount:default:my-app", claims
    k8s = claims["kubernetes.io"]
    assert k8s["namespace"] == "default" and k8s["serviceaccount"]["name"] == "my-app", claims
    assert k8s["pod"] == {"name": "my-app-0", "uid": out["pod_uid"]}, claims
    assert k8s["node"]["name"] == "node-1", claims
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"], claims

    # boto3: AssumeRoleWithWebIdentity with the bound token, then GetCallerIdentity.
    script = r'''
import json, sys
import boto3
from botocore.exceptions import ClientError
token, role = sys.argv[1], sys.argv[2]
sts = boto3.client("sts", region_name="us-east-1")
try:
    r = sts.assume_role_with_web_identity(RoleArn=role, RoleSessionName="my-app-0", WebIdentityToken=token)
except ClientError as e:
    print(json.dumps({"error": e.response["Error"]["Code"]}))
    sys.exit(0)
c = r["Credentials"]
me = boto3.client("sts", region_name="us-east-1", aws_access_key_id=c["AccessKeyId"],
                  aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"]).get_caller_identity()
print(json.dumps({"arn": me["Arn"], "provider": r["Provider"], "audience": r["Audience"]}))
'''
    env = sandbox.env({"AWS_ENDPOINT_URL_STS": emulator["AWS_ENDPOINT_URL_STS"]})
    role = f"arn:aws:iam::{ACCOUNT}:role/k8s-workload"
    r = sandbox.run([str(PYTHON), "-c", script, token, role], env=env)
    assert r.returncode == 0, describe(r)
    assumed = json.loads(r.stdout)
    assert assumed.get("arn") == assumed_role_arn("k8s-workload", "my-app-0"), assumed
    assert assumed["audience"] == "sts.amazonaws.com", assumed

    # web-0's service account is not the one the role trusts.
    web = peer(sandbox, emulator, "token", token=NODE_TOKEN, namespace="default", pod="web-0",
               service_account="web", audiences=["sts.amazonaws.com"])
    r = sandbox.run([str(PYTHON), "-c", script, web["token"], role], env=env)
    assert r.returncode == 0, describe(r)
    assert json.loads(r.stdout) == {"error": "AccessDenied"}, r.stdout


def test_the_api_servers_errors_reach_the_client(sandbox, emulator):
    short = peer(sandbox, emulator, "token", token=NODE_TOKEN, namespace="default", pod="my-app-0",
                 service_account="my-app", audiences=["sts.amazonaws.com"], expiration=60)
    err = short["error"]
    assert err["status"] == 422 and err["body"]["reason"] == "Invalid", short
    assert "may not specify a duration less than 10 minutes" in err["body"]["message"], short

    wrong_sa = peer(sandbox, emulator, "token", token=NODE_TOKEN, namespace="default", pod="my-app-0",
                    service_account="web", audiences=["sts.amazonaws.com"])
    assert wrong_sa["error"]["status"] == 400, wrong_sa
    assert "different serviceaccount name" in wrong_sa["error"]["body"]["message"], wrong_sa

    anonymous = peer(sandbox, emulator, "call", token="not-a-token", what="list_pods")
    assert anonymous["error"]["status"] == 401 and anonymous["error"]["body"]["kind"] == "Status", anonymous

    # A workload's own token authenticates but may not list pods.
    own = peer(sandbox, emulator, "token", token=NODE_TOKEN, namespace="default", pod="my-app-0",
               service_account="my-app", audiences=[ISSUER])
    forbidden = peer(sandbox, emulator, "call", token=own["token"], what="list_pods")
    assert forbidden["error"]["status"] == 403, forbidden
    assert forbidden["error"]["body"]["message"] == (
        'pods is forbidden: User "system:serviceaccount:default:my-app" cannot list resource "pods" '
        'in API group "" at the cluster scope'), forbidden

    missing = peer(sandbox, emulator, "call", token=NODE_TOKEN, what="read_pod", name="nope")
    assert missing["error"]["status"] == 404, missing
    assert missing["error"]["body"]["message"] == 'pods "nope" not found', missing

    bad_field = peer(sandbox, emulator, "call", token=NODE_TOKEN, what="list_pods", selector="spec.image=x")
    assert bad_field["error"]["status"] == 400, bad_field
    assert bad_field["error"]["body"]["message"] == "field label not supported: spec.image", bad_field
