"""What the spin-up benchmark computes: the profile's critical path, bills, request rates, the table.

Pure functions over the sandbox profile, its meter report and request logs, so they are unit-tested
without a sandbox (tests/unit/test_bench_spinup.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The guide's answer (424 completion tokens in its sample output) is what every variant waits for last.
GUIDE_COMPLETION_TOKENS = 424


@dataclass
class Variant:
    """One measured spin-up: simulated seconds from start to a validated answer, and what it cost."""
    name: str
    ok: bool = False
    seconds: float = 0.0
    gpu_node_s: float = 0.0
    critical_path_s: float = 0.0
    api_requests_per_min: float = 0.0
    phases: list[tuple[str, float, float]] = field(default_factory=list)   # (name, start, end) from 0
    start_lag_s: float = 0.0      # from the call to the flow's first step (Prefect run start-up)
    note: str = ""
    # Real time in the one benchmark process during the run (wall seconds; x time scale = simulated):
    cpu_s: float = 0.0            # process CPU time (every thread: flow, Prefect client, the sandbox)
    gc_s: float = 0.0             # of which Python's garbage collector held the interpreter
    # Simulated seconds from the flow's first step at which the sandbox saw each milestone (MILESTONES).
    milestones: dict[str, float] = field(default_factory=dict)
    chain: list[tuple[str, float]] = field(default_factory=list)   # the critical path's parts (modelled)

    @property
    def overhead_pct(self) -> float:
        return 100.0 * (self.seconds - self.critical_path_s) / self.critical_path_s if self.critical_path_s else 0.0


def critical_path_parts(profile: dict[str, Any], *, size_gb: float, warm: bool, staged: bool,
                        prefetch: bool = False, streamed: bool = False) -> list[tuple[str, float]]:
    """The best possible time to a validated answer with the profile's durations, as the segments
    between the milestones the benchmark observes (simulated s each; see `LEDGER`).

    The chain nothing can overlap: cluster create (cold only; the GPU pool cannot be requested
    before it is RUNNING), GPU nodes registered and their driver installed, the worker image mounted
    (image streaming) and its init step, the weight download (Hugging Face or the bucket), the load
    into GPU memory and warm-up, then the validation answer. Everything else the sandbox models
    (operator, RayService, head pod and Ray start, Serve app build, ingress, KubeRay status passes,
    pod scheduling) happens while the GPU nodes boot, or is event-driven and takes no modelled time
    on this chain (checked against sandbox event traces: docs/performance.md).

    With `prefetch` (a Hugging Face source and the prefetch DaemonSet) the download starts when a GPU
    node registers, once the prefetch pod's image is mounted, instead of after the driver; the worker,
    whose image that pod already brought, then waits only for what is left of it.

    With `streamed` (a bucket copy and `serving.stream_weights`) there is no download: the engine's
    load is one pass from the bucket into GPU memory at the streaming rate.
    """
    gke, kube = profile["gke"], profile["kube"]
    rate = kube["gcs_download_mb_per_s"] if staged else kube["weight_download_mb_per_s"]
    download_s = size_gb * 1000 / rate
    worker_start_s = kube["image_streaming_start_s"] + kube["init_container_s"]
    load_s = size_gb * 1000 / kube["weight_load_mb_per_s"]
    if streamed:
        to_weights_s, load_s = worker_start_s, size_gb * 1000 / kube["gcs_stream_mb_per_s"]
    elif prefetch:
        left_after_driver_s = kube["image_streaming_start_s"] + download_s - kube["gpu_driver_install_s"]
        to_weights_s = max(kube["init_container_s"], left_after_driver_s)
    else:
        to_weights_s = worker_start_s + download_s
    return [
        ("start -> GPU pool requested", 0.0 if warm else float(gke["cluster"]["create_s"])),
        ("pool requested -> GPUs allocatable",
         float(gke["node_pool"]["gpu"]["nodes_after_s"] + kube["gpu_driver_install_s"])),
        ("GPUs allocatable -> RayService Ready",
         to_weights_s + load_s + kube["engine_warmup_s"]),
        ("RayService Ready -> answer",
         kube["llm_time_to_first_token_s"] + GUIDE_COMPLETION_TOKENS / kube["llm_decode_tokens_per_s"]),
    ]


def critical_path_s(profile: dict[str, Any], *, size_gb: float, warm: bool, staged: bool,
                    prefetch: bool = False, streamed: bool = False) -> float:
    """The sum of `critical_path_parts` (simulated s)."""
    parts = critical_path_parts(profile, size_gb=size_gb, warm=warm, staged=staged, prefetch=prefetch,
                                streamed=streamed)
    return float(sum(s for _, s in parts))


# Milestones the benchmark records from the sandbox, in chain order; a segment of the ledger runs from
# one to the next ("start" is the flow's first step, "answer" the validated answer).
MILESTONES = ("pool_requested", "gpus_allocatable", "ray_service_ready")


def ledger(v: Variant) -> list[tuple[str, float, float | None]]:
    """(segment, modelled s, measured s or None) for each part of `v`'s critical path: where its
    overhead sits. Measured = between the milestones the sandbox saw (`v.milestones`). Pure."""
    points = [0.0] + [v.milestones.get(m) for m in MILESTONES] + [v.seconds]
    rows = []
    for i, (name, modelled) in enumerate(v.chain):
        a, b = points[i], points[i + 1]
        rows.append((name, modelled, None if a is None or b is None else b - a))
    return rows


def ledger_table(variants: list[Variant]) -> str:
    """Per variant: each critical-path segment, modelled against measured, and the difference."""
    rows = [f"{'where the time goes (simulated s)':<46} {'modelled':>9} {'measured':>9} {'extra':>7}"]
    for v in variants:
        if not v.chain or not v.ok:
            continue
        rows.append(f"{v.name}:")
        for name, modelled, measured in ledger(v):
            got = "-" if measured is None else f"{measured:.0f}"
            extra = "-" if measured is None else f"{measured - modelled:+.0f}"
            rows.append(f"  {name:<44} {modelled:>9.0f} {got:>9} {extra:>7}")
    return "\n".join(rows)


def pool_gpu_node_s(meter_report: dict[str, Any], cluster: str, pool: str) -> float:
    """GPU node-seconds billed so far for `cluster`/`pool` (every VM it ever had)."""
    return sum(p["gpu_node_seconds"] for p in meter_report["pools"]
               if p["cluster"].rsplit("/", 1)[-1] == cluster and p["pool"] == pool)


def requests_per_min(times_s: list[float], start_s: float, end_s: float) -> float:
    """Requests per simulated minute among `times_s` that fall in [start_s, end_s]."""
    if end_s <= start_s:
        return 0.0
    return sum(1 for t in times_s if start_s <= t <= end_s) / ((end_s - start_s) / 60)


def ratio(value: float, base: float) -> float:
    return value / base if base else float("nan")


def table(variants: list[Variant]) -> str:
    """The printed table: one row per variant."""
    head = (f"{'variant':<22} {'ok':<3} {'minutes':>8} {'GPU node-min':>13} {'crit.path min':>14} "
            f"{'overhead':>9} {'API req/min':>12} {'start lag min':>14} {'CPU s':>6} {'GC s':>5}")
    rows = [head, "-" * len(head)]
    for v in variants:
        rows.append(f"{v.name:<22} {'yes' if v.ok else 'NO':<3} {v.seconds / 60:>8.1f} {v.gpu_node_s / 60:>13.1f} "
                    f"{v.critical_path_s / 60:>14.1f} {v.overhead_pct:>8.1f}% {v.api_requests_per_min:>12.2f} "
                    f"{v.start_lag_s / 60:>14.1f} {v.cpu_s:>6.1f} {v.gc_s:>5.1f}")
    return "\n".join(rows)


def summary_line(by_name: dict[str, Variant], *, fatal_to_teardown_s: float | None) -> str:
    """The benchmark's last line: ratios to the baseline and the headline figures."""
    base = by_name["guide (baseline)"]
    cold, warm = by_name["ours cold"], by_name["ours warm"]
    cold_staged, warm_staged = by_name["ours cold staged"], by_name["ours warm staged"]
    ours = [v for name, v in by_name.items() if name.startswith("ours")]
    overhead = max(v.overhead_pct for v in ours)
    waiting_rate = max(v.api_requests_per_min for v in ours)
    fatal = "nan" if fatal_to_teardown_s is None else f"{fatal_to_teardown_s:.0f}"
    return (f"cold_ratio={ratio(cold.seconds, base.seconds):.2f} warm_ratio={ratio(warm.seconds, base.seconds):.2f} "
            f"cold_staged_ratio={ratio(cold_staged.seconds, base.seconds):.2f} "
            f"warm_staged_ratio={ratio(warm_staged.seconds, base.seconds):.2f} "
            f"gpu_node_minutes_ratio={ratio(cold_staged.gpu_node_s, base.gpu_node_s):.2f} "
            f"overhead_pct={overhead:.1f} fatal_to_teardown_s={fatal} api_requests_per_min={waiting_rate:.2f}")


def streamed_line(by_name: dict[str, Variant]) -> str:
    """The staged variants with `serving.stream_weights`, as ratios to the same baseline (printed
    before the last line, which keeps the issue's form: its staged figures download the copy)."""
    base = by_name["guide (baseline)"]
    cold, warm = by_name["ours cold streamed"], by_name["ours warm streamed"]
    return (f"cold_streamed_ratio={ratio(cold.seconds, base.seconds):.2f} "
            f"warm_streamed_ratio={ratio(warm.seconds, base.seconds):.2f} "
            f"streamed_gpu_node_minutes_ratio={ratio(cold.gpu_node_s, base.gpu_node_s):.2f}")
