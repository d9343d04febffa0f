"""Online model updates: publish a version atomically, canary it, promote it, roll it back.

The server is driven only through what TF Serving reads: version folders under the model's
base path and the model config file (polled every second by `inv serve`). A rollout keeps the
stable version, the canary and the previous stable loaded (policy `specific`), with labels
`stable`, `canary` and `previous`, so a rollback is a label move the server applies at its next
config poll, with no load in the way. Labels move in two steps, as TF Serving requires: first
the version is loaded, then the label points at it.
"""
from __future__ import annotations

import http.client
import json
import os
import posixpath
import shutil
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from kit import model_config
from kit.model_config import Rollout, load_state, save_state, state_path, write_rollouts
from kit.rollout import agreement
from pyserving import storage
from pyserving.core.source import list_versions
from pyserving.storage.versions import MODEL_FILES
from pyserving.version_dir import publish_version

STAGING_PREFIX = ".tmp-publish-"
REMOVING_PREFIX = ".tmp-remove-"


def version_dirs(base: Path | str) -> dict[int, str]:
    """Version number -> its folder or URL (`00000123` is version 123), as the server's source reads
    them, from a local base path or a bucket (gs://, s3://; {} when it cannot be read)."""
    try:
        return list_versions(str(base))
    except OSError:
        return {}


def disk_versions(base: Path | str) -> list[int]:
    return sorted(version_dirs(base))


def publish(base: Path, source: Path, version: Optional[int] = None) -> int:
    """Copy the SavedModel at `source` to `<base>/<N+1>` atomically: beside it, flushed, renamed."""
    number = version if version is not None else max(disk_versions(base), default=0) + 1
    for stale in base.glob(STAGING_PREFIX + "*"):  # left by a publish that was killed half-way
        shutil.rmtree(stale, ignore_errors=True)
    publish_version(base, number, lambda path: shutil.copytree(source, path), staging_prefix=STAGING_PREFIX)
    return number


def remove_version(base: Path | str, version: int) -> Path | str:
    """Delete `<base>/<version>` so that no server ever sees half of it: renamed to a hidden name
    first (sources skip it at their next poll and retire the version), then deleted. In a bucket,
    which has no rename, its model file goes first (a Source offers no version without one, so no
    server starts loading what is left), then every other object under its prefix."""
    if storage.is_remote(os.fspath(base)):
        return _remove_from_bucket(os.fspath(base), version)
    for stale in base.glob(REMOVING_PREFIX + "*"):  # left by a removal that was killed half-way
        shutil.rmtree(stale, ignore_errors=True)
    path = Path(version_dirs(base)[version])
    hidden = base / f"{REMOVING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    os.rename(path, hidden)
    shutil.rmtree(hidden)
    return path


def _remove_from_bucket(base: str, version: int) -> str:
    url = version_dirs(base)[version]
    store = storage.for_path(url)
    fs, root = store.fs(), url.split("://", 1)[1]
    names = store.listing(url)
    first = [n for n in names if posixpath.basename(n) in MODEL_FILES]
    if first:
        fs.rm([f"{root}/{n}" for n in first])
    rest = [f"{root}/{n}" for n in sorted(names) if n not in first]
    if rest:
        fs.rm(rest)
    return url


@dataclass(frozen=True)
class VersionReport:
    """One version as the server's status reports it: its state and, after a failed load, its error."""

    state: str
    error: str = ""  # "CODE: message" when the status's error_code is not OK


def _get_json(url: str):
    """GET a JSON answer; None on an HTTP error answer (e.g. a label not known yet); ReplicaDown
    when the replica cannot be asked at all (refused, reset, timed out, or no HTTP answer: a body
    cut short, or a port that speaks something else)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as exc:
        raise agreement.ReplicaDown(str(getattr(exc, "reason", exc))) from None
    except http.client.HTTPException as exc:  # its text may be the other protocol's bytes
        raise agreement.ReplicaDown(f"no HTTP answer ({type(exc).__name__})") from None
    except ValueError:
        return None


def fetch_versions(rest: str, model: str) -> dict[int, VersionReport]:
    """GET /v1/models/<model>: each version's state and error; ReplicaDown when unreachable."""
    body = _get_json(f"{rest}/v1/models/{model}") or {}
    reports = {}
    for s in body.get("model_version_status", []):
        status = s.get("status") or {}
        code = status.get("error_code", "OK")
        error = "" if code in ("OK", 0) else f"{code}: {status.get('error_message', '')}"
        reports[int(s["version"])] = VersionReport(s["state"], error)
    return reports


def server_versions(rest: str, model: str) -> dict[int, VersionReport]:
    """fetch_versions, or {} when the server cannot tell."""
    try:
        return fetch_versions(rest, model)
    except agreement.ReplicaDown:
        return {}


def server_status(rest: str, model: str) -> dict[int, str]:
    return {v: r.state for v, r in server_versions(rest, model).items()}


def fetch_label(rest: str, model: str, label: str) -> Optional[int]:
    """The version a label resolves to, read back from the server (the acknowledgement); None
    while the server does not know the label; ReplicaDown when unreachable."""
    body = _get_json(f"{rest}/v1/models/{model}/labels/{label}/metadata")
    try:
        return int(body["model_spec"]["version"])
    except (TypeError, KeyError, ValueError):
        return None


def label_version(rest: str, model: str, label: str) -> Optional[int]:
    try:
        return fetch_label(rest, model, label)
    except agreement.ReplicaDown:
        return None


class LoadFailed(RuntimeError):
    """A version the rollout needs ended its load in END with an error: it will not become AVAILABLE."""

    def __init__(self, model: str, version: int, error: str):
        super().__init__(f"{model} version {version} failed to load: {error}")
        self.model, self.version, self.error = model, version, error


def _versions_loaded(model: str, versions: list[int],
                     failed_before: Optional[dict[str, set[int]]] = None) -> agreement.Check:
    """True once all are AVAILABLE on the replica, else their states; LoadFailed as soon as one of
    them ended in END with an error (it will not become AVAILABLE). A version a replica reported
    failed before this step (`failed_before[rest]`: a broken canary rolled back, fixed on disk and
    canaried again) is tried anew once the config names it again, so its old END counts only once
    the replica has shown it in another state since (the new attempt)."""
    failed_before = failed_before or {}
    moved: dict[str, set[int]] = {}

    def check(rest: str):
        reports = fetch_versions(rest, model)
        stale = failed_before.get(rest, set()) - moved.setdefault(rest, set())
        for v in versions:
            report = reports.get(v)
            if report is not None and report.state != "END":
                moved[rest].add(v)
                stale.discard(v)
            elif report is not None and report.error and v not in stale:
                raise LoadFailed(model, v, report.error)
        if all(v in reports and reports[v].state == "AVAILABLE" for v in versions):
            return True
        return ", ".join(f"{v}: " + ("END, failed before this step: not tried again yet" if v in stale else
                                     reports[v].state if v in reports else "not reported yet") for v in versions)
    return check


def failed_versions(replicas: Sequence[str], model: str, versions: list[int]) -> dict[str, set[int]]:
    """Which of `versions` each replica reports as failed (END with an error) right now."""
    found = {}
    for rest in replicas:
        try:
            reports = fetch_versions(rest, model)
        except agreement.ReplicaDown:
            continue
        found[rest] = {v for v in versions if v in reports and reports[v].state == "END" and reports[v].error}
    return found


def labels_answered(model: str, labels: dict[str, int]) -> agreement.Check:
    """True once the replica answers every label with its version, else what it answers."""
    def check(rest: str):
        answers = {label: fetch_label(rest, model, label) for label in labels}
        return answers == labels or ", ".join(f"{k}={v}" for k, v in answers.items())
    return check


def _snapshot(config_file: Path, model: str) -> dict[Path, Optional[bytes]]:
    """The files a rollout step rewrites, as they are now (None: absent)."""
    files = [config_file, config_file.parent / model_config.CONTAINER_CONFIG_NAME, state_path(config_file, model)]
    return {f: f.read_bytes() if f.exists() else None for f in files}


def _restore(saved: dict[Path, Optional[bytes]]) -> None:
    for path, data in saved.items():
        if data is None:
            path.unlink(missing_ok=True)
        else:
            tmp = path.with_name(path.name + ".restore")
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: a polling server never reads half a file


def config_steps(current: Optional[Rollout], new: Rollout) -> list[tuple[list[int], dict[str, int]]]:
    """The (versions, labels) of `new`'s model in the two configs a step writes. Step 1: the old
    labels stay valid while new versions load, so both sets of versions are aspired; step 2: the
    labels move and the versions no longer named retire."""
    keep = sorted(set(current.versions() if current else []) | set(new.versions()))
    return [(keep, current.labels() if current else {}), (new.versions(), new.labels())]


def apply(config_file: Path, rollout: Rollout, others: list[Rollout], replicas: Sequence[str],
          timeout: float = 60.0, say: Optional[Callable[[str], None]] = None, every: float = 3.0,
          config_written: Callable[[], None] = lambda: None, down_after: float = 5.0) -> agreement.Agreement:
    """Make every replica (REST base URLs) serve `rollout`; returns the labels' agreement (its
    `at` is the monotonic time the last replica acknowledged, its `down` the replicas that could
    not be asked: they read the config when they start, but nothing here saw them take it).

    Step 1 loads every version the rollout names (labels left as they are) and waits until every
    replica has them AVAILABLE; step 2 moves the labels and retires the versions no longer named;
    the acknowledgement is every replica answering each label with its new version. A version
    that fails to load on any replica raises LoadFailed as soon as that replica reports it (END
    with its error); on any failure (also every replica down, a timeout or Ctrl-C) the config
    file and the rollout state are put back as they were, so the replicas stop aspiring the
    version and serve exactly what they served before. `config_written` runs after each write
    of the config file (and after a restore): `--target=k8s` applies the ConfigMap there. `say`
    hears what is being waited for, every `every` seconds.
    """
    current = load_state(config_file, rollout.model)
    saved = _snapshot(config_file, rollout.model)
    versions = rollout.versions()
    failed_before = failed_versions(replicas, rollout.model, versions)  # read before the config names them again
    try:
        (keep, old_labels), _ = config_steps(current, rollout)
        write_rollouts(config_file, others, rollout, keep, old_labels)
        config_written()
        agreement.wait(replicas, _versions_loaded(rollout.model, versions, failed_before), timeout,
                       f"versions {versions} of {rollout.model} to be AVAILABLE", say, every, down_after)
        write_rollouts(config_file, others, rollout)  # step 2: labels move, unnamed versions retire
        config_written()
        agreed = agreement.wait(replicas, labels_answered(rollout.model, rollout.labels()), timeout,
                                f"labels {rollout.labels()} of {rollout.model}", say, every, down_after)
        save_state(config_file, rollout)
    except BaseException:  # a failure, a timeout or Ctrl-C: the replicas go back to what they served
        _restore(saved)
        config_written()
        raise
    return agreed


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
