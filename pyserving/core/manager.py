"""The Manager: loads and retires versions, availability-preserving, and hands out servables.

Each model has a worker thread that reconciles what is loaded with what the Source aspires:
the highest new aspired version is loaded first; an un-aspired version is retired only once an
aspired one is AVAILABLE (or nothing is aspired any more), so requests never see a gap. A
failing load is retried `max_load_retries` times, then the version ends in END with its error
and is not attempted again while it stays aspired; the version already serving keeps serving.
Once such a version is no longer aspired it is forgotten as TF Serving's FlushServables forgets
it (its END and error stay in the status until it is tried again): aspired again, it loads anew.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterator, Mapping, Optional

from pyserving.errors import Code, ServingError, not_found
from pyserving.types import ModelSpec, Servable, VersionState, VersionStatus

logger = logging.getLogger(__name__)

LoadFn = Callable[[str, int, str], Servable]  # (model name, version, path) -> servable


@dataclass
class _Version:
    number: int
    path: str
    state: VersionState = VersionState.START
    error: Optional[ServingError] = None
    servable: Optional[Servable] = None
    in_flight: int = 0
    flushed: bool = False  # failed, then no longer aspired: to the policy, a version never tried


@dataclass
class _Model:
    name: str
    aspired: dict[int, str] = field(default_factory=dict)
    versions: dict[int, _Version] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    removed: bool = False
    wake: threading.Event = field(default_factory=threading.Event)
    worker: Optional[threading.Thread] = None


LOAD, UNLOAD = "load", "unload"


def next_action(aspired: Collection[int], versions: Mapping[int, VersionStatus],
                stopping: bool = False) -> Optional[tuple[str, int]]:
    """The availability-preserving policy, as a pure function of one model's state: what to do
    next, (LOAD, version) or (UNLOAD, version), or None.

    The highest aspired version not yet tried is loaded first (one that ended without an error,
    i.e. was unloaded, may load again; one that failed stays in END). A version no longer aspired
    is unloaded, lowest first, only once an aspired version is AVAILABLE, or when nothing is
    aspired, or at shutdown: requests never see a gap.
    """
    to_load = [n for n in aspired
               if n not in versions or (versions[n].state == VersionState.END and versions[n].error is None)]
    if to_load:
        return LOAD, max(to_load)
    any_aspired_ready = any(versions[n].state == VersionState.AVAILABLE for n in aspired if n in versions)
    to_unload = [n for n, v in versions.items()
                 if n not in aspired and v.state == VersionState.AVAILABLE
                 and (any_aspired_ready or not aspired or stopping)]
    if to_unload:
        return UNLOAD, min(to_unload)
    return None


class ServableManager:
    def __init__(
        self,
        load_fn: LoadFn,
        max_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
        on_state_change: Optional[Callable[[str, int, VersionState, Optional[ServingError]], None]] = None,
    ):
        self._load_fn = load_fn
        self._max_retries = max(0, max_load_retries)
        self._retry_interval = max(0.0, load_retry_interval_s)
        self._on_state_change = on_state_change
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._models: dict[str, _Model] = {}
        self._stopping = threading.Event()

    # ---- the Source's side -------------------------------------------------------------
    def set_aspired_versions(self, name: str, aspired: Mapping[int, str]) -> None:
        with self._lock:
            model = self._models.get(name)
            if model is None or model.removed:
                model = _Model(name)
                self._models[name] = model
                model.worker = threading.Thread(
                    target=self._run_worker, args=(model,), name=f"manager-{name}", daemon=True
                )
                model.worker.start()
            if model.aspired == dict(aspired):
                return
            model.aspired = dict(aspired)
            model.wake.set()

    def remove_model(self, name: str) -> None:
        """Un-aspire every version of a model that left the config; it unloads, then is forgotten."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                return
            model.aspired = {}
            model.removed = True
            model.wake.set()

    def set_labels(self, name: str, labels: Mapping[str, int]) -> None:
        with self._lock:
            model = self._models.get(name)
            if model is not None:
                model.labels = dict(labels)

    # ---- the protocols' side -----------------------------------------------------------
    @contextlib.contextmanager
    def servable(self, spec: ModelSpec) -> Iterator[tuple[int, Servable]]:
        """Hand out a servable for the duration of one request; unloading waits for it."""
        version, servable, release = self.lease(spec)
        try:
            yield version, servable
        finally:
            release()

    def lease(self, spec: ModelSpec) -> tuple[int, Servable, Callable[[], None]]:
        """(version, servable, release): like servable(), for a request that ends in another thread.

        The version cannot unload until release() is called, exactly once.
        """
        with self._lock:
            version = self._resolve(spec)
            version.in_flight += 1

        def release() -> None:
            with self._lock:
                version.in_flight -= 1
                if version.in_flight == 0:
                    self._changed.notify_all()

        return version.number, version.servable, release

    def _resolve(self, spec: ModelSpec) -> _Version:
        model = self._models.get(spec.name)
        if spec.label is not None:
            if model is None or spec.label not in model.labels:
                raise ServingError(
                    Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {spec.label}"
                )
            spec = ModelSpec(spec.name, version=model.labels[spec.label])
        if model is not None and not model.removed:
            if spec.version is None:
                ready = [v for v in model.versions.values() if v.state == VersionState.AVAILABLE]
                if ready:
                    return max(ready, key=lambda v: v.number)
            else:
                v = model.versions.get(spec.version)
                if v is not None and v.state == VersionState.AVAILABLE:
                    return v
        raise not_found(f"Servable not found for request: {spec.describe()}")

    def status(self, name: str, version: Optional[int] = None) -> list[VersionStatus]:
        with self._lock:
            model = self._models.get(name)
            versions = [] if model is None or model.removed else list(model.versions.values())
            found = [
                VersionStatus(v.number, v.state, v.error)
                for v in sorted(versions, key=lambda v: -v.number)
                if version is None or v.number == version
            ]
        if not found:
            if version is None:
                raise not_found(f"Could not find any versions of model {name}")
            raise not_found(f"Could not find version {version} of model {name}")
        return found

    def available_versions(self, name: str) -> set[int]:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                return set()
            return {n for n, v in model.versions.items() if v.state == VersionState.AVAILABLE}

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(n for n, m in self._models.items() if not m.removed)

    def wait_for_latest(self, names: list[str], timeout: Optional[float] = None) -> dict[str, VersionStatus]:
        """Block until the highest aspired version of each model is AVAILABLE or END.

        This is TF Serving's WaitUntilModelsAvailable (it waits on Latest(model)); models with
        nothing aspired yet (empty base path) keep it waiting, as they do there.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                outcome = {}
                for name in names:
                    model = self._models.get(name)
                    if model is None or not model.aspired:
                        break
                    top = model.versions.get(max(model.aspired))
                    if top is None or top.state not in (VersionState.AVAILABLE, VersionState.END):
                        break
                    outcome[name] = VersionStatus(top.number, top.state, top.error)
                else:
                    return outcome
                if self._stopping.is_set():
                    raise ServingError(Code.CANCELLED, "server is shutting down")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ServingError(Code.DEADLINE_EXCEEDED, "models did not become available in time")
                self._changed.wait(0.5 if remaining is None else min(0.5, remaining))

    def wait_settled(self, name: str, versions: set[int], timeout: Optional[float] = None) -> None:
        """Block until each of `versions` that is aspired has been loaded or has failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._stopping.is_set():
                model = self._models.get(name)
                if model is None:
                    return
                pending = [
                    n for n in versions
                    if n in model.aspired and (n not in model.versions or model.versions[n].state
                                               not in (VersionState.AVAILABLE, VersionState.END))
                ]
                if not pending or (deadline is not None and time.monotonic() >= deadline):
                    return
                self._changed.wait(0.5)

    def stop(self) -> None:
        """Unload everything (used at shutdown)."""
        self._stopping.set()
        with self._lock:
            self._changed.notify_all()
            models = list(self._models.values())
            for model in models:
                model.aspired = {}
                model.removed = True
                model.wake.set()
        for model in models:
            if model.worker is not None:
                model.worker.join(timeout=30)

    # ---- the worker --------------------------------------------------------------------
    def _set_state(self, model: _Model, v: _Version, state: VersionState, error=None) -> None:
        with self._lock:
            v.state, v.error = state, error
            self._changed.notify_all()
        if self._on_state_change is not None:
            self._on_state_change(model.name, v.number, state, error)

    def _run_worker(self, model: _Model) -> None:
        while True:
            model.wake.wait(timeout=1.0)
            model.wake.clear()
            while self._step(model):
                pass
            with self._lock:
                if model.removed and not any(
                    v.state in (VersionState.AVAILABLE, VersionState.LOADING) for v in model.versions.values()
                ):
                    if self._models.get(model.name) is model:
                        del self._models[model.name]
                    self._changed.notify_all()
                    return

    def _step(self, model: _Model) -> bool:
        """Take one action (a load or an unload); False when nothing is left to do."""
        with self._lock:
            for n, v in model.versions.items():
                if v.state == VersionState.END and v.error is not None and n not in model.aspired:
                    v.flushed = True  # aspired_versions_manager.cc FlushServables: a new harness if aspired again
            views = {n: VersionStatus(n, v.state, None if v.flushed else v.error) for n, v in model.versions.items()}
            action = next_action(model.aspired.keys(), views, self._stopping.is_set())
            if action is None:
                return False
            kind, number = action
            if kind == LOAD:
                model.versions[number] = _Version(number, model.aspired[number])
            version = model.versions[number]
        if kind == LOAD:
            self._load(model, version)
        else:
            self._unload(model, version)
        return True

    def _load(self, model: _Model, v: _Version) -> None:
        self._set_state(model, v, VersionState.LOADING)
        logger.info("Loading servable version {name: %s version: %d} from %s", model.name, v.number, v.path)
        started = time.monotonic()
        for attempt in range(self._max_retries + 1):
            try:
                servable = self._load_fn(model.name, v.number, v.path)
            except Exception as exc:  # a bad version must never take the server down
                error = exc if isinstance(exc, ServingError) else ServingError(Code.UNKNOWN, str(exc))
                logger.error(
                    "Loading servable version {name: %s version: %d} failed (attempt %d of %d): %s",
                    model.name, v.number, attempt + 1, self._max_retries + 1, error.message,
                )
                still_aspired = v.number in model.aspired
                if attempt < self._max_retries and still_aspired and not self._stopping.is_set():
                    if self._stopping.wait(self._retry_interval):
                        break
                    continue
                self._set_state(model, v, VersionState.END, error)
                return
            with self._lock:
                v.servable = servable
            self._set_state(model, v, VersionState.AVAILABLE)
            logger.info(
                "Successfully loaded servable version {name: %s version: %d} in %.2f s",
                model.name, v.number, time.monotonic() - started,
            )
            return
        self._set_state(model, v, VersionState.END, ServingError(Code.CANCELLED, "load cancelled"))

    def _unload(self, model: _Model, v: _Version) -> None:
        # UNLOADING is reported before the version stops being servable; new requests stop
        # resolving to it at once, in-flight ones finish first.
        self._set_state(model, v, VersionState.UNLOADING)
        with self._lock:
            while v.in_flight:
                self._changed.wait(1.0)
            servable, v.servable = v.servable, None
        try:
            servable.close()
        except Exception:  # closing must not stop the manager
            logger.exception("Error closing servable version {name: %s version: %d}", model.name, v.number)
        del servable  # the END listeners may collect it
        self._set_state(model, v, VersionState.END)
        logger.info("Unloaded servable version {name: %s version: %d}", model.name, v.number)
