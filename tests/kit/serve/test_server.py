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
