"""The file system source: version discovery, policies, and the completeness check."""
from __future__ import annotations

import logging
import time

from pyserving.core.source import FileSystemSource, list_versions, parse_version
from pyserving.types import ModelConfig, VersionPolicy
from tests.helpers import wait_until


def make_version(base, number, content=b"pb"):
    d = base / str(number)
    (d / "variables").mkdir(parents=True)
    (d / "saved_model.pb").write_bytes(content)
    return d


def test_parse_version():
    assert parse_version("00000123") == 123
    assert parse_version("1a") is None and parse_version("") is None and parse_version("-1") is None


def test_list_versions_skips_non_numeric(tmp_path):
    make_version(tmp_path, 1)
    make_version(tmp_path, "0002")
    (tmp_path / "tmp-copy").mkdir()
    (tmp_path / "3").write_text("a file, not a dir")
    assert sorted(list_versions(str(tmp_path))) == [1, 2]


def test_policies():
    assert VersionPolicy().select([1, 5, 3]) == {5}
    assert VersionPolicy("latest", num_versions=2).select([1, 5, 3]) == {5, 3}
    assert VersionPolicy("all").select([1, 5]) == {1, 5}
    assert VersionPolicy("specific", versions=(1, 9)).select([1, 5]) == {1}


def test_versions_are_offered_only_when_complete_and_settled(tmp_path):
    emitted = []
    source = FileSystemSource(lambda name, aspired: emitted.append(dict(aspired)), poll_wait_s=1)
    source.set_models({"m": ModelConfig("m", str(tmp_path))})
    make_version(tmp_path, 1)
    (tmp_path / "2").mkdir()  # no model file yet
    assert source.poll_once() is True  # first look: still settling
    assert emitted[-1] == {}
    assert source.poll_once() is True  # version 1 unchanged -> complete; 2 has no model file
    assert list(emitted[-1]) == [1]
    (tmp_path / "2" / "saved_model.pb").write_bytes(b"x")
    source.poll_once()
    (tmp_path / "2" / "saved_model.pb").write_bytes(b"xy")  # still being written
    source.poll_once()
    assert list(emitted[-1]) == [1]
    source.poll_once()  # unchanged since the last look
    assert list(emitted[-1]) == [2]


def test_directory_without_model_file_is_offered_after_grace(tmp_path):
    now = [0.0]
    emitted = []
    source = FileSystemSource(lambda name, aspired: emitted.append(dict(aspired)), poll_wait_s=1,
                              no_model_grace_s=5, clock=lambda: now[0])
    source.set_models({"m": ModelConfig("m", str(tmp_path))})
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "export.meta").write_bytes(b"old format")
    source.poll_once()
    now[0] = 4.0
    source.poll_once()
    assert emitted[-1] == {}
    now[0] = 5.5
    source.poll_once()
    assert list(emitted[-1]) == [7]  # offered, so that loading it reports the real problem


def test_missing_base_path_changes_nothing_and_empty_one_unaspires(tmp_path):
    emitted = []
    source = FileSystemSource(lambda name, aspired: emitted.append(dict(aspired)), poll_wait_s=1)
    source.set_models({"m": ModelConfig("m", str(tmp_path / "absent"))})
    source.poll_once()
    assert emitted == []
    source.set_models({"m": ModelConfig("m", str(tmp_path))})
    source.poll_once()
    assert emitted == [{}]


# ---- what the survivors of `make mutate` showed untested ----------------------------------------
def recording_source(**kwargs):
    emitted = []
    source = FileSystemSource(lambda name, aspired: emitted.append((name, dict(aspired))), **kwargs)
    return source, emitted


def test_without_models_a_poll_offers_nothing():
    source, emitted = recording_source()
    assert source.poll_once() is False and emitted == []


def test_a_version_without_a_model_file_is_offered_after_3_s_by_default(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="pyserving.core.source")
    now = [0.0]
    source, emitted = recording_source(clock=lambda: now[0])
    source.set_models({"m": ModelConfig("m", str(tmp_path))})
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "variables.data").write_bytes(b"x")
    for t in (0.0, 2.9):
        now[0] = t
        assert source.poll_once() is True and emitted[-1] == ("m", {})
    now[0] = 3.0
    assert source.poll_once() is False and emitted[-1] == ("m", {1: str(tmp_path / "1")})
    assert [r.getMessage() for r in caplog.records] == [
        "Version 1 of servable m has no saved_model.pb (or model.tflite) after 3 s; offering it anyway so that "
        "its load reports why"]


def test_models_are_polled_independently_even_with_the_same_version_numbers(tmp_path):
    source, emitted = recording_source()
    make_version(tmp_path / "a", 1, b"first")
    make_version(tmp_path / "b", 1, b"second model")
    source.set_models({"gone": ModelConfig("gone", str(tmp_path / "absent")),
                       "a": ModelConfig("a", str(tmp_path / "a")), "b": ModelConfig("b", str(tmp_path / "b"))})
    assert source.poll_once() is True
    assert source.poll_once() is False  # everything complete: nothing left settling
    assert emitted[-2:] == [("a", {1: str(tmp_path / "a" / "1")}), ("b", {1: str(tmp_path / "b" / "1")})]


def test_a_config_reload_keeps_the_versions_already_complete(tmp_path):
    source, emitted = recording_source()
    make_version(tmp_path, 1)
    config = {"m": ModelConfig("m", str(tmp_path))}
    source.set_models(config)
    source.poll_once()
    source.poll_once()
    source.set_models(dict(config))  # the same model in a new config: no need to settle again
    assert source.poll_once() is False and emitted[-1] == ("m", {1: str(tmp_path / "1")})


def test_a_new_version_is_checked_whatever_complete_versions_are_listed_before_it(tmp_path):
    source, emitted = recording_source()
    for n in range(1, 9):
        make_version(tmp_path, n)
    source.set_models({"m": ModelConfig("m", str(tmp_path), policy=VersionPolicy("all"))})
    source.poll_once()
    source.poll_once()
    make_version(tmp_path, 9)
    source.poll_once()
    source.poll_once()
    assert sorted(emitted[-1][1]) == list(range(1, 10))


def test_the_polling_thread_settles_new_versions_quickly_and_keeps_polling(tmp_path):
    source, emitted = recording_source(poll_wait_s=0.05)
    source.set_models({"m": ModelConfig("m", str(tmp_path))})
    source.start()
    try:
        make_version(tmp_path, 1)
        wait_until(lambda: emitted and emitted[-1][1])
    finally:
        source.stop()


def test_with_poll_wait_0_the_source_polls_once_then_only_when_the_models_change(tmp_path):
    source, emitted = recording_source(poll_wait_s=0)
    make_version(tmp_path, 1)
    source.start()
    try:
        assert source._thread.daemon and source._thread.name == "fs-source"  # not counted: other servers run here
        time.sleep(0.2)  # polled (no models yet): now it waits for set_models()
        started = time.monotonic()
        source.set_models({"m": ModelConfig("m", str(tmp_path))})
        wait_until(lambda: emitted and emitted[-1][1])
        assert 0.25 <= time.monotonic() - started < 1.0  # two looks settle_s (0.3 s) apart, not back to back
        (make_version(tmp_path / "staging", 2)).rename(tmp_path / "2")  # appears whole
        time.sleep(0.8)  # a poll would have found it and settled it (0.3 s) by now
        assert emitted[-1] == ("m", {1: str(tmp_path / "1")})  # no polling
        source.set_models({"m": ModelConfig("m", str(tmp_path))})  # a config change wakes it
        wait_until(lambda: emitted[-1] == ("m", {2: str(tmp_path / "2")}))
    finally:
        source.stop()


def test_a_missing_or_empty_base_path_is_logged_at_every_poll_as_tf_serving_does(tmp_path, caplog):
    """A server waiting for its model says why at every poll (file_system_storage_path_source.cc
    logs both cases on each PollFileSystemForServable), so a user sees why nothing answers."""
    caplog.set_level(logging.WARNING, logger="pyserving.core.source")
    source, _emitted = recording_source()
    base = tmp_path / "m"
    source.set_models({"m": ModelConfig("m", str(base))})

    def logged():
        messages = [r.getMessage() for r in caplog.records]
        caplog.clear()
        return messages

    source.poll_once()
    source.poll_once()
    assert logged() == [f"FileSystemStoragePathSource encountered a filesystem access error: Could not find base "
                        f"path {base} for servable m (No such file or directory)"] * 2
    base.mkdir()
    source.poll_once()
    source.poll_once()
    assert logged() == [f"No versions of servable m found under base path {base}. Did you forget to name your "
                        "leaf directory as a number (eg. '/1/')?"] * 2
    make_version(base, 1)
    source.poll_once()
    source.poll_once()
    assert logged() == []


def test_specific_versions_missing_on_disk_are_warned_about_and_the_others_offered(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="pyserving.core.source")
    source, emitted = recording_source()
    make_version(tmp_path, 1)
    source.set_models({"m": ModelConfig("m", str(tmp_path), policy=VersionPolicy("specific", versions=(1, 9)))})
    source.poll_once()
    source.poll_once()
    assert emitted[-1] == ("m", {1: str(tmp_path / "1")})
    assert "Servable m: specific versions [9] not found" in [r.getMessage() for r in caplog.records]


def test_duplicate_version_directories_are_warned_about(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="pyserving.core.source")
    make_version(tmp_path, 1)
    make_version(tmp_path, 2)
    make_version(tmp_path, "001")
    assert sorted(list_versions(str(tmp_path))) == [1, 2]
    assert [r.getMessage() for r in caplog.records] == [f"Duplicate version directories for version 1 in {tmp_path}"]
