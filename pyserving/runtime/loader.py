"""Loads one model version for the manager: a SavedModel (or model.tflite with
--prefer_tflite_model), its own batching parameters (--enable_per_model_batching_parameters),
then its warmup records; a failure anywhere fails the load and the version ends in END.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

from pyserving import config_files
from pyserving.errors import ServingError

logger = logging.getLogger(__name__)

PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"


@dataclass(frozen=True)
class SessionOptions:
    """How a SavedModel's TensorFlow session is built (the --tensorflow_* and tag flags)."""

    tags: tuple[str, ...] = ("serve",)
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    session_config_text: str = ""


class Loader:
    """(model name, version, path) -> servable. `tflite_interpreters` > 0 prefers model.tflite;
    `warmup_iterations` None skips warmup; `batcher` with `per_model_batching` applies each
    version's batching_params.pbtxt (a version without one is not batched)."""

    def __init__(self, session: SessionOptions, metrics, tflite_interpreters: int = 0,
                 warmup_iterations: Optional[int] = 1, batcher=None, per_model_batching: bool = False):
        self._session = session
        self._metrics = metrics
        self._tflite_interpreters = tflite_interpreters
        self._warmup_iterations = warmup_iterations
        self._batcher = batcher if per_model_batching else None

    def __call__(self, name: str, version: int, path: str):
        from pyserving.runtime import savedmodel  # TensorFlow loads here, not at import time

        params = self._own_batching(path) if self._batcher is not None else None  # a bad file fails at once
        if self._tflite_interpreters and os.path.isfile(os.path.join(path, "model.tflite")):
            from pyserving.runtime import tflite

            servable = tflite.load(path, self._tflite_interpreters)
        else:
            s = self._session
            servable = savedmodel.load(path, tags=s.tags, intra_op_threads=s.intra_op_threads,
                                       inter_op_threads=s.inter_op_threads,
                                       session_config_text=s.session_config_text)
        servable.model_name = name
        if self._batcher is not None:
            self._batcher.set_params(servable, params)
        if self._warmup_iterations is not None:
            self._warmup(servable, path, savedmodel.read_tfrecords)
        return servable

    def _own_batching(self, path: str):
        """--enable_per_model_batching_parameters, as bundle_factory_util.cc reads it: the version's
        file replaces the server's parameters but its threads; no file, no batching."""
        file = os.path.join(path, PER_MODEL_BATCHING_FILE)
        if not os.path.exists(file):
            logger.info("No %s in %s: its requests are not batched", PER_MODEL_BATCHING_FILE, path)
            return None
        params = config_files.batching(file, self._batcher.params.num_batch_threads)
        logger.info("Batching requests to %s with its own parameters: %s", path, params)
        return params

    def _warmup(self, servable, path: str, read_records) -> None:
        from pyserving.runtime import warmup

        records_path = warmup.warmup_path(path)
        if not os.path.exists(records_path):
            logger.info("No warmup data file found at %s", records_path)
            return
        started = time.monotonic()
        try:  # warmup runs during LOADING: a failure fails the load
            try:
                records = read_records(records_path)
            except ServingError as exc:
                # saved_model_warmup_util.cc records the latency of a warmup that ends in a read
                # error, labelled with that status; one that fails a record returns before that.
                self._metrics.observe_warmup(path, f"{exc.code.name}: {exc.message}", time.monotonic() - started)
                raise
            warmup.replay(servable, path, records, self._warmup_iterations)
        except BaseException:
            servable.close()
            raise
        self._metrics.observe_warmup(path, "OK", time.monotonic() - started)
