"""Publish a model version folder atomically: `<base_path>/<version>/` appears whole or not at all.

A server polls `<base_path>/` and may load `<version>/` the moment it appears (TF Serving's
file-system source does, and so does ours), so a half-written SavedModel must never be visible
under its final name. The version is written in a hidden staging folder inside `base_path`
(same file system, so the rename is atomic) whose name is not a number (sources skip it),
flushed to disk, then renamed into place. A version once published is never overwritten: a
server may already have loaded it.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Callable, Union

logger = logging.getLogger(__name__)

StrPath = Union[str, "os.PathLike[str]"]


def version_path(base_path: StrPath, version: int) -> str:
    """`<base_path>/<version>` for a positive integer version (ValueError otherwise)."""
    number = int(version)
    if number <= 0:
        raise ValueError(f"a model version must be a positive integer, got {version!r}")
    return os.path.join(os.fspath(base_path), str(number))


def publish_version(base_path: StrPath, version: int, write: Callable[[str], object],
                    staging_prefix: str = ".tmp-") -> str:
    """Let `write(path)` fill a new folder, then publish it as `<base_path>/<version>`; returns that path.

    `path` does not exist yet when `write` is called (SavedModel builders insist on creating it).
    An existing version is refused with FileExistsError before anything is written. Staging
    happens in `<base_path>/<staging_prefix><version>-<random>/`; it is removed whatever happens,
    so an error leaves nothing behind (a killed process leaves only that non-version folder).
    """
    if not staging_prefix.startswith("."):
        raise ValueError(f"a staging folder must be hidden (start with '.'), got prefix {staging_prefix!r}")
    final = version_path(base_path, version)
    _refuse_existing(final)
    base = os.fspath(base_path)
    os.makedirs(base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f"{staging_prefix}{int(version)}-", dir=base)
    try:
        target = os.path.join(staging, "model")
        write(target)
        if not os.path.isdir(target):
            raise FileNotFoundError(f"nothing was written to {target}")
        _fsync_tree(target)
        _refuse_existing(final)  # published by someone else while we wrote
        os.rename(target, final)
        _fsync_dir(base)  # the rename itself is durable once its folder is synced
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Published %s", final)
    return final


def _refuse_existing(final: str) -> None:
    if os.path.lexists(final):
        raise FileExistsError(f"{final} already exists; versions are immutable once published")


def _fsync_tree(path: str) -> None:
    """Flush every file, then every folder (deepest first), so the contents are on disk before the rename."""
    for root, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(root)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
