"""Where the kit reads and writes: every output lives under one build folder.

The build folder is $KIT_BUILD_DIR (default <repo>/build), read at each use: `paths.MODELS`
and the other names below are computed when accessed, so a KIT_BUILD_DIR set after import (a
test pointing the kit at tmp_path) takes effect. Use them as `paths.MODELS` at call time;
`from kit.paths import MODELS` would freeze the folder at import.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"

IN_BUILD = {  # name -> its place under the build folder
    "BUILD": (),
    "DATA": ("data",),
    "MODELS": ("models",),
    "CHECKPOINTS": ("checkpoints",),
    "STAMPS": (".stamps",),
    "LOGS": ("logs",),
    "SERVER_STATE": ("server.json",),
    "MODEL_CONFIG": ("models", "models.config"),
}


def build_dir() -> Path:
    return Path(os.environ.get("KIT_BUILD_DIR", ROOT / "build")).resolve()


def __getattr__(name: str) -> Path:
    parts = IN_BUILD.get(name)
    if parts is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return build_dir().joinpath(*parts)


def __dir__() -> list[str]:
    return sorted([*globals(), *IN_BUILD])
