"""The GC policy: what the imports built is frozen once; a version's garbage is collected when it
ends, without unfreezing (a full pass over TensorFlow's objects is a 0.3-0.5 s stall)."""
from __future__ import annotations

import gc
import shutil
import weakref

import pytest

from pyserving import gc_policy
from pyserving.app import ModelServer
from pyserving.types import ModelSpec
from pyserving.version_dir import publish_version
from tests.helpers import status, wait_for


@pytest.fixture(autouse=True)
def restore_gc():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    pass


def cyclic() -> tuple[Node, weakref.ref]:
    node = Node()
    node.self = node  # like a TF graph and its ops: only the cyclic collector frees it
    return node, weakref.ref(node)


def frozen(obj) -> bool:
    return not any(o is obj for o in gc.get_objects())  # get_objects leaves out the frozen generation


def test_configure_sets_the_thresholds():
    gc_policy.configure()
    assert gc.get_threshold() == gc_policy.THRESHOLDS


def test_freeze_imports_freezes_what_exists_and_collects_its_garbage_first():
    long_lived = Node()
    garbage, garbage_alive = cyclic()
    del garbage
    gc_policy.freeze_imports()
    assert frozen(long_lived)
    assert garbage_alive() is None  # collected, not frozen for ever


def test_a_version_is_never_frozen_and_its_end_collects_it_without_unfreezing():
    imported, imported_alive = cyclic()
    gc_policy.freeze_imports()
    del imported  # frozen garbage: only a pass over the unfrozen heap could free it
    version, alive = cyclic()
    gc_policy.after_state_change("AVAILABLE")
    assert not frozen(version)
    del version
    gc_policy.after_state_change("END")
    assert alive() is None
    # Not the freeze count: another thread's objects leave the frozen generation when freed.
    assert imported_alive() is not None and frozen(imported_alive())


def test_other_states_collect_nothing():
    gc_policy.freeze_imports()
    gc.disable()  # no automatic collection may stand in for the policy's
    try:
        version, alive = cyclic()
        del version
        for state in ("START", "LOADING", "AVAILABLE", "UNLOADING"):
            gc_policy.after_state_change(state)
            assert alive() is not None
    finally:
        gc.enable()


def test_a_server_freezes_before_its_first_load_and_frees_an_unloaded_version(tmp_path, exported, serve):
    base = tmp_path / "m"
    shutil.copytree(exported / "hp2", base)
    server = serve([f"--model_base_path={base}", "--model_name=m", "--file_system_poll_wait_seconds=1"])
    with server.model_server.core.manager.servable(ModelSpec("m")) as (version, servable):
        assert version == 1 and not frozen(servable)  # the first version was loaded after the freeze
        alive = weakref.ref(servable)
    del servable
    publish_version(base, 2, lambda path: shutil.copytree(exported / "hp2" / "1", path))
    wait_for(lambda: status(server).get(1, {}).get("state") == "END", what="version 1 unloaded")
    wait_for(lambda: alive() is None, timeout=10, what="version 1 freed")
    with server.model_server.core.manager.servable(ModelSpec("m")) as (version, servable):
        assert version == 2 and not frozen(servable)  # neither its load nor the unload froze anything
    assert frozen(ModelServer.start)  # and what start() froze stayed frozen
