"""kit/rollout/agreement.py: the all-replica wait, driven by a fake clock so each case is exact: who
agrees, who is reported down after `down_after` seconds unreachable, who is still awaited."""
from __future__ import annotations

import pytest

from kit.rollout import agreement


class Clock:
    """A monotonic clock that moves only when the wait sleeps."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def scripted(answers: dict):
    """A check answering from a per-replica script, keyed by the clock's time since the start:
    [(from_t, answer)] where answer is True, False, a str, or 'down'."""
    def make(clock: Clock):
        start = clock.now

        def check(replica):
            t = clock.now - start
            answer = [a for since, a in answers[replica] if since <= t][-1]
            if answer == "down":
                raise agreement.ReplicaDown("Connection refused")
            return answer
        return check
    return make


CASES = [
    # (what, script, timeout, down_after, expected: ("agreed", [agreed], {down}, seconds) or ("timeout", text))
    ("all agree at once", {"a": [(0, True)], "b": [(0, True)]}, 10, 5, ("agreed", ["a", "b"], {}, 0.0)),
    ("the last one to agree sets the time", {"a": [(0, True)], "b": [(0, "stable=1"), (2.0, True)]}, 10, 5,
     ("agreed", ["a", "b"], {}, 2.0)),
    ("a replica down for down_after is reported, not waited for",
     {"a": [(0, True)], "b": [(0, "down")]}, 10, 5, ("agreed", ["a"], {"b": "Connection refused"}, 0.0)),
    ("a replica back before down_after is waited for and agrees",
     {"a": [(0, True)], "b": [(0, "down"), (3.0, False), (4.0, True)]}, 10, 5, ("agreed", ["a", "b"], {}, 4.0)),
    ("a replica that answers but never agrees times out, naming its answer",
     {"a": [(0, True)], "b": [(0, "stable=1")]}, 2, 5, ("timeout", r"1 of 2 replicas \(b: stable=1\)")),
]


@pytest.mark.parametrize("what,script,timeout,down_after,expected", CASES, ids=[c[0] for c in CASES])
def test_the_wait(what, script, timeout, down_after, expected):
    clock = Clock()
    check = scripted(script)(clock)
    run = lambda: agreement.wait(list(script), check, timeout, "labels", down_after=down_after,  # noqa: E731
                                 clock=clock, sleep=clock.sleep, poll=0.25)
    if expected[0] == "timeout":
        with pytest.raises(TimeoutError, match=f"waiting for labels on {expected[1]}$"):
            run()
        return
    result = run()
    assert (result.agreed, result.down) == (expected[1], expected[2])
    assert result.seconds == pytest.approx(expected[3], abs=0.26)
    assert result.complete == (not expected[2]) and result.at == pytest.approx(100.0 + result.seconds)


def test_every_replica_down_is_no_agreement_at_all():
    clock = Clock()
    check = scripted({"a": [(0, "down")], "b": [(0, "down")]})(clock)
    with pytest.raises(agreement.NoReplicaUp, match=r"^no replica could be asked about labels: a \(Connection "
                                                     r"refused\); b \(Connection refused\)$"):
        agreement.wait(["a", "b"], check, 30, "labels", down_after=1, clock=clock, sleep=clock.sleep)


def test_an_error_other_than_down_stops_the_wait_at_once():
    def check(replica):
        raise ValueError(f"{replica} failed to load")
    with pytest.raises(ValueError, match="^a failed to load$"):
        agreement.wait(["a"], check, 30, "versions", clock=Clock(), sleep=lambda s: None)


def test_it_says_who_it_waits_for_every_so_often():
    clock, said = Clock(), []
    check = scripted({"a": [(0, True)], "b": [(0, "stable=1"), (7.0, True)]})(clock)
    agreement.wait(["a", "b"], check, 30, "labels", say=said.append, every=3, clock=clock, sleep=clock.sleep)
    assert said == [f"still waiting for labels on 1 of 2 replicas (b: stable=1), {t} s of 30 s" for t in (3, 6)]


def test_one_replica_is_named_by_its_answer_alone():
    clock, said = Clock(), []
    check = scripted({"a": [(0, "1: LOADING")]})(clock)
    with pytest.raises(TimeoutError, match=r"^timed out after 4 s waiting for versions \(1: LOADING\)$"):
        agreement.wait(["a"], check, 4, "versions", say=said.append, every=3, clock=clock, sleep=clock.sleep)
    assert said == ["still waiting for versions (1: LOADING), 3 s of 4 s"]


def test_what_an_agreement_says():
    assert agreement.Agreement(1.234, ["a", "b"]).describe() == "2 of 2 replicas agreed in 1.23 s"
    partial = agreement.Agreement(0.5, ["a"], {"b": "Connection refused"})
    assert partial.describe() == "1 of 2 replicas agreed in 0.50 s; down: b (Connection refused)"
    assert not partial.complete
    assert agreement.Agreement(0.1, ["a"]).describe() == "1 of 1 replica agreed in 0.10 s"
    with pytest.raises(ValueError):
        agreement.wait([], lambda r: True, 1, "x")
