"""The flags and listen addresses every serving backend shares: one list, so that the kit's
servers (and the pods, kit/k8s/cluster.py) behave alike whichever binary serves."""
from __future__ import annotations

POLL_SECONDS = 1  # --model_config_file_poll_wait_seconds: a rollout step is read within a second
# TF Serving's defaults, 5 retries 60 s apart, keep a version that cannot load in LOADING for 5
# minutes (and a bad model at start-up from failing for as long); the kit's server retries once,
# 2 s later, so a bad version ends in END with its error within seconds. Every backend takes them.
LOAD_RETRY_FLAGS = ("--max_num_load_retries=1", "--load_retry_interval_micros=2000000")
# grpc.health.v1, for Kubernetes' grpc probe and health-checking gRPC clients (pyserving says
# NOT_SERVING on SIGTERM before it stops accepting); TF Serving has it since 2.15.1.
HEALTH_FLAG = "--enable_grpc_healthcheck_service"
# A restarted server reads a models.config whose labels name versions it has not loaded yet;
# TF Serving refuses such a config at start-up without this flag (#1608), and so does pyserving.
LABELS_FLAG = "--allow_version_labels_for_unavailable_models"
LOOPBACK, EVERY_INTERFACE = "127.0.0.1", "0.0.0.0"
HOSTS = (LOOPBACK, EVERY_INTERFACE)  # the kit's own clients connect to 127.0.0.1: either works for them


def process_flags(extra_flags=()) -> list[str]:
    """What a server process on this machine (pyserving, the built binary) is given besides its
    ports and config file."""
    return [f"--model_config_file_poll_wait_seconds={POLL_SECONDS}", *LOAD_RETRY_FLAGS, HEALTH_FLAG, LABELS_FLAG,
            *extra_flags]
