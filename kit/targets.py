"""The rollout targets `--target` names, registered here, in one place: adding one is a module
with a `create(namespace, dry_run, say)` returning a kit.rollout.target.Target, and a line below."""
from __future__ import annotations

from invoke.exceptions import Exit

from kit.k8s import target as k8s_target
from kit.rollout import target as local_target
from kit.rollout.target import Say, Target

TARGETS = {
    "local": local_target.create,
    "k8s": k8s_target.create,
}


def target(name: str = "local", namespace: str = "", dry_run: bool = False, say: Say = print) -> Target:
    """The Target a task's --target names; Exit (one line) when it cannot be had."""
    create = TARGETS.get(name)
    if create is None:
        raise Exit(f"--target must be {' or '.join(TARGETS)}, got {name!r}")
    return create(namespace, dry_run, say)
