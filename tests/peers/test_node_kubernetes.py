"""@kubernetes/client-node (the official JavaScript client) against the emulated Kubernetes API
server: a pod found by `status.podIP`, a watch resumed from the list's resourceVersion, a
TokenRequest bound to the pod — the token then accepted by the emulated AWS STS through the AWS
SDK for JavaScript's web-identity provider — and the API server's 422 for a token shorter than
ten minutes.
"""

from __future__ import annotations

from conftest import assumed_role_arn, web_identity_env
from nodepeers import claims_of, node_client

NODE_TOKEN = "emulator-kubernetes-token"


def test_node_client_lists_watches_and_requests_a_bound_token(sandbox, emulator):
    out = node_client(sandbox, "kubernetes", {
        "url": emulator["IDBRIDGE_EMULATOR_KUBERNETES_URL"], "token": NODE_TOKEN, "pod_ip": "10.88.0.10",
        "new_pod": "node-client-0", "new_pod_ip": "10.88.9.1", "audiences": ["sts.amazonaws.com"],
    }, env=sandbox.env())
    assert "error" not in out, out
    assert out["pods"] == [{"name": "my-app-0", "namespace": "default", "service_account": "my-app"}], out
    assert out["put_status"] == 201, out
    assert out["events"] == [{"type": "ADDED", "name": "node-client-0"}], out
    claims = claims_of(out["token"])
    assert claims["sub"] == "system:serviceaccount:default:my-app", claims
    assert claims["kubernetes.io"]["pod"] == {"name": "my-app-0", "uid": out["pod_uid"]}, claims
    assert out["short"]["status"] == 422, out
    assert out["short"]["body"]["reason"] == "Invalid", out

    # The bound token as a projected token file for the AWS SDK's web-identity provider.
    env = web_identity_env(sandbox, emulator, out["token"], "k8s-workload", "node-client")
    ident = node_client(sandbox, "aws_caller_identity", {"provider": "web_identity"}, env=env)
    assert ident.get("Arn") == assumed_role_arn("k8s-workload", "node-client"), ident
