"""Prometheus metrics, named after TF Serving's (`/tensorflow/serving/x` -> `:tensorflow:serving:x`).

The observer the app hands to the data plane, the loader and the batcher (NullMetrics when
monitoring is off); it knows no protocol.

Exported through prometheus-client on the REST port when --monitoring_config_file enables
`prometheus_config` (default path /monitoring/prometheus/metrics). Counters keep TF Serving's
exact sample names (no `_total` suffix), so queries written for TF Serving read them unchanged;
prometheus-client would rename a `counter`-typed family, so they are exposed as `untyped`.
"""
from __future__ import annotations

import bisect
import itertools
import threading
import time

import prometheus_client
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = ":tensorflow:serving:"
# Microsecond buckets (TF Serving's latency histograms are in microseconds too).
LATENCY_BUCKETS_US = tuple(10 * 1.8 ** i for i in range(33))
# batching_util.h: Buckets::Exponential(1, 2, 14), i.e. 1, 2, 4, ... 8192.
BATCH_BUCKETS = tuple(float(2 ** i) for i in range(14))
# util.cc's request_example_counts: Buckets::Exponential(1, 2, 15), the limits 1, 2, 4, ..., 16384.
EXAMPLE_COUNT_LIMITS = tuple(2**i for i in range(15))

prometheus_client.disable_created_metrics()


class _Counters(Collector):
    """Counters exposed under their exact names (prometheus-client would append `_total`)."""

    def __init__(self, specs: dict[str, tuple[str, tuple[str, ...]]]):
        self._specs = specs
        self._values: dict[str, dict[tuple, float]] = {name: {} for name in specs}
        self._lock = threading.Lock()

    def inc(self, name: str, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            table = self._values[name]
            table[labels] = table.get(labels, 0.0) + amount

    def collect(self):
        with self._lock:
            snapshot = {name: dict(values) for name, values in self._values.items()}
        for name, (doc, label_names) in self._specs.items():
            metric = Metric(name, doc, "untyped")
            for labels, value in snapshot[name].items():
                metric.add_sample(name, dict(zip(label_names, labels)), value)
            yield metric


class _ExampleCounts(Collector):
    """:tensorflow:serving:request_example_counts as TF's monitoring::Sampler keeps it: a bucket
    holds the counts from the limit below it up to, not including, its own limit (so 2 examples
    land under le="4"), which prometheus-client's inclusive buckets would not reproduce."""

    NAME = PREFIX + "request_example_counts"

    def __init__(self):
        self._cells: dict[str, tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()

    def add(self, model: str, count: int) -> None:
        with self._lock:
            buckets, total = self._cells.setdefault(model, ([0] * (len(EXAMPLE_COUNT_LIMITS) + 1), [0.0]))
            buckets[bisect.bisect_right(EXAMPLE_COUNT_LIMITS, count)] += 1
            total[0] += count

    def collect(self):
        metric = HistogramMetricFamily(self.NAME, "The number of tensorflow.Examples per request.", labels=["model"])
        with self._lock:
            snapshot = {model: (list(buckets), total[0]) for model, (buckets, total) in self._cells.items()}
        for model, (buckets, total) in snapshot.items():
            cumulative = list(itertools.accumulate(buckets))
            limits = [str(limit) for limit in EXAMPLE_COUNT_LIMITS] + ["+Inf"]
            metric.add_metric([model], list(zip(limits, cumulative)), sum_value=total)
        yield metric


class ServingMetrics:
    def __init__(self):
        self.registry = prometheus_client.CollectorRegistry()
        self.counters = _Counters({
            PREFIX + "request_count": ("Total number of requests, by model and status.", ("model_name", "status")),
            PREFIX + "request_example_count_total": ("Examples in classify/regress requests.", ("model",)),
            PREFIX + "load_attempt_count": ("Model version load attempts, by outcome.",
                                            ("model_name", "version", "status")),
            PREFIX + "unload_count": ("Model versions unloaded.", ("model_name",)),
        })
        self.registry.register(self.counters)
        self.example_counts = _ExampleCounts()
        self.registry.register(self.example_counts)

        def histogram(name, doc, labels, buckets=LATENCY_BUCKETS_US):
            return prometheus_client.Histogram(PREFIX + name, doc, labels, buckets=buckets, registry=self.registry)

        self.request_latency = histogram("request_latency", "Request latency in microseconds.",
                                         ("model_name", "API", "entrypoint"))
        self.runtime_latency = histogram("runtime_latency", "Model run latency in microseconds.",
                                         ("model_name", "signature_name", "runtime"))
        self.load_latency = histogram("load_latency", "Model version load latency in microseconds.", ("model_name",))
        self.warmup_latency = histogram("model_warmup_latency", "Warmup latency in microseconds.",
                                        ("model_path", "status"))
        # batching_util.h: RecordProcessedBatchSize has no labels; RecordPaddingSize is labelled
        # with the batch size after padding.
        self.batch_size = histogram("batching_session:processed_batch_size",
                                    "Tracks the batch size distribution on processing.", (), buckets=BATCH_BUCKETS)
        self.padding_size = histogram("batching_session:padding_size",
                                      "Tracks the padding size distribution on batches.", ("execution_batch_size",),
                                      buckets=BATCH_BUCKETS)
        self._load_started: dict[tuple[str, int], float] = {}

    # ---- hooks -----------------------------------------------------------------------------
    def observe_request(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        self.counters.inc(PREFIX + "request_count", model or "", status)
        self.request_latency.labels(model or "", api, entrypoint).observe(seconds * 1e6)

    def observe_examples(self, model: str, count: int) -> None:
        self.counters.inc(PREFIX + "request_example_count_total", model, amount=count)
        self.example_counts.add(model, count)

    def observe_batch(self, size: int, padded: int) -> None:
        self.batch_size.observe(padded)
        self.padding_size.labels(str(padded)).observe(padded - size)

    def on_state_change(self, model: str, version: int, state, error) -> None:
        name = getattr(state, "name", str(state))
        key = (model, version)
        if name == "LOADING":
            self._load_started[key] = time.monotonic()
        elif name == "AVAILABLE":
            started = self._load_started.pop(key, None)
            self.counters.inc(PREFIX + "load_attempt_count", model, str(version), "OK")
            if started is not None:
                self.load_latency.labels(model).observe((time.monotonic() - started) * 1e6)
        elif name == "END":
            if self._load_started.pop(key, None) is not None:  # ended while loading: a failed load
                self.counters.inc(PREFIX + "load_attempt_count", model, str(version),
                                  error.code.name if error is not None else "CANCELLED")
            else:
                self.counters.inc(PREFIX + "unload_count", model)

    def observe_warmup(self, path: str, status: str, seconds: float) -> None:
        """`status` as TF Serving's Status::ToString() words it: "OK" or "CODE: message"."""
        self.warmup_latency.labels(path, status).observe(seconds * 1e6)

    def timed(self, runner):
        """The runner, with each model run timed into runtime_latency until its Future completes."""
        return _TimedRunner(runner, self.runtime_latency)

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


class _TimedRunner:
    def __init__(self, runner, histogram, runtime: str = "TF1"):
        self._runner = runner
        self._histogram = histogram
        self._runtime = runtime

    def submit(self, request, inline: bool = False):
        started = time.perf_counter()
        future = self._runner.submit(request, inline)
        future.add_done_callback(lambda _: self._histogram.labels(
            getattr(request.servable, "model_name", ""), request.signature_name, self._runtime,
        ).observe((time.perf_counter() - started) * 1e6))
        return future


class NullMetrics:
    """No monitoring configured: every hook does nothing and runners stay unwrapped."""

    def observe_request(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        pass

    def observe_examples(self, model: str, count: int) -> None:
        pass

    def observe_batch(self, size: int, padded: int) -> None:
        pass

    def observe_warmup(self, path: str, status: str, seconds: float) -> None:
        pass

    def on_state_change(self, model: str, version: int, state, error) -> None:
        pass

    def timed(self, runner):
        return runner
