"""`inv reproduce` end to end on small settings, in a build folder of its own: what the README
shows it printing, checked line by line, and the cached second run."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

from kit.process import free_ports, pid_alive, port_open
from tests.helpers import ROOT

SVM_DATA = ROOT / "models" / "svm" / "data"


def inv(build, *args, timeout=600):
    env = dict(os.environ, KIT_BUILD_DIR=str(build))
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def csv_rows(name: str) -> list[tuple[str, str]]:
    with open(SVM_DATA / name, encoding="utf-8", newline="") as f:
        return [(row["text"], row["label"].strip()) for row in csv.DictReader(f)]


def check_svm_queries(out: str, num: int = 5) -> None:
    """The SVM client's lines for the first `num` dev rows: for each, its text, the server's answer
    (one predictClass, one score per class of the training data, predictClass the best score),
    y_true as the CSV has it and predicted equal to it; then `accuracy: num/num`."""
    classes = sorted({label for _text, label in csv_rows("sample.csv")})
    blocks = re.findall(r"^text: (.*)\n(\{.*\})\ny_true: (.*)\npredicted: (.*) \(class (\d+)\)$", out, re.M)
    assert len(blocks) == num, out[-3000:]
    for (text, answer, y_true, predicted, class_id), (want_text, want_label) in zip(blocks, csv_rows("sample_dev.csv")):
        assert (text, y_true) == (want_text, want_label)
        (prediction,) = json.loads(answer)["predictions"]
        assert set(prediction) == {"predictClass", "scores"}
        scores = prediction["scores"]
        assert len(scores) == len(classes) and all(isinstance(s, float) for s in scores)
        assert prediction["predictClass"] == int(class_id) == scores.index(max(scores))
        # The sample's dev questions are rephrasings of its training templates: a trained model
        # gets every one right (all-zero features give the bias's class: 2 of these 5).
        assert predicted == y_true == classes[int(class_id)]
    assert re.search(rf"^accuracy: {num}/{num}$", out, re.M)


def check_served_and_stopped(out: str, grpc_port: int, rest_port: int) -> None:
    serving = re.search(rf"^serving \(native\) on gRPC 127\.0\.0\.1:{grpc_port} and REST "
                        rf"http://127\.0\.0\.1:{rest_port}, pid (\d+); listening on 127\.0\.0\.1 only", out, re.M)
    assert serving, out[-3000:]
    pid = int(serving.group(1))
    assert re.search(rf"^stopped server pid {pid}$", out, re.M)
    assert not pid_alive(pid)  # gone, or a zombie waiting for init
    assert re.search(r"^reproduce: done in \d+ s; nothing left running$", out, re.M)
    assert not port_open(rest_port) and not port_open(grpc_port)


def test_reproduce_trains_serves_queries_stops_and_reuses(tmp_path):
    build = tmp_path / "build"
    grpc_port, rest_port = free_ports(2)
    args = ["reproduce", "--svm-epochs=5", "--mnist-iterations=200", "--num-tests=100",
            f"--grpc-port={grpc_port}", f"--rest-port={rest_port}"]
    first = inv(build, *args)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    out = first.stdout
    assert "[train-svm] running" in out and "[train-mnist] running" in out
    assert re.search(r"step \d+, loss [\d.]+, acc [\d.]+", first.stdout + first.stderr)
    assert "Evaluation:" in first.stdout + first.stderr
    assert "Dataset: scikit-learn digits (offline stand-in for MNIST" in out  # says which data, loudly
    # Softmax regression on the digits: chance is 0.1, and a linear model separates them well
    # (scikit-learn's LogisticRegression reaches 0.97 on this split); 0.85 leaves room for 200 steps.
    assert float(re.search(r"^test accuracy ([\d.]+)$", out, re.M).group(1)) >= 0.85
    check_svm_queries(out)
    assert float(re.search(r"Inference error rate: ([\d.]+)%", out).group(1)) < 25
    check_served_and_stopped(out, grpc_port, rest_port)
    # TensorFlow's start-up noise on a machine without a GPU (tests/kit/test_output.py checks that
    # TensorFlow really prints it here) stays out of the kit's output.
    for noise in ("failed call to cuInit", "before absl::InitializeLog()", "MLIR V1 optimization pass"):
        assert noise not in out + first.stderr
    assert (build / "models" / "svm" / "1" / "assets.extra" / "transformer.json").is_file()
    assert (build / "models" / "mnist" / "1" / "saved_model.pb").is_file()
    assert not (build / "server.json").exists()

    second = inv(build, *args)  # cached: trains nothing, still serves and queries
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    out = second.stdout
    assert "[train-svm] reused: inputs unchanged" in out
    assert "[train-mnist] reused: inputs unchanged" in out
    assert "[train-svm] running" not in out and "test accuracy" not in out
    check_svm_queries(out)
    assert float(re.search(r"Inference error rate: ([\d.]+)%", out).group(1)) < 25
    check_served_and_stopped(out, grpc_port, rest_port)
    dry = inv(build, *args, "--dry-run")  # says what the real run just did: reuse both trainings
    assert dry.returncode == 0, dry.stderr
    assert "[train-svm] dry run: would reuse: inputs unchanged" in dry.stdout
    assert "[train-mnist] dry run: would reuse: inputs unchanged" in dry.stdout
    assert "models.svm.train" not in dry.stdout and "client/client.py" in dry.stdout

    stamp = json.loads((build / ".stamps" / "train-svm.json").read_text())
    assert stamp["params"]["epochs"] == 5
