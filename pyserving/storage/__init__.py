"""Where model versions are read from: a local folder, or a bucket (`gs://`, `s3://`).

The Source lists versions and takes their fingerprints through `for_path(base_path)`, whatever
the scheme; the loader gets a local folder (a bucket's version is copied first, pyserving/storage/cache.py).
Local paths keep the plain os code path: no copy, no fsspec import.
"""
from __future__ import annotations

BUCKET_SCHEMES = ("gs", "s3")


def scheme(path: str) -> str:
    """'gs', 's3', or '' for a local path."""
    head, sep, _rest = path.partition("://")
    return head if sep else ""


def is_remote(path: str) -> bool:
    return bool(scheme(path))


def for_path(path: str):
    """The storage that reads `path`: pyserving.storage.local, or a bucket (ValueError for other schemes)."""
    which = scheme(path)
    if not which:
        from pyserving.storage import local

        return local
    if which not in BUCKET_SCHEMES:
        raise ValueError(f"unsupported scheme {which}:// in {path} (supported: gs://, s3://, or a local path)")
    from pyserving.storage import buckets

    return buckets.for_scheme(which)
