"""pyserving/examples/half_plus_two.py run as the README shows it: the model is written, and no
deprecation warning reaches the user (TF 2.21's v1 SavedModel API logs one for build_tensor_info)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kit.paths import ROOT


@pytest.mark.parametrize("flavour", ["tf1", "tflite"])
def test_the_example_writes_its_model_and_says_nothing_deprecated(tmp_path, flavour):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    done = subprocess.run([sys.executable, "-m", "pyserving.examples.half_plus_two", "--flavour", flavour,
                           str(tmp_path / "hp2")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path / 'hp2' / '1'}\n"
    written = "saved_model.pb" if flavour == "tf1" else "model.tflite"
    assert (tmp_path / "hp2" / "1" / written).is_file()
    assert "deprecat" not in done.stderr.lower(), done.stderr
