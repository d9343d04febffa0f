"""pyserving/storage/cache.py: the version cache's folders of servers that are gone are removed
by the next server that opens the same cache root (the copy, the bound and the release are
exercised against real buckets in test_storage_buckets.py)."""
from __future__ import annotations

import os
import subprocess
import sys

from pyserving.storage.cache import ROOT_PREFIX, VersionCache, remove_orphans


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process now
    return child.pid


def folder(parent, name: str) -> str:
    path = parent / name
    (path / "m-1-x" / "variables").mkdir(parents=True)
    (path / "m-1-x" / "saved_model.pb").write_bytes(b"\0" * 1024)
    return str(path)


def test_the_folders_of_servers_that_are_gone_are_removed_and_the_others_stay(tmp_path):
    gone = folder(tmp_path, f"{ROOT_PREFIX}{dead_pid()}-abc123")
    mine = folder(tmp_path, f"{ROOT_PREFIX}{os.getpid()}-def456")
    other = folder(tmp_path, "pyserving-cache-not-a-pid")
    unrelated = folder(tmp_path, f"something-else-{dead_pid()}-x")
    assert remove_orphans(str(tmp_path)) == [gone]
    assert not os.path.exists(gone)
    assert all(os.path.isdir(path) for path in (mine, other, unrelated))


def test_a_file_named_like_a_cache_folder_is_left_alone(tmp_path):
    (tmp_path / f"{ROOT_PREFIX}{dead_pid()}-file").write_text("not ours")
    assert remove_orphans(str(tmp_path)) == []
    assert len(list(tmp_path.iterdir())) == 1


def test_a_cache_opens_its_own_folder_after_removing_the_orphans(tmp_path):
    gone = folder(tmp_path, f"{ROOT_PREFIX}{dead_pid()}-abc123")
    cache = VersionCache(str(tmp_path), max_bytes=1 << 20)
    try:
        root = cache._ensure_root()  # what the first bucket version's fetch does first
        assert not os.path.exists(gone)
        assert os.path.basename(root).startswith(f"{ROOT_PREFIX}{os.getpid()}-")
    finally:
        cache.close()
    assert list(tmp_path.iterdir()) == []
