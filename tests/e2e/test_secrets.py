"""Secrets stay secret: a GCP service-account key and an HF token, configured through a saved stack
Block, appear nowhere after a full lifecycle and failures, except in the Kubernetes Secret itself.

The key is a real RSA key (google-auth parses and signs with it) whose `token_uri` is a tiny local
OAuth token endpoint: the flows take the same path as against Google (JWT grant, bearer tokens for
GKE and for the cluster's Kubernetes API), and the sandbox ignores the token.
"""

from __future__ import annotations

import base64
import json
import time
from itertools import count

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect_gcp import GcpCredentials
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from blocks.prefect_blocks import ServingStackBlock
from blocks.render_rayservice import hf_token_secret_manifest, ray_service_manifest
from blocks.spec import StackSpec
from flows.demo import demo_stack_file, still_billing
from flows.spin_down import teardown_llm
from flows.spin_up import serve_llm
from flows.stack_ref import StackRef
from sandbox.serving import start_server
from tasks.clock import TIME_SCALE_ENV, ScaledClock

pytestmark = pytest.mark.usefixtures("prefect_server")
TIME_SCALE = 100.0
HF_TOKEN = "hf_bench" + "Zq8TtW3xKcVb7LmN2pRsYu4Hd9"


@pytest.fixture
def fast_sandbox(tmp_path, monkeypatch):
    """A sandbox on the fast profile at a moderate time scale (headroom on a busy machine), the flows'
    clock agreeing with it, and a stack file aimed at it."""
    from sandbox.app import Sandbox

    with Sandbox(time_scale=TIME_SCALE, kubernetes=True, profile="fast") as sandbox:
        monkeypatch.setenv(TIME_SCALE_ENV, ScaledClock(TIME_SCALE, anchor_epoch_s=sandbox.clock.anchor_epoch_s).to_env())
        yield sandbox, StackRef(file=str(demo_stack_file(sandbox.gke_url, tmp_path)))


@pytest.fixture
def token_endpoint():
    """A local OAuth2 token endpoint: answers every JWT-bearer grant with a short-lived access token."""
    grants = count(1)
    seen: list[bytes] = []

    async def token(request: Request) -> JSONResponse:
        seen.append(await request.body())
        return JSONResponse({"access_token": f"ya29.sandbox-{next(grants)}", "expires_in": 3600,
                             "token_type": "Bearer"})

    server = start_server(Starlette(routes=[Route("/token", token, methods=["POST"])]), name="oauth-token")
    try:
        yield f"{server.base_url}/token", seen
    finally:
        server.stop()


def _service_account(token_uri: str) -> tuple[dict, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return ({"type": "service_account", "project_id": "sandbox-project", "private_key_id": "bench-key-1",
             "private_key": pem, "client_email": "flows@sandbox-project.iam.gserviceaccount.com",
             "client_id": "1234567890", "token_uri": token_uri}, pem)


def _needles(pem: str) -> dict[str, str]:
    """What must not appear: the token, the key, each in clear and base64, and fragments of the key body."""
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    needles = {"hf token": HF_TOKEN, "hf token base64": base64.b64encode(HF_TOKEN.encode()).decode(),
               "private key base64": base64.b64encode(pem.encode()).decode()[:60]}
    needles.update({f"private key line {i}": body[i] for i in (0, len(body) // 2, len(body) - 2)})
    return needles


def _leaks(where: str, text: str, needles: dict[str, str]) -> list[str]:
    return [f"{name} in {where}" for name, value in needles.items() if value in text]


def _all_logs(client) -> list[str]:
    logs, offset = [], 0
    while batch := client.read_logs(offset=offset, limit=200):
        logs += [log.message for log in batch]
        offset += len(batch)
    return logs


def _prefect_records() -> dict[str, str]:
    """Logs, artifacts, flow and task runs (parameters, states, messages) and events, as text."""
    with get_client(sync_client=True) as client:
        logs, seen = _all_logs(client), -1
        while len(logs) != seen:              # logs reach the API asynchronously: read until it settles
            seen = len(logs)
            time.sleep(2)
            logs = _all_logs(client)
        artifacts = [a.model_dump_json() for a in client.read_artifacts()]
        flow_runs = [r.model_dump_json() for r in client.read_flow_runs()]
        task_runs = [r.model_dump_json() for r in client.read_task_runs()]
        events = client.request("POST", "/events/filter", json={"limit": 50}).text
    return {"prefect logs": "\n".join(logs), "artifacts": "\n".join(artifacts),
            "flow runs (parameters, states)": "\n".join(flow_runs), "task runs": "\n".join(task_runs),
            "events": events}


def _sandbox_records(sandbox) -> tuple[dict[str, str], str]:
    """The GKE request log and every Kubernetes object and request, apart from Secrets (returned apart)."""
    records = {"GKE request log": json.dumps(sandbox.requests())}
    secrets = []
    for kube in sandbox.hooks.all():
        store = kube.ctx.store
        for resource in store.resources():
            objects = json.dumps(store.list(resource)[0])
            if resource == ("", "secrets"):
                secrets.append(objects)
            else:
                records[f"Kubernetes {resource[1]} of {kube.ctx.cluster.name}"] = objects
        records[f"Kubernetes request log of {kube.ctx.cluster.name}"] = json.dumps(kube.requests())
    return records, "\n".join(secrets)


def test_neither_the_service_account_key_nor_the_hf_token_leaks_anywhere(fast_sandbox, token_endpoint):
    sandbox, file_ref = fast_sandbox
    token_uri, grants = token_endpoint
    info, pem = _service_account(token_uri)
    needles = _needles(pem)
    spec = StackSpec.from_yaml(file_ref.file)
    ServingStackBlock(spec=spec, gcp_credentials=GcpCredentials(service_account_info=info),
                      hf_token=Secret(value=HF_TOKEN)).save("secret-stack", overwrite=True)
    stack = StackRef(block_name="secret-stack")

    results, errors = [], []
    up = serve_llm(stack=stack, return_state=True)
    assert up.is_completed(), up.message
    results.append(up.result())
    results.append(teardown_llm(stack=stack, reason="secret scan"))
    # A failure inside the cluster (after the token Secret is written) and one from GKE.
    for fault in ({"kind": "image_pull_backoff", "pod_prefix": "deepseek-r1"},
                  {"kind": "quota", "metric": "NVIDIA_H100_GPUS"}):
        sandbox.inject(fault)
        failed = serve_llm(stack=stack, return_state=True)
        sandbox.clear_faults()
        assert failed.is_failed(), fault
        error = failed.result(raise_on_failure=False)
        errors += [failed.message or "", str(error), repr(error)]
    assert still_billing(sandbox.inventory()) == []
    assert grants, "the flows never asked the token endpoint: the key was not used"

    records = {**_prefect_records(), "flow results": repr(results), "exception messages": "\n".join(errors),
               "rendered RayService manifest": json.dumps(ray_service_manifest(spec, hf_token=True))}
    sandbox_records, secret_objects = _sandbox_records(sandbox)
    records.update(sandbox_records)
    found = [leak for where, text in records.items() for leak in _leaks(where, text, needles)]
    assert found == []
    # The scan can see a leak: the token is where it belongs, in the Secret (base64, as Kubernetes keeps it).
    assert _leaks("Secret", secret_objects, needles) == ["hf token base64 in Secret"]
    assert needles["hf token base64"] in json.dumps(hf_token_secret_manifest(spec, HF_TOKEN))
