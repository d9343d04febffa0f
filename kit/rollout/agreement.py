"""Wait until every replica agrees: each one answers the same question (these versions AVAILABLE,
these labels on these versions) with the wanted answer.

Replicas never talk to each other (../shared/DESIGN.md: they share one model directory and one
models.config, as pods share a volume and a ConfigMap), and each one reads the config on its own
timer, so for a while they disagree. Whoever changes the config polls every replica until each
reports the change. A replica that stays unreachable for `down_after` seconds is reported down
rather than waited for, and never counted as agreeing: the caller says so instead of claiming
success. The same wait serves local replicas (`inv serve --replicas`) and pods reached through
`kubectl port-forward` (`--target=k8s`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence


class ReplicaDown(Exception):
    """A replica could not be asked (connection refused, reset, timed out); the reason is the message."""


class NoReplicaUp(RuntimeError):
    """Every replica was down: nobody agreed to anything."""


# A check asks one replica (its REST base URL): True once it agrees; while it does not yet, False
# or a few words saying what it answers instead; it raises ReplicaDown when the replica cannot be
# asked, or any other error to stop the wait.
Check = Callable[[str], "bool | str"]


@dataclass
class Agreement:
    """How a wait ended: who agreed, who was down (replica -> why), and when."""

    seconds: float  # from the start of the wait until the last replica agreed
    agreed: list = field(default_factory=list)
    down: dict = field(default_factory=dict)
    at: float = 0.0  # the monotonic time the last replica agreed

    @property
    def complete(self) -> bool:
        return not self.down

    def describe(self) -> str:
        n = len(self.agreed) + len(self.down)
        text = f"{len(self.agreed)} of {n} replica{'s' if n != 1 else ''} agreed in {self.seconds:.2f} s"
        if self.down:
            text += "; down: " + "; ".join(f"{r} ({why})" for r, why in self.down.items())
        return text


def wait(replicas: Sequence[str], check: Check, timeout: float, what: str,
         say: Optional[Callable[[str], None]] = None, every: float = 3.0, down_after: float = 5.0,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
         poll: float = 0.05) -> Agreement:
    """Poll every replica with `check` until each one agrees or has been unreachable for
    `down_after` seconds; TimeoutError after `timeout` seconds, NoReplicaUp when all are down.
    `say` hears who is still awaited, every `every` seconds."""
    if not replicas:
        raise ValueError("no replica to wait for")
    started = clock()
    deadline, next_word = started + timeout, started + every
    agreed: dict[str, float] = {}
    down: dict[str, str] = {}
    unreachable_since: dict[str, float] = {}
    last_answer: dict[str, str] = {}
    while True:
        for replica in replicas:
            if replica in agreed or replica in down:
                continue
            try:
                ok = check(replica)
            except ReplicaDown as exc:
                now = clock()
                first = unreachable_since.setdefault(replica, now)
                last_answer[replica] = f"unreachable: {exc}"
                if now - first >= down_after:
                    down[replica] = str(exc)
                continue
            unreachable_since.pop(replica, None)
            if ok is True:
                agreed[replica] = clock()
            else:
                last_answer[replica] = ok or "not yet"
        if len(agreed) + len(down) == len(replicas):
            break
        now = clock()
        if now >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}"
                               + _pending(replicas, agreed, down, last_answer))
        if say is not None and now >= next_word:
            say(f"still waiting for {what}{_pending(replicas, agreed, down, last_answer)}, "
                f"{now - started:.0f} s of {timeout:.0f} s")
            next_word += every
        sleep(poll)
    if not agreed:
        raise NoReplicaUp(f"no replica could be asked about {what}: "
                          + "; ".join(f"{r} ({why})" for r, why in down.items()))
    last = max(agreed.values())
    return Agreement(seconds=last - started, agreed=[r for r in replicas if r in agreed], down=down, at=last)


def _pending(replicas, agreed, down, last_answer) -> str:
    """' (what it answers)' for one replica; ' on k of n replicas (r: answer; ...)' for several.
    Called after a whole round, so every replica still awaited has answered once."""
    if len(replicas) == 1:
        return f" ({last_answer[replicas[0]]})"
    pending = [f"{r}: {last_answer[r]}" for r in replicas if r not in agreed and r not in down]
    return f" on {len(pending)} of {len(replicas)} replicas ({'; '.join(pending)})"
