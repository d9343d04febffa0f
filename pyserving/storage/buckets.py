"""Versions in a bucket: gs:// through gcsfs, s3:// through s3fs (both fsspec file systems).

Why fsspec and not tf.io.gfile: TensorFlow 2.21 reads gs:// but has had no s3:// since 2.7, and
its GCS client ignores STORAGE_EMULATOR_HOST (measured: a listing against gcp-storage-emulator
went to Google), so neither scheme could be tested against a local server. One fsspec interface
serves both schemes, and each library takes credentials the standard way:

* gs://  Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC file, the
         metadata server); STORAGE_EMULATOR_HOST points at an emulator, anonymously.
* s3://  botocore's chain (AWS_ACCESS_KEY_ID/..., AWS_PROFILE and the shared files, container and
         instance roles); AWS_ENDPOINT_URL(_S3), or TF Serving's old S3_ENDPOINT (host[:port], with
         S3_USE_HTTPS and S3_VERIFY_SSL as TensorFlow's S3 file system read them) for MinIO and
         other S3-compatible stores, with path-style addressing; AWS_REGION / AWS_DEFAULT_REGION.

Listings are never cached (a poll must see what is there now), and an error says what was
tried (endpoint, credential source), never a secret.
"""
from __future__ import annotations

import logging
import os
import posixpath
import threading
from typing import Mapping, Optional

from pyserving.errors import Code, ServingError
from pyserving.storage.versions import MODEL_FILES, parse_version

logger = logging.getLogger(__name__)

# gcsfs logs a traceback for every request it gives up on; the Source logs one line per failure itself.
logging.getLogger("gcsfs").setLevel(logging.CRITICAL)

_lock = threading.Lock()
_stores: dict[str, "BucketStore"] = {}


def for_scheme(scheme: str) -> "BucketStore":
    """One store per scheme and process, built on first use from the environment."""
    with _lock:
        store = _stores.get(scheme)
        if store is None:
            store = _stores[scheme] = BucketStore(scheme, dict(os.environ))
        return store


def reset() -> None:
    """Forget the stores (their environment is read again on next use)."""
    with _lock:
        _stores.clear()


def _off(flag: str) -> bool:
    """A TensorFlow S3 switch (S3_USE_HTTPS, S3_VERIFY_SSL) turned off."""
    return flag.strip() in ("0", "false", "False")


def s3_endpoint_url(s3_endpoint: str, use_https: str = "1") -> str:
    """TF Serving's S3_ENDPOINT (host[:port], or a URL) as a URL; S3_USE_HTTPS=0 means http, as in
    TensorFlow's s3_file_system.cc (default https)."""
    if "://" in s3_endpoint:
        return s3_endpoint
    return f"{'http' if _off(use_https) else 'https'}://{s3_endpoint}"


def s3_options(env: Mapping[str, str]) -> dict:
    """S3FileSystem's arguments from the environment (a pure function, table-tested)."""
    client: dict = {}
    config: dict = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 2, "mode": "standard"}}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if not endpoint and env.get("S3_ENDPOINT"):
        endpoint = s3_endpoint_url(env["S3_ENDPOINT"], env.get("S3_USE_HTTPS", "1"))
    if endpoint:
        client["endpoint_url"] = endpoint
        config["s3"] = {"addressing_style": "path"}  # MinIO and most S3-compatible stores
    if _off(env.get("S3_VERIFY_SSL", "1")):
        client["verify"] = False
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or env.get("S3_REGION")
    if region:
        client["region_name"] = region
    return {"client_kwargs": client, "config_kwargs": config, "use_listings_cache": False,
            "skip_instance_cache": True}


def gcs_options(env: Mapping[str, str]) -> dict:
    """GCSFileSystem's arguments: the emulator anonymously, else Application Default Credentials."""
    emulator = env.get("STORAGE_EMULATOR_HOST")
    if emulator:
        endpoint = emulator if "://" in emulator else f"http://{emulator}"
        return {"token": "anon", "endpoint_url": endpoint, "project": "pyserving",
                "use_listings_cache": False, "skip_instance_cache": True}
    return {"token": "google_default", "use_listings_cache": False, "skip_instance_cache": True,
            "project": env.get("GOOGLE_CLOUD_PROJECT", "pyserving")}


class BucketStore:
    """list_versions / fingerprint / check / download for one scheme."""

    def __init__(self, scheme: str, env: Mapping[str, str]):
        self.scheme = scheme
        self._env = dict(env)
        self._fs = None
        self._fs_lock = threading.Lock()

    # ---- the file system -----------------------------------------------------------------
    def fs(self):
        """The file system, built on first use; its errors (e.g. no Application Default Credentials)
        reach the caller, which names the URL (list_versions, the cache)."""
        with self._fs_lock:
            if self._fs is None:
                self._fs = self._build()
            return self._fs

    def _build(self):
        if self.scheme == "s3":
            import s3fs

            fs = s3fs.S3FileSystem(**s3_options(self._env))
            fs.retries = 3  # s3fs's own retries over botocore's (5 by default): an endpoint down is said sooner
            return fs
        # gcsfs.core's class: the package's default (ExtendedGcsFileSystem) first asks a gRPC
        # service for the bucket's type, which an emulator does not speak (a 60 s stall per bucket).
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(**gcs_options(self._env))

    def tried(self) -> str:
        """What this store uses to reach the bucket, for error lines: endpoint and credential source."""
        env = self._env
        if self.scheme == "s3":
            options = s3_options(env)
            endpoint = options["client_kwargs"].get("endpoint_url", "AWS's default endpoint")
            region = options["client_kwargs"].get("region_name", "none set")
            return f"endpoint {endpoint}, region {region}, credentials {self._aws_credential_source()}"
        if env.get("STORAGE_EMULATOR_HOST"):
            return f"endpoint STORAGE_EMULATOR_HOST={env['STORAGE_EMULATOR_HOST']}, anonymous credentials"
        adc = env.get("GOOGLE_APPLICATION_CREDENTIALS")
        where = f"GOOGLE_APPLICATION_CREDENTIALS={adc}" if adc else "gcloud's ADC file, the metadata server"
        return f"endpoint storage.googleapis.com, Application Default Credentials ({where})"

    def _aws_credential_source(self) -> str:
        try:
            import botocore.session

            session = botocore.session.Session()
            credentials = session.get_credentials()
        except Exception as exc:  # a broken profile: say which, not why in detail
            return f"unreadable ({type(exc).__name__})"
        if credentials is None:
            return ("none found (tried AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared "
                    "credentials/config files, container and instance roles)")
        return f"from {credentials.method}"

    # ---- what the Source and the cache call -------------------------------------------------
    def list_versions(self, base_url: str) -> dict[int, str]:
        """Numeric children of base_url -> their URLs; StorageError (an OSError) when the bucket
        cannot be read. A base path with nothing under it yet is an empty listing (the Source
        warns, as TF Serving does for an empty base path); a missing bucket is an error."""
        root = _strip(base_url)
        bucket = root.split("/", 1)[0]
        try:
            fs = self.fs()
            try:
                entries = fs.ls(root, detail=True, refresh=True)
            except FileNotFoundError:
                if not fs.exists(bucket):
                    raise FileNotFoundError(f"bucket {bucket} does not exist") from None
                return {}
        except ServingError:
            raise
        except Exception as exc:
            raise StorageError(self._explain(exc, base_url), exc) from None
        found: dict[int, str] = {}
        for entry in entries:
            name = posixpath.basename(entry["name"].rstrip("/"))
            number = parse_version(name)
            if number is None or entry.get("type") != "directory":
                continue
            found[number] = f"{self.scheme}://{entry['name'].rstrip('/')}"
        return found

    def listing(self, url: str) -> dict[str, dict]:
        """Relative name -> details, of every object under a version URL."""
        root = _strip(url).rstrip("/")
        found = self.fs().find(root, detail=True)
        return {posixpath.relpath(name, root): info for name, info in found.items()
                if info.get("type") != "directory"}

    def fingerprint(self, url: str) -> Optional[tuple]:
        """(has a model file, listing of (name, size, etag or generation)); None when unreadable."""
        try:
            listing = self.listing(url)
        except (OSError, ServingError):
            return None
        items = tuple(sorted((name, info.get("size"), _version_tag(info)) for name, info in listing.items()))
        return any(name in MODEL_FILES for name in listing), items

    def check(self, base_url: str) -> None:
        """At start-up (and when a reload adds the model): reach the bucket once, or fail with one
        line naming the URL and what was tried."""
        try:
            self.list_versions(base_url)
        except StorageError as exc:
            cause = exc.cause
            code = (Code.UNAVAILABLE if _is_connection_error(cause) else Code.NOT_FOUND
                    if isinstance(cause, FileNotFoundError) else Code.UNAUTHENTICATED
                    if type(cause).__name__ in ("NoCredentialsError", "DefaultCredentialsError")
                    else Code.PERMISSION_DENIED)
            raise ServingError(code, str(exc)) from None

    def describe_failure(self, exc: BaseException, url: str) -> str:
        return str(exc) if isinstance(exc, StorageError) else self._explain(exc, url)

    def download(self, url: str, dest: str, listing: Optional[dict] = None) -> int:
        """Copy every object under `url` into the local folder `dest`; returns the bytes copied."""
        listing = self.listing(url) if listing is None else listing
        root = _strip(url).rstrip("/")
        remote, local = [], []
        for name in sorted(listing):
            target = os.path.join(dest, *name.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            remote.append(f"{root}/{name}")
            local.append(target)
        if remote:
            self.fs().get(remote, local)  # concurrent transfers (fsspec's async batch)
        return sum(int(info.get("size") or 0) for info in listing.values())

    def _explain(self, exc: BaseException, url: str) -> str:
        return f"Could not read {url}: {_reason(exc)} ({self.tried()})"


class StorageError(OSError):
    """A bucket could not be read; str() is the whole secret-free line, `cause` the library's error."""

    def __init__(self, message: str, cause: BaseException):
        super().__init__(message)
        self.cause = cause

    def __str__(self) -> str:
        return self.args[0]


def _strip(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


def _version_tag(info: Mapping) -> object:
    for key in ("generation", "ETag", "etag", "LastModified", "mtime", "updated"):
        if info.get(key) is not None:
            return str(info[key])
    return None


def _is_connection_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                         "ClientConnectionError", "ServerDisconnectedError", "ConnectionError",
                         "ConnectionRefusedError", "TimeoutError", "ClientOSError"})


def _reason(exc: BaseException) -> str:
    """A short, secret-free reason for an error from botocore, s3fs, gcsfs or google.auth."""
    name = type(exc).__name__
    if name == "NoCredentialsError":
        return "no credentials found"
    if name == "DefaultCredentialsError":
        return "no Application Default Credentials found"
    if _is_connection_error(exc):
        return f"the endpoint did not answer ({name})"
    if isinstance(exc, FileNotFoundError):
        text = str(exc)
        return text if "does not exist" in text else "not found"
    if isinstance(exc, PermissionError):
        return f"access denied ({_first_line(exc)})"
    return f"{name}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
