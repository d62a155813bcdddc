"""Prefect Blocks: the stack saves to and loads from a Prefect API with nested credentials and secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.errors import SpecError
from blocks.spec import StackSpec

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_unit_test_token_value_42"


@pytest.fixture(scope="module")
def prefect_harness(prefect_server):
    """The session's real Prefect server (tests/conftest.py); yields its API URL."""
    yield prefect_server["PREFECT_API_URL"]


def service_account_info() -> dict:
    """A syntactically real service-account key (GcpCredentials parses the PEM when it is built)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": "my-gcp-project", "private_key": pem,
            "client_email": "flows@my-gcp-project.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token"}


def test_block_saves_and_loads_with_nested_credentials_and_secret(prefect_harness):
    from prefect.blocks.system import Secret
    from prefect_gcp import GcpCredentials

    from blocks import ServingStackBlock

    creds = GcpCredentials(service_account_info=service_account_info())
    creds.save("unit-gcp", overwrite=True)
    secret = Secret(value=TOKEN)
    secret.save("unit-hf-token", overwrite=True)
    spec = StackSpec.from_yaml(ROOT / "examples" / "deepseek-r1.yaml").updated(
        {"gpu_pool": {"capacity_modes": ["reservation", "on-demand"], "reservation_name": "h100-res"}})
    ServingStackBlock(spec=spec, gcp_credentials=creds, hf_token=secret).save("unit-stack", overwrite=True)

    loaded = ServingStackBlock.load("unit-stack")
    assert loaded.spec == spec
    assert isinstance(loaded.spec, StackSpec)
    assert loaded.hf_token_value() == TOKEN
    assert loaded.gcp_credentials.project == "my-gcp-project"
    assert loaded.gcp_credentials.get_credentials_from_service_account().service_account_email == (
        "flows@my-gcp-project.iam.gserviceaccount.com")


def test_saved_block_document_does_not_show_the_token(prefect_harness):
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client

    from blocks import ServingStackBlock

    block = ServingStackBlock(spec=StackSpec(cluster={"project": "my-gcp-project"}), hf_token=Secret(value=TOKEN))
    block.save("unit-stack-inline", overwrite=True)
    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name("unit-stack-inline", "gke-llm-serving-stack",
                                                      include_secrets=False)
    # the schema marks the nested Secret's value as secret, so the API obfuscates it
    assert "hf_token.value" in ServingStackBlock.model_json_schema()["secret_fields"]
    assert document.data["hf_token"]["value"] == "********"
    assert TOKEN not in json.dumps(document.data, default=str)


def test_block_without_credentials_or_token_round_trips(prefect_harness):
    from blocks import ServingStackBlock

    spec = StackSpec.from_yaml(ROOT / "examples" / "sandbox.yaml")
    ServingStackBlock(spec=spec).save("unit-sandbox", overwrite=True)
    loaded = ServingStackBlock.load("unit-sandbox")
    assert loaded.spec == spec and loaded.gcp_credentials is None and loaded.hf_token_value() is None


def test_block_from_yaml_rejects_an_invalid_stack(tmp_path):
    from blocks import ServingStackBlock

    path = tmp_path / "bad.yaml"
    path.write_text("cluster: {project: my-gcp-project}\nserving: {tensor_parallel_size: 3}\n")
    with pytest.raises(SpecError, match="serving.tensor_parallel_size x serving.pipeline_parallel_size"):
        ServingStackBlock.from_yaml(path)


def test_prefect_block_register_finds_the_stack_block(prefect_harness):
    env = dict(os.environ, PREFECT_API_URL=prefect_harness, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ServingStackBlock" in result.stdout or "1 block" in result.stdout, result.stdout
