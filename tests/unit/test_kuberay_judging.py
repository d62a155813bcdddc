"""Pure decisions of the model-load waiter (budgets, suspects) and of the endpoint validation."""

from __future__ import annotations

import pytest

from blocks.errors import RolloutFailed, WaitTimedOut
from blocks.spec import GUIDE_ANSWER_PATTERN
from tasks.gateways.llm import LlmResponse
from tasks.ray_service_download import DiskTrend, DiskWatch
from tasks.ray_service_readiness import Classified, Phase
from tasks.ray_service_wait import PhaseBudgets, WaitSettings, _Judge
from tasks.validate_endpoint import ValidationReport, final_answer, judge_completion, judge_models
from tasks.waiting import Look, State


class StepClock:
    """A clock that only moves when told to (the judge never sleeps)."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def progressing(phase, detail="d", suspect=None):
    return Classified(Look(State.PROGRESSING, detail), phase, suspect)


def judge(**settings):
    clock = StepClock()
    return _Judge("RayService default/deepseek-r1", WaitSettings(timeout_s=3600, **settings), clock), clock


def test_a_fatal_look_fails_at_once_naming_phase_and_detail():
    j, _ = judge()
    with pytest.raises(RolloutFailed, match=r"deepseek-r1 \[image-pull\]: pod x is ImagePullBackOff"):
        j.judge(Classified(Look(State.FATAL, "pod x is ImagePullBackOff"), Phase.IMAGE_PULL))


def test_a_suspect_becomes_fatal_only_after_its_grace_period():
    j, clock = judge(suspect_grace_s=120)
    j.judge(progressing(Phase.GPU_NODES, suspect="pod p is unschedulable"))
    clock.now = 100
    j.judge(progressing(Phase.GPU_NODES, suspect="pod p is unschedulable"))
    assert j.next_look_in() == pytest.approx(20)        # the grace ends before the next regular look
    clock.now = 121
    with pytest.raises(RolloutFailed, match=r"pod p is unschedulable \(persisted 121s\)"):
        j.judge(progressing(Phase.GPU_NODES, suspect="pod p is unschedulable"))


def test_a_suspect_may_ask_for_a_longer_grace():
    j, clock = judge(suspect_grace_s=60)
    slow = Classified(Look(State.PROGRESSING, "d"), Phase.GPU_NODES, "no status yet", 300)
    j.judge(slow)
    clock.now = 299
    j.judge(slow)
    clock.now = 300
    with pytest.raises(RolloutFailed, match="no status yet"):
        j.judge(slow)


def test_a_suspect_that_clears_restarts_its_grace_period():
    j, clock = judge(suspect_grace_s=120)
    j.judge(progressing(Phase.GPU_NODES, suspect="s"))
    clock.now = 100
    j.judge(progressing(Phase.GPU_NODES))
    clock.now = 200
    j.judge(progressing(Phase.GPU_NODES, suspect="s"))
    clock.now = 300
    j.judge(progressing(Phase.GPU_NODES, suspect="s"))      # 100 s since it came back


def test_a_phase_overrunning_its_budget_is_a_stall_naming_the_phase():
    j, clock = judge(budgets=PhaseBudgets(weight_download_s=600))
    j.judge(progressing(Phase.GPU_NODES))
    clock.now = 1000
    j.judge(progressing(Phase.WEIGHT_DOWNLOAD, "downloading"))     # budget counts from here
    clock.now = 1500
    j.judge(progressing(Phase.WEIGHT_DOWNLOAD, "downloading"))
    clock.now = 1601
    with pytest.raises(WaitTimedOut, match=r"stalled in phase weight-download for 601s \(budget 600s\)"):
        j.judge(progressing(Phase.WEIGHT_DOWNLOAD, "downloading"))


def test_the_overall_deadline_ends_the_wait():
    j, clock = judge(budgets=PhaseBudgets(engine_start_s=10_000))
    j.judge(progressing(Phase.ENGINE_START))
    clock.now = 3601
    with pytest.raises(WaitTimedOut, match=r"not ready after 3600s \(phase engine-start\)"):
        j.judge(progressing(Phase.ENGINE_START))


def test_next_look_comes_no_later_than_a_budget_end():
    j, clock = judge(budgets=PhaseBudgets(serve_running_s=20), look_interval_s=15, min_look_gap_s=2)
    j.judge(progressing(Phase.SERVE_RUNNING))
    clock.now = 10
    assert j.next_look_in() == pytest.approx(10)
    clock.now = 19.5
    assert j.next_look_in() == 2     # never busier than the minimum gap


# -- validation ---------------------------------------------------------------------------------

GOOD = ("<think>\nRed at the bottom, then blue, yellow on blue; blue moves to the top...\n</think>\n\n"
        "**Final order (bottom to top):** red, yellow, blue, green")


def completion(content=GOOD, finish="stop", status=200):
    return LlmResponse(status, {"id": "chatcmpl-1", "object": "chat.completion", "model": "deepseek",
                                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                             "finish_reason": finish}],
                                "usage": {"prompt_tokens": 88, "completion_tokens": 412, "total_tokens": 500}},
                       1.0)


def report():
    return ValidationReport("https://k8s/api/v1/namespaces/default/services/x:serve/proxy", "deepseek")


def test_the_guides_answer_passes_and_only_the_text_after_think_is_judged():
    r = report()
    judge_completion(r, completion(), GUIDE_ANSWER_PATTERN)
    assert r.passed and r.answer.startswith("**Final order") and r.completion_tokens == 412
    r = report()
    judge_completion(r, completion("<think>red, yellow, blue, green</think> blue, red, green, yellow"),
                     GUIDE_ANSWER_PATTERN)
    assert not r.passed and "expected_pattern" in r.problems[0]


@pytest.mark.parametrize("response, problem", [
    (completion(finish="length"), "finish_reason is 'length'"),
    (LlmResponse(500, "Internal Server Error", 0.1), "HTTP 500"),
    (completion(content="green, blue, yellow, red"), "does not match"),
])
def test_each_failed_check_is_named(response, problem):
    r = report()
    judge_completion(r, response, GUIDE_ANSWER_PATTERN)
    assert not r.passed and any(problem in p for p in r.problems)


def test_the_model_must_be_listed():
    r = report()
    judge_models(r, LlmResponse(200, {"object": "list", "data": [{"id": "llama", "object": "model"}]}, 0.1))
    assert r.models == ["llama"] and "model 'deepseek' is not listed" in r.problems[0]


def test_final_answer_takes_the_text_after_the_last_think_tag():
    assert final_answer("a</think>b</think> c ") == "c"
    assert final_answer(" plain ") == "plain"


def test_disk_watch_tells_a_growing_download_from_a_finished_one():
    clock = StepClock()
    watch = DiskWatch(clock, flat_after_s=60)
    assert watch.update(None) is None
    assert watch.update(10.0) == DiskTrend(10.0, None)         # one reading: no trend yet
    clock.now = 30
    assert watch.update(200.0) == DiskTrend(200.0, True)
    clock.now = 80
    assert watch.update(200.2) == DiskTrend(200.2, True)       # below the noise threshold, still recent
    clock.now = 91
    assert watch.update(200.3) == DiskTrend(200.3, False)      # flat for over a minute: engine start


def test_a_disk_that_never_grew_stays_unknown():
    clock = StepClock()
    watch = DiskWatch(clock, flat_after_s=60)
    watch.update(10.0)
    clock.now = 600
    assert watch.update(10.0).growing is None                   # a stalled download is not an engine start
