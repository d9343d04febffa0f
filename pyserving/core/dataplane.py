"""The data plane: the one object both protocols call (MLServer's DataPlane, TF Serving's
Predict(run_options, core, request, response)).

A Predict is two steps, so that the protocol edge decodes its wire format against the served
signature and the core never calls back into a protocol:

    with data_plane.prepare(spec) as prepared:           # leases the version, finds the signature
        inputs = codec.decode(body, prepared.signature)
        future = prepared.submit(inputs, output_filter, timeout_s)
    outputs = <wait for or await the future>            # the version stays leased until the run ends

Classify, Regress and MultiInference take tf.Example bytes, need no signature to decode, and
run to completion in the caller's thread.
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from pyserving.core import signatures
from pyserving.core.runners import Runner, wait
from pyserving.core.server_core import ServerCore
from pyserving.errors import Code, ServingError, invalid_argument, not_found
from pyserving.types import ModelConfig, ModelSpec, Servable, SignatureInfo, VersionStatus

# (model, version or None, this process's statuses) -> the statuses to answer
StatusView = Callable[[str, Optional[int], list[VersionStatus]], list[VersionStatus]]


@dataclass(frozen=True)
class Description:
    """One model version's signature as the Open Inference Protocol's metadata shows it."""
    model_name: str
    version: int
    versions: tuple[int, ...]  # every AVAILABLE version, ascending
    platform: str
    signature_name: str
    signature: SignatureInfo


@dataclass(frozen=True)
class Result:
    model_name: str
    version: int
    signature_name: str
    value: object  # outputs dict, classifications, regression values, or a SignatureDefMap


class Prepared:
    """A Predict's version and signature, leased until its run ends (or, if nothing is
    submitted, until the `with` block exits)."""

    __slots__ = ("model_name", "version", "signature_name", "signature", "_servable", "_release", "_runner",
                 "_submitted")

    def __init__(self, model_name: str, version: int, signature_name: str, signature: SignatureInfo,
                 servable: Servable, release: Callable[[], None], runner: Runner):
        self.model_name = model_name
        self.version = version
        self.signature_name = signature_name
        self.signature = signature
        self._servable = servable
        self._release = release
        self._runner = runner
        self._submitted = False

    def __enter__(self) -> "Prepared":
        return self

    def __exit__(self, *exc) -> None:
        if not self._submitted:
            self._release()

    def submit(self, inputs: signatures.Inputs, output_filter: Sequence[str] = (),
               timeout_s: Optional[float] = None, inline: bool = False) -> Future:
        """Check the decoded inputs and hand the run to the runner; its outputs land in the
        Future. `inline`: the caller may block, so a run that would go to a pool runs here."""
        request = signatures.predict_request(self._servable, self.signature_name, self.signature, inputs,
                                             output_filter, timeout_s)
        future = self._runner.submit(request, inline)
        self._submitted = True
        future.add_done_callback(lambda _: self._release())
        return future


class DataPlane:
    def __init__(self, core: ServerCore, runner: Runner, metrics, check_method_name: bool = False,
                 status_view: Optional[StatusView] = None):
        self._core = core
        # With workers (pyserving/worker.py): this process's statuses merged with the other workers'.
        self._status_view = status_view
        self._manager = core.manager
        self._runner = runner
        self._metrics = metrics
        self._check_method_name = check_method_name

    # ---- model status and config -------------------------------------------------------
    def status(self, name: str, version: Optional[int] = None) -> list[VersionStatus]:
        found = self._manager.status(name, version)
        return found if self._status_view is None else self._status_view(name, version, found)

    def metadata(self, spec: ModelSpec) -> Result:
        with self._manager.servable(spec) as (version, servable):
            return Result(spec.name, version, "", servable.signature_def_map())

    def describe(self, spec: ModelSpec) -> Description:
        """The version a spec names and its signature (serving_default unless the spec names one)."""
        with self._manager.servable(spec) as (version, servable):
            key, sig = signatures.predict_signature(servable, spec.signature_name)
            platform = getattr(servable, "platform", "tensorflow_savedmodel")
        versions = tuple(sorted(self._manager.available_versions(spec.name)))
        return Description(spec.name, version, versions, platform, key, sig)

    def model_ready(self, spec: ModelSpec) -> bool:
        """Whether the version a spec names is AVAILABLE; NOT_FOUND for a model not configured,
        INVALID_ARGUMENT for an unknown label (as a request naming it gets)."""
        if spec.name not in self._manager.model_names():
            raise not_found(f"Model {spec.name} is not configured")
        try:
            with self._manager.servable(spec):
                return True
        except ServingError as exc:
            if exc.code == Code.NOT_FOUND:
                return False
            raise

    def server_ready(self) -> bool:
        """Every configured model has a version AVAILABLE."""
        names = self._core.configs
        return all(self._manager.available_versions(name) for name in names)

    def reload(self, configs: Sequence[ModelConfig]) -> None:
        self._core.reload(configs)

    # ---- inference ---------------------------------------------------------------------
    def prepare(self, spec: ModelSpec) -> Prepared:
        version, servable, release = self._manager.lease(spec)
        try:
            key, sig = signatures.predict_signature(servable, spec.signature_name, self._check_method_name)
        except BaseException:
            release()
            raise
        return Prepared(spec.name, version, key, sig, servable, release, self._runner)

    def classify(self, spec: ModelSpec, examples: Sequence[bytes], timeout_s: Optional[float] = None) -> Result:
        return self._examples(spec, signatures.CLASSIFY_METHOD, examples, timeout_s)

    def regress(self, spec: ModelSpec, examples: Sequence[bytes], timeout_s: Optional[float] = None) -> Result:
        return self._examples(spec, signatures.REGRESS_METHOD, examples, timeout_s)

    def _examples(self, spec: ModelSpec, method: str, examples: Sequence[bytes], timeout_s) -> Result:
        # No example count here: TF Serving 2.20 records it for MultiInference only (below).
        with self._manager.servable(spec) as (version, servable):
            key, sig = signatures.examples_signature(servable, spec.signature_name, method, self._check_method_name)
            return self._run_examples(spec.name, version, servable, key, sig, method, examples, timeout_s)

    def _run_examples(self, name, version, servable, key, sig, method, examples, timeout_s) -> Result:
        request = signatures.examples_request(servable, key, sig, examples, timeout_s)
        outputs = wait(self._runner.submit(request, inline=True), timeout_s)
        return Result(name, version, key, signatures.READERS[method](outputs, len(examples)))

    def multi_inference(self, tasks: Sequence[tuple[ModelSpec, str]], examples: Sequence[bytes],
                        timeout_s: Optional[float] = None) -> list[Result]:
        """All tasks run on the one servable version the first task's ModelSpec names
        (multi_inference_helper.cc GetModelSpecFromRequest), looked up before the tasks are checked."""
        if not tasks:
            # No task: the helper looks up an empty ModelSpec, which ServerCore refuses so.
            raise invalid_argument("ModelSpec has no name specified.")
        first = tasks[0][0]
        with self._manager.servable(first) as (version, servable):
            found = signatures.multi_inference_tasks(
                servable, [(spec.name, spec.signature_name, method) for spec, method in tasks],
                self._check_method_name)
            results = [self._run_examples(first.name, version, servable, key, sig, method, examples, timeout_s)
                       for (_spec, method), (key, sig) in zip(tasks, found)]
        # Where TF Serving records it (multi_inference.cc): after the tasks were validated and run,
        # so a refused or failed request counts no examples; Classify and Regress record none.
        self._metrics.observe_examples(first.name, len(examples))
        return results
