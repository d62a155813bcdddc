"""Prove the endpoint serves the model correctly: list the models, ask the validation prompt, judge.

Passing needs all four: HTTP 200, `finish_reason == "stop"` (a "length" cut-off means the answer is
incomplete), the model id listed by `/v1/models`, and the answer (the text after any `</think>`:
DeepSeek-R1 reasons first) matching `validation.expected_pattern`. Latency, tokens and tokens per
second go into the run's artifacts with the answer, pass or fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from blocks.errors import ValidationFailed
from blocks.spec import StackSpec
from tasks.clock import Clock, SystemClock
from tasks.gateways.kube import KubeApi
from tasks.gateways.llm import LlmApi, LlmResponse, LlmTimedOut, LlmUnavailable
from tasks.ray_service_progress import artifact_key, in_prefect_run, run_logger

THINK_END = "</think>"
ANSWER_CHARS_IN_ERRORS = 1500
SERVE_PORT = "serve"          # the port KubeRay puts on <name>-serve-svc (from the head's "serve" port)


@dataclass
class ValidationReport:
    """What the check saw. `passed` only when `problems` is empty."""

    url: str
    model_id: str
    models: list[str] = field(default_factory=list)
    status: int | None = None
    finish_reason: str | None = None
    answer: str = ""
    latency_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def tokens_per_s(self) -> float | None:
        if not self.completion_tokens or not self.latency_s:
            return None
        return self.completion_tokens / self.latency_s


def final_answer(content: str) -> str:
    """Return the answer after the model's reasoning (the text after the last `</think>`)."""
    return content.rsplit(THINK_END, 1)[-1].strip() if THINK_END in content else content.strip()


def judge_models(report: ValidationReport, response: LlmResponse) -> None:
    """Record the listed model ids, and a problem when ours is not among them. Pure."""
    data = response.body.get("data") if isinstance(response.body, dict) else None
    report.models = [m.get("id") for m in data or [] if isinstance(m, dict)]
    if response.status != 200:
        report.problems.append(f"/v1/models answered HTTP {response.status}: {str(response.body)[:300]}")
    elif report.model_id not in report.models:
        report.problems.append(f"model {report.model_id!r} is not listed by /v1/models (listed: {report.models})")


def judge_completion(report: ValidationReport, response: LlmResponse, expected_pattern: str) -> None:
    """Record the completion's status, finish reason, answer and usage, and every problem. Pure."""
    report.status = response.status
    if response.status != 200:
        report.problems.append(f"/v1/chat/completions answered HTTP {response.status}: {str(response.body)[:500]}")
        return
    body = response.body if isinstance(response.body, dict) else {}
    choice = (body.get("choices") or [{}])[0]
    report.finish_reason = choice.get("finish_reason")
    report.answer = final_answer(((choice.get("message") or {}).get("content")) or "")
    usage = body.get("usage") or {}
    report.prompt_tokens, report.completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if report.finish_reason != "stop":
        report.problems.append(f"finish_reason is {report.finish_reason!r}, expected 'stop' (a 'length' cut-off "
                               "means the answer is incomplete: raise validation.max_tokens)")
    if not re.search(expected_pattern, report.answer):
        report.problems.append(f"the answer does not match validation.expected_pattern {expected_pattern!r}")


def _with_retries(call, *, what: str, deadline: float, clock: Clock, report: ValidationReport) -> LlmResponse:
    """Call `call(left_s)` until it answers, retrying transient failures with backoff until `deadline`."""
    delay_s = 2.0
    while True:
        left = deadline - clock.monotonic()
        report.attempts += 1
        try:
            return call(left)
        except LlmTimedOut as e:
            if deadline - clock.monotonic() <= delay_s:
                raise ValidationFailed(f"{what}: no complete answer within the validation.timeout_s budget "
                                       f"({e})") from e
        except LlmUnavailable as e:
            if deadline - clock.monotonic() <= delay_s:
                raise ValidationFailed(f"{what}: endpoint unavailable until the deadline: {e}") from e
            run_logger().warning("%s: transient failure, retrying in %.0fs: %s", what, delay_s, e)
        clock.sleep(delay_s)
        delay_s = min(delay_s * 2, 30.0)


def endpoint_for(kube: KubeApi | None, spec: StackSpec) -> LlmApi:
    """Return the LLM gateway: the configured base URL, else the serve Service via the API server's proxy."""
    if spec.validation.base_url:
        return LlmApi(spec.validation.base_url)
    if kube is None:
        raise ValidationFailed("validation.base_url is not set and no Kubernetes API was given to reach the "
                               "serve Service through the API server's proxy")
    s = spec.serving
    target = kube.proxy_target(s.namespace, f"{s.ray_service_name}-serve-svc", SERVE_PORT)
    return LlmApi(target.base_url, token=target.token, verify=target.ssl_context)


def check_endpoint(llm: LlmApi, spec: StackSpec, *, clock: Clock) -> ValidationReport:
    """List the models, send the prompt and judge the answer into a report.

    Never raises for a failed check: a wrong, slow or missing answer is recorded in `problems`.
    """
    v, scale = spec.validation, float(getattr(clock, "time_scale", 1.0))   # httpx timeouts are wall seconds
    report = ValidationReport(llm.base_url, spec.serving.model_id)
    deadline = clock.monotonic() + v.timeout_s
    payload = {"model": report.model_id, "messages": [{"role": "user", "content": v.prompt}],
               "max_tokens": v.max_tokens, "temperature": v.temperature}
    started = [clock.monotonic()]

    def chat(left_s: float) -> LlmResponse:
        started[0] = clock.monotonic()
        return llm.chat_completion(payload, timeout_wall_s=left_s / scale)

    try:
        models = _with_retries(lambda left: llm.list_models(timeout_wall_s=min(left, 60.0) / scale),
                               what="list models", deadline=deadline, clock=clock, report=report)
        judge_models(report, models)
        response = _with_retries(chat, what="chat completion", deadline=deadline, clock=clock, report=report)
    except ValidationFailed as e:          # slow or unreachable: still a report, with what we know
        report.problems.append(str(e))
        return report
    report.latency_s = clock.monotonic() - started[0]
    judge_completion(report, response, v.expected_pattern)
    return report


@task(retries=0, cache_policy=NO_CACHE)
def validate_llm_endpoint(kube: KubeApi | None, spec: StackSpec, *, clock: Clock | None = None,
                          llm: LlmApi | None = None) -> ValidationReport:
    """Validate the served model with one real chat completion; record the result as artifacts.

    Returns the passing report. Raises ValidationFailed (showing the answer) when any check fails,
    or when no complete answer arrives within `validation.timeout_s`; transient failures (connection
    errors, 429/502/503/504) are retried with backoff until then.
    """
    clock = clock or SystemClock()
    own = llm is None
    llm = llm or endpoint_for(kube, spec)
    try:
        report = check_endpoint(llm, spec, clock=clock)
    finally:
        if own:
            llm.close()
    record_validation(report, spec)
    if not report.passed:
        raise ValidationFailed(f"endpoint {report.url} failed validation: {'; '.join(report.problems)}. "
                               f"Answer: {_clip(report.answer) or '(empty)'}")
    return report


def record_validation(report: ValidationReport, spec: StackSpec) -> None:
    """Log the outcome and, inside a Prefect run, write a table and a markdown artifact."""
    log = run_logger()
    tps = f"{report.tokens_per_s:.1f}" if report.tokens_per_s else "n/a"
    latency = f"{report.latency_s:.1f}s" if report.latency_s is not None else "n/a"
    log.info("validation %s: model %s, HTTP %s, finish_reason %s, latency %s, %s completion tokens (%s tokens/s)",
             "passed" if report.passed else "FAILED", report.model_id, report.status, report.finish_reason,
             latency, report.completion_tokens, tps)
    if not in_prefect_run():
        return
    rows = _rows(report, spec)
    create_table_artifact(key=artifact_key(spec.name, "validation"), table=rows,
                          description=f"LLM endpoint validation ({'passed' if report.passed else 'failed'})")
    create_markdown_artifact(key=artifact_key(spec.name, "validation-answer"), markdown=_markdown(report, rows),
                             description="LLM endpoint validation: answer and metrics")


def _rows(report: ValidationReport, spec: StackSpec) -> list[dict[str, Any]]:
    return [
        {"check": "HTTP status", "ok": report.status == 200, "seen": str(report.status)},
        {"check": "finish_reason", "ok": report.finish_reason == "stop", "seen": str(report.finish_reason)},
        {"check": "model listed", "ok": report.model_id in report.models, "seen": ", ".join(map(str, report.models))},
        {"check": "answer matches", "ok": bool(report.answer) and not any("expected_pattern" in p for p in
                                                                          report.problems),
         "seen": _clip(report.answer, 300)},
        {"check": "latency_s", "ok": report.latency_s is not None, "seen": f"{report.latency_s or 0:.2f}"},
        {"check": "tokens (prompt/completion)", "ok": report.completion_tokens is not None,
         "seen": f"{report.prompt_tokens}/{report.completion_tokens}"},
        {"check": "tokens_per_s", "ok": report.tokens_per_s is not None, "seen": f"{report.tokens_per_s or 0:.1f}"},
    ]


def _markdown(report: ValidationReport, rows: list[dict[str, Any]]) -> str:
    table = "\n".join(f"| {r['check']} | {'yes' if r['ok'] else 'NO'} | {r['seen']} |" for r in rows)
    problems = "\n".join(f"- {p}" for p in report.problems) or "- none"
    return (f"# LLM endpoint validation: {'passed' if report.passed else 'FAILED'}\n\n"
            f"Endpoint: `{report.url}`, model `{report.model_id}`, attempts {report.attempts}\n\n"
            f"| check | ok | seen |\n|---|---|---|\n{table}\n\n## Problems\n{problems}\n\n"
            f"## Answer (after `</think>`)\n\n```\n{_clip(report.answer, 5000)}\n```\n")


def _clip(text: str, limit: int = ANSWER_CHARS_IN_ERRORS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"
