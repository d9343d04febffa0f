"""Check a SavedModel before it is published: is it one, does it load, does it fit the stable version.

`check(source, stable)` answers with one line saying why the source must not be published, or
None. The load runs in a child process (`python -m kit.rollout.model_check PATH [--stable PATH]`) with
pyserving's own loader, warmup records replayed as the server replays them, so a version that
would fail in the server fails here first, while TensorFlow (and any crash in it) stays out of
the task's process. Compatible means that a client of the stable version is served the same way
by the new one: every signature key, input name, dtype and shape it accepts, every output it reads.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kit.paths import ROOT
from pyserving.core.source import SAVED_MODEL_FILES, list_versions

# The SavedModel's own initialisation (a TF2 export has it, a TF1 one not): no client calls it.
INIT_OP_SIGNATURE = "__saved_model_init_op"
CHECK_TIMEOUT_S = 600.0

# {signature key: {"inputs": {name: {"dtype": "DT_FLOAT", "shape": [-1, 3] | None}}, "outputs": {...}}}
Signatures = dict


@dataclass
class Report:
    """What the child process found: an error, or the signatures and the warmup records replayed."""

    error: str = ""
    signatures: Signatures = field(default_factory=dict)
    warmup_records: int = 0
    stable_signatures: Optional[Signatures] = None
    stable_error: str = ""


def not_a_savedmodel(path: Path) -> Optional[str]:
    """Why `path` is not a SavedModel folder (one line), or None when it is one."""
    if not path.is_dir():
        return f"{path} is not a folder"
    if any((path / name).is_file() for name in SAVED_MODEL_FILES):
        return None
    try:
        versions = list_versions(str(path))
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    if versions:  # the model's base path was given instead of one of its versions
        newest = max(versions)
        return (f"{path} is not a SavedModel but a base path holding version folder(s) "
                f"{', '.join(sorted(os.path.basename(p) for p in versions.values()))}: "
                f"publish one of them, e.g. --source={versions[newest]}")
    return f"{path} is not a SavedModel: it holds no {' or '.join(SAVED_MODEL_FILES)}"


def _shape_text(shape) -> str:
    return "unknown rank" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def accepts(new_shape, old_shape) -> bool:
    """Whether every tensor the old shape accepts fits the new one (-1: any size; None: any rank)."""
    if new_shape is None:
        return True
    if old_shape is None or len(new_shape) != len(old_shape):
        return False
    return all(n == -1 or n == o for n, o in zip(new_shape, old_shape))


def incompatibilities(stable: Signatures, new: Signatures) -> list[str]:
    """What a client of `stable` would find broken in `new`, one phrase each (empty: compatible).

    TF Serving's Predict wants exactly the signature's inputs (an extra input is an error too),
    each of the signature's dtype; new signatures and new outputs break nobody."""
    problems = []
    for key in sorted(set(stable) - {INIT_OP_SIGNATURE}):
        if key not in new:
            problems.append(f"signature {key!r} is missing")
            continue
        old_inputs, new_inputs = stable[key]["inputs"], new[key]["inputs"]
        for name in sorted(set(old_inputs) - set(new_inputs)):
            problems.append(f"{key}: input {name!r} is missing")
        for name in sorted(set(new_inputs) - set(old_inputs)):
            problems.append(f"{key}: new input {name!r} (clients of the stable version do not send it)")
        for name in sorted(set(old_inputs) & set(new_inputs)):
            old, now = old_inputs[name], new_inputs[name]
            if old["dtype"] != now["dtype"]:
                problems.append(f"{key}: input {name!r} dtype {old['dtype']} -> {now['dtype']}")
            elif not accepts(now["shape"], old["shape"]):
                problems.append(f"{key}: input {name!r} shape {_shape_text(old['shape'])} -> "
                                f"{_shape_text(now['shape'])}")
        old_outputs, new_outputs = stable[key]["outputs"], new[key]["outputs"]
        for name in sorted(old_outputs):
            if name not in new_outputs:
                problems.append(f"{key}: output {name!r} is missing")
            elif old_outputs[name]["dtype"] != new_outputs[name]["dtype"]:
                problems.append(f"{key}: output {name!r} dtype {old_outputs[name]['dtype']} -> "
                                f"{new_outputs[name]['dtype']}")
    return problems


def inspect(source: Path, stable: Optional[Path] = None, timeout: float = CHECK_TIMEOUT_S) -> Report:
    """Load `source` with pyserving's loader in a child process; read `stable`'s signatures too."""
    command = [sys.executable, "-m", "kit.rollout.model_check", str(Path(source).absolute())]
    command += ["--stable", str(Path(stable).absolute())] if stable else []
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return Report(error=f"it did not finish loading within {timeout:.0f} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or [""])[-1]
        return Report(error=f"the loading process ended with exit code {done.returncode}: {last}")
    return Report(**json.loads(lines[-1]))


def check(source: Path, stable: Optional[Path] = None, stable_version: Optional[int] = None,
          timeout: float = CHECK_TIMEOUT_S) -> tuple[Optional[str], Report]:
    """(why `source` must not be published, or None; what the check found)."""
    problem = not_a_savedmodel(source)
    if problem:
        return problem, Report()
    report = inspect(source, stable, timeout)
    if report.error:  # TF's errors span lines; a refusal is one
        return f"{source} does not load with pyserving's loader: {' '.join(report.error.split())}", report
    if report.stable_signatures is not None:
        broken = incompatibilities(report.stable_signatures, report.signatures)
        if broken:
            return (f"{source} is not compatible with the stable version {stable_version}: "
                    + "; ".join(broken)), report
    return None, report


# ---- the child process ---------------------------------------------------------------------
def _describe(signatures) -> Signatures:
    """pyserving's SignatureInfo map as plain JSON (DataType names as TF Serving's metadata shows
    them, shapes with -1 for any size)."""
    from tensorflow.core.framework import types_pb2

    def tensors(specs):
        return {name: {"dtype": types_pb2.DataType.Name(spec.dtype),
                       "shape": None if spec.shape is None else list(spec.shape)} for name, spec in specs.items()}

    return {key: {"inputs": tensors(sig.inputs), "outputs": tensors(sig.outputs)} for key, sig in signatures.items()}


def _load(path: str, tags: tuple[str, ...], warmup_iterations: Optional[int] = 1) -> dict:
    from pyserving.errors import ServingError
    from pyserving.metrics import NullMetrics
    from pyserving.runtime import savedmodel, warmup
    from pyserving.runtime.loader import Loader, SessionOptions

    try:  # warmup as the server runs it by default: each record once
        servable = Loader(SessionOptions(tags), NullMetrics(), warmup_iterations=warmup_iterations)("check", 1, path)
    except ServingError as exc:
        return {"error": f"{exc.code.name}: {exc.message}"}
    except Exception as exc:  # what the server's manager would report as UNKNOWN
        return {"error": f"UNKNOWN: {exc}"}
    try:
        records = warmup.warmup_path(path)
        replayed = warmup_iterations is not None and os.path.exists(records)
        count = len(savedmodel.read_tfrecords(records)) if replayed else 0
        return {"signatures": _describe(servable.signatures), "warmup_records": count}
    finally:
        servable.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Load a SavedModel with pyserving's loader; print what it found "
                                                 "as one JSON line.")
    parser.add_argument("path")
    parser.add_argument("--stable", help="the stable version's folder, whose signatures are read too")
    parser.add_argument("--tags", default="serve")
    args = parser.parse_args(argv)
    tags = tuple(t for t in args.tags.split(",") if t)
    result = _load(args.path, tags)
    if args.stable:
        stable = _load(args.stable, tags, warmup_iterations=None)  # it serves already: its signatures suffice
        if "error" in stable:
            result["stable_error"] = stable["error"]
        else:
            result["stable_signatures"] = stable["signatures"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
