"""kit/serve/server.py: a server started in the background, waited for, and stopped by its pid."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from kit import model_config
from kit.paths import ROOT


def test_a_starting_server_says_what_it_waits_for(build, exported):
    from kit.process import free_ports, stop_pid

    shutil.copytree(exported / "hp2", build / "models" / "svm")  # served as svm/1
    model_config.served()
    grpc_port, rest_port = free_ports(2)
    # A note at every look at the port rather than every 5 s (the server takes longer than one look).
    # In a process of its own, as `inv serve` runs it: the server outlives the Popen that started it.
    code = (f"from kit.serve import server\n"
            f"try:\n    server.start('native', {grpc_port}, {rest_port}, note_every=0.0)\n"
            "finally:\n    server.stop()")
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


def test_workers_are_waited_for_and_count_as_replicas(build, exported):
    """`inv serve --workers=2`: start waits until both workers serve, and the rollout's replicas
    (rest_urls) are the two workers' private ports, each answering for itself."""
    from kit.process import free_ports, stop_pid

    shutil.copytree(exported / "hp2", build / "models" / "svm")
    model_config.served()
    grpc_port, rest_port = free_ports(2)
    code = (f"import json, urllib.request\nfrom kit.serve import server\n"
            f"try:\n    state = server.start('native', {grpc_port}, {rest_port}, workers=2)\n"
            "    urls = server.rest_urls(server.running())\n"
            "    answers = [json.loads(urllib.request.urlopen(u + '/v1/models/svm', timeout=10).read())\n"
            "               for u in urls]\n"
            "    print(json.dumps({'urls': urls, 'answers': answers, 'state': state}))\n"
            "finally:\n    server.stop()")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, KIT_BUILD_DIR=str(build)),
                              capture_output=True, text=True, timeout=300)
    finally:
        if (build / "server.json").exists():
            for replica in json.loads((build / "server.json").read_text())["replicas"]:
                stop_pid(replica["pid"])
    assert done.returncode == 0, done.stderr
    found = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert len(found["urls"]) == 2 and f"http://127.0.0.1:{rest_port}" not in found["urls"]
    assert all(a["model_version_status"][0]["state"] == "AVAILABLE" for a in found["answers"])
    assert found["state"]["replicas"][0]["workers"] == 2
    assert "2 workers (each also on its own port: " in done.stdout
