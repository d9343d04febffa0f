"""Plain helpers shared by the test modules: paths, servers (in-process and live), calls, waits.

Fixtures live in the conftest.py files and use these; test modules import from here and never
from one another (nor from a conftest). This module imports nothing heavy at import time
(no TensorFlow, no gRPC): tests/kit imports the conftest that imports it.
"""
from __future__ import annotations

import gc
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Sequence

from kit.process import ServerFailed, ServerProcess, free_port, free_ports

ROOT = Path(__file__).resolve().parent.parent
SHARED_TESTDATA = ROOT.parent / "shared" / "testdata" / "tfserving"


# ---- the tensor codec: its one import in the tests ----------------------------------------
def from_numpy(array, **kwargs):
    """numpy array -> TensorProto (pyserving.codecs.tensor_proto)."""
    from pyserving.codecs.tensor_proto import from_numpy as encode

    return encode(array, **kwargs)


def to_numpy(proto):
    """TensorProto -> numpy array (pyserving.codecs.tensor_proto)."""
    from pyserving.codecs.tensor_proto import to_numpy as decode

    return decode(proto)


# ---- servers --------------------------------------------------------------------------------
# Flags every test server gets. gRPC binds with SO_REUSEPORT by default, so a port that
# free_port() offered and another process on the machine took meanwhile would be shared
# silently (calls spread over both servers); without it that bind fails loudly instead.
TEST_SERVER_FLAGS = ("--grpc_channel_arguments=grpc.so_reuseport=0",)


class Server:
    """A live `python -m pyserving` process with its ports and a stop by its own pid."""

    def __init__(self, process: ServerProcess, grpc_port: int, rest_port: Optional[int]):
        self.process = process
        self.grpc_port = grpc_port
        self.rest_port = rest_port
        self.rest = f"http://127.0.0.1:{rest_port}" if rest_port else None
        self.grpc_target = f"127.0.0.1:{grpc_port}"

    def wait_ready(self, timeout: float = 120.0) -> "Server":
        """Until its port accepts connections and its log says that it is this server listening
        there: another test session on the machine may have taken a port free_port() offered."""
        self.process.wait_ready(timeout)
        line = (f"Exporting HTTP/REST API at:localhost:{self.rest_port} ..." if self.rest_port
                else f"Running gRPC ModelServer at 0.0.0.0:{self.grpc_port} ...")

        def listening() -> bool:
            if self.process.proc.poll() is not None:
                raise ServerFailed(f"server exited with {self.process.proc.returncode}:\n{self.process.log()[-4000:]}")
            return line in self.process.log()

        wait_for(listening, timeout=timeout, what=f"the server's own log line {line!r}")
        return self

    def stop(self) -> Optional[int]:
        return self.process.stop()


def launch(log_dir: Path, args: Sequence[str], rest: bool = True, wait: bool = True, env=None) -> Server:
    """Start a live server on free loopback ports; waits until it listens unless wait=False."""
    grpc_port, rest_port = free_ports(2)
    command = [sys.executable, "-m", "pyserving", f"--port={grpc_port}", *TEST_SERVER_FLAGS, *args]
    if rest:
        command.append(f"--rest_api_port={rest_port}")
    log_dir.mkdir(parents=True, exist_ok=True)
    process = ServerProcess(command, log_dir / f"server-{grpc_port}.log",
                            ready_port=rest_port if rest else grpc_port, env=env)
    process.start()
    server = Server(process, grpc_port, rest_port if rest else None)
    if wait:
        try:
            server.wait_ready()
        except Exception:
            process.stop()
            raise
    return server


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m pyserving ARGS` to its end: (returncode, stdout, stderr)."""
    return subprocess.run([sys.executable, "-m", "pyserving", *args], capture_output=True, text=True, timeout=timeout)


class CliRun:
    """`python -m pyserving ARGS` started now and read later, so that the Python + TensorFlow
    start-ups of several runs overlap; result() waits for the exit, stop() ends it by its pid."""

    def __init__(self, log_dir: Path, *args: str):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.args = [sys.executable, "-m", "pyserving", *args]
        self._stdout, self._stderr = log_dir / "stdout.txt", log_dir / "stderr.txt"
        with open(self._stdout, "wb") as out, open(self._stderr, "wb") as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    def result(self, timeout: float = 120) -> subprocess.CompletedProcess:
        try:
            returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        return subprocess.CompletedProcess(self.args, returncode, self._stdout.read_text(errors="replace"),
                                           self._stderr.read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def run_module(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python ARGS` from the repository root; fails the test unless it exits 0."""
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


class _GcState:
    """ModelServer.start() sets the process's GC thresholds and freezes (pyserving.gc_policy);
    in the test process that is undone once the last in-process server stops."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running = 0
        self._thresholds = gc.get_threshold()

    def enter(self) -> None:
        with self._lock:
            if self._running == 0:
                self._thresholds = gc.get_threshold()
            self._running += 1

    def leave(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                gc.unfreeze()
                gc.set_threshold(*self._thresholds)


_gc_state = _GcState()


class InProcessServer:
    """pyserving's real ModelServer (REST and gRPC) in the test process, on free loopback ports.

    Built from the same flags as the command line (`cli.parse`), so a test reads like the
    live command it replaces; stop() is idempotent and also undoes a start() that failed.
    """

    def __init__(self, args: Sequence[str], rest: bool = True, grpc_port: Optional[int] = None):
        from pyserving import cli

        self.grpc_port, self.rest_port = (grpc_port, free_port()) if grpc_port else free_ports(2)
        self.rest = f"http://127.0.0.1:{self.rest_port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        argv = [f"--port={self.grpc_port}", *TEST_SERVER_FLAGS, *args]
        if rest:
            argv.append(f"--rest_api_port={self.rest_port}")
        self.settings, _given = cli.parse(argv)
        self.model_server = None

    def start(self) -> "InProcessServer":
        from pyserving.app import ModelServer

        _gc_state.enter()
        try:
            self.model_server = ModelServer(self.settings)
            self.model_server.start()
        except BaseException:
            self.stop(0)
            raise
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        if self.model_server is _STOPPED:
            return
        try:
            if self.model_server is not None:
                self.model_server.stop(grace_s)
        finally:
            self.model_server = _STOPPED
            _gc_state.leave()


_STOPPED = object()


def write_config(path: Path, models: dict, extra: str = "") -> Path:
    """A ModelServerConfig text file: {name: base_path} or {name: (base_path, body)}."""
    parts = []
    for name, spec in models.items():
        base, body = (spec, "") if isinstance(spec, (str, Path)) else spec
        parts.append(
            f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {body} }}'
        )
    path.write_text("model_config_list {\n" + "\n".join(parts) + "\n}\n" + extra)
    return path


def export_tf1(base_path: Path, version: int, build: Callable[[], dict]) -> Path:
    """A TF1-style SavedModel at base_path/version, for models shaped by a test. build() runs in a
    fresh graph and returns {signature key: (inputs {key: tensor}, outputs {key: tensor},
    method_name or None)}; None writes no method_name, as a signature built without one has."""
    import tensorflow as tf

    v1 = tf.compat.v1
    target = base_path / str(version)
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        signatures = build()
        session.run(v1.global_variables_initializer())
        info = v1.saved_model.utils.build_tensor_info
        defs = {key: v1.saved_model.signature_def_utils.build_signature_def(
            {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()}, method)
            for key, (inputs, outputs, method) in signatures.items()}
        builder = v1.saved_model.Builder(str(target))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=defs)
        builder.save()
    return target


def write_gated_model(base_path: Path, version: int, gate: Path) -> str:
    """A half_plus_two (input x [None, 1] float32, output y = x/2 + 2) whose every call waits at a
    gate the test opens: it creates `<gate>/started-<x[0][0]>`, then loops until `<gate>/open`
    exists (or 60 s have passed, so that a failed test leaves no call held for ever). Requests are
    then in flight at a moment the test knows, with no sleep. A held call keeps one TensorFlow
    inter-op thread busy: serve it with --tensorflow_inter_op_parallelism above the calls held
    at once. Returns the version's path."""
    import tensorflow as tf

    from pyserving.version_dir import publish_version

    folder = str(gate)

    class Gated(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            started = tf.io.write_file(tf.strings.join([folder, "/started-", tf.strings.as_string(x[0, 0])]), "")
            with tf.control_dependencies([started]):
                give_up = tf.timestamp() + 60.0

                def closed(n):
                    # The pattern depends on n, so that no graph optimisation globs once and keeps the answer.
                    pattern = tf.strings.join([folder, "/open", tf.strings.substr(tf.strings.as_string(n), 0, 0)])
                    return tf.logical_and(tf.equal(tf.size(tf.io.matching_files(pattern)), 0),
                                          tf.timestamp() < give_up)

                waited = tf.while_loop(closed, lambda n: n + 1, [tf.constant(0, tf.int64)])
            with tf.control_dependencies(waited):
                return {"y": 0.5 * x + 2.0}

    def write(path: str) -> None:
        module = Gated()
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve})

    return publish_version(base_path, version, write)


# ---- REST -----------------------------------------------------------------------------------
def call(server, method: str, path: str, body=None, raw: Optional[bytes] = None, headers=None, timeout: float = 30):
    """One HTTP request: (status, headers, text), also for error statuses."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(server.rest + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:  # closes its connection
            return err.code, err.headers, err.read().decode()


def call_json(server, method: str, path: str, body=None, **kwargs):
    """(status, decoded JSON body)."""
    status_code, _headers, text = call(server, method, path, body, **kwargs)
    return status_code, json.loads(text)


def rest_predict(server, model: str = "m", x: float = 1.0, version=None, label=None) -> float:
    """y for one row [[x]] over REST; raises urllib.error.HTTPError on an error status."""
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + (f"/labels/{label}" if label else "")
    req = urllib.request.Request(server.rest + path + ":predict",
                                 data=json.dumps({"instances": [[x]]}).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["predictions"][0][0]


def status(server, model: str = "m") -> dict:
    """{version: status entry} from GET /v1/models/<model>; {} when the model is unknown."""
    try:
        with urllib.request.urlopen(f"{server.rest}/v1/models/{model}", timeout=10) as resp:
            return {int(s["version"]): s for s in json.loads(resp.read())["model_version_status"]}
    except urllib.error.HTTPError as err:
        err.close()
        return {}


def scrape(server, path: str) -> str:
    """The Prometheus exposition text served at `path`."""
    with urllib.request.urlopen(server.rest + path, timeout=10) as resp:
        return resp.read().decode()


def metric(text: str, name: str, **labels) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0.0 when none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---- gRPC -----------------------------------------------------------------------------------
def predict_request(model: str, x, signature: str = "", version=None, label=None, dtype=None, input_name=None):
    """A PredictRequest with one input: "pair" for hp2tf2's "dot" signature, "x" otherwise."""
    import numpy as np
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    name = input_name or ("pair" if signature == "dot" else "x")
    req.inputs[name].CopyFrom(from_numpy(np.array(x, dtype=dtype or np.float32)))
    return req


def prediction_stub(channel):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def grpc_predict(server, x, model: str = "m", timeout: float = 60) -> list:
    """Output "y" for input "x" over gRPC, as nested lists."""
    import grpc

    with grpc.insecure_channel(server.grpc_target) as ch:
        reply = prediction_stub(ch).Predict(predict_request(model, x), timeout=timeout)
        return to_numpy(reply.outputs["y"]).tolist()


# ---- waiting --------------------------------------------------------------------------------
def wait_for(predicate: Callable, timeout: float = 60.0, what: str = "condition", interval: float = 0.1):
    """Poll until predicate() is truthy and return that value; AssertionError naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_until(predicate: Callable, timeout: float = 10.0):
    """wait_for with the short timeout and fine polling the in-memory core tests use."""
    return wait_for(predicate, timeout=timeout, what="condition", interval=0.01)


def states(manager, name: str = "m") -> dict:
    """{version: VersionState} of one model in a ServableManager."""
    return {s.version: s.state for s in manager.status(name)}


def concurrently(calls: Sequence[Callable], timeout: float = 60.0) -> list:
    """Run every call on a thread of its own; their results in order. A call that raised raises
    here (the first such exception, after every thread ended), and so does a call still running
    after `timeout`: neither may pass for an answer."""
    results: list = [None] * len(calls)
    errors: list = [None] * len(calls)

    def run(i):
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    if hung:
        raise AssertionError(f"calls {hung} still running after {timeout:.0f} s")
    for i, error in enumerate(errors):
        if error is not None:
            raise AssertionError(f"call {i} raised {error!r}") from error
    return results


def fill_input(target, examples=(), context=None, kind=None) -> None:
    """A tensorflow.serving.Input as TF Serving's classifier and regressor tests build it: the
    examples (with a context when given), an empty example_list (kind="example_list") or nothing
    set at all (kind="input")."""
    if context is not None:
        target.example_list_with_context.context.CopyFrom(context)
        target.example_list_with_context.examples.extend(examples)
    elif kind == "example_list":
        target.example_list.SetInParent()
    elif kind == "input":
        target.SetInParent()
    else:
        target.example_list.examples.extend(examples)


def grpc_signature_defs(server, model: str) -> dict:
    """{key: SignatureDef} from a gRPC GetModelMetadata (metadata_field signature_def)."""
    import grpc
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.append("signature_def")
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = prediction_stub(channel).GetModelMetadata(request, timeout=30)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    return dict(sig_map.signature_def)


# ---- docker/compose.yaml (read by tests/kit/serve/test_docker.py and tests/kit/images/test_pyserving_image.py)
COMPOSE_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value, env):
    """Compose's ${VAR:-default} substitution, enough for docker/compose.yaml."""
    if isinstance(value, str):
        return COMPOSE_VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def exit_codes_listening_then_closed(run_check: Callable[[int], int]) -> tuple[int, int]:
    """run_check(port)'s exit code while a loopback port accepts connections, then once it is
    closed: a healthcheck command must give (0, non-zero)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        listening = run_check(port)
    return listening, run_check(port)


def serve_with_method_check(check: bool, tmp: Path, build, serve_module):
    """A TF1 SavedModel of build(check)'s signatures as model m, served over gRPC with
    --enable_signature_method_name_check=<check> (the ported classifier and regressor tests)."""
    base = tmp / "m"
    export_tf1(base, 1, build(check))
    server = serve_module([f"--model_base_path={base}", "--model_name=m",
                           f"--enable_signature_method_name_check={str(check).lower()}"], rest=False)
    server.check = check
    return server


def multi_inference_regress(server, model: str, xs: Sequence[float], signature: str = "regress_x_to_y"):
    """One gRPC MultiInference with a single regress task over examples {"x": x}: the request
    TF Serving 2.20 records example counts for (multi_inference.cc)."""
    import grpc
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add()
    task.model_spec.name, task.model_spec.signature_name = model, signature
    task.method_name = "tensorflow/serving/regress"
    for x in xs:
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    with grpc.insecure_channel(server.grpc_target) as channel:
        return prediction_stub(channel).MultiInference(request, timeout=30)


def inv_exit_code(*argv: str) -> int:
    """Run the kit's tasks in this process as `inv` would (argument parsing, --help, Exit
    handling); the exit code `inv` would give."""
    from invoke import Program

    import tasks

    try:
        Program(namespace=tasks.ns, binary="inv", version="test").run(["inv", *argv])
    except SystemExit as done:
        return done.code or 0
    return 0


def read_until_closed(port: int) -> bytes:
    """Everything a TCP server on 127.0.0.1:port sends before it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        chunks = []
        while chunk := conn.recv(64):
            chunks.append(chunk)
        return b"".join(chunks)


# ---- local servers that speak the storage APIs (issue 27: gs:// and s3:// base paths) -----
class S3Server:
    """moto's standalone S3 server (`moto_server`) as a child process on a loopback port, stopped
    by its pid. Its buckets live in that process's memory: a restart is an empty endpoint. (moto's
    ThreadedMotoServer, in this process, keeps serving open keep-alive connections after stop(),
    so it cannot play an endpoint going down.)"""

    def __init__(self, authenticate_after: Optional[int] = None):
        # authenticate_after=N: moto checks every request's keys after its first N (none of the
        # test's keys exist in its IAM: a wrong credential), INITIAL_NO_AUTH_ACTION_COUNT
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None
        self._env = {} if authenticate_after is None else {"INITIAL_NO_AUTH_ACTION_COUNT": str(authenticate_after)}

    def start(self) -> "S3Server":
        command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **self._env})
        _wait_answering(self.proc, f"{self.endpoint}/moto-api/", "moto_server")
        return self

    def stop(self) -> None:
        _stop_child(self.proc)
        self.proc = None

    def env(self) -> dict:
        return {"AWS_ACCESS_KEY_ID": "kit-test", "AWS_SECRET_ACCESS_KEY": "kit-test-secret",
                "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": self.endpoint}

    def client_create_bucket(self, name: str) -> None:
        """One CreateBucket request (s3fs's mkdir makes three: a server that authenticates after the
        first would refuse the rest)."""
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="kit-test",
                     aws_secret_access_key="kit-test-secret", region_name="eu-west-1").create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(key="kit-test", secret="kit-test-secret", endpoint_url=self.endpoint,
                                 client_kwargs={"region_name": "eu-west-1"}, use_listings_cache=False,
                                 skip_instance_cache=True)


class GcsEmulator:
    """gcp-storage-emulator as a child process on a loopback port, stopped by its pid; its objects
    are kept on disk under `data_dir`, so a restart on the same port keeps them."""

    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "GcsEmulator":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [str(Path(sys.executable).parent / "gcp-storage-emulator"), "start", "--host", "127.0.0.1",
                   "--port", str(self.port), "--quiet"]
        self.proc = subprocess.Popen(command, cwd=self.data_dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        _wait_answering(self.proc, f"{self.endpoint}/storage/v1/b", "gcp-storage-emulator")
        return self

    def stop(self) -> None:
        _stop_child(self.proc)
        self.proc = None

    def env(self) -> dict:
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def fs(self):
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(token="anon", endpoint_url=self.endpoint, project="kit-test",
                             use_listings_cache=False, skip_instance_cache=True)


def _wait_answering(proc: subprocess.Popen, url: str, what: str) -> None:
    def answering() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError as exc:  # an HTTP answer, whatever its status
            exc.close()
            return True
        except OSError:
            return False

    wait_for(answering, timeout=30, what=f"{what} to answer")


def _stop_child(proc: Optional[subprocess.Popen]) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def upload_version(fs, local_dir: Path, url: str) -> None:
    """Upload a version folder object by object, its model file last (as `inv publish` does), so a
    listing that shows the model file shows every other file too."""
    from kit.rollout.bucket import upload_order

    names = upload_order([p.relative_to(local_dir).as_posix() for p in Path(local_dir).rglob("*") if p.is_file()])
    root = url.split("://", 1)[1].rstrip("/")
    for name in names:
        fs.put_file(str(Path(local_dir, name)), f"{root}/{name}")
