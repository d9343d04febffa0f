"""pyserving/supervisor.py without workers: what it imports, what it checks before starting any."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pyserving import supervisor
from pyserving.errors import ServingError
from pyserving.settings import Settings


def test_the_supervisor_imports_neither_tensorflow_nor_grpc():
    code = ("import sys, pyserving.cli, pyserving.supervisor\n"
            "print(sorted(m for m in ('tensorflow', 'grpc', 'aiohttp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_config_files_are_checked_before_any_worker(tmp_path):
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    with pytest.raises(ServingError, match="requires --rest_api_port"):
        supervisor.check_files(Settings(model_base_path="/m", monitoring_config_file=str(monitoring)))
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: nope }")
    with pytest.raises(ServingError, match="batching"):
        supervisor.check_files(Settings(model_base_path="/m", enable_batching=True,
                                        batching_parameters_file=str(batching)))
    with pytest.raises(ServingError):
        supervisor.check_files(Settings(model_config_file=str(tmp_path / "absent.config")))
    supervisor.check_files(Settings(model_base_path="/m", rest_api_port=8501,
                                    monitoring_config_file=str(monitoring)))  # fine: nothing raised
