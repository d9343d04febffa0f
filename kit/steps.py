"""Bazel-style step caching: a step whose inputs did not change is skipped and says so.

A step's key is a digest of its parameters and of the contents of its input files (code
included: `python_sources` lists every project file a step's program imports); the key, the
parameters and the inputs are recorded under build/.stamps, and a step whose key matches and
whose outputs all exist is reused.
"""
from __future__ import annotations

import hashlib
import json
import modulefinder
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

from kit import paths
from kit.paths import ROOT


def digest(params: Mapping, files: Iterable[Path]) -> str:
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for path in sorted({Path(p) for p in files}):
        for p in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(_shown(p).encode())
            h.update(p.read_bytes() if p.exists() else b"<missing>")
    return h.hexdigest()


def python_sources(module: str) -> list[Path]:
    """The project's .py files that `python -m <module>` runs: the module, its packages and every
    project module it imports, transitively, including imports inside functions."""
    finder = modulefinder.ModuleFinder(path=[str(ROOT)])  # only the project: no third-party code
    finder.import_hook(module)
    return sorted(Path(m.__file__) for m in finder.modules.values() if m.__file__)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_step(name: str, params: Mapping, inputs: Iterable[Path], outputs: Iterable[Path],
             action: Callable[[], None], say=print, dry_run: bool = False) -> bool:
    """Run `action` unless the same inputs already produced `outputs`; True when it ran.

    A dry run says what the real run would do: reuse (nothing printed or run), or run, in which
    case the action runs with a printing runner (it must change nothing); no stamp is written."""
    inputs = list(inputs)
    key = digest(params, inputs)
    outputs = list(outputs)
    stamp = paths.STAMPS / f"{name}.json"
    reused = _reusable(stamp, key, outputs)
    if reused is not None:
        say(f"[{name}] {'dry run: would reuse' if dry_run else 'reused'}: inputs unchanged since "
            f"{reused} ({', '.join(_shown(p) for p in outputs)})")
        return False
    if dry_run:
        say(f"[{name}] dry run: would run")
        action()
        return False
    started = time.monotonic()
    say(f"[{name}] running")
    action()
    missing = [str(p) for p in outputs if not p.exists()]
    if missing:
        raise RuntimeError(f"[{name}] finished without producing {', '.join(missing)}")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "params": dict(params),
                                 "inputs": [_shown(Path(p)) for p in inputs]}, default=str, indent=1))
    say(f"[{name}] done in {time.monotonic() - started:.1f} s")
    return True


def _reusable(stamp: Path, key: str, outputs: list[Path]):
    """When the recorded run with this key was (its outputs all still exist), else None."""
    if not stamp.exists() or not all(p.exists() for p in outputs):
        return None
    recorded = json.loads(stamp.read_text())
    return str(recorded.get("when")) if recorded.get("key") == key else None
