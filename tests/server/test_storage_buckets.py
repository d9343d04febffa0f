"""Models in buckets (issue 27): gs:// and s3:// base paths against local servers that speak the
storage APIs (moto's S3, gcp-storage-emulator), each test run once per scheme.

The server is pyserving's real ModelServer in process, polling every second; the versions are
real SavedModels uploaded object by object.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from pyserving.examples import half_plus_two
from tests.helpers import (
    TEST_SERVER_FLAGS,
    free_port,
    grpc_predict,
    rest_predict,
    status,
    upload_version,
    wait_for,
    write_config,
)

POLL = "--file_system_poll_wait_seconds=1"


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """hp2 as version 1 (y = x/2 + 2), version 2 (y = x/2 + 3), and a corrupt version 3."""
    root = tmp_path_factory.mktemp("bucket_versions")
    half_plus_two.write_tf1(str(root / "m"), 1)
    half_plus_two.write_tf1(str(root / "m"), 2, b=3.0)
    corrupt = root / "m" / "3"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"not a SavedModel")
    return root / "m"


def url(server, path: str = "m") -> str:
    return f"{server.scheme}://models/{path}"


def cached_copies(model_server) -> list[str]:
    root = model_server.cache._root
    return sorted(n for n in os.listdir(root) if not n.startswith(".")) if root and os.path.isdir(root) else []


def test_a_model_from_a_bucket_answers_as_the_same_model_from_local_disk(bucket_server, versions, tmp_path, serve):
    upload_version(bucket_server.fs(), versions / "1", url(bucket_server, "m/1"))
    config = write_config(tmp_path / "models.config", {"bucket": url(bucket_server), "local": versions})
    local_only = tmp_path / "local"
    local_only.mkdir()
    os.symlink(versions / "1", local_only / "1")
    config = write_config(tmp_path / "models.config", {"bucket": url(bucket_server), "local": local_only})
    server = serve([f"--model_config_file={config}", POLL])
    for x in (0.0, 1.0, -7.5):
        assert rest_predict(server, "bucket", x) == rest_predict(server, "local", x) == x / 2 + 2
        assert grpc_predict(server, [x], model="bucket") == grpc_predict(server, [x], model="local")
    assert status(server, "bucket")[1]["state"] == "AVAILABLE"
    assert len(cached_copies(server.model_server)) == 1  # the bucket's version, not the local one


def test_a_new_version_is_served_without_a_restart_and_a_deleted_one_is_retired(bucket_server, versions, serve):
    fs = bucket_server.fs()
    upload_version(fs, versions / "1", url(bucket_server, "m/1"))
    server = serve([f"--model_base_path={url(bucket_server)}", "--model_name=m", POLL])
    assert rest_predict(server, "m") == 2.5
    upload_version(fs, versions / "2", url(bucket_server, "m/2"))
    wait_for(lambda: rest_predict(server, "m") == 3.5, timeout=30, what="version 2 served")
    wait_for(lambda: status(server, "m")[1]["state"] == "END", timeout=30, what="version 1 unloaded")
    wait_for(lambda: len(cached_copies(server.model_server)) == 1, timeout=10, what="version 1's copy removed")
    fs.rm(url(bucket_server, "m/2").split("://")[1], recursive=True)
    wait_for(lambda: rest_predict(server, "m") == 2.5, timeout=30, what="version 1 served again")
    wait_for(lambda: status(server, "m")[2]["state"] == "END", timeout=30, what="version 2 unloaded")


def test_a_corrupt_version_fails_its_load_and_the_old_one_keeps_serving(bucket_server, versions, serve):
    fs = bucket_server.fs()
    upload_version(fs, versions / "1", url(bucket_server, "m/1"))
    server = serve([f"--model_base_path={url(bucket_server)}", "--model_name=m", POLL, "--max_num_load_retries=0"])
    upload_version(fs, versions / "3", url(bucket_server, "m/3"))
    wait_for(lambda: status(server, "m").get(3, {}).get("state") == "END", timeout=30, what="version 3 failed")
    assert status(server, "m")[3]["status"]["error_code"] != "OK"
    assert rest_predict(server, "m") == 2.5 and status(server, "m")[1]["state"] == "AVAILABLE"
    wait_for(lambda: len(cached_copies(server.model_server)) == 1, timeout=10, what="version 3's copy removed")


def test_the_bucket_going_away_is_logged_at_every_poll_and_serving_goes_on(bucket_server, versions, serve, caplog):
    fs = bucket_server.fs()
    upload_version(fs, versions / "1", url(bucket_server, "m/1"))
    server = serve([f"--model_base_path={url(bucket_server)}", "--model_name=m", POLL])
    caplog.set_level(logging.ERROR, logger="pyserving.core.source")
    fs.rm("models", recursive=True)  # every object, then the bucket
    wait_for(lambda: "bucket models does not exist" in caplog.text, timeout=30, what="the poll's error line")
    assert rest_predict(server, "m") == 2.5
    fs.mkdir("models")
    upload_version(fs, versions / "1", url(bucket_server, "m/1"))
    upload_version(fs, versions / "2", url(bucket_server, "m/2"))
    wait_for(lambda: rest_predict(server, "m") == 3.5, timeout=30, what="version 2 served from the bucket back")
    line = next(r.getMessage() for r in caplog.records if "does not exist" in r.getMessage())
    assert line.startswith(f"FileSystemStoragePathSource encountered a filesystem access error: Could not find "
                           f"base path {url(bucket_server)} for servable m (Could not read {url(bucket_server)}: "
                           f"bucket models does not exist (endpoint ")


def test_the_endpoint_going_down_mid_run_is_logged_and_retried(bucket_server, versions, serve, caplog):
    if bucket_server.scheme == "gs":
        pytest.skip("gcsfs retries a refused connection 6 times over ~30 s per request: too slow for this suite")
    fs = bucket_server.fs()
    upload_version(fs, versions / "1", url(bucket_server, "m/1"))
    server = serve([f"--model_base_path={url(bucket_server)}", "--model_name=m", POLL])
    caplog.set_level(logging.ERROR, logger="pyserving.core.source")
    bucket_server.stop()
    wait_for(lambda: "the endpoint did not answer" in caplog.text, timeout=60, what="the poll's error line")
    assert rest_predict(server, "m") == 2.5
    bucket_server.start()  # moto_server anew: an empty endpoint, the bucket made again
    fs.mkdir("models")
    upload_version(fs, versions / "1", url(bucket_server, "m/1"))
    upload_version(fs, versions / "2", url(bucket_server, "m/2"))
    wait_for(lambda: rest_predict(server, "m") == 3.5, timeout=30, what="version 2 once the endpoint is back")


def test_a_version_over_the_cache_bound_fails_and_the_old_one_keeps_serving(bucket_server, versions, serve,
                                                                            monkeypatch):
    fs = bucket_server.fs()
    upload_version(fs, versions / "1", url(bucket_server, "m/1"))
    size = sum(p.stat().st_size for p in (versions / "1").rglob("*") if p.is_file())
    monkeypatch.setenv("PYSERVING_STORAGE_CACHE_MAX_BYTES", str(size + size // 2))  # room for one version
    server = serve([f"--model_base_path={url(bucket_server)}", "--model_name=m", POLL, "--max_num_load_retries=0"])
    upload_version(fs, versions / "2", url(bucket_server, "m/2"))
    wait_for(lambda: status(server, "m").get(2, {}).get("state") == "END", timeout=30, what="version 2 refused")
    error = status(server, "m")[2]["status"]
    assert error["error_code"] == "RESOURCE_EXHAUSTED"
    assert error["error_message"].startswith(f"Cannot copy {url(bucket_server, 'm/2')} ({size} bytes): the local "
                                             f"cache holds {size} of its {size + size // 2} bytes")
    assert rest_predict(server, "m") == 2.5
    assert server.model_server.cache.peak_bytes == size


def test_an_unknown_bucket_fails_start_up_with_the_url_and_what_was_tried(bucket_server, serve):
    from pyserving.errors import ServingError

    with pytest.raises(ServingError) as err:
        serve([f"--model_base_path={bucket_server.scheme}://no-such-bucket/m", "--model_name=m", POLL])
    assert err.value.code.name == "NOT_FOUND"
    assert err.value.message.startswith(f"Could not read {bucket_server.scheme}://no-such-bucket/m: bucket "
                                        "no-such-bucket does not exist (endpoint ")
    assert bucket_server.endpoint.split("//")[1] in err.value.message
    assert "kit-test-secret" not in err.value.message


def test_an_empty_base_path_in_a_bucket_is_waited_for_as_a_local_one(bucket_server, versions, serve):
    import threading

    started = []
    thread = threading.Thread(target=lambda: started.append(
        serve([f"--model_base_path={url(bucket_server)}", "--model_name=m", POLL])), daemon=True)
    thread.start()
    thread.join(2.5)
    assert not started  # TF Serving waits for a first version
    upload_version(bucket_server.fs(), versions / "1", url(bucket_server, "m/1"))
    thread.join(30)
    assert started and rest_predict(started[0], "m") == 2.5


def test_start_up_failures_are_one_line_with_tf_servings_exit_code_and_no_secret(tmp_path):
    """The command line, as a pod runs it: no credentials, an unknown bucket, the endpoint down."""
    from tests.helpers import S3Server

    s3 = S3Server().start()
    try:
        s3.fs().mkdir("models")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "STORAGE_EMULATOR"))}
        nowhere = str(tmp_path / "absent")
        no_credentials = dict(base, AWS_ENDPOINT_URL=s3.endpoint, AWS_REGION="eu-west-1",
                              AWS_SHARED_CREDENTIALS_FILE=nowhere, AWS_CONFIG_FILE=nowhere,
                              AWS_EC2_METADATA_DISABLED="true")
        with_keys = dict(base, **s3.env())
        down = dict(with_keys, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
        runs = {what: (env, url, subprocess.Popen(
            [sys.executable, "-m", "pyserving", f"--model_base_path={url}", "--model_name=m", f"--port={free_port()}",
             *TEST_SERVER_FLAGS], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            for what, env, url in (("no credentials", no_credentials, "s3://models/m"),
                                   ("unknown bucket", with_keys, "s3://no-such-bucket/m"),
                                   ("endpoint down", down, "s3://models/m"))}
        results = {what: (env, url, *proc.communicate(timeout=120), proc.returncode)
                   for what, (env, url, proc) in runs.items()}
    finally:
        s3.stop()
    expected = {
        "no credentials": "UNAUTHENTICATED: Could not read s3://models/m: no credentials found (endpoint {endpoint}, "
                          "region eu-west-1, credentials none found (tried AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                          "AWS_PROFILE and the shared credentials/config files, container and instance roles))",
        "unknown bucket": "NOT_FOUND: Could not read s3://no-such-bucket/m: bucket no-such-bucket does not exist "
                          "(endpoint {endpoint}, region eu-west-1, credentials from env)",
        "endpoint down": "UNAVAILABLE: Could not read s3://models/m: the endpoint did not answer "
                         "(EndpointConnectionError) (endpoint {endpoint}, region eu-west-1, credentials from env)",
    }
    for what, (env, _url, _out, err, code) in results.items():
        lines = [line for line in err.splitlines() if line.startswith("Failed to start server")]
        assert code == 255, (what, err[-2000:])
        assert lines == ["Failed to start server. Error: " + expected[what].format(endpoint=env["AWS_ENDPOINT_URL"])]
        assert "Traceback" not in err and "kit-test-secret" not in err


def test_no_google_credentials_fail_start_up_with_the_url(monkeypatch, tmp_path, serve):
    from pyserving.errors import ServingError
    from pyserving.storage import buckets

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # no metadata server to ask here
    buckets.reset()
    try:
        with pytest.raises(ServingError) as err:
            serve(["--model_base_path=gs://kit-models/models/svm", "--model_name=svm", POLL])
    finally:
        buckets.reset()
    assert err.value.code.name == "UNAUTHENTICATED"
    assert err.value.message == (
        "Could not read gs://kit-models/models/svm: no Application Default Credentials found (endpoint "
        "storage.googleapis.com, Application Default Credentials "
        f"(GOOGLE_APPLICATION_CREDENTIALS={tmp_path}/absent.json))")


@pytest.mark.parametrize("env,client,addressing", [
    ({}, {}, None),
    ({"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_REGION": "eu-west-1"},
     {"endpoint_url": "http://minio:9000", "region_name": "eu-west-1"}, "path"),
    ({"S3_ENDPOINT": "minio:9000"}, {"endpoint_url": "https://minio:9000"}, "path"),  # TF's default: https
    ({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0", "S3_VERIFY_SSL": "0"},
     {"endpoint_url": "http://minio:9000", "verify": False}, "path"),
    ({"S3_ENDPOINT": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://b:2", "AWS_DEFAULT_REGION": "us-west-2"},
     {"endpoint_url": "http://b:2", "region_name": "us-west-2"}, "path"),  # AWS's own variables first
])
def test_s3_endpoints_and_regions_come_from_the_standard_variables(env, client, addressing):
    from pyserving.storage import buckets

    options = buckets.s3_options(env)
    assert options["client_kwargs"] == client
    assert options["config_kwargs"].get("s3", {}).get("addressing_style") == addressing
    assert options["use_listings_cache"] is False


def test_wrong_s3_credentials_fail_start_up_with_access_denied_and_no_secret(monkeypatch, serve):
    from pyserving.errors import ServingError
    from pyserving.storage import buckets
    from tests.helpers import S3Server

    s3 = S3Server(authenticate_after=1).start()  # the bucket is made unauthenticated, then keys are checked
    try:
        s3.client_create_bucket("models")
        wrong = {"AWS_ACCESS_KEY_ID": "AKIAWRONGKEY", "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
        for name, value in {**s3.env(), **wrong}.items():
            monkeypatch.setenv(name, value)
        buckets.reset()
        with pytest.raises(ServingError) as err:
            serve(["--model_base_path=s3://models/svm", "--model_name=svm", POLL])
    finally:
        s3.stop()
        buckets.reset()
    assert err.value.code.name == "PERMISSION_DENIED"
    assert err.value.message == (
        "Could not read s3://models/svm: access denied (The AWS Access Key Id you provided does not exist in our "
        f"records.) (endpoint {s3.endpoint}, region eu-west-1, credentials from env)")
