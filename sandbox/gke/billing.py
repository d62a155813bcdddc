"""The metered bill: VM-seconds per node pool in simulated time, from VM creation to VM deletion.

GCP bills a VM from the moment it is created until it is deleted, whether or not Kubernetes ever
used it, so a pool stuck in ERROR with live VMs costs as much as a healthy one. The meter keeps every
pool it ever saw (a deleted pool's cost is still on the bill).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sandbox.clock import ScaledClock


@dataclass
class PoolMeter:
    """The VM lifetimes of one node pool and what one of its VMs costs per hour."""
    cluster: str                    # "project/location/cluster"
    pool: str
    machine_type: str
    gpus_per_node: int
    price_per_hour: float
    vms: dict[str, list[float]] = field(default_factory=dict)   # VM name -> [start_s, end_s or -1]


class Meter:
    """Record VM lifetimes and report node-seconds, GPU node-seconds and list-price cost."""

    def __init__(self, clock: ScaledClock, prices_per_hour: dict[str, float]):
        self._clock = clock
        self._prices = dict(prices_per_hour)
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, str], PoolMeter] = {}

    def vms_started(self, cluster: str, pool: str, machine_type: str, gpus_per_node: int,
                    vm_names: list[str], at: float | None = None) -> None:
        """VMs of `pool` exist since simulated second `at` (default now): billing starts for each."""
        now = self._clock.elapsed_s() if at is None else at
        with self._lock:
            meter = self._pools.setdefault((cluster, pool), PoolMeter(
                cluster, pool, machine_type, gpus_per_node, float(self._prices.get(machine_type, 0.0))))
            for name in vm_names:
                meter.vms.setdefault(name, [now, -1.0])

    def vms_deleted(self, cluster: str, pool: str, at: float | None = None) -> None:
        """Every VM of `pool` is gone since simulated second `at` (default now): billing stops."""
        now = self._clock.elapsed_s() if at is None else at
        with self._lock:
            meter = self._pools.get((cluster, pool))
            for span in meter.vms.values() if meter else ():
                if span[1] < 0:
                    span[1] = now

    def report(self) -> dict[str, Any]:
        """Per pool and total: VMs running, node-seconds, GPU node-seconds and cost so far."""
        now = self._clock.elapsed_s()
        with self._lock:
            pools = [dict(cluster=m.cluster, pool=m.pool, machine_type=m.machine_type,
                          gpus_per_node=m.gpus_per_node, **_pool_report(m, now)) for m in self._pools.values()]
        return {
            "pools": pools,
            "node_seconds": sum(p["node_seconds"] for p in pools),
            "gpu_node_seconds": sum(p["gpu_node_seconds"] for p in pools),
            "cost_usd": round(sum(p["cost_usd"] for p in pools), 4),
        }

    def pool_report(self, cluster: str, pool: str) -> dict[str, Any]:
        """VMs running, node-seconds, GPU node-seconds and cost of one pool so far."""
        now = self._clock.elapsed_s()
        with self._lock:
            meter = self._pools.get((cluster, pool))
            return _pool_report(meter, now) if meter else {
                "vms_running": 0, "node_seconds": 0.0, "gpu_node_seconds": 0.0, "cost_usd": 0.0}


def _pool_report(meter: PoolMeter, now: float) -> dict[str, Any]:
    node_seconds = sum((end if end >= 0 else now) - start for start, end in meter.vms.values())
    return {
        "vms_running": sum(1 for _, end in meter.vms.values() if end < 0),
        "node_seconds": round(node_seconds, 3),
        "gpu_node_seconds": round(node_seconds, 3) if meter.gpus_per_node else 0.0,
        "cost_usd": round(node_seconds / 3600.0 * meter.price_per_hour, 4),
    }
