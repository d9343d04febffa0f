"""Where the time of a version load and unload goes, and how long each step holds the interpreter.

    .venv/bin/python bench/load_breakdown.py [--no-freeze]

Loads and unloads the two models of bench/load_stall.py (half_plus_two and the 128 MiB "large"
model) in this process, step by step as pyserving's SavedModel loader does them
(tf.compat.v1.saved_model.loader.load is these steps), while a ticker thread sleeps 1 ms at a
time and records how late it wakes up. A request's Python work (decode, encode, the protocol
stacks) needs the interpreter lock the same way, so the ticker's worst lateness during a step is
the stall that step imposes on serving; its wall time is how long the step takes. The first run of
each signature is timed apart: TensorFlow builds and optimizes a signature's executors on its first
run, which in a server happens on the first request after the new version becomes AVAILABLE.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from pyserving import gc_policy  # noqa: E402


class Ticker:
    """A thread that sleeps 1 ms at a time; lateness = how much longer each sleep took."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []  # (woke at, lateness s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            started = time.perf_counter()
            time.sleep(0.001)
            woke = time.perf_counter()
            self.samples.append((woke, woke - started - 0.001))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def worst(self, start: float, end: float) -> float:
        # a sleep that overlaps the step counts: it was held back by it
        return max((late for woke, late in self.samples if start <= woke <= end + 0.5 and woke - late - 0.001 <= end),
                   default=0.0)


def steps(path: str):
    """(name, callable) in the order a load and an unload run them; state passes through `box`."""
    import tensorflow as tf
    from tensorflow.python.saved_model import loader_impl

    box: dict = {}

    def session():
        box["graph"] = tf.Graph()
        box["session"] = tf.compat.v1.Session(graph=box["graph"])

    def parse():
        box["loader"] = loader_impl.SavedModelLoader(path)

    def import_graph():
        with box["graph"].as_default():
            box["saver"], _ = box["loader"].load_graph(box["graph"], ["serve"])

    def restore():
        with box["graph"].as_default():
            box["loader"].restore_variables(box["session"], box["saver"])

    def init_ops():
        with box["graph"].as_default():
            box["loader"].run_init_ops(box["session"], ["serve"])
            box["graph"].finalize()

    def first_run():
        meta = box["loader"].get_meta_graph_def_from_tags(["serve"])
        sig = meta.signature_def["serving_default"]
        fetch = box["graph"].get_tensor_by_name(sig.outputs["y"].name)
        feed = box["graph"].get_tensor_by_name(sig.inputs["x"].name)
        box["run"] = lambda: box["session"].run(fetch, {feed: np.array([[1.0]], np.float32)})
        box["run"]()

    def second_run():
        box["run"]()

    def close():
        box["session"].close()

    def release():
        box.clear()

    def collect():
        gc_policy.after_state_change("END")  # what the server does when a version ends

    return [("Session()", session), ("parse saved_model.pb", parse), ("import MetaGraph", import_graph),
            ("restore variables", restore), ("init ops, finalize", init_ops), ("first run", first_run),
            ("second run", second_run), ("unload: Session.close", close), ("unload: drop references", release),
            ("unload: collect its garbage", collect)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="loads of each model (the first one warms caches)")
    parser.add_argument("--no-freeze", action="store_true",
                        help="leave TensorFlow's import-time objects unfrozen (pyserving before the GC policy "
                             "froze them once: an unload then walked all of them)")
    args = parser.parse_args()
    from bench.load_stall import write_large, write_small
    from pyserving.runtime import savedmodel  # noqa: F401  (TensorFlow, as the server imports it)

    if not args.no_freeze:
        gc_policy.configure()
        gc_policy.freeze_imports()
    print(f"GC: {'nothing frozen' if args.no_freeze else 'import-time objects frozen'}, "
          f"{len(gc.get_objects())} objects tracked, {gc.get_freeze_count()} frozen")

    with tempfile.TemporaryDirectory() as tmp:
        models = {"half_plus_two": write_small(f"{tmp}/small", 1), "large": write_large(f"{tmp}/large", 1)}
        for name, path in models.items():
            print(f"\n## {name}: wall ms / worst ticker lateness ms per step, {args.repeat} loads")
            table: dict[str, list] = {}
            for _ in range(args.repeat):
                with Ticker() as ticker:
                    time.sleep(0.05)
                    for step, fn in steps(path):
                        start = time.perf_counter()
                        fn()
                        end = time.perf_counter()
                        table.setdefault(step, []).append(((end - start) * 1e3, ticker.worst(start, end) * 1e3))
                    time.sleep(0.05)
            for step, cells in table.items():
                shown = "  ".join(f"{wall:8.1f} /{late:7.1f}" for wall, late in cells)
                print(f"  {step:<26} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
