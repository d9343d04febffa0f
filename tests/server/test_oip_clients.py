"""Third-party Open Inference Protocol clients against a live server: NVIDIA's tritonclient over
HTTP with JSON tensors, HTTP with binary tensors and gRPC (live/ready/metadata/infer), and KServe's
InferenceRESTClient (v2) and InferenceGRPCClient (live/ready/infer: they have no metadata call), on
TF Serving's half_plus_two and on a model's non-default signature (BYTES, INT64, BOOL), with
answers equal to TF Serving's API's for the same inputs, and client mistakes seen as 4xx / client
statuses with pyserving's messages.

tritonclient requires protobuf < 7 (the server's set has protobuf 7), and both register the same
`inference.*` proto names as pyserving's own stubs: they run in child processes, in a venv of
their own that `make test` builds from requirements-oip-clients.txt (build/tools/oip-clients-venv,
rebuilt when that file changes), as it builds checkov's.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, SHARED_TESTDATA, call_json, grpc_predict, write_config

# Where `make test` puts it: $KIT_BUILD_DIR/tools or build/tools (the Makefile's BUILD_DIR).
VENVS = [Path(os.environ["KIT_BUILD_DIR"]) / "tools" / "oip-clients-venv"] if os.environ.get("KIT_BUILD_DIR") else []
VENVS.append(ROOT / "build" / "tools" / "oip-clients-venv")
SESSION = Path(__file__).parent / "oip_clients" / "tritonclient_session.py"
KSERVE_SESSION = Path(__file__).parent / "oip_clients" / "kserve_session.py"
X = [1.0, 2.0, 5.0]
ECHO = {"text": ["ab", "\u00e9"], "count": [1, 3]}


@pytest.fixture(scope="session")
def client_python() -> Path:
    """The client venv's python (`make test` builds it)."""
    for venv in VENVS:
        if (venv / ".installed").exists():
            return venv / "bin" / "python"
    pytest.skip("tritonclient and kserve are not installed: `make test` installs them into "
                "build/tools/oip-clients-venv (requirements-oip-clients.txt)")


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


@pytest.fixture(scope="module")
def live(client_python, exported, tmp_path_factory, cases):
    """A live server (TF Serving's half_plus_two when ../shared is present, and hp2tf2), each
    client session's JSON, and TF Serving's API's answers for the same inputs."""
    from tests.helpers import launch

    tmp = tmp_path_factory.mktemp("oip_clients")
    half_plus_two = (SHARED_TESTDATA / "saved_model_half_plus_two_cpu" if SHARED_TESTDATA.is_dir()
                     else exported / "hp2")
    config = write_config(tmp / "models.config", {"half_plus_two": half_plus_two, "hp2tf2": exported / "hp2tf2"})
    server = launch(tmp / "logs", [f"--model_config_file={config}"])
    try:
        (tmp / "cases.json").write_text(json.dumps(cases))
        got = {}
        for script in (SESSION, KSERVE_SESSION):
            run = subprocess.run([str(client_python), str(script), f"127.0.0.1:{server.rest_port}",
                                  server.grpc_target, str(tmp / "cases.json")], capture_output=True, text=True,
                                 timeout=120)
            assert run.returncode == 0, run.stderr[-4000:]
            got.update(json.loads(run.stdout))
        y = [v[0] for v in grpc_predict(server, [[v] for v in X], model="half_plus_two")]
        status, v1 = call_json(server, "POST", "/v1/models/half_plus_two:predict", {"instances": [[v] for v in X]})
        assert status == 200 and [p[0] for p in v1["predictions"]] == y
        status, echo = call_json(server, "POST", "/v1/models/hp2tf2:predict",
                                 {"signature_name": "echo", "inputs": ECHO})
        assert status == 200, echo
        yield got, y, echo["outputs"]
    finally:
        server.stop()


VERSION = "123" if SHARED_TESTDATA.is_dir() else "1"


def expected_errors(http: bool) -> dict:
    return {
        "unknown model": ("404" if http else "StatusCode.NOT_FOUND", "Servable not found for request: Latest(nope)"),
        "unknown version": ("404" if http else "StatusCode.NOT_FOUND",
                            "Servable not found for request: Specific(half_plus_two, 7)"),
        "wrong datatype": ("400" if http else "StatusCode.INVALID_ARGUMENT",
                           "Input 'x': datatype FP64 does not match the model's FP32"),
        "BYTES into a numeric input": ("400" if http else "StatusCode.INVALID_ARGUMENT",
                                       "Input 'x': datatype BYTES does not match the model's FP32"),
        "unknown output": ("400" if http else "StatusCode.INVALID_ARGUMENT",
                           "output tensor alias not found in signature: nope Outputs expected to be in the set {y}."),
    }


@pytest.mark.parametrize("protocol", ["http_json", "http_binary", "grpc"])
def test_tritonclient(live, protocol):
    got, y, echo = live
    answer = got[protocol]
    assert (answer["live"], answer["ready"]) == (True, True), protocol
    assert answer["server"]["name"] == "pyserving" and "binary_tensor_data" in answer["server"]["extensions"]
    hp2, hp2tf2, echo_case = answer["models"]
    assert hp2["model_ready"] and hp2tf2["model_ready"] and echo_case["model_ready"]
    assert hp2["metadata"] == {
        "name": "half_plus_two", "versions": [VERSION], "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]}
    assert hp2["infer"] == {"id": "r-1", "model_version": VERSION,
                            "outputs": {"y": {"datatype": "FP32", "shape": [3, 1], "data": y}}}
    assert hp2tf2["infer"]["outputs"]["y"]["data"] == [2.5, 3.0, 4.5]
    assert echo_case["infer"]["outputs"] == {
        "text": {"datatype": "BYTES", "shape": [2], "data": echo["text"]},
        "count": {"datatype": "INT64", "shape": [2], "data": echo["count"]},
        "flag": {"datatype": "BOOL", "shape": [2], "data": echo["flag"]}}
    errors = {e["case"]: (e["status"], e["message"]) for e in hp2["errors"]}
    assert errors == expected_errors(http=protocol != "grpc")


@pytest.mark.parametrize("protocol", ["kserve_rest_v2", "kserve_grpc_v2"])
def test_kserve_clients(live, protocol):
    got, y, echo = live
    answer = got[protocol]
    assert (answer["live"], answer["ready"]) == (True, True)
    hp2, hp2tf2, echo_case = answer["models"]
    assert hp2["model_ready"] and hp2tf2["model_ready"] and echo_case["model_ready"]
    assert hp2["infer"]["id"] == "r-1"
    assert hp2["infer"]["outputs"] == {"y": {"datatype": "FP32", "shape": [3, 1], "data": y}}
    assert hp2tf2["infer"]["outputs"]["y"]["data"] == [2.5, 3.0, 4.5]
    assert echo_case["infer"]["outputs"] == {
        "text": {"datatype": "BYTES", "shape": [2], "data": echo["text"]},
        "count": {"datatype": "INT64", "shape": [2], "data": echo["count"]},
        "flag": {"datatype": "BOOL", "shape": [2], "data": echo["flag"]}}
    errors = {e["case"]: (e["status"], e.get("message")) for e in hp2["errors"]}
    expected = expected_errors(http=protocol == "kserve_rest_v2")
    if protocol == "kserve_rest_v2":
        # InferenceRESTClient.infer posts to /v2/models/{name}/infer whatever the request's
        # model_version (kserve 0.21): the latest version answers
        expected["unknown version"] = ("OK", None)
    assert errors == expected
