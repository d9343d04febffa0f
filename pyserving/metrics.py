"""Prometheus metrics, named after TF Serving's (`/tensorflow/serving/x` -> `:tensorflow:serving:x`).

The observer the app hands to the data plane, the loader and the batcher (NullMetrics when
monitoring is off); it knows no protocol.

Exported through prometheus-client on the REST port when --monitoring_config_file enables
`prometheus_config` (default path /monitoring/prometheus/metrics). Counters keep TF Serving's
exact sample names (no `_total` suffix), so queries written for TF Serving read them unchanged;
prometheus-client would rename a `counter`-typed family, so they are exposed as `untyped`.

With workers (--pyserving_num_workers, pyserving/supervisor.py) every worker answers a scrape
with the sum over all of them: prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set by the supervisor per run, is where each worker's values live in mmap files; a scrape reads
them all with MultiProcessCollector). Histograms are summed by it as they are. The counters keep
their exact names by living in gauges with multiprocess_mode "sum" (a dead worker's counts stay
in the sum, as a counter's must; "livesum" would drop them) and are turned back into untyped
counters, and request_example_counts' exclusive buckets into a histogram, on the way out. One
process (no PROMETHEUS_MULTIPROC_DIR): everything as before.
"""
from __future__ import annotations

import bisect
import itertools
import os
import threading
import time

import prometheus_client
from prometheus_client import multiprocess
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

    def __init__(self, specs: dict[str, tuple[str, tuple[str, ...]]], shared: bool = False):
        self.specs = specs
        self._values: dict[str, dict[tuple, float]] = {name: {} for name in specs}
        self._lock = threading.Lock()
        # Workers: each count in a multiprocess "sum" gauge of the same name (see the module doc).
        self._gauges = {name: prometheus_client.Gauge(name, doc, labels, registry=None, multiprocess_mode="sum")
                        for name, (doc, labels) in specs.items()} if shared else None

    def inc(self, name: str, *labels: str, amount: float = 1.0) -> None:
        if self._gauges is not None:
            self._gauges[name].labels(*labels).inc(amount)
            return
        with self._lock:
            table = self._values[name]
            table[labels] = table.get(labels, 0.0) + amount

    def collect(self):
        with self._lock:
            snapshot = {name: dict(values) for name, values in self._values.items()}
        for name, (doc, label_names) in self.specs.items():
            metric = Metric(name, doc, "untyped")
            for labels, value in snapshot[name].items():
                metric.add_sample(name, dict(zip(label_names, labels)), value)
            yield metric


class _ExampleCounts(Collector):
    """:tensorflow:serving:request_example_counts as TF's monitoring::Sampler keeps it: a bucket
    holds the counts from the limit below it up to, not including, its own limit (so 2 examples
    land under le="4"), which prometheus-client's inclusive buckets would not reproduce."""

    NAME = PREFIX + "request_example_counts"
    CELLS = NAME + ":cells"  # workers: one "sum" gauge sample per model and bucket ("sum": the total)

    def __init__(self, shared: bool = False):
        self._cells: dict[str, tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()
        self._gauge = prometheus_client.Gauge(self.CELLS, "request_example_counts by bucket", ("model", "cell"),
                                              registry=None, multiprocess_mode="sum") if shared else None

    def add(self, model: str, count: int) -> None:
        if self._gauge is not None:
            self._gauge.labels(model, str(bisect.bisect_right(EXAMPLE_COUNT_LIMITS, count))).inc()
            self._gauge.labels(model, "sum").inc(count)
            return
        with self._lock:
            buckets, total = self._cells.setdefault(model, ([0] * (len(EXAMPLE_COUNT_LIMITS) + 1), [0.0]))
            buckets[bisect.bisect_right(EXAMPLE_COUNT_LIMITS, count)] += 1
            total[0] += count

    def collect(self):
        with self._lock:
            snapshot = {model: (list(buckets), total[0]) for model, (buckets, total) in self._cells.items()}
        yield self.family(snapshot)

    @classmethod
    def from_cells(cls, cells: Metric) -> Metric:
        """The histogram from the workers' summed cells gauge."""
        snapshot: dict[str, tuple[list[int], list[float]]] = {}
        for sample in cells.samples:
            buckets, total = snapshot.setdefault(sample.labels["model"],
                                                 ([0] * (len(EXAMPLE_COUNT_LIMITS) + 1), [0.0]))
            if sample.labels["cell"] == "sum":
                total[0] += sample.value
            else:
                buckets[int(sample.labels["cell"])] += int(sample.value)
        return cls.family({model: (buckets, total[0]) for model, (buckets, total) in snapshot.items()})

    @classmethod
    def family(cls, snapshot) -> Metric:
        metric = HistogramMetricFamily(cls.NAME, "The number of tensorflow.Examples per request.", labels=["model"])
        for model, (buckets, total) in snapshot.items():
            cumulative = list(itertools.accumulate(buckets))
            limits = [str(limit) for limit in EXAMPLE_COUNT_LIMITS] + ["+Inf"]
            metric.add_metric([model], list(zip(limits, cumulative)), sum_value=total)
        return metric


class _Workers(Collector):
    """Every worker's values, summed (prometheus-client's MultiProcessCollector), with the counters
    and example counts put back in the shape one process exposes them in."""

    def __init__(self, path: str, counter_names):
        self._path = path
        self._counters = set(counter_names)

    def collect(self):
        for metric in multiprocess.MultiProcessCollector(None, self._path).collect():
            if metric.name in self._counters:
                untyped = Metric(metric.name, metric.documentation, "untyped")
                untyped.samples = metric.samples
                yield untyped
            elif metric.name == _ExampleCounts.CELLS:
                yield _ExampleCounts.from_cells(metric)
            else:
                yield metric


class ServingMetrics:
    def __init__(self):
        # Workers: PROMETHEUS_MULTIPROC_DIR, which prometheus-client reads when it is imported.
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        shared = self.multiprocess_dir is not None
        self.registry = prometheus_client.CollectorRegistry()
        self.counters = _Counters({
            PREFIX + "request_count": ("Total number of requests, by model and status.", ("model_name", "status")),
            PREFIX + "request_example_count_total": ("Examples in classify/regress requests.", ("model",)),
            PREFIX + "load_attempt_count": ("Model version load attempts, by outcome.",
                                            ("model_name", "version", "status")),
            PREFIX + "unload_count": ("Model versions unloaded.", ("model_name",)),
        }, shared)
        self.registry.register(self.counters)
        self.example_counts = _ExampleCounts(shared)
        self.registry.register(self.example_counts)
        if shared:  # a scrape reads every worker's files, not this process's objects
            self._scraped = prometheus_client.CollectorRegistry()
            self._scraped.register(_Workers(self.multiprocess_dir, self.counters.specs))
        else:
            self._scraped = self.registry

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
        return prometheus_client.generate_latest(self._scraped)


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
