"""stage_weights on the sandbox: the Job copies once, a rerun does nothing, the stack serves the copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blocks.errors import InvalidRequest
from blocks.render_rayservice import serve_config
from blocks.spec import StackSpec
from tasks.weights import render_staging_job, staging_job_name

pytestmark = pytest.mark.usefixtures("prefect_server")

BUCKET = "gs://team-weights/deepseek-ai/DeepSeek-R1"


def _staged_stack(stack_file: str, folder: Path, **serving) -> str:
    data = yaml.safe_load(Path(stack_file).read_text(encoding="utf-8"))
    data["serving"].update(model_source=BUCKET, staged_from="deepseek-ai/DeepSeek-R1", **serving)
    path = folder / "staged.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def test_staging_copies_once_then_finds_the_job_and_the_stack_serves_the_bucket_copy(sandbox_stack, tmp_path):
    from flows.spin_up import serve_llm
    from flows.stack_ref import StackRef
    from flows.stage_weights import stage_weights

    sandbox, stack = sandbox_stack
    staged = StackRef(file=_staged_stack(stack.file, tmp_path))

    first = stage_weights(stack=staged)
    second = stage_weights(stack=staged)
    summary = serve_llm(stack=staged)

    assert first["action"] == "created" and first["detail"] == "copy complete"
    assert second == {**first, "action": "already complete", "detail": "nothing to do"}
    assert "red, yellow, blue, green" in summary["answer"]
    jobs = [r for c in sandbox.hooks.all() for r in c.requests()
            if r["method"] in ("POST", "PATCH") and "/jobs" in r["path"]]
    assert len(jobs) == 1, jobs                      # one write: the rerun created nothing


def test_a_stack_streams_the_bucket_copy_into_the_gpus_and_answers(sandbox_stack, tmp_path):
    from flows.spin_up import serve_llm
    from flows.stack_ref import StackRef
    from flows.stage_weights import stage_weights

    sandbox, stack = sandbox_stack
    streamed = StackRef(file=_staged_stack(stack.file, tmp_path, stream_weights=True))
    stage_weights(stack=streamed)
    summary = serve_llm(stack=streamed)

    assert "red, yellow, blue, green" in summary["answer"]
    [cluster] = sandbox.hooks.all()
    service = cluster.ctx.store.get(("ray.io", "rayservices"), "default", "deepseek-r1")
    engine = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]["llm_configs"][0]
    assert engine["engine_kwargs"]["load_format"] == "runai_streamer"
    assert engine["model_loading_config"]["model_source"] == {"bucket_uri": BUCKET}


def test_the_staging_job_names_both_ends_and_refuses_a_stack_without_a_bucket():
    spec = StackSpec.parse({"name": "s", "cluster": {"project": "my-project"},
                            "serving": {"model_source": BUCKET, "staged_from": "deepseek-ai/DeepSeek-R1"}})
    job = render_staging_job(spec)
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"HF_REPO": "deepseek-ai/DeepSeek-R1", "DEST": BUCKET, "MARKER": "_STAGED"}
    assert job["metadata"]["name"] == staging_job_name(spec)      # stable: a rerun finds the same Job
    llm = serve_config(spec)["applications"][0]["args"]["llm_configs"][0]
    assert llm["model_loading_config"]["model_source"] == {"bucket_uri": BUCKET}   # Ray's mirror-config form
    with pytest.raises(InvalidRequest, match="serving.model_source = gs://BUCKET/PATH"):
        render_staging_job(StackSpec.parse({"name": "s", "cluster": {"project": "my-project"}}))
