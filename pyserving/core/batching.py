"""Dynamic batching: concurrent requests to one servable and signature become one TF call.

Like TF Serving's BatchingSession over a shared BasicBatchScheduler: tasks whose inputs can be
merged (same servable, signature, outputs, dtypes and inner shapes) are concatenated along
dimension 0, padded up to the next allowed batch size, run once, and split back. A batch is
closed when it is full or when its one deadline (set when its first task arrives) passes; a
full queue answers UNAVAILABLE at once instead of queueing without bound. Inputs that cannot be
batched (no shared dimension 0) run alone, exactly as they would without batching.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_left
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from pyserving.errors import Code, ServingError, invalid_argument

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingParams:
    """BatchingParameters (session_bundle_config.proto) with TF's defaults for unset fields."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        if self.max_batch_size < 1 or self.max_enqueued_batches < 1 or self.num_batch_threads < 1:
            raise invalid_argument("max_batch_size, max_enqueued_batches and num_batch_threads must be positive")
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
                raise invalid_argument("allowed_batch_sizes must be positive and strictly increasing")
            if sizes[-1] != self.max_batch_size:
                raise invalid_argument("The last entry in allowed_batch_sizes must match max_batch_size; "
                                       f"last entry was {sizes[-1]}; expected {self.max_batch_size}")

    def padded_size(self, size: int) -> int:
        if not self.allowed_batch_sizes:
            return size
        return self.allowed_batch_sizes[bisect_left(self.allowed_batch_sizes, size)]


@dataclass
class _Task:
    inputs: Mapping[str, np.ndarray]
    size: int
    timeout_s: Optional[float]
    future: Future = field(default_factory=Future)


@dataclass
class _Batch:
    key: tuple
    servable: object
    signature_name: str
    output_keys: tuple[str, ...]
    deadline: float
    tasks: list = field(default_factory=list)
    size: int = 0


def batch_key(servable, signature_name: str, inputs: Mapping[str, np.ndarray], output_keys: Sequence[str],
              pad: bool = False):
    """Tasks with equal keys can share a batch; None when the inputs cannot be batched at all.

    Inner shapes must match, unless `pad` (pad_variable_length_inputs): then only ranks must.
    """
    sizes = {v.shape[0] if v.ndim else None for v in inputs.values()}
    if len(sizes) != 1 or None in sizes:
        return None, 0
    parts = tuple((name, inputs[name].dtype.str, inputs[name].ndim if pad else inputs[name].shape[1:])
                  for name in sorted(inputs))
    return (id(servable), signature_name, tuple(output_keys), parts), sizes.pop()


def pad_to_common_shape(parts: list) -> list:
    """pad_variable_length_inputs: pad each task's tensor at the end of every inner dimension up
    to the batch's largest, with that tensor's own first element, as TF Serving's BatchingSession
    does. Outputs are split along dimension 0 only, so they keep the padded sizes."""
    target = tuple(max(sizes) for sizes in zip(*(p.shape[1:] for p in parts)))
    padded = []
    for p in parts:
        widths = [(0, 0)] + [(0, t - s) for s, t in zip(p.shape[1:], target)]
        if any(w for _, w in widths):
            p = (np.pad(p, widths, mode="constant", constant_values=p.flat[0]) if p.size
                 else np.full((p.shape[0],) + target, b"" if p.dtype == object else 0, dtype=p.dtype))
        padded.append(p)
    return padded


class Batcher:
    def __init__(self, params: BatchingParams, clock: Callable[[], float] = time.monotonic,
                 on_batch: Optional[Callable[[int, int], None]] = None, start_threads: bool = True):
        self.params = params
        self._clock = clock
        self._on_batch = on_batch  # (batch size, padded size), for metrics
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._open: dict[tuple, list[_Batch]] = {}  # key -> batches not yet taken, oldest first
        self._stopping = False
        # Tasks that cannot be batched run alone here when their caller must not block.
        self._solo = ThreadPoolExecutor(max_workers=params.num_batch_threads, thread_name_prefix="batch-solo")
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        if start_threads:  # tests drive _take() and _execute() themselves, with a fake clock
            for t in self._threads:
                t.start()

    # ---- the request side ------------------------------------------------------------------
    def run(self, servable, signature_name: str, inputs: Mapping[str, np.ndarray],
            output_keys: Sequence[str], timeout_s: Optional[float] = None) -> dict[str, np.ndarray]:
        key, size = batch_key(servable, signature_name, inputs, output_keys, self.params.pad_variable_length_inputs)
        if key is None:
            return servable.run(signature_name, inputs, output_keys, timeout_s)
        future = self.submit(key, size, servable, signature_name, inputs, output_keys, timeout_s)
        try:
            return future.result(timeout=timeout_s)
        except TimeoutError:
            future.cancel()  # a task still queued is dropped from its batch
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded while waiting in the batch queue") from None

    def submit_run(self, servable, signature_name: str, inputs: Mapping[str, np.ndarray],
                   output_keys: Sequence[str], timeout_s: Optional[float] = None) -> Future:
        """Like run(), without blocking: the outputs land in the returned Future.

        The caller (an event loop) waits on the Future, so no thread is parked per request.
        """
        key, size = batch_key(servable, signature_name, inputs, output_keys, self.params.pad_variable_length_inputs)
        if key is None:
            return self._solo.submit(servable.run, signature_name, inputs, output_keys, timeout_s)
        return self.submit(key, size, servable, signature_name, inputs, output_keys, timeout_s)

    def submit(self, key, size, servable, signature_name, inputs, output_keys, timeout_s) -> Future:
        p = self.params
        if size > p.max_batch_size:
            raise invalid_argument(f"Task size {size} is larger than maximum input batch size {p.max_batch_size}")
        task = _Task(inputs, size, timeout_s)
        with self._lock:
            if self._stopping:
                raise ServingError(Code.UNAVAILABLE, "Batch scheduler is shutting down")
            batches = self._open.setdefault(key, [])
            batch = batches[-1] if batches else None
            opened = batch is None or batch.size + size > p.max_batch_size
            if opened:
                if len(batches) >= p.max_enqueued_batches:
                    raise ServingError(Code.UNAVAILABLE,
                                       "The batch scheduling queue to which this task was submitted is full")
                # One deadline per batch, fixed when its first task arrives.
                batch = _Batch(key, servable, signature_name, tuple(output_keys),
                               self._clock() + p.batch_timeout_micros / 1e6)
                batches.append(batch)
            batch.tasks.append(task)
            batch.size += size
            # A batch thread needs waking only for a new deadline or a full batch; waking it for
            # every task would hand it the GIL for nothing, dozens of times per batch.
            if opened or batch.size >= p.max_batch_size:
                self._ready.notify()
        return task.future

    # ---- the batch threads -----------------------------------------------------------------
    def _take(self) -> Optional[_Batch]:
        """Under the lock: the oldest batch that is full or past its deadline, else None."""
        now = self._clock()
        best = None
        for key, batches in self._open.items():
            head = batches[0]
            if head.size >= self.params.max_batch_size or now >= head.deadline or len(batches) > 1:
                if best is None or head.deadline < best.deadline:
                    best = head
        if best is not None:
            batches = self._open[best.key]
            batches.pop(0)
            if not batches:
                del self._open[best.key]
        return best

    def _next_deadline(self) -> Optional[float]:
        deadlines = [b[0].deadline for b in self._open.values()]
        return min(deadlines) if deadlines else None

    def _work(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._stopping and not self._open:
                        return
                    batch = self._take()
                    if batch is not None:
                        break
                    deadline = self._next_deadline()
                    self._ready.wait(None if deadline is None else max(0.0, deadline - self._clock()))
            self._execute(batch)

    def _execute(self, batch: _Batch) -> None:
        tasks = [t for t in batch.tasks if t.future.set_running_or_notify_cancel()]
        if not tasks:
            return
        size = sum(t.size for t in tasks)
        padded = self.params.padded_size(size)
        try:
            merged = {}
            for name in tasks[0].inputs:
                parts = [t.inputs[name] for t in tasks]
                if self.params.pad_variable_length_inputs:
                    parts = pad_to_common_shape(parts)
                if padded > size:  # TF Serving pads with copies of the first row
                    parts.append(np.repeat(parts[0][:1], padded - size, axis=0))
                merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            timeouts = [t.timeout_s for t in tasks if t.timeout_s is not None]
            outputs = batch.servable.run(batch.signature_name, merged, batch.output_keys,
                                         min(timeouts) if timeouts else None)
            for name, value in outputs.items():
                if value.ndim == 0 or value.shape[0] != padded:
                    raise ServingError(
                        Code.INTERNAL,
                        f"Batched output tensor {name}'s 0th dimension ({value.shape[0] if value.ndim else 'scalar'}) "
                        f"does not equal the sum of the 0th dimension sizes of the input tensors ({padded})",
                    )
        except Exception as exc:
            error = exc if isinstance(exc, ServingError) else ServingError(Code.INTERNAL, str(exc))
            for t in tasks:
                t.future.set_exception(error)
            return
        if self._on_batch is not None:
            self._on_batch(size, padded)
        offset = 0
        for t in tasks:
            t.future.set_result({k: v[offset:offset + t.size] for k, v in outputs.items()})
            offset += t.size

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._ready.notify_all()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=10)
        self._solo.shutdown(wait=True)
