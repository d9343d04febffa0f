"""Garbage-collector settings for a process that holds TensorFlow graphs.

A loaded SavedModel leaves hundreds of thousands of long-lived Python objects (graph, ops,
tensors, protos) behind, and the default thresholds make the cyclic collector walk them again
and again while requests churn out short-lived garbage: measured at ~15% of the REST loop's
time under load (bench/serving.py). Freezing after each load moves them out of the collector's
way; a larger first-generation threshold makes the remaining collections rarer. An unload
unfreezes and collects once (graphs are cyclic), then freezes again, so nothing leaks.
"""
from __future__ import annotations

import gc
import logging
import threading

logger = logging.getLogger(__name__)

THRESHOLDS = (10000, 10, 10)
_lock = threading.Lock()


def configure() -> None:
    gc.set_threshold(*THRESHOLDS)


def freeze() -> None:
    """Once the servers are up: their modules and objects are long-lived too."""
    with _lock:
        gc.freeze()


def after_state_change(state_name: str) -> None:
    """Called with a version's new state (VersionState name) by the manager's worker thread."""
    with _lock:
        if state_name == "AVAILABLE":
            gc.freeze()
        elif state_name == "END":  # unloaded, or a failed load: its objects are garbage now
            gc.unfreeze()
            gc.collect()
            gc.freeze()
