"""TF Serving's gRPC API: servicers.py (the services, protocol work only) and server.py (grpc.aio
on a loop thread of its own). Absolute imports inside: `import grpc` is still the library."""
