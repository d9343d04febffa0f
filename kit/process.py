"""Start and stop a model server process by its own pid, and wait until it serves.

Used by the kit's tasks and by the tests alike, so both stop exactly what they started (never
by name), also when something fails half-way.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from pyserving.worker import loopback_ports, pid_alive  # noqa: F401 (pid_alive: the kit's too)


def free_port() -> int:
    return free_ports(1)[0]


_PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports that are free now and not handed out before by this process.

    Chosen below the kernel's ephemeral range: a port from bind(0) lies inside it, where any
    outgoing connection may take it before the server binds (CI saw "Address already in use"
    once). Only a bind that names the port can take one below."""
    candidates = _below_ephemeral_range()
    if not candidates:  # no such range known here: let the OS pick
        return loopback_ports(n)
    if len(_handed_out) > len(candidates) // 2:
        _handed_out.clear()
    chosen: list[int] = []
    for port in random.sample(candidates, len(candidates)):
        if port not in _handed_out and _bindable(port):
            chosen.append(port)
            _handed_out.add(port)
            if len(chosen) == n:
                return chosen
    raise RuntimeError(f"no {n} free ports below the ephemeral range")


def _below_ephemeral_range() -> range:
    try:
        low = int(_PORT_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    return range(max(1024, low - 16384), low) if low - 1024 >= 2048 else range(0)


def _bindable(port: int) -> bool:
    # The wildcard address, as the servers listen: it also clashes with a 127.0.0.1 listener.
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class ServerFailed(RuntimeError):
    pass


@dataclass
class ServerProcess:
    """One server process; `log_path` collects its stdout and stderr."""

    command: Sequence[str]
    log_path: Path
    ready_port: Optional[int] = None  # a port that accepts connections once models are loaded
    env: Optional[dict] = None
    detach: bool = False  # own session: outlives the task that started it (`inv serve`)
    proc: Optional[subprocess.Popen] = field(default=None, init=False)

    def start(self) -> "ServerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = dict(os.environ, **(self.env or {}))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.proc = subprocess.Popen(
            list(self.command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=self.detach,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 120.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if self.ready_port is None or port_open(self.ready_port):
                return self
            time.sleep(0.1)
        raise ServerFailed(f"server not ready after {timeout:.0f} s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """SIGTERM by pid, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def rss_mb(pid: Optional[int]) -> Optional[float]:
    """Resident memory of a live process in MB (one decimal); None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, TypeError):
        return None
    return None


def pid_command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_pid(pid: int, timeout: float = 20.0) -> bool:
    """SIGTERM one process by pid, SIGKILL after `timeout`; True once it is gone."""
    if not pid_alive(pid):
        return True
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    return not pid_alive(pid)


def start_detached(command: list[str], log: Path, ready_port: int) -> int:
    """Start a server in the background, detached from this process; its pid (recorded by the caller)."""
    return ServerProcess(command, log, ready_port=ready_port, detach=True).start().pid


def stop_server(pid: int, say=print) -> None:
    """Stop a model server the kit started, by its pid; refuses a pid that is now another program's."""
    if not pid_alive(pid):
        return
    command = pid_command(pid)
    if "model_server" not in command and "pyserving" not in command:
        raise RuntimeError(f"pid {pid} is no longer our server ({command!r}); not touching it")
    stop_pid(pid)
    say(f"stopped server pid {pid}")
