"""The guide's RayService on the guide's cluster reaches the guide's status, in order, in simulated time."""

from __future__ import annotations

from tests.sandbox_kuberay.conftest import (
    RAYSERVICES,
    add_guide_nodes,
    condition,
    install_crds,
    install_operator,
    is_serving,
    sample_rayservice,
)


def test_sample_rayservice_reaches_the_guides_running_status(sim):
    install_crds(sim)
    install_operator(sim)
    add_guide_nodes(sim)
    sim.store.create(RAYSERVICES, sample_rayservice())
    rs = sim.wait_for(lambda: is_serving(sim.rayservice()) and sim.rayservice(), what="RayService serving",
                      timeout_s=30)
    app = rs["status"]["activeServiceStatus"]["applicationStatuses"]["llm_app"]
    assert app["status"] == "RUNNING"
    assert {k: v["status"] for k, v in app["serveDeploymentStatuses"].items()} == {
        "LLMServer:deepseek": "HEALTHY", "OpenAiIngress": "HEALTHY"}
    assert condition(rs, "Ready")["reason"] == "NonZeroServeEndpoints"
    print("elapsed", sim.ctx.clock.elapsed_s())
