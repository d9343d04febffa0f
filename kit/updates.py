"""Online updates as the kit's tasks run them: publish, canary, promote, rollback, versions.

kit/rollout.py holds the rollout model and the config writing; this module applies it to the
kit's own models (build/models/<model>) and to the server `inv serve` started (build/server.json).
Each function prints with `say` and stops with invoke's `Exit(message)`, as a task would.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from invoke.exceptions import Exit

from kit import paths, pipeline, rollout, serving

NO_SERVER = "no server is running: start one with `inv serve`"


@dataclass
class Live:
    """One model's rollout as the running server serves it, and every other model's."""

    rest: str
    current: rollout.Rollout
    others: list[rollout.Rollout]


def live(model: str) -> Live:
    models = pipeline.kit_models()
    if model not in models:
        raise Exit(f"unknown model {model!r}: trained models are {', '.join(models)}")
    state = serving.running()
    if state is None:
        raise Exit(NO_SERVER)
    rest = f"http://127.0.0.1:{state['rest_port']}"
    config = paths.MODEL_CONFIG
    current = rollout.load_state(config, model)
    if current is None:  # first rollout: the version being served now is the stable one
        served = [v for v, s in rollout.server_status(rest, model).items() if s == "AVAILABLE"]
        if not served:
            raise Exit(f"the server has no AVAILABLE version of {model}")
        current = rollout.Rollout(model, str(models[model]), stable=max(served))
    others = [r for r in rollout.rollouts_for(config, models) if r.model != model]
    return Live(rest, current, others)


def apply(new: rollout.Rollout, label: str, say=print) -> None:
    """Make the running server serve `new`; say when it acknowledged it."""
    now = live(new.model)
    started = time.monotonic()
    try:
        rollout.apply(paths.MODEL_CONFIG, new, now.others, now.rest)
    except (TimeoutError, ValueError) as exc:
        raise Exit(f"{label}: {exc}") from None
    say(f"{label}: {new.model} stable={new.stable} canary={new.canary} previous={new.previous} "
        f"(acknowledged by the server in {time.monotonic() - started:.2f} s)")


def publish(model: str, source: str = "", say=print) -> int:
    """Publish `source` (default: a copy of the newest version) as the model's next version."""
    base = pipeline.kit_models().get(model)
    if base is None:
        raise Exit(f"unknown model {model!r}")
    newest = max(rollout.disk_versions(base), default=None)
    src = Path(source) if source else (base / str(newest) if newest is not None else None)
    if src is None or not src.is_dir():
        raise Exit(f"nothing to publish: {src}")
    pin_before_publish(model, say)
    version = rollout.publish(base, src)
    say(f"published {src} as {base / str(version)}")
    return version


def pin_before_publish(model: str, say=print) -> None:
    """Under the `latest` policy a published version would go live at the next poll; a rollout
    pins the version being served (label `stable`) first, so that only `canary` exposes the new one."""
    config = paths.MODEL_CONFIG
    if rollout.load_state(config, model) is not None:
        return
    if serving.running() is None:  # no server to ask: pin the newest version on disk
        models = pipeline.kit_models()
        base = models[model]
        others = [r for r in rollout.rollouts_for(config, models) if r.model != model]
        pinned = rollout.Rollout(model, str(base), stable=max(rollout.disk_versions(base)))
        rollout.write_config(config, others, pinned)
        rollout.save_state(config, pinned)
        return
    apply(live(model).current, "pin", say)


def canary(model: str, version: int = 0, say=print) -> None:
    """Serve `version` (default: the newest on disk) beside the stable one, labelled `canary`."""
    current = live(model).current
    target = version or max(rollout.disk_versions(Path(current.base_path)))
    apply(rollout.start_canary(current, target), "canary", say)


def transition(model: str, step: str, say=print) -> None:
    """`promote` or `rollback` (the functions of kit.rollout), applied to the running server."""
    current = live(model).current
    try:
        new = getattr(rollout, step)(current)
    except ValueError as exc:
        raise Exit(str(exc)) from None
    apply(new, step, say)


def versions(model: str, say=print) -> None:
    """What is on disk, which roles the rollout gives, and what the server reports."""
    base = pipeline.kit_models().get(model)
    if base is None:
        raise Exit(f"unknown model {model!r}")
    say(f"on disk ({base}): {rollout.disk_versions(base)}")
    state = rollout.load_state(paths.MODEL_CONFIG, model)
    say("rollout: " + (f"stable={state.stable} canary={state.canary} previous={state.previous}" if state
                       else "none (the latest version serves)"))
    running = serving.running()
    if running is None:
        say("server: not running")
        return
    status = rollout.server_status(f"http://127.0.0.1:{running['rest_port']}", model)
    say("server: " + ", ".join(f"{v}={s}" for v, s in sorted(status.items())))
