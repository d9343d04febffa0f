"""client/client.py: pure helpers, and a full run against a local stand-in REST server.

The stand-in answers like TF Serving's REST API (status + row-format predict) by
running the exported SavedModel; tests against the real server are the lead's.
"""
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tensorflow as tf

from client import client, rest
from models.svm import corpus, data, trainer
from models.svm.export import export_model
from models.svm.transformer import TextTransformer
from tests.helpers import InProcessServer, write_config

STATUS = {"model_version_status": [
    {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
    {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
    {"version": "3", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}},
]}


def test_pick_version_takes_highest_available():
    assert rest.pick_version(STATUS) == 2
    only_end = {"model_version_status": [{"version": "4", "state": "END"}]}
    with pytest.raises(rest.ServingError, match="no AVAILABLE"):
        rest.pick_version(only_end)
    with pytest.raises(rest.ServingError):
        rest.pick_version({})


def test_label_urls():
    assert rest.split_label_url("http://h:8501/v1/models/svm/labels/stable/") == \
        ("http://h:8501/v1/models/svm", "stable")
    assert rest.split_label_url("http://h:8501/v1/models/svm") == ("http://h:8501/v1/models/svm", None)
    assert rest.label_predict_url("http://h:8501/v1/models/svm", "canary") == \
        "http://h:8501/v1/models/svm/labels/canary:predict"


def test_urls_and_request_body():
    assert rest.split_model_url("http://h:8501/v1/models/svm/") == ("http://h:8501/v1/models/svm", None)
    assert rest.split_model_url("http://h:8501/v1/models/svm/versions/7") == \
        ("http://h:8501/v1/models/svm", 7)
    assert rest.predict_url("http://h:8501/v1/models/svm", 2) == \
        "http://h:8501/v1/models/svm/versions/2:predict"
    body = rest.build_predict_request(np.array([[0.5, 0.0]], dtype=np.float32))
    assert body == {"signature_name": "serving_default", "instances": [[0.5, 0.0]]}
    json.dumps(body)  # plain JSON types only


def _export_version(base, version, rows, seed):
    texts, labels = zip(*corpus.generate(rows, 6, seed=seed))
    classes = data.build_classes(labels)
    transformer = TextTransformer(classes=classes).fit(texts)
    params = trainer.TrainParams(num_epochs=3, evaluate_every=0, checkpoint_every=0, log_every=0)
    model, _ = trainer.fit(transformer.transform_sparse(texts),
                           data.labels_to_ids(labels, classes), len(classes), params)
    export_model(model, transformer, str(base), version)
    return transformer


class FakeServing(BaseHTTPRequestHandler):
    """Enough of TF Serving's REST API for the client: GET status, POST :predict."""
    models = {}  # version -> loaded SavedModel

    def log_message(self, *args):
        pass

    def _reply(self, code, payload):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/models/svm":
            return self._reply(200, STATUS)
        self._reply(404, {"error": "not found"})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        version = int(self.path.split("/versions/")[1].split(":")[0])
        fn = self.models[version].signatures[request["signature_name"]]
        x = np.asarray(request["instances"], dtype=np.float32)
        if x.shape[1] != fn.structured_input_signature[1]["x"].shape[1]:
            return self._reply(400, {"error": "wrong feature count %d" % x.shape[1]})
        out = fn(x=tf.constant(x))
        self._reply(200, {"predictions": [
            {"predictClass": int(c), "scores": s.tolist()}
            for c, s in zip(out["predictClass"].numpy(), out["scores"].numpy())]})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("svm_export")
    _export_version(base, 1, rows=60, seed=1)  # a smaller vocabulary than version 2
    transformer = _export_version(base, 2, rows=400, seed=2)
    FakeServing.models = {v: tf.saved_model.load(str(base / str(v))) for v in (1, 2)}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/v1/models/svm" % server.server_address[1], base, transformer
    server.shutdown()
    server.server_close()


def test_classify_uses_highest_available_version(served):
    url, base, transformer = served
    texts, labels = zip(*corpus.generate(20, 6, seed=99))
    lines = []
    results = client.classify(url, str(base), list(texts), list(labels), out=lines.append)
    assert lines[0].startswith("model version: 2 (%d features" % transformer.n_features)
    assert len(results) == 20
    assert sum(r["predicted"] == r["y_true"] for r in results) >= 16
    first = results[0]
    assert first["predicted"] == transformer.classes[first["predictClass"]]
    assert "y_true: %s" % labels[0] in lines and lines[-1].startswith("accuracy: ")


def test_pinned_version_and_main(served, capsys):
    url, base, _ = served
    results = client.classify(url + "/versions/1", str(base), ["@kg.Stock 股票@市盈率 是多少"],
                              out=lambda line: None)
    assert results[0]["predicted"].count(".") == 1
    assert client.main([url, "--model_dir", str(base), "--text", "@kg.MutualFund 基金@初始规模 是怎样"]) == 0
    out = capsys.readouterr().out
    assert '"predictions"' in out and "predicted: " in out


def test_missing_transformer_is_reported(served, tmp_path, capsys):
    url, _, _ = served
    assert client.main([url, "--model_dir", str(tmp_path), "--text", "基金"]) == 1
    assert "no transformer for version 2" in capsys.readouterr().err


def test_print_request_gives_the_body_classify_sends(served, capsys):
    url, base, _ = served
    text = "@kg.MutualFund 基金@初始规模 是怎样"
    [expected] = client.classify(url, str(base), [text], out=lambda line: None)  # version 2, over HTTP
    capsys.readouterr()
    assert client.main([url, "--model_dir", str(base), "--text", text, "--print_request"]) == 0
    body = capsys.readouterr().out
    # What a user would do with it: POST it as it is (curl -d @body.json .../versions/2:predict).
    assert rest.http_json(rest.predict_url(url, 2), json.loads(body)) == expected["answer"]


def test_print_request_for_a_pinned_version_needs_no_server(served, capsys):
    _, base, _ = served
    nowhere = "http://127.0.0.1:9/v1/models/svm/versions/1"  # the discard port: nothing answers
    assert client.main([nowhere, "--model_dir", str(base), "--text", "基金", "--print_request"]) == 0
    [row] = json.loads(capsys.readouterr().out)["instances"]
    assert len(row) == TextTransformer.load_from_version_dir(base / "1").n_features
    assert client.main([nowhere, "--model_dir", str(base), "--print_request"]) == 2
    assert capsys.readouterr().err == "error: --print_request needs --text\n"


LABELS_FLAG = "--allow_version_labels_for_unavailable_models"


def test_a_label_url_is_answered_by_the_label_s_version_with_its_vocabulary(served, tmp_path):
    """Against pyserving itself: label stable -> version 1, whose vocabulary is smaller than version 2's,
    so a text vectorised with the wrong one would not fit the model's input."""
    _, base, newest = served
    oldest = TextTransformer.load_from_version_dir(str(base / "1"))
    assert oldest.n_features != newest.n_features
    config = write_config(tmp_path / "models.config", {"svm": (base, "model_version_policy { specific { versions: 1 "
                                                                     'versions: 2 } } version_labels { key: "stable" '
                                                                     "value: 1 }")})
    # labels in a start-up config need the flag, as in TF Serving (no version is loaded yet)
    server = InProcessServer([f"--model_config_file={config}", LABELS_FLAG])
    try:
        server.start()
        lines = []
        texts, labels = zip(*corpus.generate(5, 6, seed=7))
        results = client.classify(f"{server.rest}/v1/models/svm/labels/stable", str(base), list(texts), list(labels),
                                  out=lines.append)
    finally:
        server.stop()
    assert lines[0] == "model version: 1 (label stable) (%d features, %d classes)" % (
        oldest.n_features, len(oldest.classes))
    assert "answered by: label stable = version 1" in lines and len(results) == 5
    assert all(r["predicted"] == oldest.class_name(r["predictClass"]) for r in results)


def test_several_replicas_share_the_texts_and_the_label_is_checked_on_each(served, tmp_path):
    """Two replicas with label stable -> 1 share the texts; a third whose stable label points at
    version 2 (a copy of version 1, so its answers fit) fails the label check, by name."""
    _, base, _ = served
    oldest = TextTransformer.load_from_version_dir(str(base / "1"))
    other = tmp_path / "other"
    for version in (1, 2):
        shutil.copytree(base / "1", other / str(version))
    body = 'model_version_policy { specific { versions: 1 versions: 2 } } version_labels { key: "stable" value: %d }'
    same = write_config(tmp_path / "same.config", {"svm": (base, body % 1)})
    moved = write_config(tmp_path / "moved.config", {"svm": (other, body % 2)})
    servers = [InProcessServer([f"--model_config_file={config}", LABELS_FLAG]) for config in (same, same, moved)]
    try:
        for server in servers:
            server.start()
        a, b, c = (f"{s.rest}/v1/models/svm/labels/stable" for s in servers)
        texts, labels = zip(*corpus.generate(6, 6, seed=7))
        lines = []
        results = client.classify(f"{a},{b}", str(base), list(texts), list(labels), out=lines.append)
        with pytest.raises(rest.ServingError, match="label stable on %s is at version 2, not 1" % servers[2].rest):
            client.classify([a, c], str(base), list(texts), out=lambda line: None)
    finally:
        for server in servers:
            server.stop()
    # Round-robin: the label's version was asked of the first replica, so the texts start at the second.
    assert [r["replica"] for r in results] == [servers[1].rest, servers[0].rest] * 3
    assert all(r["predicted"] == oldest.class_name(r["predictClass"]) for r in results)
    assert "answered by: label stable = version 1" in lines
    assert "texts per replica: %s 3, %s 3; retried on another replica: 0" % (servers[0].rest, servers[1].rest) in lines


def test_protocol_v2_answers_as_v1_on_a_real_pyserving_by_version_and_by_label(served, tmp_path):
    """--protocol=v2 against pyserving itself (not the stand-in): the same texts over TF Serving's
    :predict and the Open Inference Protocol's /infer, by the latest version and by a label (which
    pyserving takes as the V2 version string), give the same predictions."""
    _url, base, _transformer = served
    config = write_config(tmp_path / "models.config", {"svm": (
        base, 'model_version_policy { all {} } version_labels { key: "stable" value: 1 }')})
    server = InProcessServer([f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models"])
    server.start()
    try:
        texts = [text for text, _label in corpus.generate(6, 6, seed=5)]
        for path in ("/v1/models/svm", "/v1/models/svm/labels/stable"):
            lines = []
            v1 = client.classify(server.rest + path, str(base), texts, out=lambda line: None)
            v2 = client.classify(server.rest + path, str(base), texts, out=lines.append, protocol="v2")
            assert [r["predictClass"] for r in v2] == [r["predictClass"] for r in v1], path
            assert [r["answer"]["model_version"] for r in v2] == ["1" if "stable" in path else "2"] * len(texts)
            assert all(r["answer"]["outputs"][0]["datatype"] in ("INT64", "FP32") for r in v2)
        assert client.main([server.rest + "/v1/models/svm", "--model_dir", str(base), "--protocol=v2",
                            "--text", texts[0]]) == 0
        with pytest.raises(ValueError, match="protocol must be v1 or v2"):
            client.classify(server.rest + "/v1/models/svm", str(base), texts, protocol="v3")
    finally:
        server.stop()


def test_v2_paths_and_bodies():
    assert rest.infer_path("/v1/models/svm/versions/3:predict") == "/v2/models/svm/versions/3/infer"
    assert rest.infer_path("/v1/models/svm/labels/stable:predict") == "/v2/models/svm/versions/stable/infer"
    assert rest.build_infer_request([np.array([1.0, 2.0])]) == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [[1.0, 2.0]]}]}
    answer = {"outputs": [{"name": "predictClass", "datatype": "INT64", "shape": [2], "data": [1, 2]},
                          {"name": "scores", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 1.5, 2.5, 3.5]}]}
    assert rest.infer_predictions(answer) == [{"predictClass": 1, "scores": [0.5, 1.5]},
                                              {"predictClass": 2, "scores": [2.5, 3.5]}]
