"""One decoded API request and its reply, independent of the HTTP framework."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from sandbox.kube import protobuf
from sandbox.kube import status as st
from sandbox.kube.resources import ResourceType

try:  # the C loader parses the 1 MB KubeRay CRDs ~10x faster
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


@dataclass
class ApiRequest:
    method: str
    path: str
    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    rest: str = ""                 # what follows `/proxy` for the service proxy
    query_string: str = ""         # the raw query, forwarded as is by the service proxy

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/json").split(";")[0].strip().lower()

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == "All"

    @property
    def field_manager(self) -> str:
        """`?fieldManager=`, else the User-Agent's program name, as the real server defaults it."""
        if manager := self.query.get("fieldManager"):
            return manager
        agent = self.headers.get("user-agent", "unknown")
        return agent.split("/")[0] or "unknown"

    def decode_body(self) -> Any:
        """The body as JSON, or YAML for apply patches; 400 with the parser's complaint if neither."""
        if not self.body:
            raise st.bad_request("the body of the request was empty")
        if "protobuf" in self.content_type:
            try:
                return protobuf.decode(self.body)
            except protobuf.ProtobufError as e:
                raise st.ApiError(415, "UnsupportedMediaType", f"the sandbox API server reads protobuf only for "
                                  f"Namespace, Secret, ConfigMap and ServiceAccount: {e}") from None
        if "cbor" in self.content_type:
            raise st.unsupported_media_type(self.content_type)
        try:
            return json.loads(self.body)
        except ValueError as json_error:
            if "yaml" not in self.content_type:
                raise st.bad_request(f"the object provided is unrecognized (must be of type JSON): "
                                     f"{json_error}") from None
        try:
            return yaml.load(self.body, Loader=_Loader)
        except yaml.YAMLError as yaml_error:
            raise st.bad_request(f"error decoding YAML: {yaml_error}") from None


@dataclass
class ApiReply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
