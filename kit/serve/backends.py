"""The serving backends `inv serve --backend` chooses from, registered here, in one place.

A backend is an object with the shape of `Backend`; adding one is a module beside this one and
a line in BACKENDS. server.py starts, records and stops replicas through it, never by name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, Sequence

from invoke.exceptions import Exit

from kit.serve import binary, docker, native


class Backend(Protocol):
    name: str
    stop_note: str  # how a dry run says the server is stopped, after "by its pid"

    def command(self, config_file: Path, grpc_port: int, rest_port: int, host: str, index: int,
                extra_flags: Sequence[str] = ()) -> list[str]:
        """The argv serving `config_file` as replica `index` on the two ports, listening on `host`."""

    def unavailable(self) -> Optional[str]:
        """One line saying why it cannot run here, or None."""

    def listening_note(self, host: str) -> str:
        """Where the started server can be reached from."""

    def prepare(self) -> None:
        """Before its replicas start: write what they read besides models.config."""

    def launch(self, command: list[str], index: int, log: Path, rest_port: int, run=None) -> dict:
        """Start one replica in the background; what stop() needs to find it ({"pid"} or {"container"})."""

    def stop(self, replica: dict, run=None, say=print) -> None:
        """Stop one recorded replica by its pid or container name."""


BACKENDS: dict[str, Backend] = {b.name: b for b in (native.BACKEND, binary.BACKEND, docker.BACKEND)}
NAMES = tuple(BACKENDS)


def get(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}") from None


HELP = "native (pyserving, default) | docker (tensorflow/serving image) | binary (build/bin)"


def check(name: str, here: bool) -> None:
    """Exit (one line) for an unknown backend, or, when it is to run `here`, one that cannot."""
    if name not in BACKENDS:
        raise Exit(f"unknown backend {name!r}: {HELP}")
    reason = BACKENDS[name].unavailable() if here else None
    if reason:
        raise Exit(reason)
