"""The kit's MNIST model over the Open Inference Protocol with NVIDIA's tritonclient, answers checked.

Two steps, in two venvs (tritonclient needs protobuf < 7, the kit's venv has protobuf 7):

    # the kit's venv (TensorFlow): test images, their labels and the model's own scores, computed
    # by loading the newest version of the SavedModel the server is given
    .venv/bin/python client/oip_mnist_check.py expect --model_dir=build/models/mnist --out=mnist.npz
    # the venv of requirements-oip-clients.txt (tritonclient): the same images to a server
    python client/oip_mnist_check.py query --expected=mnist.npz --http=127.0.0.1:18080 --grpc=127.0.0.1:19000

`query` asks tritonclient.http (JSON tensors, then binary tensors) and/or tritonclient.grpc for
server live/ready, model ready, model metadata (name, platform, versions) and one
inference of every image (signature `predict_images`, chosen by the request parameter
`signature_name`), and fails unless every answer's argmax is the argmax of the scores
`expect` computed, and the scores agree within float tolerance. It prints one line per check and the
error rate against the labels. The KServe workflow (.github/workflows/kserve.yml) runs it
against KServe InferenceServices of the kit-pyserving runtime (deploy/kserve/).
"""
from __future__ import annotations

import argparse
import os
import sys

SIGNATURE = "predict_images"
PIXELS = 784
CLASSES = 10


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="The kit's MNIST model over the Open Inference Protocol "
                                            "(tritonclient), answers checked against the model's own.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("expect", help="(kit venv, TensorFlow) images, labels and the SavedModel's scores")
    e.add_argument("--model_dir", required=True, help="the model's base path (numeric version folders)")
    e.add_argument("--version", type=int, default=0, help="version to load (default: the newest)")
    e.add_argument("--num", type=int, default=100, help="number of test images")
    e.add_argument("--data_dir", default=None, help="MNIST IDX folder (default: the kit's offline stand-in)")
    e.add_argument("--out", required=True, help=".npz to write")
    q = sub.add_parser("query", help="(tritonclient venv) ask a server, compare with `expect`'s scores")
    q.add_argument("--expected", required=True, help="the .npz `expect` wrote")
    q.add_argument("--http", default="", help="REST host:port (tritonclient.http, JSON then binary tensors)")
    q.add_argument("--grpc", default="", help="gRPC host:port (tritonclient.grpc)")
    q.add_argument("--http_model", default="mnist", help="model name over REST (the InferenceService's name)")
    q.add_argument("--grpc_model", default="mnist", help="model name over gRPC (the InferenceService's name)")
    q.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    return p


def newest_version(model_dir: str) -> int:
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit() and os.path.isdir(os.path.join(model_dir, d))]
    if not versions:
        raise SystemExit("no numeric version folder in %s" % model_dir)
    return max(versions)


def expect(args) -> int:
    """Write images [n, 784] float32, labels [n] and scores [n, 10] (the SavedModel run by TF here)."""
    if __package__ in (None, ""):  # run as a script: the repo root on sys.path, not client/
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        sys.path.insert(0, os.path.dirname(here))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from models.mnist import input_data

    test = input_data.read_data_sets(data_dir=args.data_dir).test
    images = np.asarray(test.images[:args.num], dtype=np.float32).reshape(-1, PIXELS)
    labels = np.asarray(test.labels[:args.num], dtype=np.int64)
    version = args.version or newest_version(args.model_dir)
    loaded = tf.saved_model.load(os.path.join(args.model_dir, str(version)))
    scores = loaded.signatures[SIGNATURE](images=tf.constant(images))["scores"].numpy()
    np.savez(args.out, images=images, labels=labels, scores=scores, version=version)
    print("expect: %d images, scores of %s version %d -> %s" % (len(images), args.model_dir, version, args.out))
    return 0


def check_answer(where: str, scores, expected, labels) -> str:
    """One line about an answer's scores; raises SystemExit when they are not the model's own."""
    import numpy as np

    scores = np.asarray(scores, dtype=np.float32).reshape(expected.shape)
    got, want = scores.argmax(axis=1), expected.argmax(axis=1)
    if not np.array_equal(got, want):
        raise SystemExit("%s: argmax differs from the SavedModel's for %d of %d images"
                         % (where, int((got != want).sum()), len(want)))
    if not np.allclose(scores, expected, rtol=1e-4, atol=1e-5):
        raise SystemExit("%s: scores differ from the SavedModel's by up to %g"
                         % (where, float(np.abs(scores - expected).max())))
    return "%s: %d answers = the SavedModel's (argmax), error rate %.2f%%" % (
        where, len(want), 100.0 * float((got != labels).mean()))


def check_metadata(where: str, metadata: dict, model: str) -> str:
    """Metadata describes serving_default (the MNIST export's classify signature: BYTES `inputs`),
    which V2 metadata cannot be asked about another signature: name, platform and versions are checked."""
    if metadata["name"] != model or metadata["platform"] != "tensorflow_savedmodel" or not metadata.get("versions"):
        raise SystemExit("%s: unexpected model metadata %s" % (where, metadata))
    return "%s: metadata %s versions %s, platform %s" % (
        where, metadata["name"], list(metadata["versions"]), metadata["platform"])


def query_http(address: str, model: str, data, timeout: float) -> list[str]:
    import tritonclient.http as httpclient

    lines = []
    client = httpclient.InferenceServerClient(address, connection_timeout=timeout, network_timeout=timeout)
    try:
        if not (client.is_server_live() and client.is_server_ready() and client.is_model_ready(model)):
            raise SystemExit("http %s: server or model %s not live/ready" % (address, model))
        lines.append(check_metadata("http %s" % address, client.get_model_metadata(model), model))
        for binary in (False, True):
            item = httpclient.InferInput("images", list(data["images"].shape), "FP32")
            item.set_data_from_numpy(data["images"], binary_data=binary)
            wanted = [httpclient.InferRequestedOutput("scores", binary_data=binary)]
            result = client.infer(model, [item], outputs=wanted, parameters={"signature_name": SIGNATURE})
            where = "http %s %s (%s)" % (address, model, "binary" if binary else "JSON")
            lines.append(check_answer(where, result.as_numpy("scores"), data["scores"], data["labels"]))
    finally:
        client.close()
    return lines


def query_grpc(address: str, model: str, data, timeout: float) -> list[str]:
    import tritonclient.grpc as grpcclient

    lines = []
    client = grpcclient.InferenceServerClient(address)
    try:
        if not (client.is_server_live(client_timeout=timeout) and client.is_server_ready(client_timeout=timeout)
                and client.is_model_ready(model, client_timeout=timeout)):
            raise SystemExit("grpc %s: server or model %s not live/ready" % (address, model))
        metadata = client.get_model_metadata(model, as_json=True, client_timeout=timeout)
        lines.append(check_metadata("grpc %s" % address, metadata, model))
        item = grpcclient.InferInput("images", list(data["images"].shape), "FP32")
        item.set_data_from_numpy(data["images"])
        result = client.infer(model, [item], outputs=[grpcclient.InferRequestedOutput("scores")],
                              parameters={"signature_name": SIGNATURE}, client_timeout=timeout)
        lines.append(check_answer("grpc %s %s" % (address, model), result.as_numpy("scores"), data["scores"],
                                  data["labels"]))
    finally:
        client.close()
    return lines


def query(args) -> int:
    import numpy as np

    if not (args.http or args.grpc):
        raise SystemExit("give --http and/or --grpc")
    with np.load(args.expected) as f:
        data = {k: f[k] for k in ("images", "labels", "scores")}
    if data["scores"].shape != (len(data["images"]), CLASSES):
        raise SystemExit("%s holds scores of shape %s" % (args.expected, data["scores"].shape))
    lines = []
    if args.http:
        lines += query_http(args.http, args.http_model, data, args.timeout)
    if args.grpc:
        lines += query_grpc(args.grpc, args.grpc_model, data, args.timeout)
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return expect(args) if args.command == "expect" else query(args)


if __name__ == "__main__":
    sys.exit(main())
