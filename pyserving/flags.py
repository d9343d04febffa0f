"""Every tensorflow_model_server flag (model_servers/main.cc, release 2.20), with what we do with it.

`support` is "yes" (implemented), "no-effect" (accepted; a one-line warning when it is set to
anything but its default), "refused" (accepted at its default; set, start-up stops with one line
saying why) or "extension" (pyserving's own). The README's compatibility table is generated from
this table.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Flag:
    name: str
    type: type
    default: Any
    support: str
    help: str


_CPUS = os.cpu_count() or 1

FLAGS: tuple[Flag, ...] = (
    Flag("port", int, 8500, "yes",
         "TCP port for gRPC (0.0.0.0 unless --pyserving_listen_address); 0 disables it (then --grpc_socket_path "
         "is required)"),
    Flag("grpc_socket_path", str, "", "yes", "Also serve gRPC on this UNIX socket"),
    Flag("rest_api_port", int, 0, "yes", "HTTP/REST port; 0 = REST off; must differ from --port"),
    Flag("rest_api_num_threads", int, 4 * _CPUS, "yes", "Threads that run REST requests"),
    Flag("rest_api_timeout_in_ms", int, 30000, "yes",
         "Per-request timeout for REST calls (DEADLINE_EXCEEDED, HTTP 504)"),
    Flag("rest_api_enable_cors_support", bool, False, "yes", "Add CORS headers to REST responses"),
    Flag("enable_batching", bool, False, "yes",
         "Merge concurrent requests to one model version and signature into one TF call"),
    Flag("allow_version_labels_for_unavailable_models", bool, False, "yes",
         "Allow new labels to point at versions not yet loaded"),
    Flag("batching_parameters_file", str, "", "yes", "BatchingParameters text proto (needs --enable_batching)"),
    Flag("enable_per_model_batching_parameters", bool, False, "yes",
         "With --enable_batching: a version's own batching_params.pbtxt sets its batching (threads stay global); "
         "a version without one is not batched"),
    Flag("model_config_file", str, "", "yes", "ModelServerConfig text proto; overrides --model_name/--model_base_path"),
    Flag("model_config_file_poll_wait_seconds", int, 0, "yes", "Re-read --model_config_file every N s (0 = once)"),
    Flag("model_name", str, "default", "yes", "Model name in single-model mode"),
    Flag("model_base_path", str, "", "yes", "Base path (without version) in single-model mode"),
    Flag("num_load_threads", int, 0, "no-effect", "Load thread pool (each model loads on a thread of its own here)"),
    Flag("num_unload_threads", int, 0, "no-effect", "Unload thread pool"),
    Flag("max_num_load_retries", int, 5, "yes", "Retries after a failed load of a version"),
    Flag("load_retry_interval_micros", int, 60_000_000, "yes", "Delay between load retries"),
    Flag("file_system_poll_wait_seconds", int, 1, "yes", "Poll interval for new versions; 0 polls once"),
    Flag("flush_filesystem_caches", bool, True, "no-effect", "Flush file system caches after loads"),
    Flag("tensorflow_session_parallelism", int, 0, "yes", "Intra- and inter-op threads (0 = auto)"),
    Flag("tensorflow_session_config_file", str, "", "yes", "TF ConfigProto text proto for sessions"),
    Flag("tensorflow_intra_op_parallelism", int, 0, "yes", "Intra-op threads"),
    Flag("tensorflow_inter_op_parallelism", int, 0, "yes", "Inter-op threads"),
    Flag("use_alts_credentials", bool, False, "refused", "Google ALTS for gRPC (not available here)"),
    Flag("ssl_config_file", str, "", "yes", "SSLConfig text proto: TLS for gRPC"),
    Flag("platform_config_file", str, "", "no-effect", "PlatformConfigMap text proto"),
    Flag("per_process_gpu_memory_fraction", float, 0.0, "no-effect", "GPU memory fraction"),
    Flag("saved_model_tags", str, "serve", "yes", "Comma-separated MetaGraph tags"),
    Flag("grpc_channel_arguments", str, "", "yes", "k=v,k=v gRPC server arguments"),
    Flag("grpc_max_threads", int, 4 * _CPUS, "yes", "gRPC worker threads"),
    Flag("enable_model_warmup", bool, True, "yes", "Replay assets.extra/tf_serving_warmup_requests at load"),
    Flag("num_request_iterations_for_warmup", int, 0, "yes", "Replays per warmup record (0 = 1)"),
    Flag("version", bool, False, "yes", "Print the version and exit"),
    Flag("monitoring_config_file", str, "", "yes", "MonitoringConfig text proto: Prometheus metrics on the REST port"),
    Flag("remove_unused_fields_from_bundle_metagraph", bool, True, "no-effect", "Drop unused MetaGraphDef fields"),
    Flag("prefer_tflite_model", bool, False, "yes", "Serve model.tflite (tf.lite.Interpreter) when present"),
    Flag("num_tflite_pools", int, _CPUS, "yes",
         "TF Lite interpreter pools (pools x per-pool interpreters per version)"),
    Flag("num_tflite_interpreters_per_pool", int, 1, "yes", "TF Lite interpreters per pool"),
    Flag("enable_signature_method_name_check", bool, False, "yes", "Enforce SignatureDef method_name for Predict"),
    Flag("xla_cpu_compilation_enabled", bool, False, "no-effect", "XLA:CPU JIT"),
    Flag("xla_gpu_compilation_enabled", bool, False, "no-effect", "XLA:GPU JIT"),
    Flag("enable_profiler", bool, True, "no-effect", "TF profiler gRPC service"),
    Flag("thread_pool_factory_config_file", str, "", "no-effect", "ThreadPoolFactoryConfig text proto"),
    Flag("mixed_precision", str, "", "no-effect", "Automatic mixed precision (e.g. bfloat16)"),
    Flag("skip_initialize_tpu", bool, False, "no-effect", "TPU builds only"),
    Flag("enable_grpc_healthcheck_service", bool, False, "yes", "Standard grpc.health.v1.Health service"),
    Flag("enable_serialization_as_tensor_content", bool, False, "yes", "Predict outputs as tensor_content bytes"),
    # pyserving's own (TF Serving has no such limit): bounds what one request may make us allocate.
    Flag("max_request_size_bytes", int, 128 << 20, "extension",
         "pyserving only: largest REST body / gRPC message, and largest tensor (in elements) a request may ask for"),
    # TF Serving binds every interface and has no flag to change it; the prefix keeps this one from
    # ever meaning something else to a tensorflow_model_server.
    Flag("pyserving_listen_address", str, "", "extension",
         "pyserving only, a name no TF Serving flag can clash with: the IP address REST and gRPC listen on "
         "(127.0.0.1: this machine only); empty: every interface, as TF Serving binds"),
    # TF Serving is one process using every core; pyserving's protocol work runs on one core per
    # process, so N full servers share the two ports (SO_REUSEPORT) under a supervisor.
    Flag("pyserving_num_workers", str, "1", "extension",
         "pyserving only: N worker processes sharing --port and --rest_api_port (SO_REUSEPORT), under a "
         "supervisor; auto: the CPUs this process may use (affinity and cgroup limit); 1: one process, and a "
         "port already in use fails start-up"),
)

BY_NAME = {f.name: f for f in FLAGS}
