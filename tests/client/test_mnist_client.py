"""client/mnist_client.py: request building, throttling, and a run over real gRPC.

The server here is an in-process gRPC PredictionService stand-in that answers
from a lookup of the test set (every 4th image deliberately wrong), so the
expected error rate is exact; runs against TF Serving itself are the lead's.
"""
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from client import mnist_client
from kit.process import free_ports
from models.mnist import input_data
from tests.helpers import InProcessServer


def test_build_request():
    image = np.linspace(0, 1, 784, dtype=np.float32)
    request = mnist_client.build_request(image, model_name="mnist")
    assert request.model_spec.name == "mnist"
    assert request.model_spec.signature_name == "predict_images"
    proto = request.inputs["images"]
    assert proto.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in proto.tensor_shape.dim] == [1, 784]
    assert np.array_equal(tf.make_ndarray(proto).ravel(), image)


def test_result_counter_throttles():
    counter = mnist_client.ResultCounter(num_tests=3, concurrency=2)
    counter.throttle()
    counter.throttle()
    blocked = threading.Thread(target=counter.throttle)
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # a third request waits for a free slot
    counter.dec_active()
    blocked.join(2)
    assert not blocked.is_alive()
    counter.inc_error()
    for _ in range(3):
        counter.inc_done()
    assert counter.get_error_rate() == pytest.approx(1 / 3)


class LookupServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Answers scores one-hot on the true label, except for every 4th test image."""

    def __init__(self, test_set):
        self.answers = {}
        for row, (image, label) in enumerate(zip(test_set.images, test_set.labels)):
            self.answers[image.tobytes()] = (label + 1) % 10 if row % 4 == 0 else label
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        self.seen = []

    def Predict(self, request, context):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.seen.append((request.model_spec.name, request.model_spec.signature_name))
            image = tf.make_ndarray(request.inputs["images"]).astype(np.float32).reshape(784)
            scores = np.zeros((1, 10), dtype=np.float32)
            scores[0, self.answers[image.tobytes()]] = 1.0
            threading.Event().wait(0.01)  # keep requests overlapping
            response = predict_pb2.PredictResponse()
            response.outputs["scores"].CopyFrom(tf.make_tensor_proto(scores))
            return response
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture(scope="module")
def grpc_server():
    test_set = input_data.read_data_sets().test
    servicer = LookupServicer(test_set)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield "127.0.0.1:%d" % port, servicer, test_set
    server.stop(grace=None)


def test_do_inference_error_rate_and_concurrency(grpc_server):
    target, servicer, test_set = grpc_server
    error_rate, failed = mnist_client.do_inference(target, test_set, concurrency=3, num_tests=40)
    assert failed == 0
    assert error_rate == pytest.approx(10 / 40)  # rows 0, 4, ..., 36 are answered wrong
    assert servicer.max_active <= 3
    assert set(servicer.seen) == {("mnist", "predict_images")}


def test_main_prints_error_rate(grpc_server, capsys):
    target, _, _ = grpc_server
    assert mnist_client.main(["--num_tests=8", "--server=%s" % target, "--concurrency=2"]) == 0
    out = capsys.readouterr().out
    assert "Dataset: scikit-learn digits" in out
    assert "Inference error rate: 25.0%" in out


def test_several_servers_share_the_requests(grpc_server):
    target, first, test_set = grpc_server
    second = LookupServicer(test_set)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(second, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        seen_before = len(first.seen)
        error_rate, failed = mnist_client.do_inference("%s,127.0.0.1:%d" % (target, port), test_set,
                                                       concurrency=2, num_tests=40)
    finally:
        server.stop(grace=None)
    assert failed == 0 and error_rate == pytest.approx(10 / 40)
    shares = [len(first.seen) - seen_before, len(second.seen)]
    assert sum(shares) == 40 and min(shares) >= 15  # round_robin, not one server for all


def test_failed_rpcs_count_as_errors():
    test_set = input_data.read_data_sets().test
    # Nothing listens on this port: every RPC fails, fast.
    error_rate, failed = mnist_client.do_inference("127.0.0.1:1", test_set, concurrency=2,
                                                   num_tests=3, timeout=2.0)
    assert error_rate == 1.0 and failed == 3


def test_main_fails_fast_with_one_line_when_no_server_listens(capsys):
    [port] = free_ports(1)  # nothing listens there
    assert mnist_client.main(["--num_tests=1000", f"--server=127.0.0.1:{port}", "--timeout=1"]) == 1
    out, err = capsys.readouterr()
    assert err == f"cannot reach the gRPC server at 127.0.0.1:{port} within 1 s: is it running? (inv serve)\n"
    assert "Inference error rate" not in out


def test_main_stops_at_the_first_failed_rpc_and_exits_1(exported, capsys):
    # pyserving itself, serving a model that is not mnist: every Predict is NOT_FOUND.
    server = InProcessServer([f"--model_base_path={exported / 'hp2'}", "--model_name=other"], rest=False).start()
    try:
        code = mnist_client.main(["--num_tests=1000", f"--server={server.grpc_target}", "--concurrency=4"])
    finally:
        server.stop()
    out, err = capsys.readouterr()
    assert code == 1 and "Inference error rate" not in out
    [line] = err.splitlines()  # one line, not one per request
    failed = int(line.split("RPC failed (", 1)[1].split(" ", 1)[0])
    assert 1 <= failed <= 4  # what was in flight when the first failure came back; the rest never left
    assert line.endswith("no more were sent): NOT_FOUND: Servable not found for request: Latest(mnist)")


@pytest.fixture(scope="module")
def mnist_server(tmp_path_factory):
    """pyserving serving a real MNIST export (the digits stand-in, 300 steps)."""
    from models.mnist import mnist_saved_model

    base = tmp_path_factory.mktemp("mnist_model")
    datasets = input_data.read_data_sets()
    mnist_saved_model.train_and_export(datasets, str(base), 1, 300, seed=0)
    server = InProcessServer([f"--model_base_path={base}", "--model_name=mnist"], rest=False).start()
    yield server, datasets.test
    server.stop()


def test_protocol_v2_gives_the_same_error_rate_as_tf_servings_predict(mnist_server, capsys):
    """--protocol=v2: the same images as the Open Inference Protocol's ModelInfer on the same
    port of a real pyserving; the same predictions, so the same error rate."""
    server, test_set = mnist_server
    v1 = mnist_client.do_inference(server.grpc_target, test_set, concurrency=4, num_tests=60)
    v2 = mnist_client.do_inference(server.grpc_target, test_set, concurrency=4, num_tests=60, protocol="v2")
    assert v1 == v2 and v2[1] == 0 and v2[0] < 0.3
    assert mnist_client.main(["--num_tests=20", f"--server={server.grpc_target}", "--protocol=v2"]) == 0
    assert "Inference error rate: " in capsys.readouterr().out


def test_the_v2_request_is_the_predict_requests_image():
    test_set = input_data.read_data_sets().test
    request = mnist_client.build_infer_request(test_set.images[0], model_name="mnist")
    assert (request.model_name, request.parameters["signature_name"].string_param) == ("mnist", "predict_images")
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [("images", "FP32", [1, 784])]
    assert np.frombuffer(request.raw_input_contents[0], "<f4").tolist() == np.asarray(
        test_set.images[0], np.float32).tolist()
    with pytest.raises(ValueError, match="protocol must be v1 or v2"):
        mnist_client.do_inference("127.0.0.1:1", test_set, 1, 1, protocol="v3")
