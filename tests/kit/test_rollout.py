"""kit.rollout.publish: the next version number, copied atomically, stale staging folders cleared."""
from __future__ import annotations

import os

import pytest

from kit import rollout


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"graph")
    (src / "variables" / "variables.index").write_bytes(b"index")
    return src


def test_publish_copies_as_the_next_version_and_clears_stale_staging(tmp_path, source):
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    (base / "4").mkdir()
    stale = base / ".tmp-publish-5-abc" / "model"  # a publish killed half-way
    stale.mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"half a file")
    assert rollout.publish(base, source) == 5
    assert (base / "5" / "saved_model.pb").read_bytes() == b"graph"
    assert (base / "5" / "variables" / "variables.index").read_bytes() == b"index"
    assert sorted(os.listdir(base)) == ["1", "4", "5"]
    assert rollout.disk_versions(base) == [1, 4, 5]


def test_publish_into_a_new_base_starts_at_one(tmp_path, source):
    assert rollout.publish(tmp_path / "new", source) == 1
    assert rollout.disk_versions(tmp_path / "new") == [1]


def test_publish_refuses_an_existing_version(tmp_path, source):
    base = tmp_path / "m"
    (base / "3").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="versions are immutable once published"):
        rollout.publish(base, source, version=3)
    assert os.listdir(base) == ["3"] and os.listdir(base / "3") == []
