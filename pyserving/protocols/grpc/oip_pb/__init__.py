"""Generated: the Open Inference Protocol's gRPC stubs (package `inference`); see README.md."""
