"""Versions in a local folder, read with os (TF Serving's file-system source on a local path)."""
from __future__ import annotations

import logging
import os
from typing import Optional

from pyserving.storage.versions import MODEL_FILES, parse_version

logger = logging.getLogger(__name__)


def list_versions(base_path: str) -> dict[int, str]:
    """Numeric children of base_path -> their paths; raises OSError when base_path is unreadable."""
    found: dict[int, str] = {}
    for entry in os.scandir(base_path):
        number = parse_version(entry.name)
        if number is None or not entry.is_dir():
            continue
        if number in found:
            logger.warning("Duplicate version directories for version %d in %s", number, base_path)
        found[number] = entry.path
    return found


def fingerprint(path: str) -> Optional[tuple]:
    """(has a model file, listing of (name, size, mtime)) for a version dir; None when it cannot be read."""
    try:
        has_model = any(os.path.isfile(os.path.join(path, f)) for f in MODEL_FILES)
        items = []
        for root, _dirs, files in os.walk(path):
            for f in files:
                st = os.stat(os.path.join(root, f))
                items.append((os.path.relpath(os.path.join(root, f), path), st.st_size, st.st_mtime_ns))
        return has_model, tuple(sorted(items))
    except OSError:
        return None


def check(base_path: str) -> None:
    """Nothing to check ahead: a missing local base path is waited for, logged at every poll (TF Serving)."""
