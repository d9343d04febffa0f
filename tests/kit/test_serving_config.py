"""The kit's model config: labels and pinned versions, and its Docker twin kept in step."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from kit.paths import ROOT


def test_docker_twin_follows_every_rewrite(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_BUILD_DIR", str(tmp_path / "build"))
    from kit import paths, serving

    importlib.reload(paths)
    importlib.reload(serving)
    try:
        svm = paths.MODELS / "svm"
        svm.mkdir(parents=True)
        serving.write_model_config({"svm": svm})
        serving.write_docker_config()
        serving.write_model_config({"svm": svm}, labels={"svm": {"stable": 1, "canary": 2}}, specific={"svm": [1, 2]})
        twin = text_format.Parse((paths.MODELS / "models.docker.config").read_text(),
                                 model_server_config_pb2.ModelServerConfig())
        entry = twin.model_config_list.config[0]
        assert entry.base_path == "/models/svm"
        assert dict(entry.version_labels) == {"stable": 1, "canary": 2}
        assert list(entry.model_version_policy.specific.versions) == [1, 2]
        host = (paths.MODELS / "models.config").read_text()
        assert f'base_path: "{svm}"' in host
        assert not any(p.suffix == ".tmp" for p in paths.MODELS.iterdir())
    finally:
        monkeypatch.delenv("KIT_BUILD_DIR")
        importlib.reload(paths)
        importlib.reload(serving)
        assert os.environ.get("KIT_BUILD_DIR") is None


def test_a_starting_server_says_what_it_waits_for(build, exported):
    from kit import pipeline
    from kit.process import free_ports, stop_pid

    shutil.copytree(exported / "hp2", build / "models" / "svm")  # served as svm/1
    pipeline.model_config()
    grpc_port, rest_port = free_ports(2)
    # A note at every look at the port rather than every 5 s (the server takes longer than one look).
    # In a process of its own, as `inv serve` runs it: the server outlives the Popen that started it.
    code = (f"from kit import serving\ntry:\n    serving.start('native', {grpc_port}, {rest_port}, note_every=0.0)\n"
            "finally:\n    serving.stop()")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, KIT_BUILD_DIR=str(build)),
                              capture_output=True, text=True, timeout=300)
    finally:
        if (build / "server.json").exists():  # the child died between start and stop
            for replica in json.loads((build / "server.json").read_text())["replicas"]:
                stop_pid(replica["pid"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    waits = [line for line in lines if line.startswith("waiting for the server to load the models (")]
    assert waits and all(line.endswith(f" s of at most 180; log: {build / 'logs' / 'server.log'})") for line in waits)
    [serving_line] = [line for line in lines if line.startswith("serving (native)")]
    assert serving_line.startswith(f"serving (native) on gRPC 127.0.0.1:{grpc_port} and REST http://127.0.0.1:{rest_port}")
    assert lines.index(waits[-1]) < lines.index(serving_line) < lines.index(lines[-1])
    assert lines[-1].startswith("stopped server pid ")
