"""Thin gateway over `httpx` for the OpenAI-compatible endpoint Ray Serve LLM exposes.

Reached either through the Kubernetes API server's service proxy (no port-forward, no public IP:
the API server's URL, CA and bearer token from the cluster credentials) or through a configured
base URL. Transport failures and answers that say "try again" (429, 502, 503, 504: the proxy or
Serve while endpoints settle) become `LlmUnavailable`; every other HTTP answer is returned as it is
for the validator to judge. The bearer token is sent as a header and never logged.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from blocks.errors import TransientError

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class LlmUnavailable(TransientError):
    """The endpoint could not be reached or asked us to come back later."""


class LlmTimedOut(LlmUnavailable):
    """No complete answer within the request's timeout."""


@dataclass(frozen=True)
class LlmResponse:
    status: int
    body: Any                  # parsed JSON, or the raw text when the body is not JSON
    elapsed_wall_s: float


class LlmApi:
    """An OpenAI-compatible API at `base_url` (which ends before `/v1`)."""

    def __init__(self, base_url: str, *, token: str | None = None, verify: ssl.SSLContext | bool = True,
                 transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, headers=headers, verify=verify, transport=transport,
                                    follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> LlmApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list_models(self, *, timeout_wall_s: float) -> LlmResponse:
        """GET /v1/models."""
        return self._send("GET", "/v1/models", timeout_wall_s=timeout_wall_s)

    def chat_completion(self, payload: dict[str, Any], *, timeout_wall_s: float) -> LlmResponse:
        """POST /v1/chat/completions with `payload` (model, messages, max_tokens, ...)."""
        return self._send("POST", "/v1/chat/completions", json_body=payload, timeout_wall_s=timeout_wall_s)

    def _send(self, method: str, path: str, *, timeout_wall_s: float,
              json_body: dict[str, Any] | None = None) -> LlmResponse:
        where = f"{method} {self.base_url}{path}"
        try:
            response = self._client.request(method, path, json=json_body,
                                            timeout=httpx.Timeout(max(0.05, timeout_wall_s)))
        except httpx.TimeoutException as e:
            raise LlmTimedOut(f"{where}: no answer within {timeout_wall_s:.1f}s (wall): {type(e).__name__}") from e
        except httpx.TransportError as e:
            raise LlmUnavailable(f"{where}: {type(e).__name__}: {e}") from e
        body = _parse(response)
        if response.status_code in RETRY_STATUSES or _proxy_hop_failed(response.status_code, body):
            raise LlmUnavailable(f"{where}: HTTP {response.status_code}: {str(body)[:300]}")
        return LlmResponse(response.status_code, body, response.elapsed.total_seconds())


def _proxy_hop_failed(status: int, body: Any) -> bool:
    """A 5xx the Kubernetes API server's service proxy answered itself (its `Status` object): the hop
    failed and the model server was not asked, so it says nothing about the model."""
    return status >= 500 and isinstance(body, dict) and body.get("kind") == "Status"


def _parse(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text
