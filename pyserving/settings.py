"""Settings: the parsed tensorflow_model_server flags, one typed field per flag (TF Serving's
defaults), and the values the server derives from them. tests/server/test_settings.py keeps the
fields in step with the flag table in flags.py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from pyserving import cpus

_CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    port: int = 8500
    grpc_socket_path: str = ""
    rest_api_port: int = 0
    rest_api_num_threads: int = 4 * _CPUS
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    enable_batching: bool = False
    allow_version_labels_for_unavailable_models: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    num_load_threads: int = 0
    num_unload_threads: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    file_system_poll_wait_seconds: int = 1
    flush_filesystem_caches: bool = True
    tensorflow_session_parallelism: int = 0
    tensorflow_session_config_file: str = ""
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    use_alts_credentials: bool = False
    ssl_config_file: str = ""
    platform_config_file: str = ""
    per_process_gpu_memory_fraction: float = 0.0
    saved_model_tags: str = "serve"
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = 4 * _CPUS
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    version: bool = False
    monitoring_config_file: str = ""
    remove_unused_fields_from_bundle_metagraph: bool = True
    prefer_tflite_model: bool = False
    num_tflite_pools: int = _CPUS
    num_tflite_interpreters_per_pool: int = 1
    enable_signature_method_name_check: bool = False
    xla_cpu_compilation_enabled: bool = False
    xla_gpu_compilation_enabled: bool = False
    enable_profiler: bool = True
    thread_pool_factory_config_file: str = ""
    mixed_precision: str = ""
    skip_initialize_tpu: bool = False
    enable_grpc_healthcheck_service: bool = False
    enable_serialization_as_tensor_content: bool = False
    max_request_size_bytes: int = 128 << 20
    pyserving_listen_address: str = ""
    pyserving_num_workers: str = "1"

    # ---- derived values ----------------------------------------------------------------------
    @property
    def saved_model_tag_set(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.saved_model_tags.split(",") if t.strip())

    @property
    def intra_op_threads(self) -> int:
        return self.tensorflow_intra_op_parallelism or self.tensorflow_session_parallelism

    @property
    def inter_op_threads(self) -> int:
        return self.tensorflow_inter_op_parallelism or self.tensorflow_session_parallelism

    @property
    def tflite_interpreters(self) -> int:
        """--prefer_tflite_model: interpreters per version (pools x per pool); 0 = SavedModel only."""
        if not self.prefer_tflite_model:
            return 0
        return max(self.num_tflite_pools, 1) * max(self.num_tflite_interpreters_per_pool, 1)

    @property
    def warmup_iterations(self) -> Optional[int]:
        """Replays per warmup record, or None when warmup is off."""
        return self.num_request_iterations_for_warmup if self.enable_model_warmup else None

    @property
    def load_retry_interval_s(self) -> float:
        return max(self.load_retry_interval_micros, 0) / 1e6

    @property
    def listen_host(self) -> str:
        """The address both listeners bind: --pyserving_listen_address, else every interface (TF Serving's)."""
        return self.pyserving_listen_address or "0.0.0.0"

    @property
    def num_workers(self) -> int:
        """--pyserving_num_workers as a count (auto: the CPUs this process may use); 0 when invalid
        (cli.validate says why before anything starts)."""
        if self.pyserving_num_workers.strip().lower() == "auto":
            return cpus.available()
        try:
            return max(int(self.pyserving_num_workers, 10), 0)
        except ValueError:
            return 0

    @property
    def polls_model_config(self) -> bool:
        return bool(self.model_config_file) and self.model_config_file_poll_wait_seconds > 0
