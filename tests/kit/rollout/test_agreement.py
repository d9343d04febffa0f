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
    ("a replica that is down does not hold up those after it",
     {"a": [(0, "down")], "b": [(0, True)]}, 10, 5, ("agreed", ["b"], {"a": "Connection refused"}, 0.0)),
    ("down_after is counted from each replica's own first failure",
     {"a": [(0, "down")], "b": [(0, False), (3.0, "down"), (7.0, True)], "c": [(0, True)]}, 10, 5,
     ("agreed", ["b", "c"], {"a": "Connection refused"}, 7.0)),
    ("an answer resets the count: two short outages are not one long one",
     {"a": [(0, True)], "b": [(0, "down"), (3.0, False), (6.0, "down"), (10.0, True)]}, 20, 5,
     ("agreed", ["a", "b"], {}, 10.0)),
    ("unreachable for exactly down_after is down",
     {"a": [(0, True)], "b": [(0, "down"), (5.25, True)]}, 10, 5, ("agreed", ["a"], {"b": "Connection refused"}, 0.0)),
    ("the timeout is exact: an agreement one poll later is too late",
     {"a": [(0, True)], "b": [(0, False), (2.25, True)]}, 2, 5, ("timeout", r"1 of 2 replicas \(b: not yet\)")),
    ("a replica unreachable when the time is up is named so",
     {"a": [(0, True)], "b": [(0, "down")]}, 2, 5,
     ("timeout", r"1 of 2 replicas \(b: unreachable: Connection refused\)")),
    ("every replica still awaited is named",
     {"a": [(0, "stable=1")], "b": [(0, True)], "c": [(0, False)]}, 2, 5,
     ("timeout", r"2 of 3 replicas \(a: stable=1; c: not yet\)")),
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
    agreement.wait(["a", "b"], check, 30, "labels", say=said.append, every=3, clock=clock, sleep=clock.sleep,
                   poll=1.0)
    assert said == [f"still waiting for labels on 1 of 2 replicas (b: stable=1), {t} s of 30 s" for t in (3, 6)]


def test_by_default_it_polls_20_times_a_second_speaks_every_3_s_and_gives_up_on_a_replica_after_5_s():
    clock, said, slept = Clock(), [], []

    def sleep(seconds):
        slept.append(seconds)
        clock.sleep(seconds)
    # b is unreachable from 0 s to 5.5 s: down after 5 s, with a word at 3 s. c agrees at 3.6 s, once
    # the word at 3 s was said and before the next one at 6 s would be.
    check = scripted({"a": [(0, True)], "b": [(0, "down"), (5.5, True)],
                      "c": [(0, False), (3.6, True)]})(clock)
    result = agreement.wait(["a", "b", "c"], check, 30, "labels", say=said.append, clock=clock, sleep=sleep)
    assert (result.agreed, result.down) == (["a", "c"], {"b": "Connection refused"})
    assert set(slept) == {0.05} and clock.now - 100.0 == pytest.approx(5.0, abs=0.06)
    assert said == ["still waiting for labels on 2 of 3 replicas (b: unreachable: Connection refused; c: not yet), "
                    "3 s of 30 s"]


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
    two_down = agreement.Agreement(0.2, ["a"], {"b": "reset", "c": "refused"})
    assert two_down.describe() == "1 of 3 replicas agreed in 0.20 s; down: b (reset); c (refused)"
    with pytest.raises(ValueError, match="^no replica to wait for$"):
        agreement.wait([], lambda r: True, 1, "x")
