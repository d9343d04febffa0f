"""TF Lite on two runtimes, side by side: TensorFlow's `tf.lite.Interpreter` (deprecated in TF 2.21,
"scheduled for deletion") and LiteRT's (`ai_edge_litert`), which pyserving serves TF Lite models with.

For each model: are the outputs bit for bit the same on a fixed input batch, and the time of one
invoke on each (median of rounds, the two runtimes alternating so machine noise hits both).
Models: TF Serving's own TF Lite test models when ../shared is beside the project, and two made
here (half_plus_two as the kit's example writes it, and a small dense softmax net).

    .venv/bin/python bench/tflite_runtimes.py [--invokes 2000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "tfserving"


def _models(tmp: Path):
    import tensorflow as tf

    from pyserving.examples import half_plus_two

    for name in ("saved_model_half_plus_two_tflite", "saved_model_half_plus_two_tflite_with_sigdef"):
        path = SHARED / name / "00000123" / "model.tflite"
        if path.is_file():
            yield f"TF Serving's {name}", path.read_bytes()
    half_plus_two.write_tflite(str(tmp / "hp2"), 1)
    yield "half_plus_two (pyserving.examples)", (tmp / "hp2" / "1" / "model.tflite").read_bytes()

    weights = tf.constant(np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32)])
    def dense(x):
        return {"y": tf.nn.softmax(tf.matmul(tf.tanh(x), weights))}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([dense.get_concrete_function()], tf.Module())
    yield "dense 64x10 softmax (made here)", converter.convert()


class _Runner:
    def __init__(self, cls, content: bytes, batch: np.ndarray):
        self.interpreter = cls(model_content=content)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.interpreter.resize_tensor_input(self.input, batch.shape)
        self.interpreter.allocate_tensors()
        self.outputs = [d["index"] for d in self.interpreter.get_output_details()]
        self.batch = batch

    def once(self) -> list[np.ndarray]:
        self.interpreter.set_tensor(self.input, self.batch)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i) for i in self.outputs]

    def time_us(self, invokes: int) -> float:
        start = time.perf_counter()
        for _ in range(invokes):
            self.once()
        return (time.perf_counter() - start) / invokes * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invokes", type=int, default=2000, help="invokes per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter as LiteRT

    def tf_lite(**kw):
        with warnings.catch_warnings():  # its deprecation warning, the reason for this comparison
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(**kw)

    print(f"tensorflow {tf.__version__}; ai-edge-litert {_version('ai-edge-litert')}")
    print(f"{'model':58} {'same outputs':>12} {'tf.lite us':>10} {'LiteRT us':>10} {'LiteRT/tf.lite':>14}")
    differ = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in _models(Path(tmp)):
            probe = tf_lite(model_content=content)
            detail = probe.get_input_details()[0]
            shape = [3] + [int(s) for s in detail["shape"][1:]]
            batch = np.random.default_rng(1).normal(size=shape).astype(detail["dtype"])
            old, new = _Runner(tf_lite, content, batch), _Runner(LiteRT, content, batch)
            a, b = old.once(), new.once()
            same = len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
            differ += not same
            t_old, t_new = [], []
            for _ in range(args.rounds):
                t_old.append(old.time_us(args.invokes))
                t_new.append(new.time_us(args.invokes))
            m_old, m_new = statistics.median(t_old), statistics.median(t_new)
            print(f"{name:58} {str(same):>12} {m_old:10.1f} {m_new:10.1f} {m_new / m_old:14.2f}")
    return 1 if differ else 0


def _version(dist: str) -> str:
    from importlib import metadata

    return metadata.version(dist)


if __name__ == "__main__":
    sys.exit(main())
