"""pyserving/worker.py without processes: the merged status (a table), the status files, the env."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from pyserving.errors import Code, ServingError
from pyserving.types import VersionState, VersionStatus
from pyserving.worker import StatusBoard, Worker, loopback_ports, merge_states

S, L, A, U, E = (VersionState.START, VersionState.LOADING, VersionState.AVAILABLE, VersionState.UNLOADING,
                 VersionState.END)


@pytest.mark.parametrize("states, merged", [
    ((A, A), A),
    ((A, L), L),  # AVAILABLE only when every worker has it
    ((L, None), L),
    ((A, None), S),  # one worker has not begun loading it
    ((S, L, A), S),
    ((A, U), U),  # retired on one, still served by the other
    ((A, E), U),
    ((U, E), U),
    ((E, E), E),
    ((E, None), E),  # gone from one, ended on the other
    ((L, E), L),  # a failed load on one, loading on the other: not settled yet
])
def test_merge_states(states, merged):
    assert merge_states(states) == merged


def _worker(tmp_path, slot: int) -> Worker:
    (tmp_path / "status").mkdir(exist_ok=True)
    return Worker(slot, tmp_path, 0, 0)


def _publish(tmp_path, slot: int, pid: int, serving: bool, versions: dict) -> None:
    (tmp_path / "status").mkdir(exist_ok=True)
    (tmp_path / "status" / f"{slot}.json").write_text(json.dumps(
        {"pid": pid, "slot": slot, "serving": serving, "models": {"m": versions}}))


def test_status_merges_live_serving_workers_only(tmp_path):
    mine = [VersionStatus(2, L), VersionStatus(1, A)]
    board = StatusBoard(_worker(tmp_path, 0), lambda: {"m": mine})
    board.publish(serving=True)
    assert json.loads((tmp_path / "status" / "0.json").read_text())["models"] == {
        "m": {"2": [20, 0, ""], "1": [30, 0, ""]}}
    assert board.merged("m", None, mine) == mine  # alone

    _publish(tmp_path, 1, os.getpid(), True, {"2": [30, 0, ""], "1": [30, 0, ""], "3": [20, 0, ""]})
    assert board.merged("m", None, mine) == [VersionStatus(3, L), VersionStatus(2, L), VersionStatus(1, A)]
    assert board.merged("m", 1, [VersionStatus(1, A)]) == [VersionStatus(1, A)]

    _publish(tmp_path, 1, os.getpid(), False, {"1": [20, 0, ""]})  # not serving (starting, or draining)
    assert board.merged("m", None, mine) == mine
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _publish(tmp_path, 1, int(dead.stdout), True, {"1": [20, 0, ""]})  # a worker that died
    assert board.merged("m", None, mine) == mine


def test_a_failed_load_keeps_its_error_once_every_worker_ended_it(tmp_path):
    mine = [VersionStatus(1, E, ServingError(Code.NOT_FOUND, "no such file"))]
    board = StatusBoard(_worker(tmp_path, 0), lambda: {"m": mine})
    _publish(tmp_path, 1, os.getpid(), True, {"1": [50, int(Code.NOT_FOUND), "no such file"]})
    [merged] = board.merged("m", None, mine)
    assert (merged.state, merged.error.code, merged.error.message) == (E, Code.NOT_FOUND, "no such file")
    _publish(tmp_path, 1, os.getpid(), True, {"1": [20, 0, ""]})
    [merged] = board.merged("m", None, mine)
    assert (merged.state, merged.error) == (L, None)


def test_worker_from_env():
    assert Worker.from_env({}) is None
    worker = Worker.from_env({"PYSERVING_WORKER": "1", "PYSERVING_RUN_DIR": "/run/x",
                              "PYSERVING_PRIVATE_PORTS": "4001,4002", "PYSERVING_PARENT_FD": "5"})
    assert (worker.slot, str(worker.run_dir), worker.private_grpc_port, worker.private_rest_port, worker.parent_fd) == (
        1, "/run/x", 4001, 4002, 5)


def test_a_lost_run_folder_does_not_stop_the_worker(tmp_path, caplog):
    board = StatusBoard(Worker(0, tmp_path / "gone", 0, 0), lambda: {"m": [VersionStatus(1, A)]})
    board.publish(serving=True)  # no status folder: a warning, not an error in the load thread
    assert "Could not publish this worker's model states" in caplog.text


def test_loopback_ports_are_distinct_and_free():
    ports = loopback_ports(6)
    assert len(set(ports)) == 6 and all(0 < p < 65536 for p in ports)
    for port in ports:  # free now: each binds on loopback
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
