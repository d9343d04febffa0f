"""Garbage-collector settings for a process that holds TensorFlow.

Importing TensorFlow leaves ~415,000 long-lived Python objects (modules, functions, protos). A
full collection walks them all, ~0.3-0.5 s with the interpreter lock held on 2 busy cores
(bench/load_breakdown.py): a stall for every request in flight, and with the default thresholds
a cost paid again and again under load (measured at ~15% of the REST loop's time). So the server
freezes them once, after its imports and before it loads any model: frozen objects are out of
the collector's reach for good. A loaded version's own Python objects are few (hundreds: its
graph lives in TensorFlow's C++), so they stay collectable, and when a version ends (unloaded,
or a failed load) its cyclic garbage is collected at once by a full pass over only what came
after the freeze (~1 ms). Nothing is unfrozen, so an unload never walks TensorFlow's objects.
"""
from __future__ import annotations

import gc
import threading

THRESHOLDS = (10000, 10, 10)  # rarer young collections: requests churn out short-lived garbage
_lock = threading.Lock()


def configure() -> None:
    gc.set_threshold(*THRESHOLDS)


def freeze_imports() -> None:
    """Once, after the heavy imports and before the first load: what exists now lives as long
    as the process. The garbage the imports left is collected first, so it is not kept."""
    with _lock:
        gc.collect()
        gc.freeze()


def after_state_change(state_name: str) -> None:
    """Called with a version's new state (VersionState name) by the manager's worker thread."""
    if state_name == "END":  # unloaded, or a failed load: its objects are garbage now (graphs are cyclic)
        with _lock:
            gc.collect()
