"""Online updates as the kit's tasks run them: publish, canary, promote, rollback, versions, remove.

kit/rollout/plan.py holds the rollout steps and their apply, kit/model_config.py the roles and the
config writing; this module applies them to the kit's own models (build/models/<model>) on a
Target: the server `inv serve` started (build/server.json) or another one (kit/targets.py).
Each function prints with `say` and stops with invoke's `Exit(message)`, as a task would. A step
that fails leaves the server serving what it served before (see rollout.apply).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from invoke.exceptions import Exit

from kit import model_config, paths
from kit.errors import KitError
from kit.model_config import Rollout
from kit.rollout import agreement, model_check
from kit.rollout import plan as rollout
from kit.rollout.target import LOCAL, Target
from kit.serve import server as serving
from pyserving import storage

PROGRESS_EVERY_S = 3.0  # how often a waiting step says what it waits for


@dataclass
class Live:
    """One model's rollout as the replicas serve it, and every other model's."""

    replicas: list[str]  # every replica's REST base URL
    current: Rollout
    others: list[Rollout]


def _served(replicas: list[str], model: str) -> list[int]:
    """Versions AVAILABLE on the first replica that answers."""
    for rest in replicas:
        status = rollout.server_status(rest, model)
        if status:
            return sorted(v for v, s in status.items() if s == "AVAILABLE")
    return []


def live(model: str, replicas: Optional[list[str]] = None) -> Live:
    """`model`'s rollout (a trained model: step() checked): its state, or on the first step the
    version the replicas serve now (with no replicas to ask, a dry run: the newest on disk)."""
    models = model_config.served_models()
    config = paths.MODEL_CONFIG
    current = model_config.load_state(config, model)
    if current is None:  # first rollout: the version being served now is the stable one
        served = _served(replicas, model) if replicas is not None else rollout.disk_versions(models[model])
        if not served:
            raise Exit(f"the server has no AVAILABLE version of {model}")
        current = Rollout(model, str(models[model]), stable=max(served))
    others = [r for r in model_config.rollouts_for(config, models) if r.model != model]
    return Live(replicas or [], current, others)


def step(model: str, label: str, change: Callable[[Rollout], Rollout], say=print,
         where: Target = LOCAL) -> None:
    """Apply `change` (current rollout -> new one) to `model` on every replica of `where`."""
    models = model_config.served_models()
    if model not in models:  # said before any server or cluster is looked for
        uri = model_config.models_uri()
        raise Exit(f"unknown model {model!r}: " + (f"the models in {uri} are " if uri else "trained models are ")
                   + ", ".join(models))
    if where.dry_run:
        return _dry_run(model, label, change, say, where)
    with where.replicas() as replicas:
        now = live(model, replicas)
        apply(now, change(now.current), label, say, where)


def _dry_run(model: str, label: str, change, say, where: Target) -> None:
    now = live(model)
    new = change(now.current)
    if model_config.load_state(paths.MODEL_CONFIG, model) is None:
        say(f"{label}: (dry run) {model} has no rollout yet: its stable version is asked of the pods at run time; "
            f"shown here as the newest on disk, {now.current.stable}")
    say(f"{label}: (dry run) {model} {_roles(now.current)} -> {_roles(new)}; on {where.name}:")
    where.show_start(say)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "models.config"
        for number, (versions, labels) in enumerate(rollout.config_steps(now.current, new), 1):
            model_config.write_rollouts(config, now.others, new, versions, labels)
            say(f"# step {number}: " + ("load versions %s, labels unchanged" % versions if number == 1 else
                                        "move the labels %s, retire the rest" % labels))
            where.show_config(config, say)
            say(f"# then wait until every ready pod answers ({'versions AVAILABLE' if number == 1 else 'each label'})"
                f", at most {where.timeout:.0f} s")


def apply(now: Live, new: Rollout, label: str, say=print, where: Target = LOCAL) -> None:
    """Make every replica serve `new`; say how long agreement took. On a failure the model
    config and the rollout state are already back as they were when this stops. A replica that is
    down is named, and the step is not claimed done for it (Exit after the others agreed)."""
    started = time.monotonic()
    try:
        agreed = rollout.apply(paths.MODEL_CONFIG, new, now.others, now.replicas, timeout=where.timeout,
                               say=lambda m: say(f"{label}: {m}"), every=PROGRESS_EVERY_S,
                               config_written=where.config_written)
    except (rollout.LoadFailed, TimeoutError, ValueError, RuntimeError) as exc:
        raise Exit(f"{label}: {exc}\n{label}: models.config and the rollout state are back as they were "
                   f"({_roles(now.current)}); the server keeps serving that") from None
    roles = f"{label}: {new.model} stable={new.stable} canary={new.canary} previous={new.previous}"
    took = time.monotonic() - started
    if len(now.replicas) == 1 and agreed.complete:
        say(f"{roles} (acknowledged by the server in {took:.2f} s)")
        return
    say(f"{roles} ({agreed.describe()}; {took:.2f} s in all)")
    if not agreed.complete:
        raise Exit(f"{label}: not acknowledged by {len(agreed.down)} replica(s) that could not be asked: "
                   + "; ".join(f"{r} ({why})" for r, why in agreed.down.items())
                   + ". models.config holds the new roles; a replica reads it when it starts (inv versions shows "
                   "what each one serves)")


def _roles(r: Rollout) -> str:
    return f"stable={r.stable} canary={r.canary} previous={r.previous}"


def _stable_for_check(model: str, base: Path) -> Optional[int]:
    """The version a new one must stay compatible with: the rollout's stable one, else the one
    served now, else (no server) the newest on disk, which is what a publish pins."""
    state = model_config.load_state(paths.MODEL_CONFIG, model)
    if state is not None and state.stable is not None:
        return state.stable
    running = serving.running()
    if running is not None:
        served = _served(serving.rest_urls(running), model)
        if served:
            return max(served)
    return max(rollout.disk_versions(base), default=None)


def publish(model: str, source: str = "", force: bool = False, say=print, where: Optional[Target] = None) -> int:
    """Publish `source` (default: a copy of the newest version) as the model's next version, once
    it is shown to be a SavedModel that loads (warmup included) and that fits the stable version."""
    uri = model_config.models_uri()
    if uri:
        raise Exit(f"publish: the kit serves from {uri} (inv serve --models-uri): publish there with "
                   f"--to={uri}/{model}")
    base = model_config.kit_models().get(model)
    if base is None:
        raise Exit(f"unknown model {model!r}")
    newest = max(rollout.disk_versions(base), default=None)
    src = Path(source) if source else (base / str(newest) if newest is not None else None)
    if src is None or not src.is_dir():
        raise Exit(f"nothing to publish: {src}")
    if force:
        say("publish --force: not checked")
    else:
        _check(model, base, src, say)
    pin_before_publish(model, say, where or LOCAL)
    version = rollout.publish(base, src)
    say(f"published {src} as {base / str(version)}")
    return version


def publish_to(model: str, to: str, source: str = "", force: bool = False, say=print) -> int:
    """Publish `source` (default: the model's newest local version) to a bucket, as `<to>/<N+1>`
    (kit/rollout/bucket.py: uploaded under a hidden prefix, then copied into place, model file last).
    A server polling `to` serves it at its next poll under the `latest` policy."""
    from kit.rollout import bucket

    if model not in model_config.KIT_MODELS:
        raise Exit(f"unknown model {model!r}")
    if source:  # a bucket-backed kit may have no trained model here
        src: Optional[Path] = Path(source)
    else:
        base = model_config.kit_models().get(model)
        if base is None:
            raise Exit(f"unknown model {model!r}")
        newest = max(rollout.disk_versions(base), default=None)
        src = base / str(newest) if newest is not None else None
    if src is None or not src.is_dir():
        raise Exit(f"nothing to publish: {src}")
    served = _served_base(model)
    serving_it = served is not None and model_config.base_path_text(served) == to.rstrip("/")
    if force:
        say("publish --force: not checked")
    elif serving_it:
        _check_against_bucket(model, served, src, say)
    else:
        problem, report = model_check.check(src, None, None)
        if problem:
            raise Exit(f"publish refused: {problem} (--force publishes it anyway)")
        say(f"publish: {src} loads")
    if serving_it:  # the served base path: pin the stable version first, as a local publish does
        pin_before_publish(model, say)
    try:
        return bucket.publish(src, to, say)
    except (ValueError, OSError) as exc:
        raise Exit(f"publish to {to} failed: {exc}") from None
    except Exception as exc:  # a ServingError from the bucket (credentials, endpoint): its one line
        raise Exit(f"publish to {to} failed: {getattr(exc, 'message', exc)}") from None


def _served_base(model: str) -> Optional[str]:
    """The bucket base path the kit serves `model` from (inv serve --models-uri), or None."""
    if not model_config.models_uri():
        return None
    try:
        return model_config.served_models().get(model)
    except KitError:  # nothing in the bucket yet: this publish is its first version
        return None


def _check_against_bucket(model: str, base: str, src: Path, say=print) -> None:
    """_check for a bucket the kit serves: the stable version is downloaded (pyserving's storage,
    as the server's cache copies it) to a temporary folder and compared there."""
    with tempfile.TemporaryDirectory(prefix="kit-stable-") as tmp:
        stable = _stable_for_check(model, base)
        url = rollout.version_dirs(base).get(stable) if stable is not None else None
        if url:
            say(f"publish: downloading {model}'s stable version {stable} from {url} to compare signatures")
            try:
                storage.for_path(url).download(url, tmp)
            except Exception as exc:
                raise Exit(f"publish: cannot read the stable version {url}: {getattr(exc, 'message', exc)}") from None
        _check(model, base, src, say, stable_dir=Path(tmp) if url else None, stable=stable)


def _check(model: str, base: Path | str, src: Path, say=print, stable_dir: Optional[Path] = None,
           stable: Optional[int] = None) -> None:
    """Refuse (Exit, one line) a source that is no SavedModel, does not load or does not fit the stable version."""
    if stable_dir is None and not storage.is_remote(str(base)):
        stable = _stable_for_check(model, base)
        found = rollout.version_dirs(base).get(stable) if stable is not None else None
        stable_dir = Path(found) if found else None  # a stable version deleted by hand: nothing to compare with
    if not model_check.not_a_savedmodel(src):
        say(f"publish: checking {src} with pyserving's loader in a child process"
            + (f", against {model}'s stable version {stable}" if stable_dir else ""))
    problem, report = model_check.check(src, stable_dir, stable)
    if problem:
        raise Exit(f"publish refused: {problem} (--force publishes it anyway)")
    say(f"publish: {src} loads" + (f", its {report.warmup_records} warmup record(s) replayed"
                                   if report.warmup_records else "")
        + (f", signatures compatible with version {stable}" if report.stable_signatures is not None else ""))
    if report.stable_error:
        say(f"publish: compatibility not checked: the stable version {stable} does not load here: "
            f"{report.stable_error}")


def pin_before_publish(model: str, say=print, where: Target = LOCAL) -> None:
    """Under the `latest` policy a published version would go live at the next poll; a rollout
    pins the version being served (label `stable`) first, so that only `canary` exposes the new one."""
    config = paths.MODEL_CONFIG
    if model_config.load_state(config, model) is not None:
        return
    if where.offline():  # no server to ask: pin the newest version on disk
        models = model_config.served_models()
        base = models[model]
        others = [r for r in model_config.rollouts_for(config, models) if r.model != model]
        pinned = Rollout(model, str(base), stable=max(rollout.disk_versions(base)))
        model_config.write_rollouts(config, others, pinned)
        model_config.save_state(config, pinned)
        return
    step(model, "pin", lambda current: current, say, where)


def canary(model: str, version: int = 0, say=print, where: Target = LOCAL) -> None:
    """Serve `version` (default: the newest on disk) beside the stable one, labelled `canary`."""
    def change(current: Rollout) -> Rollout:
        base = current.base_path  # a folder, or a bucket URL: its listing is the existence check
        on_disk = rollout.disk_versions(base)
        if version and version not in on_disk:
            raise Exit(f"canary: {model} has no version {version}: {base} holds versions {on_disk}")
        chosen = version or max(on_disk)
        if chosen == current.stable:
            raise Exit(f"canary: nothing new to canary: version {chosen} is {model}'s stable version"
                       + ("" if version else " and the newest on disk (publish a new one first: inv publish)"))
        return rollout.start_canary(current, chosen)
    step(model, "canary", change, say, where)


def transition(model: str, name: str, say=print, where: Target = LOCAL) -> None:
    """`promote` or `rollback` (the functions of kit.rollout.plan), applied to every replica."""
    def change(current: Rollout) -> Rollout:
        try:
            return getattr(rollout, name)(current)
        except ValueError as exc:
            raise Exit(str(exc)) from None
    step(model, name, change, say, where)


def versions(model: str, say=print) -> None:
    """What is on disk, which roles the rollout gives, and what the server reports: each version's
    state, and the error of a version whose load failed."""
    base = model_config.served_models().get(model)
    if base is None:
        raise Exit(f"unknown model {model!r}")
    where = "in the bucket" if storage.is_remote(str(base)) else "on disk"
    say(f"{where} ({base}): {_listed(base)}")
    state = model_config.load_state(paths.MODEL_CONFIG, model)
    say("rollout: " + (_roles(state) if state else "none (the latest version serves)"))
    running = serving.running()
    if running is None:
        say("server: not running")
        return
    on_disk = rollout.disk_versions(base)
    labels = list(state.labels()) if state else []
    urls = serving.rest_urls(running)
    for index, rest in enumerate(urls):
        name = "server" if len(urls) == 1 else f"replica {index} ({rest})"
        try:
            reports = rollout.fetch_versions(rest, model)
            served = {label: rollout.fetch_label(rest, model, label) for label in labels}
        except agreement.ReplicaDown as exc:
            say(f"{name}: down ({exc})")
            continue
        say(f"{name}: " + ", ".join(f"{v}={r.state}" for v, r in sorted(reports.items()))
            + ("; labels " + ", ".join(f"{k}={v}" for k, v in served.items()) if served else ""))
        for v, r in sorted(reports.items()):
            if r.error:  # one line each: TF's error texts span lines
                gone = "" if v in on_disk else f" (no longer {where})"
                say(f"  version {v} failed to load{gone}: {' '.join(r.error.split())}")


def remove(model: str, version: int, say=print) -> None:
    """Delete a version from disk (or the bucket the kit serves from) unless a label names it or it
    is the only one that serves."""
    base = model_config.served_models().get(model)
    if base is None:
        raise Exit(f"unknown model {model!r}")
    on_disk = _listed(base)
    if version not in on_disk:
        raise Exit(f"remove: {model} has no version {version}: {base} holds versions {on_disk}")
    state = model_config.load_state(paths.MODEL_CONFIG, model)
    labels = [label for label, v in (state.labels() if state else {}).items() if v == version]
    if labels:
        raise Exit(f"remove refused: version {version} of {model} holds the label {', '.join(labels)} "
                   "(promote or roll back first)")
    if on_disk == [version]:
        raise Exit(f"remove refused: version {version} is the only version of {model} "
                   + (f"in {base}" if storage.is_remote(str(base)) else "on disk"))
    running = serving.running()
    if running is not None:
        available = _served(serving.rest_urls(running), model)
        if available == [version]:
            raise Exit(f"remove refused: version {version} is the only AVAILABLE version of {model}")
    path = rollout.remove_version(base, version)
    say(f"removed {path}")


def _listed(base: Path | str) -> list[int]:
    """The versions under a base path; a bucket that cannot be read stops the task with its line."""
    if not storage.is_remote(str(base)):
        return rollout.disk_versions(base)
    try:
        return sorted(rollout.list_versions(str(base)))
    except FileNotFoundError:
        return []
    except Exception as exc:  # the storage's StorageError or ServingError: one secret-free line
        raise Exit(getattr(exc, "message", None) or str(exc)) from None


def svm_label() -> Optional[str]:
    """The label test-svm asks for: `stable` while a rollout of the SVM is active, else None (latest)."""
    state = model_config.load_state(paths.MODEL_CONFIG, "svm")
    return "stable" if state is not None and state.stable is not None else None
