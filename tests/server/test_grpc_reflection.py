"""gRPC server reflection, which TF Serving links into tensorflow_model_server since 2.15
(model_servers/BUILD: grpc++_reflection): `grpcurl list` / `grpc_cli ls` see every service, and
`describe` finds each one's .proto, with no .proto file on the client's side."""
from __future__ import annotations

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def reflected(target: str) -> tuple[list[str], DescriptorPool]:
    """What a reflection client sees: the service names, and a pool that resolves symbols through the server."""
    channel = grpc.insecure_channel(target)
    database = ProtoReflectionDescriptorDatabase(channel)
    return sorted(database.get_services()), DescriptorPool(database)


def test_every_service_is_listed_and_described_through_reflection(serve, exported):
    server = serve([f"--model_base_path={exported / 'hp2'}", "--model_name=m"], rest=False)
    names, pool = reflected(server.grpc_target)
    assert names == ["grpc.reflection.v1alpha.ServerReflection", "inference.GRPCInferenceService",
                     "tensorflow.serving.ModelService", "tensorflow.serving.PredictionService"]
    predict = pool.FindServiceByName("tensorflow.serving.PredictionService")
    assert {m.name for m in predict.methods} == {"Classify", "Regress", "Predict", "MultiInference",
                                                 "GetModelMetadata"}
    assert predict.methods_by_name["Predict"].input_type.full_name == "tensorflow.serving.PredictRequest"
    status = pool.FindServiceByName("tensorflow.serving.ModelService").methods_by_name["GetModelStatus"]
    assert status.output_type.full_name == "tensorflow.serving.GetModelStatusResponse"
    # the Open Inference Protocol's service, described from the spec's .proto (package inference)
    oip = pool.FindServiceByName("inference.GRPCInferenceService")
    assert {m.name for m in oip.methods} == {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                                             "ModelMetadata", "ModelInfer"}
    assert oip.methods_by_name["ModelInfer"].input_type.full_name == "inference.ModelInferRequest"


def test_the_health_service_is_listed_when_it_is_served(serve, exported):
    server = serve([f"--model_base_path={exported / 'hp2'}", "--model_name=m", "--enable_grpc_healthcheck_service"],
                   rest=False)
    names, pool = reflected(server.grpc_target)
    assert "grpc.health.v1.Health" in names
    assert pool.FindServiceByName("grpc.health.v1.Health").methods_by_name["Check"].name == "Check"
