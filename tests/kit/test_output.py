"""kit/output.py: TensorFlow's start-up noise is dropped from the kit's children unless --verbose.

The noise is TensorFlow's own: one test runs TensorFlow in a child exactly as the kit's training
does (TF_CPP_MIN_LOG_LEVEL=2, a v1 Session) and filters what it really printed.
"""
from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys

import pytest

from kit import output
from kit.paths import ROOT

# A device and a v1 Session, as models.mnist.mnist_saved_model uses them; a line of its own at the end.
TF_CHILD = """
import sys
import tensorflow as tf
v1 = tf.compat.v1
graph = tf.Graph()
with graph.as_default():
    x = v1.placeholder(tf.float32, [None])
    with v1.Session(graph=graph) as session:
        session.run(x * 2, {x: [1.0]})
print("a real error", file=sys.stderr)
"""


def test_what_tensorflow_prints_on_a_machine_without_a_gpu_is_dropped_and_nothing_else():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    raw = subprocess.run([sys.executable, "-c", TF_CHILD], env=env, capture_output=True, text=True,
                         timeout=240, check=True).stderr
    noise = [line for line in raw.splitlines() if output.NOISE.search(line)]
    if not any("failed call to cuInit" in line for line in noise):
        pytest.skip("this machine's TensorFlow printed no cuInit error (a GPU, or a CPU-only build)")
    # cuInit, and twice each: absl's pre-init warning, the oneDNN line, the cudart line
    assert len(noise) == 7, raw
    shown = io.StringIO()
    quiet = output.QuietLines(shown)
    for start in range(0, len(raw), 7):  # in chunks that split lines, as a pipe delivers them
        quiet.write(raw[start:start + 7])
    quiet.close()
    assert shown.getvalue().splitlines() == [line for line in raw.splitlines() if line not in noise]
    assert "a real error" in shown.getvalue()


def test_the_kits_runner_drops_the_noise_unless_verbose():
    cuinit = ("2026-01-01 00:00:00.000000: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:51] "
              "failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
    child = shlex.join([sys.executable, "-c", f"import sys; sys.stderr.write({cuinit!r} + '\\nkept\\n')"])

    def through_the_runner(verbose: bool) -> str:
        # In a process of its own, as `inv` runs it: invoke's runner leaves the child's pipes to the
        # garbage collector, which this test session would count as an error.
        code = f"import invoke; from kit.task import runner; runner(invoke.Context(), verbose={verbose})({child!r})"
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              check=True)
        assert done.stdout == f"$ {child}\n"
        return done.stderr

    assert through_the_runner(verbose=False) == "kept\n"
    assert through_the_runner(verbose=True) == cuinit + "\nkept\n"


def test_a_last_line_without_a_newline_is_kept():
    shown = io.StringIO()
    quiet = output.QuietLines(shown)
    quiet.write("Traceback ... ValueError: bad")
    assert shown.getvalue() == ""
    quiet.close()
    assert shown.getvalue() == "Traceback ... ValueError: bad"
