"""Resource quantities, pod requests and GKE machine shapes (capacity and allocatable).

Capacities are the Compute Engine machine shapes; allocatable follows GKE's documented reservation
(https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes): CPU 6% of the first core,
1% of the next, 0.5% of the next two, 0.25% above four; memory 25% of the first 4 GiB, 20% of the next
4, 10% of the next 8, 6% of the next 112, 2% above 128, plus a 100 MiB eviction threshold.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

GPU = "nvidia.com/gpu"
GIB = 1024 ** 3

_SUFFIX = {"Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4, "Pi": 1024 ** 5, "Ei": 1024 ** 6,
           "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
           "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18}
_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")

# machine type -> (vCPUs, memory GiB, GPUs attached by the shape, accelerator type)
MACHINE_TYPES: dict[str, tuple[int, float, int, str | None]] = {
    "e2-medium": (2, 4, 0, None), "e2-standard-2": (2, 8, 0, None), "e2-standard-4": (4, 16, 0, None),
    "e2-standard-8": (8, 32, 0, None), "e2-standard-16": (16, 64, 0, None),
    "e2-standard-32": (32, 128, 0, None), "n1-standard-4": (4, 15, 0, None),
    "n1-standard-8": (8, 30, 0, None), "n2-standard-4": (4, 16, 0, None), "n2-standard-8": (8, 32, 0, None),
    "n2-standard-16": (16, 64, 0, None), "n2-standard-32": (32, 128, 0, None),
    "g2-standard-4": (4, 16, 1, "nvidia-l4"), "g2-standard-8": (8, 32, 1, "nvidia-l4"),
    "g2-standard-24": (24, 96, 2, "nvidia-l4"), "g2-standard-48": (48, 192, 4, "nvidia-l4"),
    "g2-standard-96": (96, 384, 8, "nvidia-l4"),
    "a2-highgpu-1g": (12, 85, 1, "nvidia-tesla-a100"), "a2-highgpu-8g": (96, 680, 8, "nvidia-tesla-a100"),
    "a2-ultragpu-8g": (96, 1360, 8, "nvidia-a100-80gb"),
    "a3-highgpu-1g": (26, 234, 1, "nvidia-h100-80gb"), "a3-highgpu-2g": (52, 468, 2, "nvidia-h100-80gb"),
    "a3-highgpu-4g": (104, 936, 4, "nvidia-h100-80gb"), "a3-highgpu-8g": (208, 1872, 8, "nvidia-h100-80gb"),
    "a3-megagpu-8g": (208, 1872, 8, "nvidia-h100-mega-80gb"), "a3-ultragpu-8g": (224, 2952, 8, "nvidia-h200-141gb"),
}

# GKE accelerator label -> the accelerator_type Ray reports for the GPU (ray.util.accelerators names).
RAY_ACCELERATOR = {"nvidia-h100-80gb": "H100", "nvidia-h100-mega-80gb": "H100", "nvidia-h200-141gb": "H200",
                   "nvidia-a100-80gb": "A100-80G", "nvidia-tesla-a100": "A100-40G", "nvidia-l4": "L4",
                   "nvidia-tesla-t4": "T4", "nvidia-tesla-v100": "V100"}


def parse_quantity(value: Any) -> Decimal:
    """`"500m"` -> 0.5, `"32Gi"` -> 34359738368; raise ValueError naming the bad value."""
    text = str(value).strip()
    match = _QUANTITY_RE.match(text)
    if not match:
        raise ValueError(f"quantity {value!r} is not a Kubernetes quantity (e.g. '500m', '2', '32Gi')")
    return Decimal(match.group(1)) * Decimal(_SUFFIX[match.group(2) or ""])


def format_cpu(cores: Decimal) -> str:
    millis = int(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(num_bytes: Decimal) -> str:
    kib = int(num_bytes) // 1024
    return f"{kib // 1024}Mi" if kib % 1024 == 0 else f"{kib}Ki"


def container_requests(container: dict[str, Any]) -> dict[str, Decimal]:
    """Requests of one container; a resource with only a limit requests the limit (API defaulting)."""
    resources = container.get("resources") or {}
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: parse_quantity(q) for name, q in merged.items()}


def pod_requests(pod: dict[str, Any]) -> dict[str, Decimal]:
    """Effective pod requests: sum over containers, at least the largest init container."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for name, amount in container_requests(container).items():
            total[name] = total.get(name, Decimal(0)) + amount
    for container in spec.get("initContainers") or []:
        for name, amount in container_requests(container).items():
            total[name] = max(total.get(name, Decimal(0)), amount)
    return total


def machine_shape(machine_type: str) -> tuple[int, float, int, str | None]:
    """(vCPUs, GiB, GPUs, accelerator) of a machine type; unknown `-standard-N` shapes are derived."""
    if machine_type in MACHINE_TYPES:
        return MACHINE_TYPES[machine_type]
    match = re.match(r"^[a-z0-9]+-(standard|highmem|highcpu)-(\d+)$", machine_type)
    if not match:
        raise ValueError(f"unknown machine type {machine_type!r}; known: {sorted(MACHINE_TYPES)}")
    cpus = int(match.group(2))
    per_cpu = {"standard": 4, "highmem": 8, "highcpu": 1}[match.group(1)]
    return cpus, float(cpus * per_cpu), 0, None


def gke_allocatable_cpu(cores: int) -> Decimal:
    tiers = [(1, Decimal("0.06")), (1, Decimal("0.01")), (2, Decimal("0.005")), (10 ** 6, Decimal("0.0025"))]
    return Decimal(cores) - _reserve(Decimal(cores), tiers)


def gke_allocatable_memory(gib: float) -> Decimal:
    tiers = [(4, Decimal("0.25")), (4, Decimal("0.20")), (8, Decimal("0.10")), (112, Decimal("0.06")),
             (10 ** 6, Decimal("0.02"))]
    total = Decimal(str(gib))
    eviction = Decimal(100) / 1024
    return (total - _reserve(total, tiers) - eviction) * GIB


def _reserve(amount: Decimal, tiers: list[tuple[float, Decimal]]) -> Decimal:
    reserved, left = Decimal(0), amount
    for size, share in tiers:
        chunk = min(left, Decimal(size))
        reserved += chunk * share
        left -= chunk
        if left <= 0:
            break
    return reserved
