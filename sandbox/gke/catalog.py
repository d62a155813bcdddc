"""What GKE checks synchronously on create: names, locations, machine types and their GPUs, quota metrics.

Machine facts are from reference/gke.md section 9 and the public machine-type naming scheme; the
catalog accepts the families this project plausibly uses and names them when it rejects a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sandbox.gke.errors import invalid

NAME_PATTERN = r"(?:[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?)"
_NAME = re.compile(NAME_PATTERN)
_ZONE = re.compile(r"[a-z]+-[a-z]+\d+-[a-z]")
_REGION = re.compile(r"[a-z]+-[a-z]+\d+")

# Machine types whose GPUs come with the machine: type -> (vCPUs, accelerator type, GPUs per VM).
_GPU_MACHINES = {
    "a3-highgpu-8g": (208, "nvidia-h100-80gb", 8),
    "a3-megagpu-8g": (208, "nvidia-h100-mega-80gb", 8),
    "a3-ultragpu-8g": (224, "nvidia-h200-141gb", 8),
    "a2-highgpu-1g": (12, "nvidia-tesla-a100", 1),
    "a2-highgpu-8g": (96, "nvidia-tesla-a100", 8),
    "g2-standard-4": (4, "nvidia-l4", 1),
    "g2-standard-8": (8, "nvidia-l4", 1),
    "g2-standard-24": (24, "nvidia-l4", 2),
    "g2-standard-48": (48, "nvidia-l4", 4),
}
_GENERAL = re.compile(r"(?:e2|n1|n2|n2d|n4|c2|c2d|c3|c3d|c4|t2d)-(?:standard|highmem|highcpu)-(\d+)")
_E2_SHARED = {"e2-micro": 2, "e2-small": 2, "e2-medium": 2}
# Accelerators that attach to general-purpose N1 VMs.
_ATTACHABLE = {"nvidia-tesla-t4", "nvidia-tesla-v100", "nvidia-tesla-p4", "nvidia-tesla-p100"}
_QUOTA_METRICS = {"nvidia-h100-80gb": "NVIDIA_H100_GPUS", "nvidia-h100-mega-80gb": "NVIDIA_H100_MEGA_GPUS",
                  "nvidia-h200-141gb": "NVIDIA_H200_GPUS", "nvidia-tesla-a100": "NVIDIA_A100_GPUS",
                  "nvidia-l4": "NVIDIA_L4_GPUS"}
DEFAULT_MACHINE_TYPE = "e2-medium"   # what GKE uses when a pool names none


@dataclass(frozen=True)
class Machine:
    """What GKE knows of a machine type: vCPUs and the GPUs that come with it."""
    machine_type: str
    vcpus: int
    accelerator: str      # "" for CPU-only VMs
    gpus: int

    @property
    def gpu_quota_metric(self) -> str:
        return _QUOTA_METRICS.get(self.accelerator, self.accelerator.upper().replace("-", "_") + "_GPUS")


def check_name(field: str, value: str) -> None:
    """Reject a cluster or node pool name the way GKE does, naming the rule."""
    if not _NAME.fullmatch(value or ""):
        raise invalid(f'Invalid value for field "{field}": "{value}". Must be a match of regex '
                      f"'{NAME_PATTERN}' (only alphanumerics and '-' allowed, must start with a letter "
                      "and end with an alphanumeric, and must be no longer than 40 characters).")


def check_location(location: str) -> None:
    """Reject a location that is neither a zone nor a region."""
    if not (_ZONE.fullmatch(location) or _REGION.fullmatch(location)):
        raise invalid(f'Location "{location}" is not a valid zone (like "us-east5-a") or region '
                      '(like "us-east5").')


def region_of(location: str) -> str:
    """The region of a zone (a region is its own region)."""
    return location[:-2] if _ZONE.fullmatch(location) else location


def default_zones(location: str) -> list[str]:
    """Where a pool's nodes go when it names no locations: the zone, or three zones of a region."""
    return [location] if _ZONE.fullmatch(location) else [f"{location}-{z}" for z in "abc"]


def machine_of(field: str, config: dict[str, Any]) -> Machine:
    """The machine a stored NodeConfig asks for, after checking its type and accelerators."""
    machine_type = config.get("machineType") or DEFAULT_MACHINE_TYPE
    accelerators = config.get("accelerators") or []
    if machine_type in _GPU_MACHINES:
        vcpus, accelerator, gpus = _GPU_MACHINES[machine_type]
        for acc in accelerators:
            if acc.get("acceleratorType") != accelerator or int(acc.get("acceleratorCount", 0)) != gpus:
                raise invalid(f'Invalid value for field "{field}.accelerators": machine type '
                              f'"{machine_type}" comes with {gpus} x {accelerator}; got '
                              f'{acc.get("acceleratorCount", 0)} x {acc.get("acceleratorType", "")!r}.')
        return Machine(machine_type, vcpus, accelerator, gpus)
    general = _GENERAL.fullmatch(machine_type)
    if not general and machine_type not in _E2_SHARED:
        raise invalid(f'Invalid value for field "{field}.machineType": "{machine_type}". Machine type '
                      f'does not exist; known: {sorted(_GPU_MACHINES)} and <family>-standard|highmem|'
                      "highcpu-<vCPUs> for e2, n1, n2, n2d, n4, c2, c2d, c3, c3d, c4, t2d.")
    vcpus = int(general.group(1)) if general else _E2_SHARED[machine_type]
    if not accelerators:
        return Machine(machine_type, vcpus, "", 0)
    acc = accelerators[0]
    if not machine_type.startswith("n1-") or acc.get("acceleratorType") not in _ATTACHABLE:
        raise invalid(f'Invalid value for field "{field}.accelerators": accelerator '
                      f'"{acc.get("acceleratorType", "")}" cannot be attached to machine type '
                      f'"{machine_type}"; use a GPU machine type ({sorted(_GPU_MACHINES)}) or n1 with '
                      f"{sorted(_ATTACHABLE)}.")
    return Machine(machine_type, vcpus, acc["acceleratorType"], int(acc.get("acceleratorCount", 1)))


def capacity_of(pool: dict[str, Any]) -> str:
    """How a stored NodePool gets its VMs, named as blocks.spec.CapacityMode does (for fault matching)."""
    config = pool.get("config", {})
    if pool.get("queuedProvisioning", {}).get("enabled"):
        return "queued"
    if config.get("flexStart"):
        return "flex-start"
    if config.get("reservationAffinity", {}).get("consumeReservationType") == "SPECIFIC_RESERVATION":
        return "reservation"
    if config.get("spot") or config.get("preemptible"):
        return "spot"
    return "on-demand"
