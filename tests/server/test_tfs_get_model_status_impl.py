"""TF Serving's tensorflow_serving/model_servers/get_model_status_impl_test.cc, ported case by case.

Each case's id is the TF Serving test it comes from. TF Serving's fixture serves two versions,
123 and 124 (policy `specific`), of half_plus_two as "saved_model_half_plus_two_2_versions"; here
the tests export them, and ModelService.GetModelStatus is called over gRPC on an in-process server.
"""
from __future__ import annotations

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from pyserving.examples import half_plus_two
from tests.helpers import call, write_config

MODEL = "saved_model_half_plus_two_2_versions"


@pytest.fixture(scope="module")
def server(tmp_path_factory, serve_module):
    tmp = tmp_path_factory.mktemp("status")
    for version in (123, 124):
        half_plus_two.write_tf1(str(tmp / "model"), version)
    config = write_config(tmp / "models.config",
                          {MODEL: (tmp / "model", "model_version_policy { specific { versions: 123 versions: 124 } }")})
    return serve_module([f"--model_config_file={config}"])


def get_model_status(server, name=None, version=None):
    """(response, None) or (None, RpcError)."""
    request = get_model_status_pb2.GetModelStatusRequest()
    if name is not None:
        request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    with grpc.insecure_channel(server.grpc_target) as channel:
        try:
            return model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30), None
        except grpc.RpcError as err:
            return None, err


@pytest.mark.parametrize("name,version,code", [
    pytest.param(None, None, grpc.StatusCode.INVALID_ARGUMENT, id="MissingOrEmptyModelSpecFailure"),
    pytest.param("nonexistent_model", None, grpc.StatusCode.NOT_FOUND, id="InvalidModelNameFailure"),
    pytest.param(MODEL, 125, grpc.StatusCode.NOT_FOUND, id="InvalidModelVersionFailure"),
])
def test_failures(server, name, version, code):
    response, error = get_model_status(server, name, version)
    assert response is None and error.code() == code  # no response, so no model_version_status


@pytest.mark.parametrize("version,versions", [
    pytest.param(None, {123, 124}, id="AllVersionsSuccess"),
    pytest.param(123, {123}, id="SingleVersionSuccess"),
])
def test_success(server, version, versions):
    response, error = get_model_status(server, MODEL, version)
    assert error is None and len(response.model_version_status) == len(versions)
    assert {s.version for s in response.model_version_status} == versions
    for status in response.model_version_status:
        assert (status.status.error_code, status.status.error_message) == (0, "")


def test_model_spec_override(server):
    """ModelSpecOverride: the REST handler asks for the model its URL names (GetModelStatusWithModelSpec),
    whatever else it holds: the request that finds the model by its own spec is NOT_FOUND under
    another name."""
    assert get_model_status(server, MODEL)[1] is None
    assert call(server, "GET", f"/v1/models/{MODEL}")[0] == 200
    assert call(server, "GET", "/v1/models/nonexistent_model")[0] == 404
