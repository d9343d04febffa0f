"""The kit's training steps as plain functions: the SVM's data, the SVM, MNIST; each cached by inputs.

Tasks in tasks.py are thin wrappers; `run(cmd)` executes and echoes a shell command (the
Invoke context's run in tasks, a dry run's printer, anything with the same shape in tests).
"""
from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional

from kit import paths
from kit.errors import KitError
from kit.paths import ROOT
from kit.steps import python_sources, run_step
from models.svm.corpus import MAX_CLASSES

PY = sys.executable
SVM_SAMPLE = ROOT / "models" / "svm" / "data" / "sample.csv"
SVM_SAMPLE_DEV = ROOT / "models" / "svm" / "data" / "sample_dev.csv"
Runner = Callable[[str], object]


def shell_line(*parts) -> str:
    return shlex.join(str(p) for p in parts)


def svm_data(run: Runner, rows: int, classes: int, seed: int = 20190101, say=print,
             dry_run: bool = False) -> tuple[Path, Path]:
    """The SVM's train/dev CSVs: the shipped sample (rows=0) or a generated corpus."""
    if rows <= 0:
        say(f"[svm-data] using the shipped sample: {SVM_SAMPLE.relative_to(ROOT)} (+ dev split)")
        return SVM_SAMPLE, SVM_SAMPLE_DEV
    if not 1 <= classes <= MAX_CLASSES:
        raise KitError(f"--classes must be in 1..{MAX_CLASSES} (the corpus has {MAX_CLASSES} class names), "
                       f"got {classes}")
    train = paths.DATA / f"svm_{rows}x{classes}_train.csv"
    dev = paths.DATA / f"svm_{rows}x{classes}_dev.csv"
    run_step(
        "svm-data", {"rows": rows, "classes": classes, "seed": seed},
        python_sources("models.svm.corpus"), [train, dev],
        lambda: run(shell_line(PY, "-m", "models.svm.corpus", "--rows", rows, "--classes", classes,
                         "--seed", seed, "--out", train, "--dev_out", dev, "--dev_fraction", 0.1)),
        say, dry_run,
    )
    return train, dev


def _replace_version(base: Path, version: int) -> None:
    # Inputs changed: the old export of this version number goes, the new one takes its place.
    target = base / str(version)
    if target.exists():
        shutil.rmtree(target)


def train_svm(run: Runner, rows: int = 0, classes: int = 124, epochs: int = 20, batch_size: int = 64,
              regulation_rate: float = 1e-4, version: int = 1, seed: int = 0, say=print,
              dry_run: bool = False) -> Path:
    train, dev = svm_data(run, rows, classes, say=say, dry_run=dry_run)
    base = paths.MODELS / "svm"
    params = {"rows": rows, "classes": classes, "epochs": epochs, "batch_size": batch_size,
              "regulation_rate": regulation_rate, "version": version, "seed": seed}
    command = shell_line(
        PY, "-m", "models.svm.train", "--train_data_file", train, "--dev_data_file", dev,
        "--export_path_base", base, "--checkpoint_dir", paths.CHECKPOINTS / "svm" / str(version),
        "--batch_size", batch_size, "--num_epochs", epochs, "--evaluate_every", 100,
        "--checkpoint_every", 100, "--num_checkpoints", 5, "--regulation_rate", regulation_rate,
        "--model_version", version, "--seed", seed,
    )

    def action():
        if not dry_run:
            _replace_version(base, version)
        run(command)

    run_step("train-svm", params, [*python_sources("models.svm.train"), train, dev],
             [base / str(version) / "saved_model.pb"], action, say, dry_run)
    return base


def train_mnist(run: Runner, iterations: int = 1000, version: int = 1, data_dir: Optional[str] = None,
                download: bool = False, seed: int = 0, say=print, dry_run: bool = False) -> Path:
    base = paths.MODELS / "mnist"
    params = {"iterations": iterations, "version": version, "data_dir": data_dir, "download": download, "seed": seed}
    inputs = python_sources("models.mnist.mnist_saved_model")
    if data_dir:
        inputs += sorted(Path(data_dir).glob("*"))
    extra = (["--data_dir", data_dir] if data_dir else []) + (["--download"] if download else [])
    command = shell_line(PY, "-m", "models.mnist.mnist_saved_model", f"--training_iteration={iterations}",
                   f"--model_version={version}", f"--seed={seed}", *extra, base)

    def action():
        if not dry_run:
            _replace_version(base, version)
        run(command)

    run_step("train-mnist", params, inputs, [base / str(version) / "saved_model.pb"], action, say, dry_run)
    return base
