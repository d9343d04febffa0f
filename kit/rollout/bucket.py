"""Publishing a version to a bucket (`inv publish --to=gs://...|s3://...`), atomically for a polling server.

Object stores have no rename, so "written beside it, then renamed" becomes: every file is
uploaded under a hidden prefix `<base>/.tmp-<N>-<random>/` (not a number: no server polls it),
then copied inside the bucket to `<base>/<N>/` with the model file (saved_model.pb or model.tflite)
copied last, and the temporary prefix is deleted. A server's Source (pyserving/core/source.py)
offers a version only once it holds its model file and its listing stays the same across two
looks; since the model file arrives last, every other file is already there when it does. An
upload that dies midway leaves only the hidden prefix, never a half version under a number.
Buckets filled by other tools (gsutil, aws s3 cp) keep working: the server loads what is there
once it is stable, as TF Serving loads what it finds. The bucket is reached with the same
credentials and endpoints as pyserving (pyserving/storage/buckets.py).
"""
from __future__ import annotations

import os
import posixpath
import uuid
from pathlib import Path
from typing import Callable

from pyserving.storage import BUCKET_SCHEMES, buckets, scheme
from pyserving.storage.versions import MODEL_FILES

Say = Callable[[str], None]


def store_for(url: str) -> buckets.BucketStore:
    which = scheme(url)
    if which not in BUCKET_SCHEMES:
        raise ValueError(f"--to must be a gs:// or s3:// URL (the model's base path in the bucket), got {url!r}")
    return buckets.for_scheme(which)


def upload_order(files: list[str]) -> list[str]:
    """Relative names in upload/copy order: the model file(s) last, the rest by name."""
    return sorted(files, key=lambda name: (posixpath.basename(name) in MODEL_FILES, name))


def publish(source: Path, base_url: str, say: Say = print) -> int:
    """Publish the version folder `source` as `<base_url>/<N+1>` (N: the newest version there, or 0)."""
    store = store_for(base_url)
    base_url = base_url.rstrip("/")
    version = max(store.list_versions(base_url), default=0) + 1
    files = upload_order([Path(root, f).relative_to(source).as_posix()
                          for root, _dirs, names in os.walk(source) for f in names])
    if not any(posixpath.basename(f) in MODEL_FILES for f in files):
        raise ValueError(f"{source} holds no saved_model.pb or model.tflite")
    fs = store.fs()
    root = base_url.split("://", 1)[1]
    staging = f"{root}/.tmp-{version}-{uuid.uuid4().hex[:8]}"
    final = f"{root}/{version}"
    say(f"publish: uploading {len(files)} file(s) of {source} to {base_url}/{posixpath.basename(staging)}/")
    try:
        fs.put([str(source / f) for f in files], [f"{staging}/{f}" for f in files])
        if store.list_versions(base_url).get(version):
            raise FileExistsError(f"{base_url}/{version} appeared while uploading; versions are immutable")
        for f in files:  # in upload order: the model file last
            fs.copy(f"{staging}/{f}", f"{final}/{f}")
    finally:
        try:
            fs.rm(staging, recursive=True)
        except FileNotFoundError:
            pass
    say(f"published {source} as {base_url}/{version}")
    return version
