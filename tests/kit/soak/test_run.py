"""kit/soak/run.py: the plan (exactly the switches asked for, rollbacks among them, each valid where it
stands, checked by playing it through the rollout state machine), where the stops and kills fall,
and the endpoints REST clients read. The soak itself runs in tests/e2e."""
from __future__ import annotations

import pytest

from kit import model_config
from kit.rollout import plan as rollout
from kit.soak import run as soak

SWITCHES = ("canary", "promote", "rollback")


def play(actions: list[str]) -> list[tuple]:
    """Run a plan through kit.rollout.plan's state machine (ValueError on a step that is not possible)."""
    state, published, history = model_config.Rollout("soak", "/b", stable=1), 1, []
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




@pytest.mark.parametrize("switches,replicas,expected", [
    (24, 3, {8: ("SIGTERM", 1), 16: ("SIGKILL", 2)}),
    (24, 2, {8: ("SIGTERM", 1), 16: ("SIGKILL", 0)}),  # two replicas: the other one is lost later
    (6, 3, {2: ("SIGTERM", 1), 4: ("SIGKILL", 2)}),
    (24, 1, {}),  # one replica: stopping it would leave nothing to answer
    (2, 3, {}),  # too few switches to put a stop and a kill between others
])
def test_a_graceful_stop_a_third_of_the_way_in_and_a_kill_two_thirds_in(switches, replicas, expected):
    plan = soak.kill_plan(switches, replicas)
    assert plan == expected
    if plan:  # never on the first or the last switch: there are steps before and after each
        assert all(1 < at < switches for at in plan)


@pytest.mark.parametrize("switches,replicas,workers,expected", [
    (24, 1, 2, {16: ("SIGKILL-worker", 1)}),  # one replica with workers: worker 1 lost during a step
    (6, 1, 4, {4: ("SIGKILL-worker", 1)}),
    (24, 1, 1, {}),
    (2, 1, 2, {}),
])
def test_with_workers_one_of_them_is_killed_two_thirds_in(switches, replicas, workers, expected):
    assert soak.kill_plan(switches, replicas, workers) == expected


def test_endpoints_leave_and_rejoin_the_rotation_in_their_order():
    endpoints = soak.Endpoints(["a", "b", "c"])
    endpoints.remove("b")
    assert endpoints.ready() == ["a", "c"] and endpoints.all == ["a", "b", "c"]
    endpoints.add("b")
    endpoints.remove("x")  # not one of them: nothing happens
    assert endpoints.ready() == ["a", "b", "c"]
