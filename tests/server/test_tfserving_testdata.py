"""Interoperability: SavedModels and config files produced by TensorFlow Serving's own project.

Runs only where ../shared/testdata/tfserving exists (the project's own tests stand alone).
In-process server; the bad model and bad config failing start-up (exit 255) are in test_live.py.
"""
from __future__ import annotations

import json

import pytest

from tests.helpers import SHARED_TESTDATA, call_json

pytestmark = pytest.mark.skipif(not SHARED_TESTDATA.is_dir(), reason="../shared/testdata/tfserving not present")


@pytest.fixture(scope="module")
def server(tmp_path_factory, serve_module):
    tmp = tmp_path_factory.mktemp("tfs")
    good = (SHARED_TESTDATA / "good_model_config.txt").read_text()
    good = good.replace("${TEST_HALF_PLUS_TWO_DIR}", str(SHARED_TESTDATA / "saved_model_half_plus_two_cpu"))
    good = good.replace("${TEST_HALF_PLUS_THREE_DIR}", str(SHARED_TESTDATA / "saved_model_half_plus_three"))
    more = (
        f'config {{ name: "two_versions" base_path: "{SHARED_TESTDATA / "saved_model_half_plus_two_2_versions"}" '
        'model_platform: "tensorflow" model_version_policy { all {} } }\n'
        f'config {{ name: "tf2" base_path: "{SHARED_TESTDATA / "saved_model_half_plus_two_tf2_cpu"}" '
        'model_platform: "tensorflow" }\n'
        f'config {{ name: "counter" base_path: "{SHARED_TESTDATA / "saved_model_counter"}" '
        'model_platform: "tensorflow" }\n'
    )
    config = tmp / "models.config"
    config.write_text(good.rstrip().rstrip("}") + more + "}\n")
    return serve_module([f"--model_config_file={config}"])


def test_good_config_models_predict_classify_regress(server):
    assert call_json(server, "POST", "/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200, {"predictions": [2.5, 3.0, 4.5]})
    assert call_json(server, "POST", "/v1/models/half_plus_three:predict", {"instances": [1.0]}) == (
        200, {"predictions": [3.5]})
    assert call_json(server, "POST", "/v1/models/half_plus_two:classify", {
        "signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}) == (200, {"results": [[["", 2.5]]]})
    assert call_json(server, "POST", "/v1/models/half_plus_two:regress", {
        "signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}) == (200, {"results": [3.0]})
    assert call_json(server, "POST", "/v1/models/tf2:predict", {"instances": [[1.0]]})[1] == {"predictions": [[2.5]]}


def test_metadata_matches_tf_serving_reference(server):
    reference = json.loads((SHARED_TESTDATA / "saved_model_half_plus_two_2_versions_metadata.json").read_text())
    status, body = call_json(server, "GET", "/v1/models/two_versions/versions/123/metadata")
    assert status == 200
    body["model_spec"]["name"] = reference["model_spec"]["name"]
    assert body == reference


def test_two_versions_served_side_by_side(server):
    status, body = call_json(server, "GET", "/v1/models/two_versions")
    versions = [(s["version"], s["state"]) for s in body["model_version_status"]]
    assert versions == [("124", "AVAILABLE"), ("123", "AVAILABLE")]
    assert call_json(server, "POST", "/v1/models/two_versions/versions/123:predict", {"instances": [1.0]})[0] == 200


def test_stateful_counter_model(server):
    status, body = call_json(server, "GET", "/v1/models/counter/metadata")
    assert status == 200
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert signatures  # loads and exposes its signatures
