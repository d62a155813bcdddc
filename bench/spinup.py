"""`python -m bench.spinup`: our spin-up against the guide's sequential procedure, in one sandbox run.

One in-process sandbox (realistic profile, `--time-scale`, default 90x), one local Prefect server.
Variants, each on its own cluster so they can run side by side on the one simulated clock:

1. `guide (baseline)`: `bench.guide_replay`, the guide's steps strictly in sequence, fixed polling;
2. `ours cold`: `serve_llm` from nothing (Hugging Face weights);
3. `ours warm`: the cluster kept from the run before (teardown with the keep-cluster policy), so only
   the GPU pool and the model;
4. `ours cold staged` / `ours warm staged`: 2 and 3 serving the copy in a GCS bucket that
   `stage_weights` made (run once, beforehand, on its own cluster; its one-time duration is printed);
   `ours cold streamed` / `ours warm streamed`: the same copy streamed into GPU memory
   (`serving.stream_weights`), their ratios on the line before the last;
5. a fatal sign: `serve_llm` on a warm cluster with `image_pull_backoff` injected; simulated seconds
   from the fault's first firing to the first delete of the teardown.

Prints a table, then the last line:
`cold_ratio=X warm_ratio=X cold_staged_ratio=X warm_staged_ratio=X gpu_node_minutes_ratio=X overhead_pct=X
fatal_to_teardown_s=X api_requests_per_min=X`. Writes `bench/out/spinup.png` (and `--readme-chart`).
Known distortion: real CPU time in the one process (Prefect API calls, the sandbox's API servers and
controllers, Python's garbage collector walking all of it) counts as simulated time times the scale;
the overhead column includes it, and the CPU s / GC s columns say how much there was. Full garbage
collections are kept short by freezing the heap between variants (`quiet_gc`). After the table, a
ledger splits each run along the critical path's segments, modelled against measured.
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.spinup_measure import (
    Variant,
    critical_path_parts,
    critical_path_s,
    ledger_table,
    pool_gpu_node_s,
    requests_per_min,
    streamed_line,
    summary_line,
    table,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
README_CHART = ROOT / "docs" / "images" / "spinup-timeline.png"
BUCKET_SOURCE = "gs://gke-llm-flows-weights/deepseek-ai/DeepSeek-R1"
HF_SOURCE = "deepseek-ai/DeepSeek-R1"


def stack_file(folder: Path, gke_url: str, name: str, *, staged: bool, streamed: bool = False) -> Path:
    """Write a copy of examples/sandbox.yaml as stack `name` on cluster `name`; return its path."""
    data = yaml.safe_load((ROOT / "examples" / "sandbox.yaml").read_text(encoding="utf-8"))
    data["name"] = name
    data["cluster"].update(api_endpoint=gke_url, name=name)
    if staged:
        data["serving"].update(model_source=BUCKET_SOURCE, staged_from=HF_SOURCE, stream_weights=streamed)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class Bench:
    """The sandbox, the stacks and the measurements of one benchmark run."""

    def __init__(self, sandbox, folder: Path):
        from blocks.spec import StackSpec
        from tasks.clock import clock_from_env

        self.sandbox, self.clock = sandbox, clock_from_env()
        self.files = {n: stack_file(folder, sandbox.gke_url, n, staged=staged, streamed=streamed)
                      for n, staged, streamed in (("guide", False, False), ("bench-hf", False, False),
                                                  ("bench-gcs", True, False), ("bench-stream", True, True),
                                                  ("bench-stage", True, False))}
        self.specs = {n: StackSpec.from_yaml(p) for n, p in self.files.items()}
        self.size_gb = float(sandbox.profile["kube"]["models"][HF_SOURCE])
        self.notes: list[str] = []

    def sim_s(self) -> float:
        return self.sandbox.clock.elapsed_s()

    def billed(self, stack: str) -> float:
        spec = self.specs[stack]
        return pool_gpu_node_s(self.sandbox.gke.meter.report(), spec.cluster.name, spec.gpu_pool.name)

    def api_rate(self, stack: str, start_s: float, end_s: float) -> float:
        """GKE + Kubernetes requests per minute for `stack`'s cluster while the model loads."""
        from bench.measure import kube_requests

        name = self.specs[stack].cluster.name
        times = [r["elapsed_s"] for r in self.sandbox.requests() if f"/clusters/{name}" in r["path"]]
        times += [r["elapsed_s"] for r in kube_requests(self.sandbox, self.specs[stack])]
        return requests_per_min(times, start_s, end_s)

    def guide(self) -> Variant:
        from bench.guide_replay import replay_guide

        v, start, billed0 = Variant("guide (baseline)"), self.sim_s(), self.billed("guide")
        offset = self.clock.time() - start
        with Milestones(self.sandbox, self.specs["guide"]) as seen:
            run = replay_guide(self.specs["guide"], gke_url=self.sandbox.gke_url, clock=self.clock)
        end = self.sim_s()
        v.milestones = seen.relative_to(start)
        v.ok, v.seconds, v.gpu_node_s = run.ok, end - start, self.billed("guide") - billed0
        v.phases = [(n, a - offset - start, b - offset - start) for n, a, b in run.phases]
        load = next(p for p in v.phases if p[0] == "model-load")
        v.api_requests_per_min = self.api_rate("guide", start + load[1], start + load[2])
        v.chain = critical_path_parts(self.sandbox.profile, size_gb=self.size_gb, warm=False, staged=False)
        v.critical_path_s = critical_path_s(self.sandbox.profile, size_gb=self.size_gb, warm=False, staged=False)
        return v

    def ours(self, name: str, stack: str, *, warm: bool, staged: bool, streamed: bool = False) -> Variant:
        from flows.spin_up import serve_llm
        from flows.stack_ref import StackRef

        v, start, billed0 = Variant(name), self.sim_s(), self.billed(stack)
        offset = self.clock.time() - start
        with ProcessMeter() as meter, Milestones(self.sandbox, self.specs[stack]) as seen:
            state = serve_llm(stack=StackRef(file=str(self.files[stack])), return_state=True)
        end, billed1 = self.sim_s(), self.billed(stack)
        v.ok, v.cpu_s, v.gc_s = state.is_completed(), meter.cpu_s, meter.gc_s
        # Our spin-up prefetches a Hugging Face model onto the GPU nodes (serving.prefetch_weights).
        chain = {"size_gb": self.size_gb, "warm": warm, "staged": staged, "prefetch": not staged,
                 "streamed": streamed}
        v.chain = critical_path_parts(self.sandbox.profile, **chain)
        v.critical_path_s = critical_path_s(self.sandbox.profile, **chain)
        if not v.ok:
            v.seconds, v.gpu_node_s, v.note = end - start, billed1 - billed0, (state.message or "")[:200]
            return v
        result = state.result()
        # From the flow's first step to the validated answer: Prefect's run start-up before it (a few
        # wall seconds, i.e. minutes at this scale, on a busy machine) is reported apart as start lag.
        flow_start = float(result["started_at_s"]) - offset
        answer = flow_start + float(result["ready_after_s"])
        v.seconds, v.start_lag_s = answer - flow_start, flow_start - start
        v.milestones = seen.relative_to(flow_start)
        v.gpu_node_s = billed1 - billed0 - self.gpu_vms(stack) * max(0.0, end - answer)
        v.phases = [(r["phase"], r["start_s"], r["start_s"] + (r["duration_s"] or 0)) for r in result["timeline"]]
        load = next((p for p in v.phases if p[0] == "model-load"), (None, 0.0, v.seconds))
        v.api_requests_per_min = self.api_rate(stack, flow_start + load[1], flow_start + load[2])
        return v

    def gpu_vms(self, stack: str) -> int:
        spec = self.specs[stack]
        return sum(p["vms_running"] for p in self.sandbox.gke.meter.report()["pools"]
                   if p["cluster"].rsplit("/", 1)[-1] == spec.cluster.name and p["pool"] == spec.gpu_pool.name)

    def keep_cluster_teardown(self, stack: str) -> None:
        from flows.spin_down import teardown_llm
        from flows.stack_ref import StackRef

        state = teardown_llm(stack=StackRef(file=str(self.files[stack])), delete_cluster_too=False,
                             reason="bench: keep the cluster overnight", return_state=True)
        if not state.is_completed():
            self.notes.append(f"teardown of {stack}: {state.message}")

    def stage(self) -> None:
        from flows.stack_ref import StackRef
        from flows.stage_weights import stage_weights

        start = self.sim_s()
        state = stage_weights(stack=StackRef(file=str(self.files["bench-stage"])), return_state=True)
        again = stage_weights(stack=StackRef(file=str(self.files["bench-stage"])), return_state=True)
        result = again.result(raise_on_failure=False) if again.is_completed() else None
        self.notes.append(f"stage_weights (one-time, on its own cluster): {state.type.value} after "
                          f"{(self.sim_s() - start) / 60:.1f} simulated min; second run: "
                          f"{(result or {}).get('action', again.message)}")

    def fatal(self, node_type: str) -> float | None:
        """Inject image_pull_backoff for the Ray `node_type` pods into a warm spin-up of bench-hf; return
        simulated seconds from the fault's first firing to the first delete of the teardown."""
        from bench.measure import FaultClock, kube_requests, teardown_started_s
        from flows.spin_up import serve_llm
        from flows.stack_ref import StackRef

        spec, recorder = self.specs["bench-hf"], FaultClock(self.sandbox)
        self.sandbox.inject({"kind": "image_pull_backoff", "node_type": node_type})
        state = serve_llm(stack=StackRef(file=str(self.files["bench-hf"])), return_state=True)
        self.sandbox.clear_faults()
        self.sandbox.faults.take = recorder._take          # unwrap: the next measurement records afresh
        if state.is_completed() or recorder.first_fired_s is None:
            self.notes.append(f"fatal ({node_type}): run {state.type.value}, fault fired at {recorder.first_fired_s}")
            return None
        started = teardown_started_s(self.sandbox.requests(), kube_requests(self.sandbox, spec), spec,
                                     after_s=recorder.first_fired_s)
        delay = None if started is None else started - recorder.first_fired_s
        self.notes.append(f"fatal sign (image_pull_backoff on the Ray {node_type}) to teardown start: "
                          f"{'never' if delay is None else f'{delay:.0f}'} simulated s")
        return delay


def prewarm() -> None:
    """Pay one-time process costs before the clock matters: Prefect's client and run machinery, and the
    parse of the 1 MB KubeRay CRDs (cached). At 60x, one wall second of them is a simulated minute."""
    from prefect import flow

    from blocks.spec import StackSpec
    from tasks.kuberay_operator import render_operator_manifests

    spec = StackSpec.from_yaml(ROOT / "examples" / "sandbox.yaml")
    render_operator_manifests(spec.operator.version, spec.operator.namespace, stack=spec.name)
    flow(name="bench-prewarm")(lambda: None)()


def quiet_gc(enabled: bool = True) -> None:
    """Collect, then freeze what is left out of the garbage collector's sight (unless `--no-gc-freeze`).

    The sandbox lives in this process: API servers, controllers and stores holding each cluster's
    1 MB CRDs and object history. A full collection walks all of it with the interpreter held:
    0.2-0.8 wall s here, 20-70 simulated s at 90x, about every 90 simulated s, stalling the flow and
    the sandbox's timers alike. A real flow process holds none of it. Frozen objects are never
    collected (none of them is garbage: just collected); objects created later still are, and what
    collection remains is measured per variant (`ProcessMeter`, the GC s column).
    """
    if enabled:
        gc.collect()
        gc.freeze()


class ProcessMeter:
    """Process CPU seconds and garbage-collection pause seconds (wall) while the block runs."""

    def __enter__(self) -> ProcessMeter:
        self.cpu_s = self.gc_s = 0.0
        self._cpu0, self._gc_start = time.process_time(), None
        gc.callbacks.append(self._on_gc)
        return self

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self._gc_start is not None:
            self.gc_s += time.perf_counter() - self._gc_start
            self._gc_start = None

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)
        self.cpu_s = time.process_time() - self._cpu0


class Milestones:
    """The sandbox-clock second at which one stack's run first showed each milestone of the critical
    path: its GPU pool's create request, all its GPU nodes allocatable, its RayService Ready."""

    def __init__(self, sandbox, spec):
        from sandbox.hooks import ClusterRef

        self.sandbox, self.spec, self.seen = sandbox, spec, {}
        self.ref = ClusterRef(spec.cluster.project, spec.cluster.location, spec.cluster.name)
        self.start_s, self._gpu_nodes = sandbox.clock.elapsed_s(), set()
        self._stop, self._unsubscribe = threading.Event(), None

    def __enter__(self) -> Milestones:
        threading.Thread(target=self._attach, name="bench-milestones", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        path = f"/clusters/{self.spec.cluster.name}/nodePools"
        posts = [r["elapsed_s"] for r in self.sandbox.requests() if r["method"] == "POST"
                 and r["path"].endswith(path) and r["elapsed_s"] >= self.start_s]
        if posts:
            self.seen["pool_requested"] = min(posts)

    def relative_to(self, origin_s: float) -> dict[str, float]:
        return {k: t - origin_s for k, t in self.seen.items()}

    def _attach(self) -> None:
        """Subscribe to the cluster's store as soon as it exists (a cold run creates it)."""
        while not self._stop.is_set():
            kube = self.sandbox.hooks.get(self.ref)
            if kube is not None:
                self._unsubscribe = kube.ctx.store.subscribe(self._on_event)
                return
            time.sleep(0.01)

    def _on_event(self, event) -> None:
        """Called inside the store's write path: look at a few fields, nothing more."""
        kind, obj, now = event.resource[1], event.object, self.sandbox.clock.elapsed_s()
        meta = obj.get("metadata") or {}
        if kind == "nodes" and (meta.get("labels") or {}).get("cloud.google.com/gke-nodepool") \
                == self.spec.gpu_pool.name and ((obj.get("status") or {}).get("allocatable") or {}).get(
                "nvidia.com/gpu", "0") != "0":
            self._gpu_nodes.add(meta.get("name"))
            if len(self._gpu_nodes) >= self.spec.gpu_pool.node_count:
                self.seen.setdefault("gpus_allocatable", now)
        elif kind == "rayservices" and meta.get("name") == self.spec.serving.ray_service_name and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (obj.get("status") or {}).get("conditions") or []):
            self.seen.setdefault("ray_service_ready", now)


def in_parallel(*jobs: Callable[[], Any]) -> list[Any]:
    """Run `jobs` in threads (each with a copy of the Prefect context); return their results in order."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int, job: Callable[[], Any]) -> None:
        try:
            results[i] = job()
        except BaseException as e:  # noqa: BLE001 - re-raised below in the caller's thread
            errors.append(e)
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(run, i, job))
               for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def run_benchmark(time_scale: float, *, freeze_gc: bool = True) -> tuple[list[Variant], float | None, list[str]]:
    """The whole benchmark in one sandbox; returns the variants, fatal-to-teardown seconds, notes."""
    from bench.prefect_server import local_prefect_server
    from sandbox.app import Sandbox
    from tasks.clock import TIME_SCALE_ENV

    with local_prefect_server(), Sandbox(time_scale=time_scale, profile="realistic", kubernetes=True) as sandbox, \
            tempfile.TemporaryDirectory() as tmp:
        os.environ[TIME_SCALE_ENV] = sandbox.flows_clock_env()
        prewarm()
        b = Bench(sandbox, Path(tmp))
        quiet_gc(freeze_gc)
        # The guide replay and the one-time staging are light; our timed runs go one at a time so that
        # they do not share the process's CPU (at 90x a wall second of contention is 1.5 simulated min).
        guide, cold, _ = in_parallel(b.guide, lambda: b.ours("ours cold", "bench-hf", warm=False, staged=False),
                                     b.stage)
        b.keep_cluster_teardown("bench-hf")
        quiet_gc(freeze_gc)
        warm = b.ours("ours warm", "bench-hf", warm=True, staged=False)
        b.keep_cluster_teardown("bench-hf")
        quiet_gc(freeze_gc)
        cold_staged = b.ours("ours cold staged", "bench-gcs", warm=False, staged=True)
        b.keep_cluster_teardown("bench-gcs")
        quiet_gc(freeze_gc)
        warm_staged = b.ours("ours warm staged", "bench-gcs", warm=True, staged=True)
        b.keep_cluster_teardown("bench-gcs")
        quiet_gc(freeze_gc)
        cold_streamed = b.ours("ours cold streamed", "bench-stream", warm=False, staged=True, streamed=True)
        b.keep_cluster_teardown("bench-stream")
        quiet_gc(freeze_gc)
        warm_streamed = b.ours("ours warm streamed", "bench-stream", warm=True, staged=True, streamed=True)
        b.keep_cluster_teardown("bench-stream")
        fatal = []
        for node_type in ("head", "worker"):
            quiet_gc(freeze_gc)
            fatal.append(b.fatal(node_type))
        worst = None if None in fatal else max(fatal)
        return [guide, cold, warm, cold_staged, warm_staged, cold_streamed, warm_streamed], worst, b.notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spinup", description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=90.0, help="simulated seconds per wall second")
    parser.add_argument("--readme-chart", action="store_true", help=f"also write {README_CHART}")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="leave Python's garbage collector as it is (shows the pauses it adds at this scale)")
    args = parser.parse_args(argv)
    wall = time.monotonic()
    variants, fatal, notes = run_benchmark(args.time_scale, freeze_gc=not args.no_gc_freeze)
    from bench.spinup_chart import draw_timeline

    OUT.mkdir(parents=True, exist_ok=True)
    draw_timeline(variants, OUT / "spinup.png")
    if args.readme_chart:
        draw_timeline(variants, README_CHART)
    print(f"\nspin-up benchmark: realistic profile at {args.time_scale:g}x, {time.monotonic() - wall:.0f} s wall; "
          "figures are simulated minutes")
    print(table(variants))
    print(ledger_table(variants))
    for note in notes + [f"{v.name}: {v.note}" for v in variants if v.note]:
        print(f"note: {note}")
    print(f"chart: {OUT / 'spinup.png'}")
    print(streamed_line({v.name: v for v in variants}))
    print(summary_line({v.name: v for v in variants}, fatal_to_teardown_s=fatal))
    return 0 if all(v.ok for v in variants) else 1


if __name__ == "__main__":
    raise SystemExit(main())
