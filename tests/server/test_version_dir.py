"""pyserving.version_dir: a version folder appears whole under its number, or not at all."""
from __future__ import annotations

import os

import pytest

from pyserving.core.source import list_versions, parse_version
from pyserving.version_dir import publish_version, version_path


def write_model(path: str) -> None:
    os.makedirs(os.path.join(path, "variables"))
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"graph")


def test_publishes_the_written_folder_under_its_number_and_leaves_nothing_else(tmp_path):
    base = tmp_path / "m"
    final = publish_version(base, 3, write_model)
    assert final == str(base / "3")
    assert (base / "3" / "saved_model.pb").read_bytes() == b"graph"
    assert (base / "3" / "variables").is_dir()
    assert os.listdir(base) == ["3"]


@pytest.mark.parametrize("prefix", [".tmp-", ".tmp-publish-", ".tmp-export-"])
def test_staging_folder_is_hidden_in_the_base_and_never_a_version(tmp_path, prefix):
    seen = {}

    def write(path: str) -> None:
        staging = os.path.dirname(path)
        seen["staging"] = os.path.basename(staging)
        seen["parent"] = os.path.dirname(staging)
        seen["versions while writing"] = list_versions(str(tmp_path))
        write_model(path)

    publish_version(tmp_path, 12, write, staging_prefix=prefix)
    assert seen["parent"] == str(tmp_path)  # same file system: the rename is atomic
    assert seen["staging"].startswith(prefix + "12-")
    assert parse_version(seen["staging"]) is None
    assert seen["versions while writing"] == {}  # a polling server sees nothing half-written
    assert sorted(os.listdir(tmp_path)) == ["12"]


def test_a_failed_write_leaves_nothing(tmp_path):
    def write(path: str) -> None:
        write_model(path)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish_version(tmp_path / "m", 1, write)
    assert os.listdir(tmp_path / "m") == []


def test_a_write_that_creates_no_folder_publishes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        publish_version(tmp_path, 1, lambda path: None)
    assert os.listdir(tmp_path) == []


def test_an_existing_version_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "saved_model.pb").write_bytes(b"served")
    calls = []
    with pytest.raises(FileExistsError, match="versions are immutable once published"):
        publish_version(tmp_path, 2, calls.append)
    assert calls == []
    assert (tmp_path / "2" / "saved_model.pb").read_bytes() == b"served"
    assert os.listdir(tmp_path) == ["2"]


def test_a_version_published_while_writing_is_not_overwritten(tmp_path):
    def write(path: str) -> None:
        write_model(path)
        (tmp_path / "5").mkdir()  # another publisher won the race (an empty folder: rename would replace it)

    with pytest.raises(FileExistsError):
        publish_version(tmp_path, 5, write)
    assert os.listdir(tmp_path / "5") == []
    assert os.listdir(tmp_path) == ["5"]


@pytest.mark.parametrize("version", [0, -1, "x"])
def test_versions_are_positive_integers(tmp_path, version):
    with pytest.raises(ValueError):
        version_path(tmp_path, version)
    with pytest.raises(ValueError):
        publish_version(tmp_path, version, write_model)
    assert os.listdir(tmp_path) == []


def test_staging_prefix_must_be_hidden(tmp_path):
    with pytest.raises(ValueError, match="hidden"):
        publish_version(tmp_path, 1, write_model, staging_prefix="tmp-")
    assert os.listdir(tmp_path) == []
