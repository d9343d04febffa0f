"""inv publish --to=gs://...|s3://... (kit/rollout/bucket.py) against moto's S3 and
gcp-storage-emulator: a polling server never sees half a version."""
from __future__ import annotations

import threading

import pytest

from kit.rollout import bucket
from pyserving.examples import half_plus_two
from pyserving.storage import buckets
from tests.helpers import upload_version


def test_the_model_file_is_uploaded_and_copied_last():
    assert bucket.upload_order(["saved_model.pb", "variables/variables.index", "assets/a.txt",
                                "variables/variables.data-00000-of-00001"]) == [
        "assets/a.txt", "variables/variables.data-00000-of-00001", "variables/variables.index", "saved_model.pb"]


def test_a_url_that_is_no_bucket_is_refused():
    with pytest.raises(ValueError, match="--to must be a gs:// or s3:// URL"):
        bucket.publish(None, "/srv/models/svm")


def test_publish_to_a_bucket_is_never_seen_half_done_by_a_poller(bucket_server, tmp_path):
    half_plus_two.write_tf1(str(tmp_path / "m"), 1)
    half_plus_two.write_tf1(str(tmp_path / "m"), 2, b=3.0)
    base = f"{bucket_server.scheme}://models/m"
    upload_version(bucket_server.fs(), tmp_path / "m" / "1", f"{base}/1")
    store = buckets.for_scheme(bucket_server.scheme)
    expected = sorted(p.relative_to(tmp_path / "m" / "2").as_posix()
                      for p in (tmp_path / "m" / "2").rglob("*") if p.is_file())
    looks, done = [], threading.Event()

    def poll() -> None:  # what pyserving's Source sees of version 2, as fast as it can look
        while not done.is_set():
            looks.append(store.fingerprint(f"{base}/2"))

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    said = []
    try:
        version = bucket.publish(tmp_path / "m" / "2", base, say=said.append)
    finally:
        done.set()
        watcher.join(30)
    assert version == 2 and said[-1] == f"published {tmp_path / 'm' / '2'} as {base}/2"
    with_model = [look for look in looks if look and look[0]]
    assert all(sorted(name for name, *_ in look[1]) == expected for look in with_model)
    assert sorted(store.listing(f"{base}/2")) == expected
    assert sorted(store.list_versions(base)) == [1, 2]
    assert [p for p in bucket_server.fs().ls("models/m") if ".tmp-" in p] == []  # the staging prefix is gone
