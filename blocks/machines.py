"""What each GPU machine type carries: vCPUs, memory, and which accelerators in what count.

Figures from https://cloud.google.com/compute/docs/accelerator-optimized-machines and the GKE GPU docs
(https://cloud.google.com/kubernetes-engine/docs/how-to/gpus). Compute Engine's "GB" of memory are
binary (GiB), so memory is kept in GiB. GPU counts on these machine types are fixed: an a3-highgpu-8g
always has 8 H100s attached, and the API rejects any other count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class MachineShape:
    """A machine type's vCPUs, memory (GiB) and attached accelerators (type, fixed count)."""

    vcpus: int
    memory_gib: float
    accelerator_type: str | None = None
    accelerator_count: int = 0
    # Machine types with local SSDs built in take exactly this many (or 0, meaning "the default").
    fixed_local_ssd_count: int | None = None


H100 = "nvidia-h100-80gb"
H100_MEGA = "nvidia-h100-mega-80gb"
H200 = "nvidia-h200-141gb"
L4 = "nvidia-l4"
A100_40 = "nvidia-tesla-a100"
A100_80 = "nvidia-a100-80gb"

GPU_MACHINES: dict[str, MachineShape] = {
    "a3-highgpu-8g": MachineShape(208, 1872, H100, 8, 16),
    "a3-megagpu-8g": MachineShape(208, 1872, H100_MEGA, 8, 16),
    "a3-ultragpu-8g": MachineShape(224, 2952, H200, 8, 32),
    "g2-standard-4": MachineShape(4, 16, L4, 1),
    "g2-standard-8": MachineShape(8, 32, L4, 1),
    "g2-standard-12": MachineShape(12, 48, L4, 1),
    "g2-standard-16": MachineShape(16, 64, L4, 1),
    "g2-standard-24": MachineShape(24, 96, L4, 2),
    "g2-standard-32": MachineShape(32, 128, L4, 1),
    "g2-standard-48": MachineShape(48, 192, L4, 4),
    "g2-standard-96": MachineShape(96, 384, L4, 8),
    "a2-highgpu-1g": MachineShape(12, 85, A100_40, 1),
    "a2-highgpu-2g": MachineShape(24, 170, A100_40, 2),
    "a2-highgpu-4g": MachineShape(48, 340, A100_40, 4),
    "a2-highgpu-8g": MachineShape(96, 680, A100_40, 8),
    "a2-megagpu-16g": MachineShape(96, 1360, A100_40, 16),
    "a2-ultragpu-1g": MachineShape(12, 170, A100_80, 1, 1),
    "a2-ultragpu-2g": MachineShape(24, 340, A100_80, 2, 2),
    "a2-ultragpu-4g": MachineShape(48, 680, A100_80, 4, 4),
    "a2-ultragpu-8g": MachineShape(96, 1360, A100_80, 8, 8),
}

# The `accelerator_type` Ray Serve LLM schedules on for each GKE accelerator (ray.util.accelerators).
RAY_ACCELERATOR: dict[str, str] = {
    H100: "H100", H100_MEGA: "H100", H200: "H200", L4: "L4", A100_40: "A100-40G", A100_80: "A100-80G",
}

# General-purpose families for the CPU pool: GiB of memory per vCPU for the -standard shapes.
_STANDARD_GIB_PER_VCPU = {"e2": 4, "n2": 4, "n2d": 4, "n4": 4, "c3": 4, "n1": 3.75}
_STANDARD = re.compile(r"^(?P<family>[a-z0-9]+)-standard-(?P<vcpus>[0-9]+)$")


def machine_shape(machine_type: str) -> MachineShape | None:
    """Return the shape of a known machine type, or None when we do not know it."""
    if machine_type in GPU_MACHINES:
        return GPU_MACHINES[machine_type]
    match = _STANDARD.fullmatch(machine_type)
    if match and match["family"] in _STANDARD_GIB_PER_VCPU:
        vcpus = int(match["vcpus"])
        return MachineShape(vcpus, vcpus * _STANDARD_GIB_PER_VCPU[match["family"]])
    return None


def machines_for(accelerator_type: str) -> list[str]:
    """Return the known GPU machine types that carry `accelerator_type`."""
    return sorted(m for m, s in GPU_MACHINES.items() if s.accelerator_type == accelerator_type)
