"""The configuration layer: what a user says a serving stack is.

Pydantic specs and Prefect Blocks for the cluster, the GPU node pool, the KubeRay operator, the model
and its Ray Serve config, the validation prompt and the lifecycle policy; the validation that turns bad
input into one clear error before any cloud call; and pure renderers that turn a stack into the exact
RayService manifest and GKE request bodies the other layers send. Nothing here does I/O.
"""

from __future__ import annotations

from typing import Any

# The Prefect Block classes are exported lazily (PEP 562): `prefect block register -m blocks` finds
# them through dir()/getattr, while `import blocks.spec` stays free of Prefect's import cost.
_LAZY_BLOCKS = ("ServingStackBlock",)

__all__ = list(_LAZY_BLOCKS)


def __getattr__(name: str) -> Any:
    if name in _LAZY_BLOCKS:
        from blocks import prefect_blocks

        return getattr(prefect_blocks, name)
    raise AttributeError(f"module 'blocks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_BLOCKS})
