"""Command line: TF Serving's flags (`--name=value`, bools also bare `--name`) -> Settings, and
`main`, the console scripts `tensorflow_model_server` and `pyserving`.

A flag TF Serving does not have, or a bad value, stops start-up at once with one line naming
it (TF Serving itself only warns about unknown flags; a typo that silently changes nothing is
worse for a drop-in).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
from importlib import metadata
from typing import Optional, Sequence

from pyserving.errors import ServingError
from pyserving.flags import BY_NAME, FLAGS
from pyserving.settings import Settings
from pyserving.worker import Worker, leave, watch_parent

logger = logging.getLogger("pyserving")

PROGRAM_VERSION = "2.21.0-pyserving"


class UsageError(Exception):
    pass


def _convert(flag, raw: str | None):
    if flag.type is bool:
        if raw is None or raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        raise UsageError(f"--{flag.name}: expected true or false, got '{raw}'")
    if raw is None:
        raise UsageError(f"--{flag.name} needs a value: --{flag.name}=VALUE (a value after a space is not read)")
    if flag.type is int:
        try:
            return int(raw, 10)
        except ValueError:
            raise UsageError(f"--{flag.name}: expected an integer, got '{raw}'") from None
    if flag.type is float:
        try:
            return float(raw)
        except ValueError:
            raise UsageError(f"--{flag.name}: expected a number, got '{raw}'") from None
    return raw


def parse(argv: Sequence[str]) -> tuple[Settings, tuple[str, ...]]:
    """argv (without the program name) -> (Settings, names of flags given explicitly)."""
    values = {}
    for arg in argv:
        if not arg.startswith("-") or arg in ("-", "--"):
            raise UsageError(f"unknown argument: {arg}")
        name, sep, raw = arg.lstrip("-").partition("=")
        flag = BY_NAME.get(name)
        if flag is None:
            raise UsageError(f"unknown flag: --{name} (tensorflow_model_server has no such flag)")
        values[name] = _convert(flag, raw if sep else None)
    return Settings(**values), tuple(values)


def validate(settings: Settings) -> list[str]:
    """Cross-flag rules TF Serving enforces at start-up; returns errors (empty when fine)."""
    errors = []
    if not settings.model_config_file and not settings.model_base_path:
        errors.append("Both server_options.model_base_path and server_options.model_config_file are empty!")
    if settings.port == 0 and not settings.grpc_socket_path:
        errors.append("--port=0 disables gRPC over TCP; then --grpc_socket_path is required")
    if settings.batching_parameters_file and not settings.enable_batching:
        errors.append("--batching_parameters_file was given without --enable_batching")
    if min(settings.tensorflow_session_parallelism, settings.tensorflow_intra_op_parallelism,
           settings.tensorflow_inter_op_parallelism) > 0:
        errors.append("Either configure --tensorflow_session_parallelism or the (--tensorflow_intra_op_parallelism, "
                      "--tensorflow_inter_op_parallelism) pair; not both")
    if settings.use_alts_credentials:
        errors.append("--use_alts_credentials: ALTS is not available in pyserving")
    if settings.pyserving_listen_address:
        try:
            ipaddress.ip_address(settings.pyserving_listen_address)
        except ValueError:
            errors.append(f"--pyserving_listen_address: expected an IP address such as 127.0.0.1, got "
                          f"'{settings.pyserving_listen_address}'")
    if settings.num_workers < 1:
        errors.append(f"--pyserving_num_workers: expected a number of workers (1 or more) or auto, got "
                      f"'{settings.pyserving_num_workers}'")
    elif settings.num_workers > 1 and settings.grpc_socket_path:
        errors.append("--grpc_socket_path cannot be shared by several workers (--pyserving_num_workers): "
                      "a UNIX socket has one listener")
    for name in ("port", "rest_api_port", "rest_api_num_threads", "grpc_max_threads", "max_request_size_bytes"):
        if getattr(settings, name) < 0:
            errors.append(f"--{name} must not be negative")
    return errors


def no_effect_warnings(settings: Settings, given: Sequence[str]) -> list[str]:
    """One line for each flag given that pyserving accepts but does not act on."""
    return [f"--{name} has no effect in pyserving (accepted for compatibility)" for name in given
            if BY_NAME[name].support == "no-effect" and getattr(settings, name) != BY_NAME[name].default]


def usage() -> str:
    lines = ["usage: tensorflow_model_server [--flag=value ...]", "Flags:"]
    for f in FLAGS:
        note = {"yes": "", "extension": "  [pyserving only]", "refused": "  [refused when set: not in pyserving]"}.get(
            f.support, "  [accepted, no effect in pyserving]")
        lines.append(f"\t--{f.name}={f.default!r:<12} {f.type.__name__}\t{f.help}{note}")
    return "\n".join(lines)


def version_text() -> str:
    try:
        tf_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf_version = "not installed"
    return f"TensorFlow ModelServer: {PROGRAM_VERSION}\nTensorFlow Library: {tf_version}"


def parse_or_exit(argv: Sequence[str]):
    if any(a in ("--help", "-help", "-h", "--h") for a in argv):
        print(usage())
        sys.exit(255)  # TF Serving's main returns -1 after printing usage
    try:
        settings, given = parse(argv)
    except UsageError as exc:
        print(f"tensorflow_model_server: {exc}", file=sys.stderr)
        sys.exit(255)
    if settings.version:
        print(version_text())
        sys.exit(0)
    errors = validate(settings)
    if errors:
        print(f"tensorflow_model_server: {errors[0]}", file=sys.stderr)
        sys.exit(255)
    return settings, given


def _setup_logging(tag: str = "") -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, datefmt="%Y-%m-%d %H:%M:%S",
                        format=f"%(asctime)s.%(msecs)03d: %(levelname).1s %(name)s{tag}] %(message)s")
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def fail(exc: BaseException) -> int:
    if hasattr(exc, "parser_line"):  # a malformed text proto: protobuf's line first, as TF Serving logs it
        logger.error(exc.parser_line)
    print(f"Failed to start server. Error: {_error_text(exc)}", file=sys.stderr)
    return 255


def _error_text(exc: BaseException) -> str:
    return f"{exc.code.name}: {exc.message}" if isinstance(exc, ServingError) else str(exc)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    settings, given = parse_or_exit(argv)
    worker = Worker.from_env()  # set by a supervisor (pyserving/supervisor.py) for its workers
    _setup_logging(f" worker-{worker.slot}" if worker is not None else "")
    if worker is None:  # the supervisor, or a lone server: said once
        for warning in no_effect_warnings(settings, given):
            logger.warning(warning)
    if worker is None and settings.num_workers > 1:
        from pyserving import supervisor  # imports neither TensorFlow nor gRPC

        return supervisor.run(settings, argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if worker is not None:
        watch_parent(worker, stop.set)
    from pyserving.app import ModelServer  # TensorFlow and the servers load from here on

    try:
        server = ModelServer(settings, worker)
    except ServingError as exc:
        return fail(exc)
    failure: list[BaseException] = []
    started = threading.Event()

    def start() -> None:
        try:
            server.start()
        except BaseException as exc:  # reported below, in the main thread
            failure.append(exc)
        started.set()

    # Start in a thread so that a signal during a long load still stops us cleanly.
    threading.Thread(target=start, name="startup", daemon=True).start()
    while not stop.wait(0.2) and not started.is_set():
        pass
    if failure and not stop.is_set():
        server.stop(0)
        return fail(failure[0])
    while not stop.wait(0.5):
        pass
    logger.info("Shutting down: finishing in-flight requests")
    server.stop()
    logger.info("Server stopped")
    if worker is not None:
        leave(worker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
