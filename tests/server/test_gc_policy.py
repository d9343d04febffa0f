"""The GC policy: long-lived objects frozen after loads, and an unload's garbage still collected."""
from __future__ import annotations

import gc
import weakref

import pytest

from pyserving import gc_policy


@pytest.fixture(autouse=True)
def restore_gc():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    pass


def test_a_load_freezes_and_an_unload_collects_what_it_left_behind():
    gc_policy.configure()
    assert gc.get_threshold() == gc_policy.THRESHOLDS
    graph = Node()
    graph.self = graph  # cyclic, like a TF graph and its ops: only the cyclic collector frees it
    alive = weakref.ref(graph)
    gc_policy.after_state_change("AVAILABLE")
    assert gc.get_freeze_count() > 0
    del graph
    gc.collect()
    assert alive() is not None  # frozen: full collections no longer walk it
    gc_policy.after_state_change("END")
    assert alive() is None  # the unload's collection found it
    assert gc.get_freeze_count() > 0  # and everything still alive is frozen again
