"""N pyserving processes on loopback that share one models.config, as pods share a ConfigMap; each
can be stopped gracefully (SIGTERM: a rolling restart), killed (SIGKILL: a node lost) and started
again on the same ports. Used by the soak; every process is stopped by its own pid.
"""
from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kit import process
from kit.process import ServerProcess, free_ports
from kit.serve import server as serving


@dataclass
class Replica:
    index: int
    grpc_port: int
    rest_port: int
    log: Path
    process: Optional[ServerProcess] = None

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None


class ReplicaSet:
    """`size` servers of `config`, replica i logging to `<logs>/replica-<i>.log`."""

    def __init__(self, size: int, config: Path, logs: Path, extra_flags: tuple = ()):
        self.config, self.extra_flags = config, tuple(extra_flags)
        ports = free_ports(2 * size)
        self.replicas = [Replica(i, ports[2 * i], ports[2 * i + 1], logs / f"replica-{i}.log") for i in range(size)]

    def command(self, replica: Replica) -> list[str]:
        """`inv serve`'s native command and flags, run by this interpreter (`-m pyserving`: this
        tree's code), with a 1-second file-system poll so published versions are seen at once."""
        flags = serving.serve_command("native", self.config, replica.grpc_port, replica.rest_port)[1:]
        return [sys.executable, "-m", "pyserving", *flags, "--file_system_poll_wait_seconds=1", *self.extra_flags]

    def _spawn(self, replica: Replica) -> None:
        replica.process = ServerProcess(self.command(replica), replica.log, ready_port=replica.rest_port).start()

    def start(self, index: int, timeout: float = 120.0) -> Replica:
        """Start replica `index` and wait until it serves (its ports open once its models are loaded)."""
        replica = self.replicas[index]
        self._spawn(replica)
        replica.process.wait_ready(timeout)
        return replica

    def start_all(self, timeout: float = 120.0) -> None:
        for replica in self.replicas:  # started together, then waited for: they load side by side
            self._spawn(replica)
        for replica in self.replicas:
            replica.process.wait_ready(timeout)

    def terminate(self, index: int, timeout: float = 30.0) -> Optional[int]:
        """SIGTERM (the server drains: answers what it accepted, refuses new connections) and wait
        for the exit; returns the exit code."""
        return self.replicas[index].process.stop(timeout)

    def kill(self, index: int) -> None:
        """SIGKILL: no drain, connections reset, as when a node is lost."""
        process = self.replicas[index].process.proc
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for replica in self.replicas:
            if replica.process is not None:
                replica.process.stop()

    def rss_mb_each(self) -> dict[str, Optional[float]]:
        """Each replica's resident memory in MB, by replica number (as summary.json keys it)."""
        return {str(replica.index): self.rss_mb(replica.index) for replica in self.replicas}

    def rss_mb(self, index: int) -> Optional[float]:
        return process.rss_mb(self.replicas[index].pid)
