"""The protocol-neutral core imports neither TensorFlow nor gRPC nor the HTTP server."""
from __future__ import annotations

import subprocess
import sys

CORE_MODULES = ["pyserving.core.manager", "pyserving.core.source", "pyserving.core.signatures",
                "pyserving.core.runners", "pyserving.core.batching", "pyserving.core.dataplane",
                "pyserving.core.server_core", "pyserving.types", "pyserving.errors", "pyserving.dtypes"]


def test_core_stays_free_of_tensorflow_grpc_and_http():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE_MODULES)
        + "bad = sorted({m.split('.')[0] for m in sys.modules}\n"
        + "             & {'tensorflow', 'grpc', 'aiohttp', 'tensorflow_serving'})\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
