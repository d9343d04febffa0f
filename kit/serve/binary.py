"""The binary backend: the `tensorflow_model_server` that `inv build-server` built into build/bin."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from kit import paths
from kit.serve import docker
from kit.serve.flags import process_flags
from kit.serve.native import Native


def binary() -> Path:
    """The tensorflow_model_server that `inv build-server` builds."""
    return paths.BUILD / "bin" / "tensorflow_model_server"


class Binary(Native):
    """Started and stopped like pyserving (a process on this machine, by its pid)."""

    name = "binary"

    def command(self, config_file: Path, grpc_port: int, rest_port: int, host: str, index: int,
                extra_flags: Sequence[str] = ()) -> list[str]:
        return docker.binary_serve_command(binary(), config_file, grpc_port, rest_port, process_flags(extra_flags))

    def unavailable(self) -> Optional[str]:
        if not binary().exists():
            return (f"binary: {binary()} does not exist; build it with `make build-server` "
                    "(needs Docker and a network)")
        return None

    def listening_note(self, host: str) -> str:
        return "listening on every interface: tensorflow_model_server has no flag to listen on one address"


BACKEND = Binary()
