"""The native backend: pyserving, the venv's `tensorflow_model_server`, a process on this machine."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from kit import paths, process
from kit.serve.flags import EVERY_INTERFACE, LOOPBACK, process_flags


class Native:
    name = "native"
    stop_note = ""

    def command(self, config_file: Path, grpc_port: int, rest_port: int, host: str, index: int,
                extra_flags: Sequence[str] = ()) -> list[str]:
        # pyserving's own flag; without it pyserving binds every interface, as TF Serving does
        listen = [f"--pyserving_listen_address={host}"] if host != EVERY_INTERFACE else []
        return [str(paths.VENV_BIN / "tensorflow_model_server"), f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                f"--model_config_file={config_file}", *process_flags(extra_flags), *listen]

    def unavailable(self) -> Optional[str]:
        return None

    def listening_note(self, host: str) -> str:
        if host == LOOPBACK:
            return f"listening on {LOOPBACK} only (--host={EVERY_INTERFACE}: every interface)"
        return "listening on every interface"

    def prepare(self) -> None:
        """Nothing to write: the process reads build/models/models.config itself."""

    def launch(self, command: list[str], index: int, log: Path, rest_port: int, run=None) -> dict:
        return {"pid": process.start_detached(command, log, rest_port)}

    def stop(self, replica: dict, run=None, say=print) -> None:
        process.stop_server(replica["pid"], say)


BACKEND = Native()
