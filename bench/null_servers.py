"""The protocol stacks alone: the REST and gRPC servers pyserving is built on, answering every
predict with a fixed response and doing no other work.

What they sustain is the most any server on these stacks can: the benchmark measures them with
the same client, beside pyserving, to show how much of the request cost is the stack's own.

    python -m bench.null_servers --rest_port P --grpc_port Q --rest_answer F --grpc_answer G

F holds the JSON body to answer, G a serialized PredictResponse.
"""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import grpc
from aiohttp import web
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


class NullPrediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, response: predict_pb2.PredictResponse):
        self._response = response

    async def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        return self._response


async def serve(rest_port: int, grpc_port: int, rest_answer: bytes, grpc_answer: bytes) -> None:
    # The same aiohttp low-level server pyserving's REST API runs (protocols/rest.py).
    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=rest_answer, content_type="application/json")

    runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rest_port).start()
    # The same grpc.aio server pyserving's gRPC API runs (protocols/grpc/server.py).
    server = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        NullPrediction(predict_pb2.PredictResponse.FromString(grpc_answer)), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rest_port", type=int, required=True)
    parser.add_argument("--grpc_port", type=int, required=True)
    parser.add_argument("--rest_answer", type=Path, required=True)
    parser.add_argument("--grpc_answer", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.rest_port, args.grpc_port, args.rest_answer.read_bytes(), args.grpc_answer.read_bytes()))


if __name__ == "__main__":
    main()
