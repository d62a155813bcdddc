"""The OpenAI-compatible app Ray Serve LLM serves on port 8000: `/v1/models`, `/v1/chat/completions`.

Responses have the shape the guide shows (id `<model>-<uuid>`, `chat.completion`, one choice whose
content is the model's reasoning ending in `</think>` and then the answer, `finish_reason: "stop"`,
usage tokens). The guide's box puzzle gets "red, yellow, blue, green"; other prompts get a generic
answer. Latency is simulated on the sandbox clock: time to first token plus completion tokens over
the decode rate, both from the profile. An unknown model gets 404 with an OpenAI-style error body, a request while the app is
not RUNNING (redeploying, replica lost) 503;
`max_tokens` smaller than the answer truncates it with `finish_reason: "length"`.

Faults (seen by the client of the endpoint): `wrong_answer` (the puzzle gets a wrong order),
`slow_answer {seconds}` (each answer takes that many simulated seconds longer).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from sandbox.kube.context import HttpHandler, HttpRequest, HttpResponse

if TYPE_CHECKING:
    from sandbox.kube.rayserve import RayServe

BOX_REASONING = (
    "Let me follow the moves one at a time. Red goes down first, so red is at the bottom. Blue is placed "
    "on red: red, blue. Yellow is placed on blue: red, blue, yellow. Next, blue is pulled out from the "
    "middle; yellow settles onto red, giving red, yellow. Blue then goes back on top: red, yellow, blue. "
    "Last, green is put on the top: red, yellow, blue, green. Checking once more against each step, "
    "the order holds.\n</think>\n\n")
BOX_ANSWER = ("The final order from bottom to top is: red, yellow, blue, green.\n\n"
              "1. Red at the bottom.\n2. Blue on red: red → blue.\n3. Yellow on blue: red → blue → yellow.\n"
              "4. Blue taken out; yellow drops onto red: red → yellow.\n5. Blue back on top: red → yellow → blue.\n"
              "6. Green on top: red → yellow → blue → green.")
WRONG_BOX_ANSWER = "The final order from bottom to top is: red, blue, yellow, green."


def handler_for(serve: RayServe) -> HttpHandler:
    """The proxy's handler for `serve` (routes, health, the OpenAI API)."""
    def handle(request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        if path == "/-/healthz":
            return HttpResponse(200, b"success", {"content-type": "text/plain"})
        if path == "/-/routes":
            return _json(200, {app.config.get("route_prefix", "/"): name for name, app in serve.apps.items()})
        models = serve.running_model_ids()
        if not serve.apps:
            return HttpResponse(404, f"Path '{path}' not found. Ping http://.../-/routes for available routes."
                                .encode(), {"content-type": "text/plain"})
        if not models:
            # The app is (re)deploying or lost its replica: the router has nowhere to send the request.
            return _error(503, "No healthy replica of the LLM deployment is available; the application is "
                          f"{sorted({a.name for a in serve.apps.values()})} and not RUNNING yet.",
                          "ServiceUnavailableError")
        if path == "/v1/models" and request.method == "GET":
            return _json(200, _model_list(serve, models))
        if path == "/v1/chat/completions" and request.method == "POST":
            return _chat(serve, models, request)
        return _error(404, f"Not Found: {request.method} {path}", "NotFoundError")
    return handle


def _model_list(serve: RayServe, models: dict[str, str]) -> dict[str, Any]:
    created = int(serve.ctx.clock.now())
    return {"object": "list", "data": [
        {"id": model_id, "object": "model", "created": created, "owned_by": "organization",
         "permission": [], "metadata": {"model_id": model_id, "input_modality": "text"}}
        for model_id in sorted(models)]}


def _chat(serve: RayServe, models: dict[str, str], request: HttpRequest) -> HttpResponse:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return _error(400, "Invalid JSON body", "BadRequestError")
    model = body.get("model") if isinstance(body, dict) else None
    if model not in models:
        return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "messages: field required (a non-empty list of {role, content})", "BadRequestError")
    prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    content = _answer(serve, prompt)
    prompt_tokens = _count_tokens(prompt) + 8 * len(messages)
    completion_tokens = _count_tokens(content)
    finish = "stop"
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(max_tokens, int) and 0 < max_tokens < completion_tokens:
        content = content[: max_tokens * 4]
        completion_tokens, finish = max_tokens, "length"
    _simulate_latency(serve, completion_tokens)
    return _json(200, {
        "id": f"{model}-{uuid.uuid4()}", "object": "chat.completion", "created": int(serve.ctx.clock.now()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "reasoning_content": None, "content": content,
                                             "tool_calls": []},
                     "logprobs": None, "finish_reason": finish, "stop_reason": None}],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
                  "completion_tokens": completion_tokens, "prompt_tokens_details": None},
        "prompt_logprobs": None})


def _answer(serve: RayServe, prompt: str) -> str:
    text = prompt.lower()
    if "box" in text and all(color in text for color in ("red", "blue", "yellow", "green")):
        wrong = serve.ctx.faults.take("wrong_answer") is not None
        return BOX_REASONING + (WRONG_BOX_ANSWER if wrong else BOX_ANSWER)
    topic = re.sub(r"\s+", " ", prompt).strip()[:120]
    return (f"The user asks: \"{topic}\". I should give a short, direct answer and keep the reasoning brief."
            "\n</think>\n\nHere is a brief answer: the request is understood and handled by the model served "
            "through Ray Serve LLM; ask a more specific question for a more specific reply.")


def _simulate_latency(serve: RayServe, completion_tokens: int) -> None:
    kube = serve.ctx.profile.get("kube", {})
    seconds = float(kube.get("llm_time_to_first_token_s", 0.6))
    seconds += completion_tokens / float(kube.get("llm_decode_tokens_per_s", 30))
    if slow := serve.ctx.faults.peek("slow_answer"):
        seconds += float(slow.get("seconds", 60))
    serve.ctx.clock.sleep(seconds)


def _count_tokens(text: str) -> int:
    """About 4 characters per token, as for English text with a BPE tokenizer."""
    return max(1, round(len(text) / 4))


def _json(status: int, body: Any) -> HttpResponse:
    return HttpResponse(status, json.dumps(body, ensure_ascii=False).encode())


def _error(status: int, message: str, kind: str) -> HttpResponse:
    return _json(status, {"error": {"message": message, "type": kind, "param": None, "code": status}})
