"""Which stack a flow acts on, as a flow parameter: a saved Block's name or a stack YAML file.

Flows never take secrets as parameters (Prefect stores parameters in clear): the credentials and the
HF token come from the Block, or from the environment for a plain stack file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from blocks.spec import StackSpec

if TYPE_CHECKING:
    from prefect_gcp import GcpCredentials


class StackRef(BaseModel):
    """The stack to act on: give exactly one of `block_name` or `file`."""

    model_config = ConfigDict(extra="forbid")

    block_name: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="name of a saved 'GKE LLM Serving Stack' block (holds the spec and its credentials)")
    file: str | None = Field(
        None, min_length=1, max_length=4096, pattern=r"^[^\x00\n\r]+\.ya?ml$",
        description="path of a stack YAML file on the worker, e.g. examples/sandbox.yaml")

    @model_validator(mode="after")
    def _exactly_one(self) -> StackRef:
        if (self.block_name is None) == (self.file is None):
            raise ValueError("stack: give exactly one of block_name (a saved stack block) or file "
                             f"(a stack YAML path); got block_name={self.block_name!r}, file={self.file!r}")
        return self

    def describe(self) -> str:
        return f"block {self.block_name!r}" if self.block_name else f"file {self.file!r}"


@dataclass(frozen=True)
class LoadedStack:
    """A stack ready to act on. `hf_token` stays a SecretStr until it becomes a Kubernetes Secret."""

    spec: StackSpec
    gcp_credentials: GcpCredentials | None = None
    hf_token: SecretStr | None = None


def load_stack(ref: StackRef | dict) -> LoadedStack:
    """Load the spec (and, for a block, its credentials and HF token). Raises SpecError when invalid."""
    ref = ref if isinstance(ref, StackRef) else StackRef.model_validate(ref)
    if ref.file is not None:
        return LoadedStack(spec=StackSpec.from_yaml(ref.file))
    from blocks.prefect_blocks import ServingStackBlock

    block = ServingStackBlock.load(ref.block_name)
    token = block.hf_token_value()
    return LoadedStack(spec=block.spec, gcp_credentials=block.gcp_credentials,
                       hf_token=SecretStr(token) if token else None)
