"""The run summary a person reads in the Prefect UI: endpoint, answer, timeline and cost. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blocks.spec import StackSpec
from flows.timeline import Timeline


@dataclass(frozen=True)
class CostEstimate:
    gpu_node_hours: float
    usd: float
    price_per_node_hour_usd: float
    price_source: str


def estimate_cost(spec: StackSpec, gpu_billed_since_s: float | None, now_s: float) -> CostEstimate:
    """GPU node-hours since the pool's VMs were requested, times the stack's price (an upper bound:
    GCP bills from VM start, which comes a little after the request)."""
    hours = 0.0 if gpu_billed_since_s is None else max(0.0, now_s - gpu_billed_since_s) / 3600
    node_hours = hours * spec.gpu_pool.node_count
    price = spec.lifecycle.price_per_node_hour_usd
    return CostEstimate(node_hours, node_hours * price, price, spec.lifecycle.price_source)


# Warm mode (lifecycle.delete_cluster_on_teardown=False) keeps the control plane and the CPU node(s).
# GKE fee: $0.10 per cluster-hour (cloud.google.com/kubernetes-engine/pricing; the $74.40 monthly free
# credit covers one zonal cluster per billing account). e2-standard-16: $0.536/h on-demand list price in
# us-central1 (cloud.google.com/compute/vm-instance-pricing, E2; other regions differ by a few %).
GKE_FEE_PER_HOUR_USD = 0.10
CPU_NODE_PRICE_PER_HOUR_USD = {"e2-standard-16": 0.536}


def warm_cluster_line(spec: StackSpec) -> str:
    """What keeping the cluster between spin-ups costs per hour and per 16-hour night (markdown)."""
    if spec.lifecycle.delete_cluster_on_teardown:
        return "- **After spin-down**: the cluster is deleted (cold start next time, nothing billed)"
    node = CPU_NODE_PRICE_PER_HOUR_USD.get(spec.cluster.machine_type)
    if node is None:
        return (f"- **After spin-down**: the cluster stays (warm): ${GKE_FEE_PER_HOUR_USD:.2f}/h GKE fee plus "
                f"{spec.cluster.node_count} x {spec.cluster.machine_type} (price not listed here)")
    hourly = GKE_FEE_PER_HOUR_USD + node * spec.cluster.node_count
    return (f"- **After spin-down**: the cluster stays (warm, ~6 min faster next spin-up): ${hourly:.2f}/h "
            f"(${GKE_FEE_PER_HOUR_USD:.2f} GKE fee + {spec.cluster.node_count} x {spec.cluster.machine_type} at "
            f"${node:.3f}/h), ${hourly * 16:.2f} per 16-hour night; set lifecycle.delete_cluster_on_teardown "
            "to delete it instead")


def weights_line(spec: StackSpec, prefetch: dict[str, Any] | None) -> str:
    """How the weights reached the GPU nodes (markdown): the prefetch's record, or why there was none.
    `prefetch` is what `tasks.weights_prefetch.read_weights_prefetch` read at the end of the spin-up."""
    source = spec.serving.model_source
    if prefetch:
        return (f"- **Weights**: prefetched onto {prefetch['complete_on']} of {prefetch['gpu_nodes']} GPU nodes "
                "while their GPU driver installed; the Ray workers shared the copies")
    if source.startswith("gs://") and spec.serving.stream_weights:
        return ("- **Weights**: streamed from the staged copy in GCS straight into GPU memory (vLLM's Run:ai "
                "Model Streamer)")
    if source.startswith("gs://"):
        return ("- **Weights**: downloaded by the Ray workers from the staged copy in GCS, then loaded (set "
                "serving.stream_weights to do both in one pass, docs/going-live.md)")
    if not spec.serving.prefetch_weights:
        return ("- **Weights**: downloaded by the Ray workers after the GPU driver (set "
                "serving.prefetch_weights to start minutes sooner)")
    return "- **Weights**: downloaded by the Ray workers (no record of the prefetch DaemonSet)"


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def timeline_table(timeline: Timeline) -> str:
    rows = ["| phase | starts at | took | outcome |", "|---|---|---|---|"]
    rows += [f"| {r['phase']} | +{_fmt_s(r['start_s'])} | {_fmt_s(r['duration_s'])} | {r['outcome']} |"
             for r in timeline.as_rows()]
    return "\n".join(rows)


def spin_up_summary(spec: StackSpec, timeline: Timeline, *, endpoint: str, answer: str,
                    latency_s: float | None, tokens_per_s: float | None, cost: CostEstimate,
                    placement: str, prefetch: dict[str, Any] | None = None) -> str:
    """Markdown for the spin-up's summary artifact."""
    answer_tail = answer.split("</think>")[-1].strip()
    return "\n".join([
        f"# {spec.name}: serving `{spec.serving.model_id}` ({spec.serving.model_source})",
        "",
        f"- **Endpoint**: `{endpoint}`",
        f"- **GPU pool**: {spec.gpu_pool.node_count} x {spec.gpu_pool.machine_type} ({placement})",
        f"- **Ready after**: {_fmt_s(timeline.elapsed_s())}",
        f"- **Validation latency**: {_fmt_s(latency_s)}"
        + (f", {tokens_per_s:.1f} tokens/s" if tokens_per_s else ""),
        f"- **Estimated GPU cost so far**: ${cost.usd:,.2f} ({cost.gpu_node_hours:.2f} node-hours at "
        f"${cost.price_per_node_hour_usd:.2f}/node-hour; {cost.price_source})",
        weights_line(spec, prefetch),
        warm_cluster_line(spec),
        "",
        "## Answer",
        "",
        "> " + answer_tail.replace("\n", "\n> "),
        "",
        "## Timeline",
        "",
        timeline_table(timeline),
    ])
