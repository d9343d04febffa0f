"""Online model updates: publish a version atomically, canary it, promote it, roll it back.

The server is driven only through what TF Serving reads: version folders under the model's
base path and the model config file (polled every second by `inv serve`). A rollout keeps the
stable version, the canary and the previous stable loaded (policy `specific`), with labels
`stable`, `canary` and `previous`, so a rollback is a label move the server applies at its next
config poll, with no load in the way. Labels move in two steps, as TF Serving requires: first
the version is loaded, then the label points at it.
"""
from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from kit import serving
from pyserving.core.source import list_versions
from pyserving.version_dir import publish_version

STATE_SUFFIX = ".rollout.json"
STAGING_PREFIX = ".tmp-publish-"


def disk_versions(base: Path) -> list[int]:
    try:
        return sorted(list_versions(str(base)))
    except OSError:
        return []


def publish(base: Path, source: Path, version: Optional[int] = None) -> int:
    """Copy the SavedModel at `source` to `<base>/<N+1>` atomically: beside it, flushed, renamed."""
    number = version if version is not None else max(disk_versions(base), default=0) + 1
    for stale in base.glob(STAGING_PREFIX + "*"):  # left by a publish that was killed half-way
        shutil.rmtree(stale, ignore_errors=True)
    publish_version(base, number, lambda path: shutil.copytree(source, path), staging_prefix=STAGING_PREFIX)
    return number


@dataclass
class Rollout:
    """Which versions of one model serve which role."""

    model: str
    base_path: str
    stable: Optional[int]  # None: no rollout yet, the latest version serves
    canary: Optional[int] = None
    previous: Optional[int] = None
    history: list = field(default_factory=list)

    def versions(self) -> list[int]:
        return sorted({v for v in (self.stable, self.canary, self.previous) if v is not None})

    def labels(self) -> dict[str, int]:
        if self.stable is None:
            return {}
        labels = {"stable": self.stable}
        if self.canary is not None:
            labels["canary"] = self.canary
        if self.previous is not None:
            labels["previous"] = self.previous
        return labels


def state_path(config_file: Path, model: str) -> Path:
    return config_file.parent / f"{model}{STATE_SUFFIX}"


def load_state(config_file: Path, model: str) -> Optional[Rollout]:
    path = state_path(config_file, model)
    return Rollout(**json.loads(path.read_text())) if path.exists() else None


def save_state(config_file: Path, rollout: Rollout) -> None:
    state_path(config_file, rollout.model).write_text(json.dumps(asdict(rollout), indent=1))


def write_config(config_file: Path, others: list[Rollout], model: Rollout,
                 versions: Optional[list[int]] = None, labels: Optional[dict] = None) -> None:
    """The model config: `others` as they are, `model` with the given versions and labels."""
    rollouts = others + [model]
    serving.write_model_config(
        {r.model: Path(r.base_path) for r in rollouts}, config_file,
        labels={**{r.model: r.labels() for r in others}, model.model: model.labels() if labels is None else labels},
        specific={**{r.model: r.versions() for r in others}, model.model: versions or model.versions()},
    )


def server_status(rest: str, model: str) -> dict[int, str]:
    try:
        with urllib.request.urlopen(f"{rest}/v1/models/{model}", timeout=10) as resp:
            body = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    return {int(s["version"]): s["state"] for s in body.get("model_version_status", [])}


def label_version(rest: str, model: str, label: str) -> Optional[int]:
    """The version a label resolves to, read back from the server (the acknowledgement)."""
    req = urllib.request.Request(f"{rest}/v1/models/{model}/labels/{label}/metadata")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(json.loads(resp.read())["model_spec"]["version"])
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def apply(config_file: Path, rollout: Rollout, others: list[Rollout], rest: str, timeout: float = 60.0) -> float:
    """Make the server serve `rollout`; returns the time (monotonic) the server acknowledged it.

    Step 1 loads every version the rollout names (labels left as they are); step 2 moves the
    labels, once the versions they point at are AVAILABLE, and retires the versions no longer
    named; the acknowledgement is the server answering each label with its new version.
    """
    current = load_state(config_file, rollout.model)
    # Step 1: the old labels stay valid while new versions load, so keep both sets aspired.
    keep = sorted(set(current.versions() if current else []) | set(rollout.versions()))
    write_config(config_file, others, rollout, keep, current.labels() if current else {})
    _wait(lambda: all(server_status(rest, rollout.model).get(v) == "AVAILABLE" for v in rollout.versions()),
          timeout, f"versions {rollout.versions()} of {rollout.model} to be AVAILABLE")
    write_config(config_file, others, rollout)  # step 2: labels move, unnamed versions retire
    _wait(lambda: all(label_version(rest, rollout.model, k) == v for k, v in rollout.labels().items()),
          timeout, f"labels {rollout.labels()} of {rollout.model}")
    acknowledged = time.monotonic()
    save_state(config_file, rollout)
    return acknowledged


def start_canary(rollout: Rollout, version: int) -> Rollout:
    return Rollout(rollout.model, rollout.base_path, rollout.stable, version, rollout.previous,
                   rollout.history + [("canary", version)])


def promote(rollout: Rollout) -> Rollout:
    if rollout.canary is None:
        raise ValueError(f"{rollout.model} has no canary to promote")
    return Rollout(rollout.model, rollout.base_path, rollout.canary, None, rollout.stable,
                   rollout.history + [("promote", rollout.canary)])


def rollback(rollout: Rollout) -> Rollout:
    """Drop the canary if there is one, else make the previous stable version stable again."""
    if rollout.canary is not None:
        return Rollout(rollout.model, rollout.base_path, rollout.stable, None, rollout.previous,
                       rollout.history + [("rollback", rollout.canary)])
    if rollout.previous is None:
        raise ValueError(f"{rollout.model} has no previous version to roll back to")
    return Rollout(rollout.model, rollout.base_path, rollout.previous, None, None,
                   rollout.history + [("rollback", rollout.stable)])


def plain(model: str, base: Path) -> Rollout:
    """A model served the ordinary way (latest version, no labels)."""
    return Rollout(model, str(base), stable=None)


def rollouts_for(config_file: Path, models: dict[str, Path]) -> list[Rollout]:
    """Each model's rollout state, or the ordinary latest-version serving when it has none."""
    return [load_state(config_file, name) or plain(name, base) for name, base in models.items()]
