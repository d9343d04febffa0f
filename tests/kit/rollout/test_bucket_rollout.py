"""`inv serve --models-uri`, the rollout tasks, `inv versions` and `inv remove` against a
bucket-backed models.config (issue 27, item 3): moto's S3 and gcp-storage-emulator child
processes on loopback ports (tests/conftest.py bucket_server), a real pyserving process started
by `inv serve` (the bucket's endpoint and credentials reach it through the environment), and
versions published with `inv publish --to`."""
from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
from invoke import MockContext
from invoke.exceptions import Exit

import tasks
from kit import model_config, paths
from kit.process import free_port
from pyserving.storage import buckets
from tests.helpers import upload_version, wait_for


def stopped(call, *args, **kwargs) -> str:
    with pytest.raises(Exit) as info:
        call(MockContext(), *args, **kwargs)
    return str(info.value.message)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """half_plus_two (y = 0.5 x + 2) and its b=3 twin (y = 0.5 x + 3): versions 1 and 2."""
    from pyserving.examples import half_plus_two

    root = tmp_path_factory.mktemp("exports")
    half_plus_two.write_tf1(str(root / "b2"), 1)
    half_plus_two.write_tf1(str(root / "b3"), 1, b=3.0)
    return root


def predict(rest: str, label: str = "") -> float:
    path = f"/v1/models/svm/labels/{label}:predict" if label else "/v1/models/svm:predict"
    request = urllib.request.Request(rest + path, data=json.dumps({"instances": [[1.0]]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())["predictions"][0][0]


def test_publish_canary_promote_versions_rollback_remove_on_a_bucket_served_by_inv_serve(
        bucket_server, build, exports, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYSERVING_STORAGE_CACHE_DIR", str(tmp_path / "cache"))
    uri = f"{bucket_server.scheme}://models/kit"
    tasks.publish(MockContext(), model="svm", source=str(exports / "b2" / "1"), to=f"{uri}/svm")
    assert stopped(tasks.serve, backend="docker", models_uri=uri).startswith("--models-uri is served by pyserving")
    grpc, rest = free_port(), free_port()
    # `inv serve` itself, as a user runs it: the server it leaves running reads the bucket with the
    # endpoint and credentials of the environment it was started in
    started = subprocess.run([str(paths.VENV_BIN / "inv"), "serve", f"--grpc-port={grpc}", f"--rest-port={rest}",
                              f"--models-uri={uri}"], cwd=paths.ROOT, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        server = f"http://127.0.0.1:{rest}"
        assert f'base_path: "{uri}/svm"' in (build / "models" / "models.config").read_text()
        assert predict(server) == 2.5  # version 1, read from the bucket by the process inv serve started
        assert stopped(tasks.publish, model="svm") == (
            f"publish: the kit serves from {uri} (inv serve --models-uri): publish there with --to={uri}/svm")

        capsys.readouterr()
        tasks.publish(MockContext(), model="svm", source=str(exports / "b3" / "1"), to=f"{uri}/svm")
        said = capsys.readouterr().out
        assert f"downloading svm's stable version 1 from {uri}/svm/1" in said
        assert "signatures compatible with version 1" in said
        assert f"published {exports / 'b3' / '1'} as {uri}/svm/2" in said
        assert predict(server) == 2.5  # pinned before the publish: version 2 is not live yet

        assert stopped(tasks.canary, model="svm", version=7) == (
            f"canary: svm has no version 7: {uri}/svm holds versions [1, 2]")
        tasks.canary(MockContext(), model="svm")
        assert (predict(server, "stable"), predict(server, "canary")) == (2.5, 3.5)
        tasks.promote(MockContext(), model="svm")
        assert (predict(server, "stable"), predict(server, "previous")) == (3.5, 2.5)

        capsys.readouterr()
        tasks.versions(MockContext(), model="svm")
        assert capsys.readouterr().out.splitlines() == [
            f"in the bucket ({uri}/svm): [1, 2]",
            "rollout: stable=2 canary=None previous=1",
            "server: 1=AVAILABLE, 2=AVAILABLE; labels stable=2, previous=1"]

        tasks.rollback(MockContext(), model="svm")
        assert predict(server, "stable") == 2.5
        wait_for(lambda: {s["version"]: s["state"] for s in json.load(urllib.request.urlopen(
            f"{server}/v1/models/svm", timeout=10))["model_version_status"]} == {"1": "AVAILABLE", "2": "END"},
            timeout=30, what="version 2 unloaded after the rollback")
        assert stopped(tasks.remove, model="svm", version=1) == (
            "remove refused: version 1 of svm holds the label stable (promote or roll back first)")
        capsys.readouterr()
        tasks.remove(MockContext(), model="svm", version=2)
        assert capsys.readouterr().out == f"removed {uri}/svm/2\n"
        assert sorted(buckets.for_scheme(bucket_server.scheme).list_versions(f"{uri}/svm")) == [1]
        assert predict(server) == 2.5
    finally:
        tasks.serve(MockContext(), stop=True)
    assert not (build / "server.json").exists()


def test_versions_and_remove_read_and_delete_in_the_bucket_without_a_server(bucket_server, build, exports, capsys):
    uri = f"{bucket_server.scheme}://models/kit"
    for version in (1, 2, 3):
        upload_version(bucket_server.fs(), exports / "b2" / "1", f"{uri}/svm/{version}")
    model_config.set_models_uri(uri)
    tasks.versions(MockContext(), model="svm")
    assert capsys.readouterr().out.splitlines() == [
        f"in the bucket ({uri}/svm): [1, 2, 3]", "rollout: none (the latest version serves)", "server: not running"]
    tasks.remove(MockContext(), model="svm", version=2)
    assert capsys.readouterr().out == f"removed {uri}/svm/2\n"
    assert sorted(buckets.for_scheme(bucket_server.scheme).list_versions(f"{uri}/svm")) == [1, 3]
    assert bucket_server.fs().find("models/kit/svm/2") == []  # every object of the version, not only its listing
    assert stopped(tasks.remove, model="svm", version=2) == (
        f"remove: svm has no version 2: {uri}/svm holds versions [1, 3]")
    assert stopped(tasks.canary, model="mnist") == f"unknown model 'mnist': the models in {uri} are svm"
    # a serve without --models-uri goes back to build/models (none trained here: said as before)
    assert "no trained models under" in stopped(tasks.serve, dry_run=True)
    assert model_config.models_uri() == ""


def test_a_bucket_that_cannot_be_read_is_one_line_naming_it(bucket_server, build):
    uri = f"{bucket_server.scheme}://no-such-bucket/kit"
    model_config.set_models_uri(uri)
    message = stopped(tasks.versions, model="svm")
    assert message.startswith(f"Could not read {uri}/svm: ") and "does not exist" in message
    assert "kit-test-secret" not in message


def test_models_uri_must_be_a_bucket_url(build):
    assert stopped(tasks.serve, models_uri="/srv/models", dry_run=True) == (
        "--models-uri must be a gs:// or s3:// URL holding svm/<N>/ and mnist/<N>/, got '/srv/models'")


@pytest.mark.parametrize("bucket_server", ["s3"], indirect=True)
def test_a_rollout_kept_for_the_other_base_path_is_dropped_and_said(bucket_server, build, exports):
    uri = "s3://models/kit"
    upload_version(bucket_server.fs(), exports / "b2" / "1", f"{uri}/svm/1")
    local = build / "models" / "svm"
    (local / "1").mkdir(parents=True)
    config = build / "models" / "models.config"
    model_config.save_state(config, model_config.Rollout("svm", str(local), stable=1))
    said = []
    model_config.set_models_uri(uri)
    model_config.served(say=said.append)
    assert said == [f"svm: the rollout kept for {local} does not apply to {uri}/svm: dropped (the latest version "
                    "serves)"]
    assert model_config.load_state(config, "svm") is None
    assert f'base_path: "{uri}/svm"' in config.read_text() and "version_labels" not in config.read_text()
    model_config.save_state(config, model_config.Rollout("svm", f"{uri}/svm", stable=1))
    model_config.served(say=said.append)  # the same base path: kept
    assert model_config.load_state(config, "svm").stable == 1 and len(said) == 1
    model_config.set_models_uri("")
    model_config.served(say=said.append)
    assert said[1:] == [f"svm: the rollout kept for {uri}/svm does not apply to {local}: dropped (the latest version "
                        "serves)"]
    assert f'base_path: "{local}"' in config.read_text()
