"""kit/soak.py: the plan (exactly the switches asked for, rollbacks among them, each valid where it
stands, checked by playing it through the rollout state machine) and the verdict (summarize()
counts what a soak saw, report() words it for `inv soak` and says when the soak failed). Answers
and switches are made up here, so that the right counts are known: the soak itself runs in tests/e2e."""
from __future__ import annotations

import json
import re

import pytest

from kit import rollout, soak

T0 = 100.0
B_OF = {1: 1.0, 2: 2.0}  # version -> the b its answers carry
EVENTS = [  # times in seconds since T0, as run() records them
    {"action": "canary", "started": 2.0, "acknowledged": 2.5, "stable": 1, "rss_mb": 300.0},
    {"action": "promote", "started": 4.0, "acknowledged": 4.6, "stable": 2, "rss_mb": 310.0},
]


def answer(at: float, b, protocol="rest", ms: float = 10.0):
    return soak.Answer(T0 + at, T0 + at + ms / 1000, protocol, b, "" if b is not None else "ConnectionError()")


def test_a_clean_soak_passes_and_says_what_it_saw(tmp_path):
    answers = [answer(1.0, 1.0), answer(2.7, 1.0, "grpc"), answer(4.2, 1.0), answer(5.0, 2.0, "grpc")]
    summary = soak.summarize(tmp_path, answers, EVENTS, B_OF, T0)
    assert (summary["requests"], summary["failed"], summary["wrong_version_after_ack"], summary["switches"]) == (
        4, 0, 0, 2)
    assert json.loads((tmp_path / "summary.json").read_text())["requests"] == 4
    assert (tmp_path / "latency.png").stat().st_size > 1000
    line, failure = soak.report(summary, tmp_path)
    assert failure is None
    assert re.fullmatch(
        r"requests 4, failed 0, wrong version after ack 0, switches 2, p50 10\.0 ms, p99 10\.0 ms; "
        rf"rss after switches 300 -> 310 MB; {tmp_path}/summary.json, {tmp_path}/latency.png", line), line


def test_failed_requests_and_wrong_versions_after_a_switch_fail_the_soak(tmp_path):
    answers = [
        answer(1.0, 2.0),          # before the first switch: nothing is promised yet
        answer(2.7, 1.0),          # stable is 1 after the canary was acknowledged: right
        answer(3.0, 2.0, "grpc"),  # the canary's answer on the stable label: wrong
        answer(4.2, 1.0),          # the promotion started but is not acknowledged yet: not judged
        answer(5.0, 1.0),          # after the promotion was acknowledged, 1 is wrong
        answer(5.5, None),         # failed
    ]
    summary = soak.summarize(tmp_path, answers, EVENTS, B_OF, T0)
    assert (summary["failed"], summary["wrong_version_after_ack"]) == (1, 2)
    assert summary["first_errors"] == ["ConnectionError()"]
    line, failure = soak.report(summary, tmp_path)
    assert line.startswith("requests 6, failed 1, wrong version after ack 2, switches 2, ")
    assert failure == "soak: 1 request(s) failed, 2 answered by the wrong version after a switch"


def test_a_soak_that_made_no_switch_fails_without_a_crash(tmp_path):
    summary = soak.summarize(tmp_path, [answer(1.0, 1.0)], [], B_OF, T0)
    line, failure = soak.report(summary, tmp_path)
    assert "switches 0" in line and "no switch made" in line
    assert failure == "soak: no switch was made before the time limit"


def test_a_wrong_version_alone_fails_the_soak(tmp_path):
    summary = soak.summarize(tmp_path, [answer(2.7, 1.0), answer(5.0, 1.0, "grpc")], EVENTS, B_OF, T0)
    assert (summary["failed"], summary["wrong_version_after_ack"]) == (0, 1)
    assert soak.report(summary, tmp_path)[1] == (
        "soak: 0 request(s) failed, 1 answered by the wrong version after a switch")


SWITCHES = ("canary", "promote", "rollback")


def play(actions: list[str]) -> list[tuple]:
    """Run a plan through kit.rollout's state machine (ValueError on a step that is not possible)."""
    state, published, history = rollout.Rollout("soak", "/b", stable=1), 1, []
    for action in actions:
        if action == "publish":
            published += 1
            continue
        state = (rollout.start_canary(state, published) if action == "canary"
                 else rollout.promote(state) if action == "promote" else rollout.rollback(state))
        history.append((action, state.stable, state.canary, state.previous))
    return history


@pytest.mark.parametrize("switches", range(1, 25))
def test_the_plan_makes_exactly_the_switches_asked_for_and_each_is_possible(switches):
    actions = soak.plan(switches)
    assert sum(a in SWITCHES for a in actions) == switches
    assert set(actions) <= {"publish", *SWITCHES} and actions[-1] in SWITCHES
    assert len(play(actions)) == switches
    for i, action in enumerate(actions):  # a version is published just before its canary, never unused
        assert (action == "publish") == (i + 1 < len(actions) and actions[i + 1] == "canary")


@pytest.mark.parametrize("switches", [2, 4, 7, 8, 24])
def test_rollbacks_are_among_the_switches_both_kinds_once_there_are_enough(switches):
    history = play(soak.plan(switches))
    dropped = [h for h, before in zip(history[1:], history) if h[0] == "rollback" and before[2] is not None]
    back = [h for h, before in zip(history[1:], history) if h[0] == "rollback" and before[2] is None]
    assert dropped  # a canary dropped
    assert bool(back) == (switches >= 7)  # and, from the seventh switch on, the stable version moved back
    assert ("promote" in [h[0] for h in history]) == (switches >= 4)


def test_fewer_switches_than_asked_for_fail_the_soak(tmp_path):
    answers = [answer(1.0, 1.0), answer(5.0, 2.0, "grpc")]
    summary = soak.summarize(tmp_path, answers, EVENTS, B_OF, T0)
    line, failure = soak.report(summary, tmp_path, wanted=3)
    assert "switches 2 of 3" in line
    assert failure == "soak: only 2 of 3 switches within the time limit"
    assert soak.report(summary, tmp_path, wanted=2)[1] is None
