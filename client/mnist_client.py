"""A client that talks to tensorflow_model_server loaded with the mnist model.

Sends --num_tests test images to the `predict_images` signature over gRPC, at
most --concurrency requests in flight, and prints the inference error rate.

    python client/mnist_client.py --num_tests=1000 --server=localhost:8500 --concurrency=4
    python client/mnist_client.py --server=127.0.0.1:8500,127.0.0.1:8510   # replicas, round_robin
    python client/mnist_client.py --server=localhost:8500 --protocol=v2   # KServe V2 (pyserving)

Several servers (replicas) share one channel that gRPC balances round_robin, retrying a call
that failed UNAVAILABLE on another replica (client.balancing). --protocol=v2 sends the same
images as Open Inference Protocol ModelInfer calls (inference.GRPCInferenceService, which
pyserving serves on the same port; raw FP32 contents, the signature named by the request
parameter signature_name) instead of TF Serving's Predict.
"""
import argparse
import os
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TF is imported

if __package__ in (None, ""):
    # Run as a script: put the repo root (not client/) on sys.path.
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    sys.path.insert(0, os.path.dirname(_HERE))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from client import balancing  # noqa: E402
from models.mnist import input_data  # noqa: E402

SIGNATURE_NAME = "predict_images"


class ResultCounter:
    """Counts results, and throttles so that at most `concurrency` RPCs are active."""

    def __init__(self, num_tests, concurrency):
        self._num_tests = num_tests
        self._concurrency = concurrency
        self._error = 0
        self._failed = 0
        self._done = 0
        self._active = 0
        self.first_failure = None  # the first failed RPC's exception: one line to show, not one per RPC
        self._condition = threading.Condition()

    def inc_error(self):
        with self._condition:
            self._error += 1

    def inc_failed(self, exception=None):
        with self._condition:
            self._failed += 1
            if self.first_failure is None:
                self.first_failure = exception

    def inc_done(self):
        with self._condition:
            self._done += 1
            self._condition.notify_all()

    def dec_active(self):
        with self._condition:
            self._active -= 1
            self._condition.notify_all()

    def throttle(self):
        with self._condition:
            while self._active >= self._concurrency:
                self._condition.wait()
            self._active += 1

    def wait_all(self, sent=None):
        """Until every request sent (default: all num_tests) has its answer."""
        with self._condition:
            while self._done < (self._num_tests if sent is None else sent):
                self._condition.wait()

    @property
    def failed(self):
        return self._failed

    def get_error_rate(self, sent=None):
        """Errors among the answers to the requests sent (default: all num_tests)."""
        self.wait_all(sent)
        return self._error / float(self._num_tests if sent is None else max(sent, 1))


def build_request(image, model_name="mnist", signature_name=SIGNATURE_NAME):
    """A PredictRequest carrying one image as `images` [1, 784] float32."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    image = np.asarray(image, dtype=np.float32).reshape(1, input_data.IMAGE_PIXELS)
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image, shape=list(image.shape)))
    return request


def predicted_label(response):
    """argmax of the `scores` output of a PredictResponse."""
    return int(np.argmax(tf.make_ndarray(response.outputs["scores"])))


def build_infer_request(image, model_name="mnist", signature_name=SIGNATURE_NAME):
    """The Open Inference Protocol's ModelInferRequest for one image: `images` FP32 [1, 784] as
    raw little-endian contents, asking for `scores`."""
    from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2 as pb

    image = np.asarray(image, dtype="<f4").reshape(1, input_data.IMAGE_PIXELS)
    request = pb.ModelInferRequest(model_name=model_name)
    request.parameters["signature_name"].string_param = signature_name
    request.inputs.add(name="images", datatype="FP32", shape=list(image.shape))
    request.raw_input_contents.append(image.tobytes())
    request.outputs.add(name="scores")
    return request


def infer_label(response):
    """argmax of the `scores` output of a ModelInferResponse (FP32 raw contents)."""
    index = [output.name for output in response.outputs].index("scores")
    return int(np.argmax(np.frombuffer(response.raw_output_contents[index], dtype="<f4")))


def _stub(channel, protocol):
    """(the call, request builder, label reader) of TF Serving's API (v1) or the OIP (v2)."""
    if protocol == "v2":
        from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2_grpc as pb_grpc

        return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer, build_infer_request, infer_label
    if protocol != "v1":
        raise ValueError("protocol must be v1 or v2, not %r" % protocol)
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict, build_request, predicted_label


def _create_rpc_callback(label, result_counter, read_label=predicted_label):
    def _callback(result_future):
        try:
            exception = result_future.exception()
            if exception:
                # A failed RPC counts as an error, as in TF Serving's example.
                result_counter.inc_error()
                result_counter.inc_failed(exception)
            elif read_label(result_future.result()) != int(label):
                result_counter.inc_error()
        finally:
            result_counter.inc_done()
            result_counter.dec_active()
    return _callback


def do_inference(hostport, test_set, concurrency, num_tests, model_name="mnist", timeout=5.0, stop_on_failure=False,
                 counter=None, protocol="v1"):
    """Send num_tests requests (cycling over test_set) to one server or several ('a:1,b:2' or a
    list, balanced round_robin); return (error_rate, failed_rpcs). With stop_on_failure no request
    is sent after one has failed (the rate is then over the requests sent). protocol: v1 (TF
    Serving's Predict) or v2 (the Open Inference Protocol's ModelInfer)."""
    if num_tests <= 0 or concurrency <= 0:
        raise ValueError("num_tests and concurrency must be positive")
    counter = counter or ResultCounter(num_tests, concurrency)
    with balancing.channel(hostport) as channel:
        call, build, read_label = _stub(channel, protocol)
        sent = 0
        for i in range(num_tests):
            row = i % test_set.num_examples
            request = build(test_set.images[row], model_name)
            counter.throttle()
            if stop_on_failure and counter.failed:
                counter.dec_active()
                break
            future = call.future(request, timeout)
            sent += 1
            future.add_done_callback(_create_rpc_callback(test_set.labels[row], counter, read_label))
        return counter.get_error_rate(sent if sent < num_tests else None), counter.failed


def unreachable(hostport, timeout):
    """None once a channel to the server(s) connects within `timeout` s, else one line saying so."""
    with balancing.channel(hostport) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return "cannot reach the gRPC server at %s within %g s: is it running? (inv serve)" % (hostport, timeout)
    return None


def describe(exception):
    """A failed RPC in one line: its status code and details."""
    code = getattr(exception, "code", lambda: None)()
    details = getattr(exception, "details", lambda: None)()
    return "%s: %s" % (code.name, " ".join(str(details).split())) if code is not None else str(exception)


def build_parser():
    p = argparse.ArgumentParser(description="MNIST gRPC client for TensorFlow Serving.")
    p.add_argument("--num_tests", type=int, default=100, help="number of test images")
    p.add_argument("--server", default="",
                   help="PredictionService host:port; several comma-separated replicas are balanced round_robin")
    p.add_argument("--concurrency", type=int, default=1, help="maximum number of concurrent inference requests")
    p.add_argument("--model_name", default="mnist")
    p.add_argument("--data_dir", default=None,
                   help="folder with the MNIST IDX files (default: scikit-learn digits stand-in, "
                        "the same test split the offline model was trained without)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per RPC")
    p.add_argument("--protocol", choices=("v1", "v2"), default="v1",
                   help="v1: TF Serving's PredictionService/Predict; v2: the Open Inference Protocol's "
                        "GRPCInferenceService/ModelInfer (pyserving serves both on one port)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.server:
        print("please specify server host:port")
        return 2
    reason = unreachable(args.server, args.timeout)
    if reason:
        print(reason, file=sys.stderr)
        return 1
    datasets = input_data.read_data_sets(data_dir=args.data_dir)
    print("Dataset: %s" % datasets.description)
    counter = ResultCounter(args.num_tests, args.concurrency)
    error_rate, failed = do_inference(args.server, datasets.test, args.concurrency, args.num_tests, args.model_name,
                                      args.timeout, stop_on_failure=True, counter=counter, protocol=args.protocol)
    if failed:
        # One line for the first failure, not one per request; the rest were not sent.
        print("RPC failed (%d of the requests sent; no more were sent): %s"
              % (failed, describe(counter.first_failure)), file=sys.stderr)
        return 1
    print("\nInference error rate: %s%%" % round(error_rate * 100, 4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
