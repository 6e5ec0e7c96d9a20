"""Pod identity (DaemonSet mode): one `idbridge serve` on the host side of a bridge, pods as network
namespaces with their own IPs, identified by source IP through the emulated Kubernetes API.

The built-in world's pods default/my-app-0 (10.88.0.10, service account my-app, annotation
idbridge.dev/route=k8s-to-aws) and default/web-0 (10.88.0.11, service account web) run on node-1;
the test adds default/batch-0 (10.88.0.12, service account default) through the emulator's control
API. Real clients run inside each namespace: boto3 (IMDSv2) in my-app-0, google-auth's metadata ID
token client in web-0; batch-0's service account has no route and gets each frontend's 403.

Needs root (network namespaces, veth, a bridge): fails, never skips, without it."""
import base64
import json
import os
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

from conftest import PYTHON, clean_env, free_port, parse_env_file, stop_process, tail

HERE = Path(__file__).resolve().parent
POD_CLIENTS = HERE / "pod_clients.py"
HOST_IP = "10.88.0.1"
PODS = {"my-app-0": "10.88.0.10", "web-0": "10.88.0.11", "batch-0": "10.88.0.12"}
AUDIENCE = "https://pods.idbridge.test"


def sh(*argv):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, f"{' '.join(map(str, argv))}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def cluster_net():
    """A bridge with HOST_IP and one namespace per pod, veth-attached; removed on every path."""
    assert os.geteuid() == 0, "test_serve_pods.py needs root (ip netns, veth, bridge); the CI test command runs as root"
    tag = uuid.uuid4().hex[:6]
    bridge, namespaces, links = f"idbr{tag}", {}, []
    try:
        sh("ip", "link", "add", bridge, "type", "bridge")
        links.append(bridge)
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", bridge)
        sh("ip", "link", "set", bridge, "up")
        for i, (pod, ip) in enumerate(PODS.items()):
            ns, host_end, pod_end = f"idbpod{tag}{i}", f"idbh{tag}{i}", f"idbp{tag}{i}"
            sh("ip", "netns", "add", ns)
            namespaces[pod] = ns
            sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", pod_end)
            links.append(host_end)
            sh("ip", "link", "set", host_end, "master", bridge)
            sh("ip", "link", "set", host_end, "up")
            sh("ip", "link", "set", pod_end, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", pod_end)
            sh("ip", "-n", ns, "link", "set", pod_end, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield namespaces
    finally:
        for ns in namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        for link in reversed(links):
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)


def put_pod(emulator, ns, name, entry):
    url = f"{emulator['IDBRIDGE_EMULATOR_KUBERNETES_URL']}/_emulator/kubernetes/namespaces/{ns}/pods/{name}"
    req = urllib.request.Request(url, data=json.dumps(entry).encode(), method="PUT",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


CONFIG = """
[[route]]
name = "k8s-to-aws"
source = {{ kind = "kubernetes-pod", audience = "sts.amazonaws.com" }}
exchange = [ {{ kind = "aws-sts", role_arn = "arn:aws:iam::111122223333:role/k8s-workload" }} ]

[[route]]
name = "pod-token"
source = {{ kind = "kubernetes-pod", audience = "{audience}" }}

[serve]
bind = "{host}"

[serve.kubernetes]
api_server = "{api}"
token_file = "{token_file}"
node = "node-1"

[[serve.pod]]
namespace = "default"
annotation = "k8s-to-aws"
route = "k8s-to-aws"

[[serve.pod]]
namespace = "default"
service_account = "web"
route = "pod-token"

[serve.aws_imds]
port = {imds}
route = "k8s-to-aws"

[serve.gce_metadata]
port = {gce}
identity_route = "pod-token"
service_account_email = "pods@pods-project.iam.gserviceaccount.com"
project_id = "pods-project"
numeric_project_id = "1"
"""


@pytest.fixture(scope="module")
def pod_daemon(idbridge_bin, emulator, cluster_net, tmp_path_factory):
    put_pod(emulator, "default", "batch-0", {"service_account": "default", "pod_ip": PODS["batch-0"], "node": "node-1"})
    d = tmp_path_factory.mktemp("serve-pods")
    token_file = d / "api-token"
    token_file.write_text("emulator-kubernetes-token\n")
    config = d / "serve.toml"
    config.write_text(CONFIG.format(audience=AUDIENCE, host=HOST_IP, api=emulator["IDBRIDGE_EMULATOR_KUBERNETES_URL"],
                                    token_file=token_file, imds=free_port(), gce=free_port()))
    env_file, log = d / "serve.env", d / "serve.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([str(idbridge_bin), "serve", "--config", str(config), "--env-file", str(env_file)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                env=clean_env(d / "home", emulator), cwd=d)
    try:
        deadline = time.monotonic() + 30
        while not env_file.exists():
            assert proc.poll() is None, f"idbridge serve exited with {proc.returncode}:\n{tail(log)}"
            assert time.monotonic() < deadline, f"idbridge serve did not start:\n{tail(log)}"
            time.sleep(0.05)
        yield {"env": parse_env_file(env_file.read_text()), "log": log, "netns": cluster_net}
    finally:
        stop_process(proc)
        subprocess.run(["curl", "-s", "-X", "DELETE",
                        f"{emulator['IDBRIDGE_EMULATOR_KUBERNETES_URL']}/_emulator/kubernetes/namespaces/default/pods/batch-0"],
                       capture_output=True, check=False)


def in_pod(daemon, pod, action, args=None):
    env = clean_env(Path(daemon["log"]).parent / f"home-{pod}", {
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": daemon["env"]["AWS_EC2_METADATA_SERVICE_ENDPOINT"],
        "GCE_METADATA_HOST": daemon["env"]["GCE_METADATA_HOST"],
        "GCE_METADATA_IP": daemon["env"]["GCE_METADATA_HOST"],
    }, imds=True)
    r = subprocess.run(["ip", "netns", "exec", daemon["netns"][pod], PYTHON, str(POD_CLIENTS), action,
                        json.dumps(args or {})], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout.strip(), f"{action} in {pod}: {r.returncode}\n{r.stdout}\n{r.stderr}\n{tail(daemon['log'])}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def claims(jwt):
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_the_daemon_listens_on_the_bridge_not_loopback(pod_daemon):
    assert pod_daemon["env"]["AWS_EC2_METADATA_SERVICE_ENDPOINT"].startswith(f"http://{HOST_IP}:")
    assert pod_daemon["env"]["GCE_METADATA_HOST"].startswith(f"{HOST_IP}:")


def test_two_pods_get_their_own_service_accounts_credentials(pod_daemon, emulator):
    aws = in_pod(pod_daemon, "my-app-0", "boto3_imds_credentials")
    assert aws.get("method") == "iam-role", f"{aws}\n{tail(pod_daemon['log'])}"
    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=emulator["AWS_ENDPOINT_URL_STS"],
                       aws_access_key_id=aws["access_key_id"], aws_secret_access_key=aws["secret_access_key"],
                       aws_session_token=aws["token"])
    arn = sts.get_caller_identity()["Arn"]
    assert ":assumed-role/k8s-workload/" in arn, arn

    web = in_pod(pod_daemon, "web-0", "gauth_metadata_id_token", {"audience": AUDIENCE})
    c = claims(web["token"])
    assert c["sub"] == "system:serviceaccount:default:web", c
    assert c["aud"] in (AUDIENCE, [AUDIENCE]), c
    assert c["kubernetes.io"]["pod"]["name"] == "web-0", c

    # The same frontend asked by my-app-0 hands out my-app's own token (its route), never web's.
    mine = in_pod(pod_daemon, "my-app-0", "raw_gce_identity", {"audience": AUDIENCE})
    assert mine["status"] != 200 or claims(mine["body"])["sub"] != c["sub"], mine


def test_a_pod_whose_service_account_has_no_route_gets_403_everywhere(pod_daemon):
    imds = in_pod(pod_daemon, "batch-0", "raw_imds")
    assert imds["status"] == 403, imds
    assert json.loads(imds["body"])["Code"] == "AccessDenied", imds
    assert "pod default/batch-0" in json.loads(imds["body"])["Message"], imds
    gce = in_pod(pod_daemon, "batch-0", "raw_gce_identity", {"audience": AUDIENCE})
    assert gce["status"] == 403, gce
    aws = in_pod(pod_daemon, "batch-0", "boto3_imds_credentials")
    assert aws.get("credentials") is None, aws
