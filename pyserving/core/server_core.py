"""ServerCore: the model list, the Source and the Manager wired together, with config reloads
(from the data plane, or from --model_config_file polled every N seconds).

Protocol-neutral: REST and gRPC reach it through the data plane; it knows neither.
"""
from __future__ import annotations

import logging
import threading
from typing import Iterable, Optional

from pyserving import storage
from pyserving.core import source
from pyserving.core.manager import LoadFn, ServableManager
from pyserving.core.source import FileSystemSource
from pyserving.errors import Code, ServingError, failed_precondition
from pyserving.types import ModelConfig, VersionState

logger = logging.getLogger(__name__)


class ServerCore:
    def __init__(
        self,
        load_fn: LoadFn,
        file_system_poll_wait_s: float = 1.0,
        max_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
        allow_labels_for_unavailable: bool = False,
        on_state_change=None,
    ):
        self.manager = ServableManager(
            load_fn,
            max_load_retries=max_load_retries,
            load_retry_interval_s=load_retry_interval_s,
            on_state_change=on_state_change,
        )
        self.source = FileSystemSource(self.manager.set_aspired_versions, poll_wait_s=file_system_poll_wait_s)
        self._allow_new_labels_unavailable = allow_labels_for_unavailable
        self._configs: dict[str, ModelConfig] = {}
        self._reload_lock = threading.Lock()
        self._started = False
        self._stopping = threading.Event()
        self._poller: Optional[threading.Thread] = None

    @property
    def configs(self) -> dict[str, ModelConfig]:
        return dict(self._configs)

    def reload(self, configs: Iterable[ModelConfig], timeout: Optional[float] = None) -> None:
        """Replace the whole model list; blocks until newly added models are available.

        Raises ServingError when a new model's latest version fails to load or a label points
        at a version that is not available (before anything loads: a new model's labels need
        --allow_version_labels_for_unavailable_models); the models already serving are not disturbed.
        """
        new = {c.name: c for c in configs}
        with self._reload_lock:
            old = self._configs
            for name, config in new.items():
                if name in old and old[name].platform != config.platform:
                    raise failed_precondition(
                        f"Illegal to change a model's platform. For model {name} platform was "
                        f"{old[name].platform} and new platform requested is {config.platform}")
            existing = [c for n, c in new.items() if n in old]
            # Labels are validated before any load happens, a new model's too (server_core.cc
            # UpdateModelVersionLabelMap runs before AddModelsViaModelConfigList): at start-up no
            # version is loaded yet, so a label is refused unless the flag allows new labels.
            for config in new.values():
                self._check_labels(config, old[config.name].labels if config.name in old else {})
            added = [n for n in new if n not in old]
            removed = [n for n in old if n not in new]
            for name in added:  # a bucket that cannot be read is one clear error now, not a silent wait
                if storage.is_remote(new[name].base_path):
                    source.check(new[name].base_path)
            self._configs = new
            self.source.set_models(new)
            if not self._started:
                self.source.start()
                self._started = True
            for name in removed:
                logger.info("Unloading model %s: it left the model config", name)
                self.manager.remove_model(name)
            for config in existing:
                self.manager.set_labels(config.name, config.labels)
            if added:
                outcome = self.manager.wait_for_latest(added, timeout=timeout)
                failed = {n: s for n, s in outcome.items() if s.state != VersionState.AVAILABLE}
                if failed:
                    details = ", ".join(
                        f"{{name: {n} version: {s.version}}} due to error: {s.error.message if s.error else 'unloaded'}"
                        for n, s in failed.items()
                    )
                    raise ServingError(Code.UNKNOWN, f"{len(failed)} model(s) did not become available: {details}")
                for name in added:
                    # Labelled versions may still be loading after the latest one is up.
                    self.manager.wait_settled(name, set(new[name].labels.values()), timeout=timeout)
                    self.manager.set_labels(name, new[name].labels)

    def _check_labels(self, config: ModelConfig, previous: dict) -> None:
        available = self.manager.available_versions(config.name)
        for label, version in config.labels.items():
            if version in available:
                continue
            # server_core.cc: the flag allows a label that is new, or that stays where it was;
            # only moving an existing label needs an available version.
            if self._allow_new_labels_unavailable and previous.get(label, version) == version:
                continue
            raise failed_precondition(
                f"Request to assign label to version {version} of model {config.name}, "
                "which is not currently available for inference"
            )

    def poll_config_file(self, path: str, wait_s: float, applied: str) -> None:
        """Re-read the model config file every `wait_s` seconds and apply it when it differs from
        `applied`, the text last applied (at start-up: the one start() loaded, so that a change
        written while the first models loaded is not taken as already applied)."""
        self._poller = threading.Thread(target=self._poll, args=(path, wait_s, applied), name="config-poller",
                                        daemon=True)
        self._poller.start()

    def _poll(self, path: str, wait_s: float, applied: str) -> None:
        from pyserving.core import config  # the text-proto reader (and its protos) only where a file is polled

        last_error = None
        while not self._stopping.wait(wait_s):
            try:
                text = _read(path)
                if text == applied:
                    continue
                self.reload(config.models_from_text(text, path))
                applied, last_error = text, None
                logger.info("Reloaded model config from %s", path)
            except (ServingError, OSError) as exc:
                # The last good config stays in force and the file is tried again at the next
                # poll (a label may point at a version that is still loading); each distinct
                # error is logged once.
                message = getattr(exc, "message", str(exc))
                if hasattr(exc, "parser_line"):  # a malformed file: protobuf's own line first, as TF Serving logs it
                    message = f"{exc.parser_line}\n{message}"
                if message != last_error:
                    logger.error("Failed to reload model config %s: %s", path, message)
                    last_error = message

    def stop(self) -> None:
        self._stopping.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        self.source.stop()
        self.manager.stop()


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()
