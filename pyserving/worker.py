"""One worker of several (--pyserving_num_workers): what a full pyserving does differently when a
supervisor (pyserving/supervisor.py) started it.

* Who it is: the supervisor hands each worker its slot, the run directory and a private loopback
  port pair in the environment (`Worker.from_env`); a server started by hand has none of them.
* Never an orphan: the kernel sends SIGTERM when the supervisor dies (PR_SET_PDEATHSIG), and a
  pipe whose write end only the supervisor holds reads EOF then (the second way also covers a
  supervisor that died before prctl ran); either way the worker drains and exits as on SIGTERM.
* One answer for model status: each worker publishes its versions' states to
  `<run>/status/<slot>.json` (atomic rename) on every change; the status a worker answers merges
  its own with those of the other live, serving workers, so that a version is AVAILABLE only
  when every worker a request can reach has it. Files rather than asking the others over the
  network: a status request reads a few small files and never waits on another worker, and a
  dead worker's file is ignored (its pid is gone) and removed by the supervisor.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from pyserving.errors import Code, ServingError
from pyserving.types import VersionState, VersionStatus

logger = logging.getLogger("pyserving")

ENV_SLOT, ENV_RUN_DIR, ENV_PRIVATE_PORTS, ENV_PARENT_FD = (
    "PYSERVING_WORKER", "PYSERVING_RUN_DIR", "PYSERVING_PRIVATE_PORTS", "PYSERVING_PARENT_FD")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STATE_FILE = "workers.json"  # the supervisor's, in the run folder


@dataclass(frozen=True)
class Worker:
    slot: int
    run_dir: Path
    private_grpc_port: int  # 0: none
    private_rest_port: int
    parent_fd: Optional[int] = None
    parent_pid: Optional[int] = None

    @classmethod
    def from_env(cls, env=os.environ) -> Optional["Worker"]:
        if ENV_SLOT not in env:
            return None
        grpc_port, rest_port = (int(p) for p in env[ENV_PRIVATE_PORTS].split(","))
        fd = env.get(ENV_PARENT_FD)
        return cls(int(env[ENV_SLOT]), Path(env[ENV_RUN_DIR]), grpc_port, rest_port,
                   int(fd) if fd else None, os.getppid())

    @property
    def status_dir(self) -> Path:
        return self.run_dir / "status"


def watch_parent(worker: Worker, on_gone: Callable[[], None]) -> None:
    """Call on_gone (once) when the supervisor is gone: PR_SET_PDEATHSIG, and EOF on its pipe."""
    fired = threading.Event()

    def gone() -> None:
        if not fired.is_set():
            fired.set()
            on_gone()

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d; the pipe watch remains", ctypes.get_errno())
    except (OSError, AttributeError):  # not Linux: the pipe watch remains
        pass
    if worker.parent_pid is not None and os.getppid() != worker.parent_pid:
        gone()  # the supervisor died before prctl: no signal will come
        return
    if worker.parent_fd is not None:
        def read_until_eof() -> None:
            try:
                while os.read(worker.parent_fd, 1):
                    pass
            except OSError:
                pass
            logger.warning("The supervisor is gone: stopping this worker")
            gone()
        threading.Thread(target=read_until_eof, name="parent-watch", daemon=True).start()


def leave(worker: Worker) -> None:
    """On the way out. A supervisor that is alive cleans the run folder itself (and keeps a dead
    worker's metrics in the sums); one that was SIGKILLed cannot, so each worker removes what it
    left there, and the last one the folder."""
    if os.getppid() == worker.parent_pid:
        return
    (worker.status_dir / f"{worker.slot}.json").unlink(missing_ok=True)
    for path in (worker.run_dir / "metrics").glob(f"*_{os.getpid()}.db"):
        path.unlink(missing_ok=True)
    (worker.run_dir / STATE_FILE).unlink(missing_ok=True)  # the supervisor's, stale now
    for folder in (worker.status_dir, worker.run_dir / "metrics", worker.run_dir):
        try:
            folder.rmdir()
        except OSError:  # another worker's files are still there: the last one removes it
            pass


def write_atomic(path: Path, data: dict) -> None:
    """Write JSON next to `path` and rename it over: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def loopback_ports(count: int) -> list[int]:
    """`count` loopback ports free now (held open together: one at a time, the OS may offer the
    port it has just released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not reaped by the supervisor yet) has exited
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def merge_states(states: Sequence[Optional[VersionState]]) -> VersionState:
    """One version's state over several workers (None: a worker that does not know it).
    AVAILABLE only when every worker has it AVAILABLE; while some load it, the least advanced
    of those; while some retire it and others still serve it, UNLOADING."""
    present = [s for s in states if s is not None]
    if len(present) == len(states) and len(set(present)) == 1:
        return present[0]
    rising = [s for s in present if s < VersionState.AVAILABLE]
    if rising:
        return min(rising)
    if all(s == VersionState.AVAILABLE for s in present):
        return VersionState.START  # a worker has not begun loading it yet
    if VersionState.AVAILABLE in present:
        return VersionState.UNLOADING  # retired on some, still served by others
    return min(present) if len(present) == len(states) else VersionState.END


def read_status(path: Path) -> Optional[dict]:
    """A worker's published status file (StatusBoard.publish), or None when it is gone or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class StatusBoard:
    """This worker's version states on disk, and the status merged over every live serving worker."""

    def __init__(self, worker: Worker, snapshot: Callable[[], dict[str, list[VersionStatus]]]):
        self._worker = worker
        self._snapshot = snapshot  # model name -> this worker's statuses
        self._path = worker.status_dir / f"{worker.slot}.json"
        self._lock = threading.Lock()
        self._serving = False

    def publish(self, serving: Optional[bool] = None) -> None:
        with self._lock:
            if serving is not None:
                self._serving = serving
            models = {name: {str(s.version): [int(s.state), int(s.error.code) if s.error else 0,
                                              s.error.message if s.error else ""] for s in statuses}
                      for name, statuses in self._snapshot().items()}
            try:
                write_atomic(self._path, {"pid": os.getpid(), "slot": self._worker.slot, "serving": self._serving,
                                          "models": models})
            except OSError as exc:  # e.g. the run folder removed under us: serving goes on, the merge goes stale
                logger.warning("Could not publish this worker's model states to %s: %s", self._path, exc)

    def _others(self) -> list[dict]:
        found = []
        for path in self._worker.status_dir.glob("*.json"):
            if path == self._path:
                continue
            data = read_status(path)
            if data is not None and data.get("serving") and pid_alive(int(data["pid"])):
                found.append(data)
        return found

    def merged(self, name: str, version: Optional[int], local: list[VersionStatus]) -> list[VersionStatus]:
        """`local` (this worker's answer) merged with every other live serving worker's."""
        others = [data.get("models", {}).get(name, {}) for data in self._others()]
        if not others:
            return local
        mine = {s.version: s for s in local}
        numbers = set(mine) | {int(v) for table in others for v in table}
        if version is not None:
            numbers &= {version}
        result = []
        for number in sorted(numbers, reverse=True):
            own = mine.get(number)
            theirs = [table.get(str(number)) for table in others]
            states = [own.state if own else None] + [VersionState(t[0]) if t else None for t in theirs]
            error = own.error if own and own.error else next(
                (ServingError(Code(t[1]), t[2]) for t in theirs if t and t[1]), None)
            state = merge_states(states)
            result.append(VersionStatus(number, state, error if state == VersionState.END else None))
        return result
