"""The fault matrix: the spin-up/spin-down lifecycle on the sandbox under each failure, measured.

    python -m bench.faults            # every scenario (realistic figures, slower time scale)
    python -m bench.faults --fast     # the CI subset at a high time scale
    python -m bench.faults --only baseline --only k8s-oom_killed

Each scenario gets a fresh sandbox with, beside our stack, a cluster without labels, a cluster of
another stack (lease expired) and, in our warm cluster, an unlabeled node pool. Per scenario it
reports: converged (the spin-up ended healthy and the spin-down left nothing, or it was torn down
cleanly when it could not be healthy), GPU node-seconds still billing at the end (running GPU VMs x
one hour), duplicates (a resource created twice, or two GPU pools / RayClusters for one stack),
foreign resources written to or gone, and the simulated seconds from the fault (first firing,
kill or cancel) to the first delete of ours. The last line is the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from bench import measure
from bench.scenarios import Scenario, all_scenarios

FAST_TIME_SCALE, FULL_TIME_SCALE = 100.0, 60.0


@dataclass
class Outcome:
    scenario: str
    outcome: str                          # healthy | torn-down | left-running
    converged: bool
    leaked_gpu_node_seconds: float
    duplicates: list[str]
    foreign_touched: list[str]
    teardown_delay_s: float | None
    wall_s: float
    notes: list[str]

    def row(self) -> str:
        delay = "-" if self.teardown_delay_s is None else f"{self.teardown_delay_s:.0f}"
        return (f"{self.scenario:<38} {self.outcome:<12} {'yes' if self.converged else 'NO':<4} "
                f"{self.leaked_gpu_node_seconds:>7.0f} {len(self.duplicates):>4} {len(self.foreign_touched):>4} "
                f"{delay:>7} {self.wall_s:>6.1f}  {'; '.join(self.notes + self.duplicates + self.foreign_touched)[:300]}")


HEADER = (f"{'scenario':<38} {'outcome':<12} {'conv':<4} {'leak_s':>7} {'dups':>4} {'frgn':>4} "
          f"{'delay_s':>7} {'wall_s':>6}  notes")


def stack_file(gke_url: str, folder: Path, sc: Scenario) -> Path:
    """The example sandbox stack aimed at `gke_url`, with the scenario's spec overrides."""
    from flows.demo import demo_stack_file

    path = demo_stack_file(gke_url, folder)
    data = yaml.safe_load(path.read_text())
    for section, values in sc.lifecycle.items():
        data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _warm_cluster(sandbox, spec) -> None:
    """Our cluster as a previous lifecycle left it (the default policy keeps it), plus a stranger's pool."""
    from tasks.clock import clock_from_env
    from tasks.cluster import ensure_cluster
    from tasks.gateways.gke import GkeGateway
    from tasks.gke_credentials import gke_credentials

    endpoint = spec.cluster.api_endpoint
    gke = GkeGateway.connect(gke_credentials(None, api_endpoint=endpoint), api_endpoint=endpoint,
                             clock=clock_from_env())
    ensure_cluster.fn(gke, spec, clock=clock_from_env())
    measure.place_foreign_pool(sandbox, spec)


def run_scenario(sc: Scenario, *, env: dict[str, str], time_scale: float, profile: str, folder: Path) -> Outcome:
    """Run one scenario on a fresh sandbox and measure it."""
    from bench.drivers import DRIVERS, Context, free_stack_lock
    from blocks.spec import StackSpec
    from flows.stack_ref import StackRef
    from sandbox.app import Sandbox
    from tasks.clock import TIME_SCALE_ENV, ScaledClock

    started = time.monotonic()
    with Sandbox(time_scale=time_scale, kubernetes=True, profile=profile) as sandbox:
        clock_env = ScaledClock(time_scale, anchor_epoch_s=sandbox.clock.anchor_epoch_s).to_env()
        os.environ[TIME_SCALE_ENV] = clock_env
        path = stack_file(sandbox.gke_url, folder, sc)
        spec = StackSpec.from_yaml(path)
        measure.place_foreign_clusters(sandbox, spec)
        free_stack_lock(spec.name)     # a fresh world: no slot left by an earlier scenario's killed run
        if not sc.cold:
            _warm_cluster(sandbox, spec)
        since = len(sandbox.requests())
        faults = measure.FaultClock(sandbox)
        for fault in sc.faults:
            sandbox.inject(fault)
        ctx = Context(sandbox, StackRef(file=str(path)), spec, dict(env, **{TIME_SCALE_ENV: clock_env}))
        injected_s = sandbox.clock.elapsed_s()
        trace = DRIVERS[sc.driver](sc, ctx)
        sandbox.clear_faults()
        # Some faults act through peek() (e.g. unschedulable), which the fault clock cannot see:
        # then the delay counts from the injection, an upper bound.
        fault_s = faults.first_fired_s if faults.first_fired_s is not None else injected_s if sc.faults else None
        return _measure(sc, sandbox, spec, trace, since=since, fault_s=fault_s,
                        pool_placed=not sc.cold, wall_s=time.monotonic() - started)


def _measure(sc: Scenario, sandbox, spec, trace, *, since: int, fault_s: float | None, pool_placed: bool,
             wall_s: float) -> Outcome:
    inventory, requests = sandbox.inventory(), sandbox.requests()
    running = measure.gpu_vms_running(inventory)
    service_left = _ray_service_left(inventory, spec)
    clean = not running and not service_left
    outcome = "healthy" if trace.healthy else "torn-down" if clean else "left-running"
    notes = list(trace.notes) + ([f"still billing: {running}"] if running else []) + \
        ([f"RayService left: {service_left}"] if service_left else [])
    disturbed = trace.disturbed_s if trace.disturbed_s is not None else (None if trace.healthy else fault_s)
    delay = None
    if disturbed is not None and not trace.healthy:
        started = measure.teardown_started_s(requests, measure.kube_requests(sandbox, spec), spec,
                                             after_s=disturbed)
        delay = None if started is None else round(started - disturbed, 1)
        if started is None and clean:
            notes.append("nothing to delete")
    touched = measure.foreign_touched(requests, spec, since_seq=since) + \
        [f"gone: {m}" for m in measure.foreign_missing(inventory, spec, pool_placed=pool_placed)]
    return Outcome(sc.name, outcome, converged=clean, leaked_gpu_node_seconds=measure.leaked_gpu_node_seconds(inventory),
                   duplicates=measure.duplicates(requests, inventory, spec), foreign_touched=touched,
                   teardown_delay_s=delay, wall_s=round(wall_s, 1), notes=notes)


def _ray_service_left(inventory: dict, spec) -> list[str]:
    cluster = next((c for c in inventory.get("clusters", []) if c["name"] == spec.cluster.name), None)
    services = ((cluster or {}).get("kubernetes") or {}).get("rayservices.ray.io", [])
    return [s["name"] for s in services if s["name"] == spec.serving.ray_service_name]


def summary_line(outcomes: list[Outcome]) -> str:
    delays = [o.teardown_delay_s for o in outcomes if o.teardown_delay_s is not None]
    return (f"scenarios={len(outcomes)} converged={sum(o.converged for o in outcomes)} "
            f"leaked_gpu_node_seconds={sum(o.leaked_gpu_node_seconds for o in outcomes):g} "
            f"duplicates={sum(len(o.duplicates) for o in outcomes)} "
            f"foreign_touched={sum(len(o.foreign_touched) for o in outcomes)} "
            f"max_teardown_delay_s={max(delays) if delays else 0:g}")


def run_matrix(scenarios: list[Scenario], *, time_scale: float, profile: str, out=sys.stdout) -> list[Outcome]:
    """Run `scenarios` against one Prefect server (PREFECT_API_URL's, or a fresh local one)."""
    from bench.prefect_server import local_prefect_server

    outcomes: list[Outcome] = []
    with local_prefect_server() as env, tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        print(HEADER, file=out, flush=True)
        for i, sc in enumerate(scenarios):
            folder = Path(tmp) / f"{i:02d}"
            folder.mkdir()
            outcome = run_scenario(sc, env=env, time_scale=time_scale, profile=profile, folder=folder)
            outcomes.append(outcome)
            print(outcome.row(), file=out, flush=True)
    return outcomes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--fast", action="store_true", help="the CI subset at a high time scale")
    parser.add_argument("--time-scale", type=float, default=None, help="simulated seconds per real second")
    parser.add_argument("--profile", default=None, help="sandbox timing profile (default: fast with --fast, "
                        "else realistic)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run only these scenarios")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--json", metavar="PATH", help="also write every outcome as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scenarios = all_scenarios()
    if args.only:
        unknown = sorted(set(args.only) - {s.name for s in scenarios})
        if unknown:
            print(f"error: no scenario(s) {unknown}; see --list", file=sys.stderr)
            return 2
        scenarios = [s for s in scenarios if s.name in args.only]
    elif args.fast:
        scenarios = [s for s in scenarios if s.fast]
    if args.list:
        print("\n".join(f"{s.name}{'  (fast)' if s.fast else ''}" for s in scenarios))
        return 0
    time_scale = args.time_scale or (FAST_TIME_SCALE if args.fast else FULL_TIME_SCALE)
    profile = args.profile or ("fast" if args.fast else "realistic")
    outcomes = run_matrix(scenarios, time_scale=time_scale, profile=profile)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    print(summary_line(outcomes))
    ok = all(o.converged and not o.leaked_gpu_node_seconds and not o.duplicates and not o.foreign_touched
             for o in outcomes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
