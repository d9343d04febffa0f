"""The local version cache: a bucket's version is copied to local disk, loaded from there, and
removed once the version unloads (or its load fails).

The copy is atomic: objects land in a hidden `.partial-*` folder, which is renamed to its final
name only when every object is there, so the loader never sees half a version. The cache is
bounded: a version whose size would take the cache over `max_bytes` fails its load (RESOURCE_EXHAUSTED)
and the versions serving keep serving; nothing that is serving is evicted. Each server process
has a folder of its own under the cache root, removed at shutdown; the folders of servers that
are gone (SIGKILLed) are removed by the next server that opens the same cache root.

PYSERVING_STORAGE_CACHE_DIR (default: the system's temp folder) and PYSERVING_STORAGE_CACHE_MAX_BYTES
(default 20 GiB) set it; they are environment variables, not flags, so that a TF Serving command
line stays untouched.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from typing import Callable, Optional

from pyserving import storage
from pyserving.errors import Code, ServingError
from pyserving.worker import pid_alive

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 << 30
ROOT_PREFIX = "pyserving-cache-"  # + the pid of the server that owns the folder


class VersionCache:
    def __init__(self, root: Optional[str] = None, max_bytes: int = DEFAULT_MAX_BYTES):
        self._parent = root or tempfile.gettempdir()
        self.max_bytes = max_bytes
        self._root: Optional[str] = None
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # local folder (or reservation) -> bytes
        self.peak_bytes = 0

    @classmethod
    def from_env(cls, env=os.environ) -> "VersionCache":
        max_bytes = int(env.get("PYSERVING_STORAGE_CACHE_MAX_BYTES") or DEFAULT_MAX_BYTES)
        return cls(env.get("PYSERVING_STORAGE_CACHE_DIR") or None, max_bytes)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(self._held.values())

    def _ensure_root(self) -> str:
        with self._lock:
            if self._root is None:
                os.makedirs(self._parent, exist_ok=True)
                remove_orphans(self._parent)
                self._root = tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-", dir=self._parent)
            return self._root

    def fetch(self, name: str, version: int, url: str) -> str:
        """Copy the version at `url` into the cache; returns its local folder (release() it later)."""
        store = storage.for_path(url)
        try:
            listing = store.listing(url)
        except Exception as exc:
            raise ServingError(Code.UNAVAILABLE, store.describe_failure(exc, url)) from None
        size = sum(int(info.get("size") or 0) for info in listing.values())
        root = self._ensure_root()
        partial = tempfile.mkdtemp(prefix=".partial-", dir=root)
        self._reserve(partial, size, url)
        try:
            try:
                store.download(url, os.path.join(partial, "model"), listing)
            except Exception as exc:
                raise ServingError(Code.UNAVAILABLE, store.describe_failure(exc, url)) from None
            final = tempfile.mkdtemp(prefix=f"{_safe(name)}-{int(version)}-", dir=root)
            os.rmdir(final)  # a unique name; the rename below creates it whole
            os.rename(os.path.join(partial, "model") if listing else _empty(partial), final)
        except BaseException:
            self._drop(partial)
            raise
        with self._lock:
            self._held[final] = self._held.pop(partial)
        shutil.rmtree(partial, ignore_errors=True)
        logger.info("Copied %s (%d bytes) to %s; cache holds %d bytes", url, size, final, self.used_bytes)
        return final

    def _reserve(self, key: str, size: int, url: str) -> None:
        with self._lock:
            used = sum(self._held.values())
            if used + size > self.max_bytes:
                shutil.rmtree(key, ignore_errors=True)
                raise ServingError(Code.RESOURCE_EXHAUSTED,
                                   f"Cannot copy {url} ({size} bytes): the local cache holds {used} of its "
                                   f"{self.max_bytes} bytes (PYSERVING_STORAGE_CACHE_MAX_BYTES)")
            self._held[key] = size
            self.peak_bytes = max(self.peak_bytes, used + size)

    def _drop(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)
        with self._lock:
            self._held.pop(path, None)

    def release(self, path: str) -> None:
        """Remove a version's local copy (after its unload or failed load)."""
        self._drop(path)
        logger.info("Removed the local copy %s", path)

    def close(self) -> None:
        with self._lock:
            root, self._root = self._root, None
            self._held.clear()
        if root:
            shutil.rmtree(root, ignore_errors=True)


def remove_orphans(parent: str) -> list[str]:
    """Remove the cache folders under `parent` of servers that are gone: a SIGKILLed server has no
    chance to remove its own, and each holds whole model versions. A folder whose pid is alive
    (or not ours to remove) stays. Returns the folders removed."""
    removed = []
    for entry in os.scandir(parent):
        match = re.fullmatch(re.escape(ROOT_PREFIX) + r"(\d+)-.*", entry.name)
        if match and entry.is_dir(follow_symlinks=False) and not pid_alive(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.exists(entry.path):
                logger.info("Removed %s, the version cache of a server that is gone", entry.path)
                removed.append(entry.path)
    return removed


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "model"


def _empty(partial: str) -> str:
    path = os.path.join(partial, "model")
    os.makedirs(path, exist_ok=True)
    return path


class CachingLoader:
    """Wraps the loader: a bucket version is copied to the cache and loaded from there; its copy is
    removed when the servable closes (unload) or the load fails. Local versions load in place."""

    def __init__(self, load: Callable, cache: VersionCache):
        self.loader = load
        self.cache = cache

    def __call__(self, name: str, version: int, path: str):
        if not storage.is_remote(path):
            return self.loader(name, version, path)
        local = self.cache.fetch(name, version, path)
        try:
            servable = self.loader(name, version, local)
        except BaseException:
            self.cache.release(local)
            raise
        close = servable.close

        def close_and_release() -> None:
            try:
                close()
            finally:
                self.cache.release(local)

        servable.close = close_and_release
        return servable
