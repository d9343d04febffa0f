"""The protocol-neutral core imports neither TensorFlow nor gRPC nor the HTTP server, and the core
and the metrics observer import nothing from the protocols (the edges call them, never back)."""
from __future__ import annotations

import subprocess
import sys

CORE_MODULES = ["pyserving.core.manager", "pyserving.core.source", "pyserving.core.signatures",
                "pyserving.core.runners", "pyserving.core.batching", "pyserving.core.dataplane",
                "pyserving.core.server_core", "pyserving.types", "pyserving.errors", "pyserving.dtypes",
                "pyserving.metrics"]
# Below the edges: may need protos or config parsing, never a protocol module.
NOT_PROTOCOLS = [*CORE_MODULES, "pyserving.core.config"]


def imported_after(modules: list[str], expression: str) -> str:
    """What `expression` (over `sys.modules`) gives once `modules` are imported, in a fresh interpreter."""
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + f"print({expression})\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_core_stays_free_of_tensorflow_grpc_and_http():
    bad = ("','.join(sorted({m.split('.')[0] for m in sys.modules}"
           " & {'tensorflow', 'grpc', 'aiohttp', 'tensorflow_serving'}))")
    assert imported_after(CORE_MODULES, bad) == ""


def test_core_and_metrics_import_nothing_from_the_protocols():
    protocols = "','.join(sorted(m for m in sys.modules if m.startswith('pyserving.protocols')))"
    assert imported_after(NOT_PROTOCOLS, protocols) == ""
