"""--pyserving_num_workers=N: N full pyserving processes on one port pair, under this supervisor.

Why processes: pyserving's protocol work (HTTP/2 framing, protobuf and JSON) runs on one core
per Python process; TF Serving's C++ uses every core. As grpc's examples/python/multiprocessing,
uvicorn and gunicorn do, each worker is a whole server binding the same REST and gRPC ports with
SO_REUSEPORT, and the kernel spreads connections (not requests) over them.

Why `python -m pyserving` subprocesses rather than multiprocessing's spawn: a worker is then
exactly the server a user starts by hand (the same argv, the same cli.main and exit codes), a
fresh interpreter with nothing inherited (TensorFlow and gRPC are not fork-safe once started,
tensorflow#2448, grpc doc/fork_support.md), its own pid to signal, and nothing to pickle. This
module imports neither TensorFlow nor gRPC nor the HTTP server: it validates the flags and
config files once (one error, TF Serving's exit code, no worker started), starts the workers,
restarts one that dies (with a back-off), and on SIGTERM/SIGINT passes SIGTERM to every worker,
each of which drains as a lone server does, then exits 0.

The run directory (<tmp>/pyserving-<supervisor pid>/) holds `workers.json` (each worker's pid
and private loopback ports: the kit and an operator ask every worker there), `status/` (each
worker's version states, pyserving/worker.py) and `metrics/` (prometheus-client's multiprocess
files); it is emptied at start and removed at exit.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from pyserving import config_files
from pyserving import worker as worker_env
from pyserving.core import config
from pyserving.errors import Code, ServingError
from pyserving.settings import Settings

logger = logging.getLogger("pyserving.supervisor")

STATE_FILE = worker_env.STATE_FILE
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # between restarts of a worker that keeps dying
STABLE_S = 60.0  # a worker up this long starts its back-off over
STOP_TIMEOUT_S = 30.0  # a worker's drain (REST and gRPC grace, unload) before SIGKILL


def run_dir(supervisor_pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"pyserving-{supervisor_pid}"


def state_path(supervisor_pid: int) -> Path:
    """The state file of the supervisor with this pid (the kit reads it, kit/serve/server.py)."""
    return run_dir(supervisor_pid) / STATE_FILE


def check_files(settings: Settings) -> None:
    """What a server reads before loading anything, read once here so that a bad file stops
    start-up before any worker starts (each worker reads them again, as a lone server does).
    The TensorFlow session config is left to the workers: checking it needs TensorFlow."""
    s = settings
    if s.monitoring_config_file and config_files.prometheus_path(s.monitoring_config_file) and not s.rest_api_port:
        raise ServingError(Code.INVALID_ARGUMENT, "Monitoring (prometheus_config) requires --rest_api_port: "
                                                  "metrics are served on the REST port")
    if s.ssl_config_file:
        config_files.ssl(s.ssl_config_file)
    if s.enable_batching and s.batching_parameters_file:
        config_files.batching(s.batching_parameters_file)
    if s.model_config_file:
        config.models_from_text(config.read_text(s.model_config_file), s.model_config_file)


@dataclass
class Slot:
    index: int
    grpc_port: int
    rest_port: int
    process: Optional[subprocess.Popen] = None
    started: float = 0.0
    served: bool = False  # this process opened its ports (its status file says so)
    ever_served: bool = False
    restarts: int = 0
    failures: int = 0  # deaths in a row, for the back-off
    restart_at: Optional[float] = None
    exits: list = field(default_factory=list)


class Supervisor:
    def __init__(self, settings: Settings, argv: Sequence[str]):
        self.settings, self.argv = settings, list(argv)
        self.count = settings.num_workers
        self.dir = run_dir(os.getpid())
        self.stop_requested = threading.Event()
        self.slots: list[Slot] = []
        self._parent_read, self._parent_write = os.pipe()  # EOF in the workers when we are gone
        os.set_inheritable(self._parent_read, True)

    # ---- the run directory --------------------------------------------------------------
    def _prepare_dir(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "status").mkdir(parents=True)
        (self.dir / "metrics").mkdir()

    def write_state(self) -> None:
        s = self.settings
        worker_env.write_atomic(self.dir / STATE_FILE, {
            "supervisor_pid": os.getpid(), "port": s.port, "rest_api_port": s.rest_api_port,
            "run_dir": str(self.dir), "workers": [
                {"slot": slot.index, "pid": slot.process.pid if slot.process and slot.process.poll() is None else None,
                 "serving": slot.served, "private_grpc_port": slot.grpc_port,
                 "private_rest_port": slot.rest_port if s.rest_api_port else 0, "restarts": slot.restarts}
                for slot in self.slots]})

    # ---- workers ------------------------------------------------------------------------
    def _env(self, slot: Slot) -> dict:
        return dict(os.environ, **{
            worker_env.ENV_SLOT: str(slot.index), worker_env.ENV_RUN_DIR: str(self.dir),
            worker_env.ENV_PRIVATE_PORTS: f"{slot.grpc_port if self.settings.port else 0},"
                                          f"{slot.rest_port if self.settings.rest_api_port else 0}",
            worker_env.ENV_PARENT_FD: str(self._parent_read),
            "PROMETHEUS_MULTIPROC_DIR": str(self.dir / "metrics")})

    def _start(self, slot: Slot) -> None:
        slot.process = subprocess.Popen([sys.executable, "-m", "pyserving", *self.argv], env=self._env(slot),
                                        pass_fds=(self._parent_read,), stdin=subprocess.DEVNULL)
        slot.started, slot.served, slot.restart_at = time.monotonic(), False, None
        logger.info("Worker %d started: pid %d, private ports gRPC %d, REST %d", slot.index, slot.process.pid,
                    slot.grpc_port, slot.rest_port)
        self.write_state()

    def _serving(self, slot: Slot) -> bool:
        data = worker_env.read_status(self.dir / "status" / f"{slot.index}.json")
        return data is not None and bool(data.get("serving")) and data.get("pid") == slot.process.pid

    def _reap(self, slot: Slot, now: float) -> Optional[int]:
        """A worker that exited: clean up after it; its exit code when start-up has failed."""
        code = slot.process.returncode
        pid = slot.process.pid
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self.dir / "metrics"))
        (self.dir / "status" / f"{slot.index}.json").unlink(missing_ok=True)
        slot.exits.append(code)
        if not slot.ever_served:
            return code if code else 255  # the first start of this worker failed: so does the server's
        slot.failures = 1 if now - slot.started >= STABLE_S else slot.failures + 1
        delay = BACKOFF_S[min(slot.failures, len(BACKOFF_S)) - 1]
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        logger.error("Worker %d (pid %d) died (%s); starting it again in %.0f s", slot.index, pid, how, delay)
        if not slot.served:  # it died before binding: its private ports may be taken, pick others
            slot.grpc_port, slot.rest_port = worker_env.loopback_ports(2)
        slot.process, slot.served, slot.restart_at = None, False, now + delay
        slot.restarts += 1
        self.write_state()
        return None

    def run(self) -> int:
        self._prepare_dir()
        ports = worker_env.loopback_ports(2 * self.count)
        self.slots = [Slot(i, ports[2 * i], ports[2 * i + 1]) for i in range(self.count)]
        logger.info("Starting %d workers on gRPC port %d and REST port %d (SO_REUSEPORT); state in %s",
                    self.count, self.settings.port, self.settings.rest_api_port, self.dir / STATE_FILE)
        try:
            for slot in self.slots:
                self._start(slot)
            code = self._watch()
        finally:
            self._stop_all()
            shutil.rmtree(self.dir, ignore_errors=True)
            os.close(self._parent_write)
            os.close(self._parent_read)
        return code

    def _watch(self) -> int:
        while not self.stop_requested.wait(0.2):
            now = time.monotonic()
            for slot in self.slots:
                if slot.process is None:
                    if slot.restart_at is not None and now >= slot.restart_at:
                        self._start(slot)
                    continue
                if slot.process.poll() is not None:
                    failed = self._reap(slot, now)
                    if failed is not None:
                        logger.error("Worker %d failed to start (exit code %d): stopping", slot.index, failed)
                        return failed
                elif not slot.served and self._serving(slot):
                    slot.served = slot.ever_served = True
                    logger.info("Worker %d (pid %d) is serving", slot.index, slot.process.pid)
                    self.write_state()
        return 0

    def _stop_all(self) -> None:
        """SIGTERM every worker (each drains as a lone server does), SIGKILL one still there after
        STOP_TIMEOUT_S."""
        alive = [slot.process for slot in self.slots if slot.process is not None and slot.process.poll() is None]
        for process in alive:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in alive:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                logger.error("Worker pid %d did not stop within %.0f s: SIGKILL", process.pid, STOP_TIMEOUT_S)
                process.kill()
                process.wait()


def run(settings: Settings, argv: Sequence[str]) -> int:
    """Validate once, then supervise; the process's exit code."""
    from pyserving import cli

    try:
        check_files(settings)
    except ServingError as exc:
        return cli.fail(exc)
    supervisor = Supervisor(settings, argv)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stop_requested.set())
    code = supervisor.run()
    if code == 0:
        logger.info("Every worker stopped")
    return code
