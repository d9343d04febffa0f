"""Third-party Open Inference Protocol clients against a live server: NVIDIA's tritonclient over
HTTP with JSON tensors, HTTP with binary tensors and gRPC, doing live/ready/metadata/infer on TF
Serving's half_plus_two and on a model's non-default signature (BYTES, INT64, BOOL), with answers
equal to TF Serving's API's for the same inputs, and client mistakes seen as 4xx / client statuses.

tritonclient requires protobuf < 7 (the server's set has protobuf 7), and it registers the same
`inference.*` proto names as pyserving's own stubs: it runs in a child process, in a venv of its
own built once from requirements-oip-clients.txt (.venv-oip-clients, rebuilt when that file
changes). KServe's SDK is not used: see docs/oip.md.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, SHARED_TESTDATA, call_json, grpc_predict, write_config

REQUIREMENTS = ROOT / "requirements-oip-clients.txt"
VENV = ROOT / ".venv-oip-clients"
SESSION = Path(__file__).parent / "oip_clients" / "tritonclient_session.py"
X = [1.0, 2.0, 5.0]
ECHO = {"text": ["ab", "\u00e9"], "count": [1, 3]}


@pytest.fixture(scope="session")
def client_python() -> Path:
    """The client venv's python, built (python -m venv + pip install -r) when missing or stale."""
    stamp, digest = VENV / "requirements.sha256", hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    python = VENV / "bin" / "python"
    if not python.exists() or not stamp.exists() or stamp.read_text() != digest:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=120)
        built = subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
                               capture_output=True, text=True, timeout=600)
        assert built.returncode == 0, f"could not build {VENV} from {REQUIREMENTS.name}:\n{built.stderr[-3000:]}"
        stamp.write_text(digest)
    return python


def infer_case(model: str, **extra) -> dict:
    return {"model": model, "inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 1], "data": X}], **extra}


@pytest.fixture(scope="module")
def cases(exported) -> list:
    wrong = {"name": "x", "shape": [1], "data": [1.0]}
    return [
        infer_case("half_plus_two", id="r-1", outputs=["y"], errors=[
            {"what": "unknown model", "model": "nope", "inputs": [wrong | {"datatype": "FP32"}]},
            {"what": "unknown version", "model": "half_plus_two", "version": "7",
             "inputs": [wrong | {"datatype": "FP32"}]},
            {"what": "wrong datatype", "model": "half_plus_two", "inputs": [wrong | {"datatype": "FP64"}]},
            {"what": "BYTES into a numeric input", "model": "half_plus_two",
             "inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]},
            {"what": "unknown output", "model": "half_plus_two", "outputs": ["nope"],
             "inputs": [wrong | {"datatype": "FP32"}]},
        ]),
        infer_case("hp2tf2"),  # no outputs named: tritonclient asks for them all in binary
        {"model": "hp2tf2", "version": "1", "parameters": {"signature_name": "echo"},
         "outputs": ["text", "count", "flag"],
         "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ECHO["text"]},
                    {"name": "count", "datatype": "INT64", "shape": [2], "data": ECHO["count"]}]},
    ]


def test_tritonclient_http_json_http_binary_and_grpc(client_python, exported, start_server, tmp_path, cases):
    half_plus_two = (SHARED_TESTDATA / "saved_model_half_plus_two_cpu" if SHARED_TESTDATA.is_dir()
                     else exported / "hp2")  # TF Serving's own, when ../shared is present
    config = write_config(tmp_path / "models.config", {"half_plus_two": half_plus_two, "hp2tf2": exported / "hp2tf2"})
    server = start_server([f"--model_config_file={config}"])
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    run = subprocess.run([str(client_python), str(SESSION), f"127.0.0.1:{server.rest_port}", server.grpc_target,
                          str(tmp_path / "cases.json")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-4000:]
    got = json.loads(run.stdout)

    # TF Serving's API, for the same inputs
    version = "123" if SHARED_TESTDATA.is_dir() else "1"
    y = [v[0] for v in grpc_predict(server, [[v] for v in X], model="half_plus_two")]
    status, v1 = call_json(server, "POST", "/v1/models/half_plus_two:predict", {"instances": [[v] for v in X]})
    assert status == 200 and [p[0] for p in v1["predictions"]] == y
    status, echo = call_json(server, "POST", "/v1/models/hp2tf2:predict",
                             {"signature_name": "echo", "inputs": ECHO})
    assert status == 200, echo

    for protocol in ("http_json", "http_binary", "grpc"):
        answer = got[protocol]
        assert (answer["live"], answer["ready"]) == (True, True), protocol
        assert answer["server"]["name"] == "pyserving" and "binary_tensor_data" in answer["server"]["extensions"]
        hp2, hp2tf2, echo_case = answer["models"]
        assert hp2["model_ready"] and hp2tf2["model_ready"] and echo_case["model_ready"], protocol
        assert hp2["metadata"] | {"versions": None} == {
            "name": "half_plus_two", "versions": None, "platform": "tensorflow_savedmodel",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]}, protocol
        assert hp2["metadata"]["versions"] == [version]
        assert hp2["infer"] == {"id": "r-1", "model_version": version,
                                "outputs": {"y": {"datatype": "FP32", "shape": [3, 1], "data": y}}}, protocol
        assert hp2tf2["infer"]["outputs"]["y"]["data"] == [2.5, 3.0, 4.5]
        assert echo_case["infer"]["outputs"] == {
            "text": {"datatype": "BYTES", "shape": [2], "data": echo["outputs"]["text"]},
            "count": {"datatype": "INT64", "shape": [2], "data": echo["outputs"]["count"]},
            "flag": {"datatype": "BOOL", "shape": [2], "data": echo["outputs"]["flag"]}}, protocol
        errors = {e["case"]: (e["status"], e["message"]) for e in hp2["errors"]}
        http = protocol != "grpc"
        assert errors == {
            "unknown model": ("404" if http else "StatusCode.NOT_FOUND",
                              "Servable not found for request: Latest(nope)"),
            "unknown version": ("404" if http else "StatusCode.NOT_FOUND",
                                "Servable not found for request: Specific(half_plus_two, 7)"),
            "wrong datatype": ("400" if http else "StatusCode.INVALID_ARGUMENT",
                               "Input 'x': datatype FP64 does not match the model's FP32"),
            "BYTES into a numeric input": ("400" if http else "StatusCode.INVALID_ARGUMENT",
                                           "Input 'x': datatype BYTES does not match the model's FP32"),
            "unknown output": ("400" if http else "StatusCode.INVALID_ARGUMENT",
                               "output tensor alias not found in signature: nope Outputs expected to be in the set "
                               "{y}."),
        }, protocol
