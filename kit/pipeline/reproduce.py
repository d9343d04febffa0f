"""`inv reproduce`'s steps, written once: the run and the dry run go through the same list, one
with a server that starts and stops, the other with one that is only shown."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator

from invoke.exceptions import Exit

from kit import model_config
from kit.pipeline import query, train
from kit.serve import backends
from kit.serve import server as serving


@dataclass(frozen=True)
class Options:
    backend: str = "native"
    svm_rows: int = 0
    svm_epochs: int = 20
    mnist_iterations: int = 1000
    mnist_data_dir: str = ""
    grpc_port: int = 8500
    rest_port: int = 8501
    num_tests: int = 1000


Server = Callable[[Options], ContextManager[None]]


def steps(o: Options, run: train.Runner, server: Server, dry_run: bool = False) -> None:
    """Train both models, serve them, query them over REST and gRPC; the server stops on the way out."""
    data_dir = o.mnist_data_dir or None
    train.train_svm(run, rows=o.svm_rows, epochs=o.svm_epochs, dry_run=dry_run)
    train.train_mnist(run, iterations=o.mnist_iterations, data_dir=data_dir, dry_run=dry_run)
    with server(o):
        query.query_svm(run, o.rest_port)
        query.query_mnist(run, o.grpc_port, o.num_tests, data_dir=data_dir)


def live_server(run_invoke) -> Server:
    """The real serve step: models.config written, the server started, stopped by its pid at the end."""
    @contextlib.contextmanager
    def server(o: Options) -> Iterator[None]:
        model_config.set_models_uri("")  # the models it just trained, as `inv serve` without --models-uri
        model_config.served()
        try:
            serving.start(o.backend, o.grpc_port, o.rest_port, run=run_invoke)
        except RuntimeError as exc:
            raise Exit(str(exc)) from None
        try:
            yield
        finally:
            serving.stop(run=run_invoke)
    return server


def shown_server(say: Callable[[str], None] = print) -> Server:
    """The dry run's serve step: its command and how it is stopped, printed."""
    @contextlib.contextmanager
    def server(o: Options) -> Iterator[None]:
        say("$ " + " ".join(serving.serve_command(o.backend, grpc_port=o.grpc_port, rest_port=o.rest_port)))
        yield
        say("# then the server is stopped by its pid" + backends.get(o.backend).stop_note)
    return server
