"""The Open Inference Protocol stubs (pyserving/protocols/grpc/oip_pb): the .proto is the spec's
own file at the pinned commit, and the committed _pb2 modules are what grpcio-tools (pinned)
generates from it."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

from tests.helpers import ROOT

PACKAGE = "pyserving/protocols/grpc/oip_pb"
PROTO = f"{PACKAGE}/open_inference_grpc.proto"
# kserve/open-inference-protocol at d49cc23f89d709d87b210ef9449e273ae243984e,
# specification/protocol/open_inference_grpc.proto
SPEC_BLOB = "b84d1b39171708893c80663063289b9c0ffd6202"


def test_the_proto_is_the_specs_file_at_the_pinned_commit():
    data = (ROOT / PROTO).read_bytes()
    assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == SPEC_BLOB  # git hash-object
    assert SPEC_BLOB in (ROOT / PACKAGE / "README.md").read_text()
    assert b"package inference;" in data


def test_the_committed_stubs_are_what_the_pinned_grpcio_tools_generates(tmp_path):
    (tmp_path / PACKAGE).mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--python_out=.", "--grpc_python_out=.",
                    PROTO], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    for name in ("open_inference_grpc_pb2.py", "open_inference_grpc_pb2_grpc.py"):
        assert (tmp_path / PACKAGE / name).read_text() == (ROOT / PACKAGE / name).read_text(), name


def test_the_service_has_the_six_rpcs_in_package_inference():
    from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in service.methods] == ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                                                 "ModelMetadata", "ModelInfer"]
