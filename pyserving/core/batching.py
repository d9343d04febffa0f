"""Dynamic batching: concurrent requests to one servable and signature become one TF call.

Like TF Serving's BatchingSession over a shared BasicBatchScheduler: tasks whose inputs can be
merged (same servable, signature, outputs, dtypes and inner shapes) are concatenated along
dimension 0, padded up to the next allowed batch size, run once, and split back. A batch is
closed when it is full or when its one deadline (set when its first task arrives) passes; a
full queue answers UNAVAILABLE at once instead of queueing without bound. Inputs that cannot be
batched (no shared dimension 0) run alone, exactly as they would without batching.

With enable_large_batch_splitting, a task too big for the room left in the open batch is split
along dimension 0 over that batch and new ones of at most max_execution_batch_size, and its
outputs are joined back (TF's SharedBatchScheduler). A servable may have queue options of its
own (--enable_per_model_batching_parameters), or none: then it is not batched at all.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from bisect import bisect_left
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import numpy as np

from pyserving.core.runners import run_now
from pyserving.errors import Code, ServingError, invalid_argument
from pyserving.types import RunRequest

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
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: Optional[int] = None  # with splitting; unset: max_batch_size

    def __post_init__(self):
        if self.max_batch_size < 1 or self.max_enqueued_batches < 1 or self.num_batch_threads < 1:
            raise invalid_argument("max_batch_size, max_enqueued_batches and num_batch_threads must be positive")
        if self.max_execution_batch_size is not None and self.max_execution_batch_size < 1:
            raise invalid_argument("max_execution_batch_size must be positive")
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
                raise invalid_argument("allowed_batch_sizes must be positive and strictly increasing")
            if sizes[-1] != self.max_batch_size:
                raise invalid_argument("Last entry in allowed_batch_sizes must match max_batch_size; "
                                       f"last entry was {sizes[-1]}; expected {self.max_batch_size}")

    @property
    def execution_batch_size(self) -> int:
        """The most rows one run carries: max_batch_size, or max_execution_batch_size when large
        tasks are split (max_batch_size then only caps a task)."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    def padded_size(self, size: int) -> int:
        if not self.allowed_batch_sizes or size > self.allowed_batch_sizes[-1]:
            return size  # TF Serving too runs a batch above the largest allowed size unpadded
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
    params: BatchingParams
    tasks: list = field(default_factory=list)
    size: int = 0


def split_sizes(size: int, room: int, limit: int) -> list[int]:
    """How a task of `size` rows is split when the open batch has `room` left and a batch holds
    `limit`: the open batch is filled first, then new batches (TF's SplitInputTask)."""
    if size <= room:
        return [size]
    pieces = [room] if room > 0 else []
    rest = size - max(room, 0)
    while rest > 0:
        pieces.append(min(rest, limit))
        rest -= limit
    return pieces


class _SplitTask(Future):
    """A task split over several batches: done once every piece is, with the pieces' outputs
    joined in order, or the first failure. Cancelling it drops the pieces not yet run, and it
    ends only once the ones already running are done, so the servable stays leased meanwhile."""

    def __init__(self, pieces: list[Future]):
        super().__init__()
        self._pieces = pieces
        self._left = len(pieces)
        self._left_lock = threading.Lock()
        for piece in pieces:
            piece.add_done_callback(self._piece_done)

    def cancel(self) -> bool:
        dropped = [piece.cancel() for piece in self._pieces]
        return all(dropped) and super().cancel()

    def _piece_done(self, _piece: Future) -> None:
        with self._left_lock:
            self._left -= 1
            if self._left:
                return
        if not self.set_running_or_notify_cancel():
            return
        for piece in self._pieces:
            if piece.cancelled():
                self.set_exception(ServingError(Code.CANCELLED, "A part of the split task was cancelled"))
                return
            if piece.exception() is not None:
                self.set_exception(piece.exception())
                return
        outputs = [piece.result() for piece in self._pieces]
        try:
            self.set_result({k: np.concatenate([o[k] for o in outputs], axis=0) for k in outputs[0]})
        except ValueError as exc:  # e.g. pieces padded to different inner shapes
            self.set_exception(ServingError(Code.INTERNAL, f"Cannot join the outputs of a split task: {exc}"))


def batch_key(request: RunRequest, pad: bool = False):
    """Tasks with equal keys can share a batch; None when the inputs cannot be batched at all.

    Inner shapes must match, unless `pad` (pad_variable_length_inputs): then only ranks must.
    """
    inputs = request.inputs
    sizes = {v.shape[0] if v.ndim else None for v in inputs.values()}
    if len(sizes) != 1 or None in sizes:
        return None, 0
    parts = tuple((name, inputs[name].dtype.str, inputs[name].ndim if pad else inputs[name].shape[1:])
                  for name in sorted(inputs))
    return (id(request.servable), request.signature_name, request.output_keys, parts), sizes.pop()


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
                 on_batch: Callable[[int, int], None] = lambda size, padded: None, start_threads: bool = True,
                 solo_threads: Optional[int] = None):
        self.params = params
        # Queue options of servables that have their own (None: not batched); weak, so an
        # unloaded version's entry goes with it.
        self._own_params: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._clock = clock
        self._on_batch = on_batch  # (batch size, padded size), for metrics
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._open: dict[tuple, list[_Batch]] = {}  # key -> batches not yet taken, oldest first
        self._stopping = False
        # Tasks that cannot be batched run alone here when their caller must not block.
        self._solo = ThreadPoolExecutor(max_workers=solo_threads or params.num_batch_threads,
                                        thread_name_prefix="batch-solo")
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        if start_threads:  # tests drive _take() and _execute() themselves, with a fake clock
            for t in self._threads:
                t.start()

    # ---- the request side ------------------------------------------------------------------
    def set_params(self, servable, params: Optional[BatchingParams]) -> None:
        """Queue options for one servable's batches instead of the server's; None: its requests
        are not batched."""
        self._own_params[servable] = params

    def params_for(self, servable) -> Optional[BatchingParams]:
        return self._own_params.get(servable, self.params)

    def submit(self, request: RunRequest, inline: bool = False) -> Future:
        """The run's outputs land in the returned Future. A request that cannot share a batch
        (no common dimension 0, or a servable that is not batched) runs alone: in the caller
        when `inline`, else on the solo pool; the others queue for their batch."""
        params = self.params_for(request.servable)
        key, size = (None, 0) if params is None else batch_key(request, params.pad_variable_length_inputs)
        if key is None:
            return run_now(request) if inline else self._solo.submit(request.run)
        return self._enqueue(key, size, request, params)

    def _enqueue(self, key, size: int, request: RunRequest, params: Optional[BatchingParams] = None) -> Future:
        p = params or self.params
        if size > p.max_batch_size:
            raise invalid_argument(f"Task size {size} is larger than maximum input batch size {p.max_batch_size}")
        limit = p.execution_batch_size
        with self._lock:
            if self._stopping:
                raise ServingError(Code.UNAVAILABLE, "Batch scheduler is shutting down")
            batches = self._open.get(key, [])
            room = limit - batches[-1].size if batches else 0
            pieces = split_sizes(size, room, limit) if p.enable_large_batch_splitting else [size]
            new_batches = len(pieces) - (1 if pieces[0] <= room else 0)
            if len(batches) + new_batches > p.max_enqueued_batches:
                raise ServingError(Code.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted is full")
            self._open[key] = batches
            tasks, offset = [], 0
            for rows in pieces:
                batch = batches[-1] if batches else None
                opened = batch is None or batch.size + rows > limit
                if opened:  # one deadline per batch, fixed when its first task arrives
                    batch = _Batch(key, request.servable, request.signature_name, request.output_keys,
                                   self._clock() + p.batch_timeout_micros / 1e6, p)
                    batches.append(batch)
                inputs = request.inputs
                part = inputs if len(pieces) == 1 else {k: v[offset:offset + rows] for k, v in inputs.items()}
                task = _Task(part, rows, request.timeout_s)
                batch.tasks.append(task)
                batch.size += rows
                tasks.append(task)
                offset += rows
                # A batch thread needs waking only for a new deadline or a full batch; waking it
                # for every task would hand it the GIL for nothing, dozens of times per batch.
                if opened or batch.size >= limit:
                    self._ready.notify()
        return tasks[0].future if len(tasks) == 1 else _SplitTask([t.future for t in tasks])

    # ---- the batch threads -----------------------------------------------------------------
    def _take(self) -> Optional[_Batch]:
        """Under the lock: the oldest batch that is full or past its deadline, else None."""
        now = self._clock()
        best = None
        for batches in self._open.values():
            head = batches[0]
            if head.size >= head.params.execution_batch_size or now >= head.deadline or len(batches) > 1:
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
        padded = batch.params.padded_size(size)
        try:
            merged = {}
            for name in tasks[0].inputs:
                parts = [t.inputs[name] for t in tasks]
                if batch.params.pad_variable_length_inputs:
                    parts = pad_to_common_shape(parts)
                if padded > size:  # TF Serving pads with copies of the first row
                    parts.append(np.repeat(parts[0][:1], padded - size, axis=0))
                merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            timeouts = [t.timeout_s for t in tasks if t.timeout_s is not None]
            outputs = RunRequest(batch.servable, batch.signature_name, merged, batch.output_keys,
                                 min(timeouts) if timeouts else None).run()
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
