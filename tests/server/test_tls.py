"""gRPC over TLS with --ssl_config_file (SSLConfig holds PEM contents, as in TF Serving)."""
from __future__ import annotations

import shutil
import subprocess

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2

from pyserving.config_protos import SSLConfig
from tests.helpers import from_numpy, prediction_stub


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
@pytest.mark.flags("ssl_config_file")
def test_grpc_serves_over_tls(exported, tmp_path, serve):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    config = SSLConfig(server_key=key.read_text(), server_cert=cert.read_text())
    ssl_file = tmp_path / "ssl.txt"
    ssl_file.write_text(text_format.MessageToString(config))
    server = serve([f"--model_base_path={exported / 'hp2'}", "--model_name=hp2", f"--ssl_config_file={ssl_file}"])
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hp2"
    request.inputs["x"].CopyFrom(from_numpy(np.array([[2.0]], np.float32)))
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(f"localhost:{server.grpc_port}", credentials) as ch:
        assert prediction_stub(ch).Predict(request, timeout=10).outputs["y"].float_val == [3.0]
    with grpc.insecure_channel(server.grpc_target) as ch:  # plaintext is refused
        try:
            prediction_stub(ch).Predict(request, timeout=5)
            raise AssertionError("plaintext call succeeded against a TLS server")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE
