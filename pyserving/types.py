"""Protocol-neutral types shared by the core, the runtime and the protocol edges."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, Optional, Protocol, Sequence

import numpy as np

from pyserving.errors import ServingError

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


@dataclass(frozen=True)
class ModelSpec:
    """Which servable a request wants: latest, a version, or a label."""

    name: str
    version: Optional[int] = None
    label: Optional[str] = None
    signature_name: str = ""

    def describe(self) -> str:
        # TF Serving's ServableRequest::DebugString, used in "Servable not found" errors.
        if self.version is not None:
            return f"Specific({self.name}, {self.version})"
        return f"Latest({self.name})"


class VersionState(enum.IntEnum):
    """ModelVersionStatus.State numbers (get_model_status.proto)."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: VersionState
    error: Optional[ServingError] = None


@dataclass(frozen=True)
class VersionPolicy:
    """FileSystemStoragePathSourceConfig.ServableVersionPolicy as plain data."""

    kind: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, on_disk: Sequence[int]) -> set[int]:
        if self.kind == "all":
            return set(on_disk)
        if self.kind == "specific":
            return set(on_disk) & set(self.versions)
        return set(sorted(on_disk, reverse=True)[: max(self.num_versions, 1)])


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    platform: str = "tensorflow"
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TensorSpec:
    """One SignatureDef input or output: graph tensor name, DataType enum, shape (None = unknown rank)."""

    tensor_name: str
    dtype: int
    shape: Optional[tuple[int, ...]]


@dataclass(frozen=True)
class SignatureInfo:
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    debug_string: str = ""  # the SignatureDef as text (its DebugString), quoted in some errors


class Servable(Protocol):
    """One loaded model version, as the runtime hands it to the manager."""

    signatures: Mapping[str, SignatureInfo]

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_keys: Sequence[str],
        timeout_s: Optional[float] = None,
    ) -> dict[str, np.ndarray]: ...

    def signature_def_map(self) -> bytes:
        """Serialized tensorflow.serving.SignatureDefMap, for GetModelMetadata."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunRequest:
    """One model run, as the core hands it to a runner: which servable and signature, the
    decoded and checked inputs, which outputs, and the deadline (seconds, None = none)."""

    servable: Servable
    signature_name: str
    inputs: Mapping[str, np.ndarray]
    output_keys: tuple[str, ...]
    timeout_s: Optional[float] = None

    def run(self) -> dict[str, np.ndarray]:
        return self.servable.run(self.signature_name, self.inputs, self.output_keys, self.timeout_s)
