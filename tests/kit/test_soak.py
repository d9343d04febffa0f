"""kit/soak.py's plan: exactly the switches asked for, rollbacks among them, each valid where it stands
(checked by playing it through the rollout state machine); the soak itself runs in tests/e2e/test_updates.py."""
from __future__ import annotations

import pytest

from kit import rollout, soak

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
