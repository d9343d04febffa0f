"""`inv reproduce` end to end on small settings, in a build folder of its own."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from kit.process import free_port, port_open
from tests.helpers import ROOT


def inv(build, *args, timeout=600):
    env = dict(os.environ, KIT_BUILD_DIR=str(build))
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_reproduce_trains_serves_queries_stops_and_reuses(tmp_path):
    build = tmp_path / "build"
    grpc_port, rest_port = free_port(), free_port()
    args = ["reproduce", "--svm-epochs=5", "--mnist-iterations=200", "--num-tests=100",
            f"--grpc-port={grpc_port}", f"--rest-port={rest_port}"]
    first = inv(build, *args)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    out = first.stdout
    assert "[train-svm] running" in out and "[train-mnist] running" in out
    assert re.search(r"step \d+, loss [\d.]+, acc [\d.]+", first.stdout + first.stderr)
    assert "Evaluation:" in first.stdout + first.stderr
    assert "Dataset: scikit-learn digits (offline stand-in for MNIST" in out  # says which data, loudly
    assert "y_true:" in out and '"predictions"' in out
    assert float(re.search(r"Inference error rate: ([\d.]+)%", out).group(1)) < 25
    assert "nothing left running" in out
    # TensorFlow's start-up noise on a machine without a GPU (tests/kit/test_output.py checks that
    # TensorFlow really prints it here) stays out of the kit's output.
    for noise in ("failed call to cuInit", "before absl::InitializeLog()", "MLIR V1 optimization pass"):
        assert noise not in out + first.stderr
    assert (build / "models" / "svm" / "1" / "assets.extra" / "transformer.json").is_file()
    assert (build / "models" / "mnist" / "1" / "saved_model.pb").is_file()
    pid = int(re.search(r"pid (\d+)", out).group(1))
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1][0] == "Z"  # gone, or a zombie
    assert not (build / "server.json").exists()
    assert not port_open(rest_port) and not port_open(grpc_port)

    second = inv(build, *args)
    assert second.returncode == 0, second.stdout[-4000:]
    assert "[train-svm] reused: inputs unchanged" in second.stdout
    assert "[train-mnist] reused: inputs unchanged" in second.stdout
    assert "[train-svm] running" not in second.stdout
    dry = inv(build, *args, "--dry-run")  # says what the real run just did: reuse both trainings
    assert dry.returncode == 0, dry.stderr
    assert "[train-svm] dry run: would reuse: inputs unchanged" in dry.stdout
    assert "[train-mnist] dry run: would reuse: inputs unchanged" in dry.stdout
    assert "models.svm.train" not in dry.stdout and "client/client.py" in dry.stdout

    stamp = json.loads((build / ".stamps" / "train-svm.json").read_text())
    assert stamp["params"]["epochs"] == 5
