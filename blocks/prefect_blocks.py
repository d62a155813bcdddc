"""Prefect Blocks: a serving stack as a saved, named document in Prefect, with its credentials.

`ServingStackBlock` holds a validated `StackSpec` and nests prefect-gcp's `GcpCredentials` (how to
reach GKE) and an optional Prefect `Secret` (the Hugging Face token). Flows take the block's *name* as
a parameter, never a secret. Register with `prefect block register -m blocks`.
"""

from __future__ import annotations

from pathlib import Path

from prefect.blocks.core import Block
from prefect.blocks.system import Secret
from prefect_gcp import GcpCredentials
from pydantic import Field

from blocks.spec import StackSpec


class ServingStackBlock(Block):
    """A GKE + KubeRay + Ray Serve LLM serving stack: its spec, GCP credentials and HF token."""

    _block_type_name = "GKE LLM Serving Stack"
    _block_type_slug = "gke-llm-serving-stack"
    _description = ("One named LLM serving stack on GKE (cluster, GPU pool, KubeRay operator, RayService, "
                    "validation prompt, lifecycle policy), with GCP credentials and an optional HF token.")

    spec: StackSpec = Field(description="the stack: cluster, GPU pool, operator, serving, validation, lifecycle")
    # Optional because GcpCredentials() resolves Application Default Credentials when it is built, and
    # the sandbox needs none: None means "the environment's default credentials" for real GKE.
    gcp_credentials: GcpCredentials | None = Field(
        default=None, description="GCP credentials for the GKE API; None = Application Default Credentials")
    hf_token: Secret | None = Field(
        default=None, description="Hugging Face access token for gated models; None = no token")

    def hf_token_value(self) -> str | None:
        """Return the HF token in clear (for the Kubernetes Secret only), or None when none is set."""
        if self.hf_token is None:
            return None
        value = self.hf_token.get()
        return str(value) if value else None

    @classmethod
    def from_yaml(cls, path: str | Path, *, gcp_credentials: GcpCredentials | None = None,
                  hf_token: Secret | None = None) -> ServingStackBlock:
        """Build a block from a stack YAML file; raise `SpecError` if the file is not a valid stack."""
        return cls(spec=StackSpec.from_yaml(path), gcp_credentials=gcp_credentials, hf_token=hf_token)
