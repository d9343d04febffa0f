"""The Source: polls each model's base path and tells the manager its aspired versions.

A child directory counts as a version when its name parses as an integer (`00000123` -> 123).
A version is offered only once it looks complete: it holds a model file and its file listing
(names, sizes, mtimes) is unchanged across two looks `settle_s` apart, so a copy still in
progress is not loaded half-written. A directory that stays without a model file for
`no_model_grace_s` is offered anyway, so that its load fails with a clear error (as TF
Serving's would) instead of waiting silently forever. The version policy is applied to complete versions only,
so an unfinished copy never retires the version being served.

A base path may be a bucket (gs://, s3://): the same rules apply to its listing (pyserving/storage),
with object sizes and generations/ETags in place of mtimes; an unreachable bucket is logged at
every poll and the versions serving stay.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Mapping, Optional

from pyserving import storage
from pyserving.errors import ServingError
from pyserving.storage.versions import MODEL_FILES, SAVED_MODEL_FILES, parse_version  # noqa: F401 (re-exported)
from pyserving.types import ModelConfig

logger = logging.getLogger(__name__)


def list_versions(base_path: str) -> dict[int, str]:
    """Numeric children of base_path (a folder, or a gs:// / s3:// URL) -> their paths; raises
    OSError when base_path cannot be read."""
    return storage.for_path(base_path).list_versions(base_path)


def fingerprint(path: str) -> Optional[tuple]:
    """(has a model file, listing) for a version dir or URL; None when it cannot be read."""
    return storage.for_path(path).fingerprint(path)


def _reason(base_path: str, exc: BaseException) -> str:
    if isinstance(exc, ServingError):
        return exc.message
    if storage.is_remote(base_path):
        return storage.for_path(base_path).describe_failure(exc, base_path)
    return getattr(exc, "strerror", None) or str(exc)


def check(base_path: str) -> None:
    """Reach a bucket once before its model is added (a clear error at start-up); local paths are
    waited for instead, as TF Serving does."""
    storage.for_path(base_path).check(base_path)


class FileSystemSource:
    def __init__(
        self,
        emit: Callable[[str, dict[int, str]], None],
        poll_wait_s: float = 1.0,
        settle_s: float = 0.3,
        no_model_grace_s: float = 3.0,
        clock=time.monotonic,
    ):
        self._emit = emit
        self._poll_wait = poll_wait_s
        self._settle = settle_s if poll_wait_s <= 0 else min(settle_s, poll_wait_s)
        self._lock = threading.Lock()
        self._configs: dict[str, ModelConfig] = {}
        self._grace = no_model_grace_s
        self._clock = clock
        # (model, version) -> (fingerprint at the previous look, when it was first seen so)
        self._seen: dict[tuple[str, int], tuple] = {}
        self._complete: dict[str, set[int]] = {}  # versions confirmed complete, per model
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def poll_wait_s(self) -> float:
        """Seconds between two looks once nothing is settling (--file_system_poll_wait_seconds; 0: one look)."""
        return self._poll_wait

    def set_models(self, configs: Mapping[str, ModelConfig]) -> None:
        with self._lock:
            self._configs = dict(configs)
            for name in list(self._complete):
                if name not in configs:
                    del self._complete[name]
        self._wake.set()

    def poll_once(self) -> bool:
        """One look at every base path; returns True when some version is still settling."""
        with self._lock:
            configs = dict(self._configs)
        settling = False
        for name, config in configs.items():
            try:
                on_disk = list_versions(config.base_path)
            except (OSError, ServingError) as exc:
                # A missing or unreadable base path changes nothing, and is said at every poll, so
                # that a server that waits for it says why (TF Serving's text, file_system_storage_path_source.cc).
                # A bucket that cannot be reached mid-run is the same: the serving versions stay.
                logger.error("FileSystemStoragePathSource encountered a filesystem access error: Could not find "
                             "base path %s for servable %s (%s)", config.base_path, name,
                             _reason(config.base_path, exc))
                continue
            complete = self._complete.setdefault(name, set())
            complete &= set(on_disk)  # a deleted version is no longer complete
            for number, path in on_disk.items():
                if number in complete:
                    continue
                if self._is_complete(name, number, path):
                    complete.add(number)
                else:
                    settling = True
            if not on_disk:  # at every poll, as TF Serving says it
                logger.warning(
                    "No versions of servable %s found under base path %s. Did you forget to name "
                    "your leaf directory as a number (eg. '/1/')?", name, config.base_path,
                )
            aspired_numbers = config.policy.select(sorted(complete))
            if config.policy.kind == "specific":
                missing = set(config.policy.versions) - set(on_disk)
                if missing:
                    logger.warning("Servable %s: specific versions %s not found", name, sorted(missing))
            self._emit(name, {n: on_disk[n] for n in aspired_numbers})
        return settling

    def _is_complete(self, name: str, number: int, path: str) -> bool:
        fp = fingerprint(path)
        now = self._clock()
        previous = self._seen.get((name, number))
        if fp is None or previous is None or previous[0] != fp:
            self._seen[(name, number)] = (fp, now)
            return False
        has_model, _listing = fp
        if has_model or now - previous[1] >= self._grace:
            if not has_model:
                logger.warning("Version %d of servable %s has no saved_model.pb (or model.tflite) after "
                               "%.0f s; offering it anyway so that its load reports why", number, name, self._grace)
            del self._seen[(name, number)]
            return True
        return False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fs-source", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        polled_once = False
        while not self._stop.is_set():
            try:
                settling = self.poll_once()
            except Exception as exc:  # whatever a storage library raises, the next poll tries again
                logger.error("File system poll failed: %s: %s", type(exc).__name__, exc)
                settling = False
            if settling:
                wait = self._settle
            elif self._poll_wait > 0:
                wait = self._poll_wait
            elif self._poll_wait == 0 and polled_once:
                wait = None  # 0 polls once (TF Serving); set_models() still wakes us
            else:
                wait = None if self._poll_wait < 0 else self._poll_wait
            polled_once = True
            self._wake.wait(wait)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
