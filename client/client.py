"""REST client for the SVM text classifier served by TensorFlow Serving.

    python client/client.py http://localhost:8501/v1/models/svm \
        --model_dir build/models/svm --data models/svm/data/sample_dev.csv --num 5
    python client/client.py http://localhost:8501/v1/models/svm --text "@kg.MutualFund 基金@初始规模 是怎样"
    python client/client.py http://localhost:8501/v1/models/svm/versions/1 --text "..." --print_request > req.json
    curl -d @req.json http://localhost:8501/v1/models/svm/versions/1:predict
    python client/client.py http://localhost:8501/v1/models/svm --protocol=v2   # KServe V2 (pyserving)

It asks the server which versions are AVAILABLE, takes the highest, vectorises
the text with *that* version's transformer (<model_dir>/<version>/assets.extra/
transformer.json) and POSTs to <URL>/versions/<version>:predict. A URL ending in
/versions/<n> pins that version instead (then no server is needed to build a request); one
ending in /labels/<label> asks the server which version the label points at, uses that
version's transformer and POSTs to <URL>/labels/<label>:predict, then checks that the label
did not move. --print_request prints the request body for --text instead of sending it: the
text's TF-IDF vector over that version's vocabulary, ready for curl.

Several replicas of one model (comma-separated URLs with the same path, e.g.
http://127.0.0.1:8501/v1/models/svm,http://127.0.0.1:8511/v1/models/svm) share the requests
round-robin; a request whose connection failed goes to the next replica (client.rest.Replicas),
and a label must point at the same version on every replica that answered.

--protocol=v2 sends each text as an Open Inference Protocol infer request (pyserving serves it
beside TF Serving's API on the same port) to /v2/models/<m>/versions/<version or label>/infer;
the version is chosen as above, and the answer is read as the same predictions.
"""
import argparse
import json
import logging
import os
import sys

if __package__ in (None, ""):
    # Run as a script: client/ itself must not be on sys.path (this file would
    # shadow the `client` package); the repo root must be.
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    sys.path.insert(0, os.path.dirname(_HERE))

from client import rest  # noqa: E402
from models.svm import data  # noqa: E402
from models.svm.transformer import TextTransformer, transformer_path  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = "build/models/svm"
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "models", "svm", "data", "sample_dev.csv")


def resolve_version(replicas, url):
    """(model_url, version): the pinned one, or the highest AVAILABLE one (asked of the next replica)."""
    model_url, pinned = rest.split_model_url(url)
    if pinned is not None:
        return model_url, pinned
    return model_url, rest.pick_version(replicas.request(rest.split_base_url(model_url)[1]).answer)


def load_transformer(model_dir, version):
    path = transformer_path(os.path.join(model_dir, str(version)))
    if not os.path.exists(path):
        raise FileNotFoundError("no transformer for version %s at %s (is --model_dir the "
                                "export base the server reads?)" % (version, path))
    return TextTransformer.load(path)


def _label_version(replicas, model_path, label):
    return int(replicas.request("%s/labels/%s/metadata" % (model_path, label)).answer["model_spec"]["version"])


def target(replicas, url):
    """(model URL, label or None, version, predict endpoint) for a model, version or label URL on
    one of `replicas`; the version is asked of the next replica."""
    model_url, label = rest.split_label_url(url)
    if label is None:
        model_url, version = resolve_version(replicas, url)
        return model_url, None, version, rest.predict_url(model_url, version)
    version = _label_version(replicas, rest.split_base_url(model_url)[1], label)
    return model_url, label, version, rest.label_predict_url(model_url, label)


def classify(url, model_dir, texts, labels=None, timeout=30.0, out=print, protocol="v1"):
    """Send each text, print the answer tutorial-style; return a list of result dicts.

    `url` may name several replicas of one model ('http://a/v1/models/svm,http://b/v1/models/svm'
    or a list): requests are spread over them (client.rest.Replicas) and each result says which
    one answered. protocol: v1 (TF Serving's :predict) or v2 (the Open Inference Protocol's /infer)."""
    if protocol not in ("v1", "v2"):
        raise ValueError("protocol must be v1 or v2, not %r" % protocol)
    bases, path = rest.split_replica_urls(url)
    with rest.Replicas(bases, timeout=timeout) as replicas:
        return _classify(replicas, bases[0] + path, model_dir, texts, labels, out, protocol)


def _classify(replicas, url, model_dir, texts, labels, out, protocol="v1"):
    model_url, label, version, endpoint = target(replicas, url)
    endpoint_path = rest.split_base_url(endpoint)[1]
    if protocol == "v2":
        endpoint_path = rest.infer_path(endpoint_path)
    transformer = load_transformer(model_dir, version)
    out("model version: %d%s (%d features, %d classes)"
        % (version, " (label %s)" % label if label else "", transformer.n_features, len(transformer.classes)))
    results = []
    for i, text in enumerate(texts):
        rows = transformer.transform([text])
        body = rest.build_infer_request(rows) if protocol == "v2" else rest.build_predict_request(rows)
        reply = replicas.predict(endpoint_path, body)
        answer = reply.answer
        prediction = (rest.infer_predictions(answer) if protocol == "v2" else answer["predictions"])[0]
        predicted = int(prediction["predictClass"])
        result = {"text": text, "answer": answer, "predictClass": predicted,
                  "predicted": transformer.class_name(predicted),
                  "y_true": labels[i] if labels is not None else None, "replica": reply.replica}
        out("text: %s" % text)
        out(json.dumps(answer, ensure_ascii=False))
        if labels is not None:
            out("y_true: %s" % labels[i])
        out("predicted: %s (class %d)" % (result["predicted"], predicted))
        results.append(result)
    if label is not None:
        # Labels move only when the model config changes: the same version before and after the
        # requests, on every replica that answered, is the version that answered them.
        model_path = rest.split_base_url(model_url)[1]
        for base in sorted({r["replica"] for r in results}):
            now = rest.label_version(base + model_path, label, replicas.timeout, session=replicas.session)
            if now != version:
                raise rest.ServingError("label %s %sis at version %d, not %d as when the texts were sent; run again"
                                        % (label, "on %s " % base if len(replicas.base_urls) > 1 else "", now,
                                           version))
        out("answered by: label %s = version %d" % (label, version))
    if len(replicas.base_urls) > 1:
        answered = [sum(r["replica"] == base for r in results) for base in replicas.base_urls]
        out("texts per replica: %s; retried on another replica: %d"
            % (", ".join("%s %d" % pair for pair in zip(replicas.base_urls, answered)), replicas.retries))
    if labels is not None and results:
        hits = sum(r["predicted"] == r["y_true"] for r in results)
        out("accuracy: %d/%d" % (hits, len(results)))
    return results


def build_parser():
    p = argparse.ArgumentParser(description="Query the SVM text classifier over TF Serving's REST API.")
    p.add_argument("url", help="model URL, e.g. http://localhost:8501/v1/models/svm; several replicas of it "
                               "comma-separated (the same path on each): requests are spread over them")
    p.add_argument("--model_dir", default=DEFAULT_MODEL_DIR,
                   help="export base holding <version>/assets.extra/transformer.json")
    p.add_argument("--data", default=DEFAULT_DATA, help="CSV (text,label) to take rows from")
    p.add_argument("--num", type=int, default=5, help="number of CSV rows to send")
    p.add_argument("--text", help="classify this text instead of CSV rows")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--protocol", choices=("v1", "v2"), default="v1",
                   help="v1: TF Serving's REST predict; v2: the Open Inference Protocol's /v2/.../infer "
                        "(pyserving serves both on one port)")
    p.add_argument("--print_request", action="store_true",
                   help="print the predict request body for --text (e.g. for curl) instead of sending it")
    return p


def request_body(url, model_dir, text, timeout=30.0):
    """The predict request `classify` would send for `text`, as JSON text."""
    bases, path = rest.split_replica_urls(url)
    with rest.Replicas(bases, timeout=timeout) as replicas:
        version = target(replicas, bases[0] + path)[2]
    return json.dumps(rest.build_predict_request(load_transformer(model_dir, version).transform([text])))


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.print_request:
        if not args.text:
            print("error: --print_request needs --text", file=sys.stderr)
            return 2
        try:
            print(request_body(args.url, args.model_dir, args.text, args.timeout))
        except (rest.ServingError, FileNotFoundError, ValueError) as err:
            print("error: %s" % err, file=sys.stderr)
            return 1
        return 0
    if args.text:
        texts, labels = [args.text], None
    else:
        texts, labels = data.load_data_and_labels(args.data)
        texts, labels = texts[:args.num], labels[:args.num]
    try:
        classify(args.url, args.model_dir, texts, labels, args.timeout, protocol=args.protocol)
    except (rest.ServingError, FileNotFoundError, ValueError) as err:
        print("error: %s" % err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
