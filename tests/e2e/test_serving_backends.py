"""The kit's models served by each backend and queried by the kit's clients, unchanged."""
from __future__ import annotations

import json
import re
import urllib.request

from tests.helpers import ROOT, run_module

SAMPLE_DEV = ROOT / "models" / "svm" / "data" / "sample_dev.csv"


def get(url):
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_both_models_are_available_with_their_signatures(backend):
    _name, _grpc, rest = backend
    for model in ("svm", "mnist"):
        states = [s["state"] for s in get(f"{rest}/v1/models/{model}")["model_version_status"]]
        assert states == ["AVAILABLE"]
    svm = get(f"{rest}/v1/models/svm/metadata")["metadata"]["signature_def"]["signature_def"]
    assert set(svm["serving_default"]["outputs"]) == {"predictClass", "scores"}
    mnist = get(f"{rest}/v1/models/mnist/metadata")["metadata"]["signature_def"]["signature_def"]
    assert mnist["predict_images"]["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert mnist["serving_default"]["method_name"] == "tensorflow/serving/classify"


def test_svm_rest_client(backend, kit_models):
    _name, _grpc, rest = backend
    out = run_module(str(ROOT / "client" / "client.py"), f"{rest}/v1/models/svm",
                     "--model_dir", str(kit_models / "svm"), "--data", str(SAMPLE_DEV), "--num", "20")
    assert "\"predictions\"" in out.stdout
    assert "y_true:" in out.stdout
    right, total = map(int, re.search(r"accuracy: (\d+)/(\d+)", out.stdout).groups())
    assert total == 20 and right >= 16


def test_svm_text_query(backend, kit_models):
    _name, _grpc, rest = backend
    out = run_module(str(ROOT / "client" / "client.py"), f"{rest}/v1/models/svm",
                     "--model_dir", str(kit_models / "svm"), "--text", "@kg.MutualFund 基金@初始规模 是怎样")
    assert "MutualFund.初始规模" in out.stdout


def test_mnist_grpc_client(backend):
    _name, grpc_target, _rest = backend
    out = run_module(str(ROOT / "client" / "mnist_client.py"), "--num_tests=200", f"--server={grpc_target}",
                     "--concurrency=4")
    rate = float(re.search(r"Inference error rate: ([\d.]+)%", out.stdout).group(1))
    assert rate < 20.0


def test_mnist_classify_over_rest(backend):
    _name, _grpc, rest = backend
    answer = post(f"{rest}/v1/models/mnist:classify", {"examples": [{"x": [0.0] * 784}]})
    classes = answer["results"][0]
    assert len(classes) == 10
    assert sorted(label for label, _score in classes) == [str(d) for d in range(10)]
    assert abs(sum(score for _label, score in classes) - 1.0) < 1e-3  # softmax scores
