"""Timing profiles: how long each simulated thing takes, with the source of every figure.

A profile is a folder `sandbox/profiles/<name>/` of YAML files, one per part of the sandbox
(`gke.yaml`, `kube.yaml`, ...). Each file's top-level keys become a section of the profile
(`profile["gke"]["cluster_create_s"]`). Durations are in simulated seconds; a comment beside each
figure says where it comes from. `realistic` is the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "realistic"


def available_profiles() -> list[str]:
    return sorted(p.name for p in PROFILES_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))


def load_profile(name: str = DEFAULT_PROFILE) -> dict[str, Any]:
    """Return `{section: {key: value}}` for profile `name`; raise ValueError naming the choices."""
    folder = PROFILES_DIR / name
    if not folder.is_dir():
        raise ValueError(f"unknown sandbox profile {name!r}; available: {available_profiles()}")
    profile: dict[str, Any] = {"name": name}
    for path in sorted(folder.glob("*.yaml")):
        profile[path.stem] = yaml.safe_load(path.read_text()) or {}
    return profile
