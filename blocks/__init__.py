"""The configuration layer: what a user says a serving stack is.

Pydantic specs and Prefect Blocks for the cluster, the GPU node pool, the KubeRay operator, the model
and its Ray Serve config, the validation prompt and the lifecycle policy; the validation that turns bad
input into one clear error before any cloud call; and pure renderers that turn a stack into the exact
RayService manifest and GKE request bodies the other layers send. Nothing here does I/O.
"""
