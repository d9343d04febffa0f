"""The Invoke tasks' own behaviour, in-process: help and a make target for every task, dry runs,
backends that cannot run here, the rollout tasks without a server, README sync.

Tasks run with invoke's MockContext, which stands in for the shell and fails on any command it
was not told about; the kit's build folder is pointed at tmp_path through KIT_BUILD_DIR.
"""
from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from google.protobuf import text_format
from invoke import MockContext, Program, Task
from invoke.exceptions import Exit
from tensorflow_serving.config import model_server_config_pb2

import tasks
from kit.devtools import compat_table
from kit.paths import ROOT
from kit.serve import backends
from kit.serve.docker import engine_status

TASKS = sorted(tasks.ns.task_names)  # every task `inv --list` shows
NO_SERVER = "no server is running: start one with `inv serve`"


@pytest.fixture
def build_with_models(build):
    for model in ("svm", "mnist"):
        version = build / "models" / model / "1"
        (version / "variables").mkdir(parents=True)
        (version / "saved_model.pb").write_bytes(f"{model} graph".encode())
    return build


def stopped(call, *args, **kwargs) -> Exit:
    """The Exit a task stopped with (its message is what `inv` prints on stderr)."""
    with pytest.raises(Exit) as info:
        call(MockContext(), *args, **kwargs)
    assert info.value.code == 1
    return info.value


def read_config(build) -> dict:
    config = text_format.Parse((build / "models" / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    return {e.name: (e.base_path, dict(e.version_labels), list(e.model_version_policy.specific.versions))
            for e in config.model_config_list.config}


# ---- every task: help through invoke's own Program, and a make target of the same name -----------
def test_every_task_defined_in_tasks_py_is_in_the_collection():
    defined = {value.name for value in vars(tasks).values() if isinstance(value, Task)}
    assert "reproduce" in TASKS and defined == {name.replace("-", "_") for name in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_help(build, task, capsys):
    tasks_program = Program(namespace=tasks.ns, name="kit", binary="inv")
    tasks_program.run(["inv", task, "--help"], exit=False)
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: inv [--core-opts] {task}") and "Docstring:" in out
    assert not build.exists()


def help_options(task: str) -> dict[str, tuple[str, str]]:
    """The rows `inv <task> --help` prints (invoke's help tuples, before it wraps them to the
    terminal): long option name -> (its flag column, its help text)."""
    [context] = [c for c in tasks.ns.to_contexts() if c.name == task]
    return {re.search(r"--(?:\[no-\])?([a-z-]+)", flags).group(1): (flags, text)
            for flags, text in context.help_tuples()}


@pytest.mark.parametrize("task", TASKS)
def test_every_option_shows_its_value_type_and_its_default(task):
    options = help_options(task)
    words = {int: "INT", float: "FLOAT", str: "STRING"}
    signature = inspect.signature(tasks.ns[task].body)
    for name, parameter in list(signature.parameters.items())[1:]:  # after the Context
        flags, text = options[name.replace("_", "-")]
        default = parameter.default
        assert text, f"{task} --{name} has no help"
        if isinstance(default, bool):
            assert "=" not in flags
            continue
        assert flags.endswith(f"--{name.replace('_', '-')}={words[type(default)]}"), (task, flags)
        # Said by the kit from the signature, or in words by the task's own help.
        generated = f"(default: {default if default != '' else 'none'})"
        assert text.endswith(generated) or (generated not in text and "default" in text), (task, name, text)


def test_a_float_option_is_shown_as_one_that_takes_a_value():
    flags, text = help_options("train-svm")["regulation-rate"]
    short, long = flags.split(", ")  # invoke picks the short flag's letter
    assert short.endswith(" FLOAT") and long == "--regulation-rate=FLOAT" and text == "L2 weight (default: 0.0001)"


@pytest.mark.parametrize("argv,message", [
    (["train-svm", "--epochs=abc"], "--epochs: 'abc' is not an integer"),
    (["train-svm", "--regulation-rate", "1e-4x"], "--regulation-rate: '1e-4x' is not a number"),
    (["reproduce", "--dry-run", "--rest-port=8501.5"], "--rest-port: '8501.5' is not an integer"),
])
def test_a_bad_value_stops_with_one_line_and_runs_nothing(build, argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        Program(namespace=tasks.ns, name="kit", binary="inv").run(["inv", *argv])
    assert done.value.code == 1
    assert capsys.readouterr() == ("", message + "\n")
    assert not build.exists()


def make(*args: str) -> list[str]:
    """`make` in the repository, with no MAKEFLAGS from an enclosing make; its output lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_a_make_target_of_the_same_name(task):
    # -n prints the recipe without running it; -W requirements.txt pretends the requirements changed,
    # so a target that depends on the venv stamp prints the venv bootstrap first.
    lines = make("-n", "-W", "requirements.txt", task, "ARGS=--args-from-make")
    runs = [line.split() for line in lines if line.startswith(".venv/bin/inv ")]
    assert len(runs) == 1 and runs[0][1] == task and runs[0][-1] == "--args-from-make", lines
    bootstrap = [i for i, line in enumerate(lines) if "pip install" in line and "requirements.txt" in line]
    assert bootstrap and bootstrap[0] < lines.index(" ".join(runs[0])), f"{task} does not depend on the venv"


def test_make_help_lists_every_target_and_every_task():
    listed = [line.split()[1] for line in make("-s", "help") if line.startswith("make ")]
    targets = re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert {"clean", "venv", "help", "test", "lint"} <= set(targets)
    assert sorted(listed) == sorted(set(targets) | set(TASKS))


def test_make_test_prints_skip_reasons():
    [pytest_line] = [line for line in make("-n", "test") if " -m pytest " in line]
    assert " -rs" in f" {pytest_line} "


# ---- serve and reproduce ------------------------------------------------------------------------
def test_serve_dry_run_prints_each_backends_command(build_with_models, capsys):
    tasks.serve(MockContext(), dry_run=True)
    native = capsys.readouterr().out
    assert "tensorflow_model_server --port=8500 --rest_api_port=8501 --model_config_file=" in native
    config = (build_with_models / "models" / "models.config").read_text()
    assert f'base_path: "{build_with_models / "models" / "svm"}"' in config and 'name: "mnist"' in config
    tasks.serve(MockContext(), backend="docker", dry_run=True)
    docker = capsys.readouterr().out
    assert "docker run" in docker and ":/models" in docker and "tensorflow/serving:2.21.0" in docker
    # The file that command reads, with container paths, for it and for docker/compose.yaml.
    assert "--model_config_file=/models/models.docker.config" in docker
    docker_config = (build_with_models / "models" / "models.docker.config").read_text()
    assert 'base_path: "/models/svm"' in docker_config and 'base_path: "/models/mnist"' in docker_config
    tasks.serve(MockContext(), backend="binary", dry_run=True, grpc_port=9000)
    assert f"{build_with_models / 'bin' / 'tensorflow_model_server'} --port=9000" in capsys.readouterr().out


def flag_values(command: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


@pytest.mark.parametrize("backend", backends.NAMES)
def test_every_backend_gets_short_load_retries_and_the_health_service_and_keeps_tf_serving_s_defaults(
        build_with_models, backend, capsys):
    from pyserving.flags import BY_NAME

    tasks.serve(MockContext(), backend=backend, dry_run=True)
    [command] = [shlex.split(line[2:]) for line in capsys.readouterr().out.splitlines() if line.startswith("$ ")]
    flags = flag_values(command)
    # a bad version gives up within seconds, not after TF Serving's 5 retries a minute apart
    retries, interval_us = int(flags["max_num_load_retries"]), int(flags["load_retry_interval_micros"])
    assert 0 < retries * interval_us <= 10_000_000
    # and the gRPC health service, as the README promises for every backend (TF Serving has it since 2.15.1),
    # and labels for versions not loaded yet: a server restarted mid-rollout starts with such labels
    assert "--enable_grpc_healthcheck_service" in command
    assert "--allow_version_labels_for_unavailable_models" in command
    # the server's own defaults stay TF Serving's (model_servers/main.cc: 5 retries, 1 minute)
    assert (BY_NAME["max_num_load_retries"].default, BY_NAME["load_retry_interval_micros"].default) == (5, 60_000_000)


def test_serve_listens_on_loopback_unless_asked_otherwise(build_with_models, capsys):
    def command(**kwargs) -> list[str]:
        tasks.serve(MockContext(), dry_run=True, **kwargs)
        [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("$ ")]
        return shlex.split(line[2:])

    assert flag_values(command())["pyserving_listen_address"] == "127.0.0.1"
    assert "pyserving_listen_address" not in flag_values(command(host="0.0.0.0"))  # pyserving's default: all
    docker = command(backend="docker")
    assert [docker[i + 1] for i, a in enumerate(docker) if a == "-p"] == ["127.0.0.1:8500:8500", "127.0.0.1:8501:8501"]
    docker = command(backend="docker", host="0.0.0.0")
    assert [docker[i + 1] for i, a in enumerate(docker) if a == "-p"] == ["0.0.0.0:8500:8500", "0.0.0.0:8501:8501"]
    assert "pyserving_listen_address" not in flag_values(command(backend="binary"))  # TF Serving has no such flag
    assert stopped(tasks.serve, host="10.0.0.1").message == (
        "--host must be 127.0.0.1 or 0.0.0.0, got '10.0.0.1': the kit's clients connect to 127.0.0.1")


def test_unavailable_backends_stop_with_one_line(build_with_models):
    message = stopped(tasks.serve, backend="binary").message
    assert "does not exist; build it with `make build-server`" in message
    assert len(message.strip().splitlines()) == 1
    if engine_status() is not None:  # only where no engine runs: with one, this would really serve
        assert stopped(tasks.reproduce, backend="docker").message.startswith("docker:")
    assert "unknown backend" in stopped(tasks.serve, backend="nope").message


def test_serve_stop_without_server(build, capsys):
    tasks.serve(MockContext(), stop=True)
    assert "no server is running" in capsys.readouterr().out


@pytest.mark.parametrize("backend,needle", [
    ("native", "tensorflow_model_server --port=8500"),
    ("docker", "docker run"),
    ("binary", "bin/tensorflow_model_server --port=8500"),
])
def test_reproduce_dry_run_prints_every_command_and_runs_none(build, backend, needle, capsys):
    tasks.reproduce(MockContext(), backend=backend, dry_run=True)  # MockContext fails on any command
    out = capsys.readouterr().out
    assert "-m models.svm.train" in out and "-m models.mnist.mnist_saved_model" in out
    assert needle in out
    assert "client/client.py http://127.0.0.1:8501/v1/models/svm" in out
    assert "client/mnist_client.py --num_tests=1000 --server=127.0.0.1:8500" in out
    assert not (build / "models").exists() and not (build / ".stamps").exists()


# ---- training tasks: their options reach the commands they run --------------------------------------
def inv(capsys, *argv: str) -> list[list[str]]:
    """Parse a command line as `inv` does, run the task on a MockContext (which fails on any command
    it runs); the commands it printed, as argv lists."""
    program = Program(namespace=tasks.ns, binary="inv")
    program.create_config()
    program.parse_core(["inv", *argv])
    program.parse_collection()
    program.parse_tasks()
    [call] = program.tasks
    tasks.ns[call.name](MockContext(), **call.as_kwargs)
    return [shlex.split(line[2:]) for line in capsys.readouterr().out.splitlines() if line.startswith("$ ")]


def after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_train_svm_rows_and_classes_reach_the_corpus_and_the_training_command(build, capsys):
    corpus, train = inv(capsys, "train-svm", "--rows=600", "--classes=12", "--epochs=3", "--dry-run")
    assert corpus[1:3] == ["-m", "models.svm.corpus"]
    assert (after(corpus, "--rows"), after(corpus, "--classes")) == ("600", "12")
    data = build / "data"
    assert (after(corpus, "--out"), after(corpus, "--dev_out")) == (str(data / "svm_600x12_train.csv"),
                                                                    str(data / "svm_600x12_dev.csv"))
    assert train[1:3] == ["-m", "models.svm.train"]
    assert after(train, "--train_data_file") == str(data / "svm_600x12_train.csv")
    assert after(train, "--dev_data_file") == str(data / "svm_600x12_dev.csv")
    assert after(train, "--num_epochs") == "3" and after(train, "--export_path_base") == str(build / "models" / "svm")
    [train] = inv(capsys, "train-svm", "--dry-run")  # no --rows: the shipped sample, nothing generated
    assert after(train, "--train_data_file") == str(ROOT / "models" / "svm" / "data" / "sample.csv")
    assert not build.exists()


def test_train_mnist_data_dir_reaches_the_training_command(build, tmp_path, capsys):
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "train-images-idx3-ubyte.gz").write_bytes(b"images")
    [train] = inv(capsys, "train-mnist", f"--data-dir={idx}", "--iterations=300", "--dry-run")
    assert train[1:3] == ["-m", "models.mnist.mnist_saved_model"]
    assert after(train, "--data_dir") == str(idx) and "--training_iteration=300" in train
    assert train[-1] == str(build / "models" / "mnist")
    [train] = inv(capsys, "train-mnist", "--download", "--dry-run")
    assert "--data_dir" not in train and "--download" in train
    assert not build.exists()


def test_reproduce_passes_its_training_options_on(build, tmp_path, capsys):
    commands = inv(capsys, "reproduce", "--svm-rows=500", "--svm-epochs=7", "--mnist-iterations=300",
                   f"--mnist-data-dir={tmp_path}", "--dry-run")
    corpus, train, mnist = commands[:3]
    assert after(corpus, "--rows") == "500" and after(train, "--num_epochs") == "7"
    assert after(train, "--train_data_file") == str(build / "data" / "svm_500x124_train.csv")
    assert "--training_iteration=300" in mnist and after(mnist, "--data_dir") == str(tmp_path)
    assert after(commands[-1], "--data_dir") == str(tmp_path)  # the client reads the same images
    assert not build.exists()


def test_readme_flag_table_is_generated_from_the_flag_list():
    readme = (ROOT / "README.md").read_text()
    assert compat_table.render(readme) == readme, "run: python -m kit.devtools.compat_table --write"


# ---- online updates without a server --------------------------------------------------------------
def test_publish_refuses_an_unknown_model_and_writes_nothing(build_with_models):
    assert stopped(tasks.publish, model="nope").message == "unknown model 'nope'"
    assert sorted(p.name for p in (build_with_models / "models").iterdir()) == ["mnist", "svm"]


def test_publish_stops_when_there_is_nothing_to_publish(build_with_models, tmp_path):
    missing = tmp_path / "no-such-model"
    assert stopped(tasks.publish, model="svm", source=str(missing)).message == f"nothing to publish: {missing}"
    (build_with_models / "models" / "mnist" / "1" / "saved_model.pb").unlink()
    (build_with_models / "models" / "mnist" / "1" / "variables").rmdir()
    (build_with_models / "models" / "mnist" / "1").rmdir()
    assert stopped(tasks.publish, model="mnist").message == "nothing to publish: None"
    assert not (build_with_models / "models" / "models.config").exists()


# These stand-in versions are no SavedModels: --force publishes them unchecked (the checks are
# tested with real ones in tests/kit/rollout/test_updates.py).
def test_publish_without_a_server_pins_the_served_version_then_publishes_the_next(build_with_models, capsys):
    svm = build_with_models / "models" / "svm"
    tasks.publish(MockContext(), model="svm", force=True)
    assert capsys.readouterr().out == f"publish --force: not checked\npublished {svm / '1'} as {svm / '2'}\n"
    assert (svm / "2" / "saved_model.pb").read_bytes() == b"svm graph"
    assert sorted(p.name for p in svm.iterdir()) == ["1", "2"]
    # Pinned before the copy: version 2 stays unserved until a canary names it.
    state = json.loads((build_with_models / "models" / "svm.rollout.json").read_text())
    assert (state["stable"], state["canary"], state["previous"]) == (1, None, None)
    config = read_config(build_with_models)
    assert config["svm"] == (str(svm), {"stable": 1}, [1])
    assert config["mnist"] == (str(build_with_models / "models" / "mnist"), {}, [])


def test_publish_a_given_folder_twice_keeps_the_first_pin(build_with_models, tmp_path, capsys):
    staged = tmp_path / "staged"
    (staged / "variables").mkdir(parents=True)
    (staged / "saved_model.pb").write_bytes(b"new graph")
    mnist = build_with_models / "models" / "mnist"
    tasks.publish(MockContext(), model="mnist", source=str(staged), force=True)
    tasks.publish(MockContext(), model="mnist", source=str(staged), force=True)
    assert capsys.readouterr().out.splitlines()[1::2] == [f"published {staged} as {mnist / '2'}",
                                                          f"published {staged} as {mnist / '3'}"]
    assert (mnist / "3" / "saved_model.pb").read_bytes() == b"new graph"
    assert read_config(build_with_models)["mnist"] == (str(mnist), {"stable": 1}, [1])


@pytest.mark.parametrize("name", ["canary", "promote", "rollback"])
def test_rollout_steps_need_a_running_server(build_with_models, name):
    task = getattr(tasks, name)
    assert stopped(task, model="svm").message == NO_SERVER
    assert stopped(task, model="nope").message == "unknown model 'nope': trained models are svm, mnist"
    assert not (build_with_models / "models" / "models.config").exists()


def test_versions_prints_disk_rollout_and_server(build_with_models, capsys):
    svm = build_with_models / "models" / "svm"
    tasks.versions(MockContext(), model="svm")
    assert capsys.readouterr().out.splitlines() == [
        f"on disk ({svm}): [1]", "rollout: none (the latest version serves)", "server: not running"]
    tasks.publish(MockContext(), model="svm", force=True)
    capsys.readouterr()
    tasks.versions(MockContext(), model="svm")
    assert capsys.readouterr().out.splitlines() == [
        f"on disk ({svm}): [1, 2]", "rollout: stable=1 canary=None previous=None", "server: not running"]
    assert stopped(tasks.versions, model="nope").message == "unknown model 'nope'"


def test_a_server_that_died_counts_as_not_running(build_with_models, capsys):
    gone = subprocess.Popen(["true"])
    gone.wait()
    state = build_with_models / "server.json"
    state.write_text(json.dumps({"backend": "native", "grpc_port": 1, "rest_port": 2, "pid": gone.pid}))
    assert stopped(tasks.canary, model="svm").message == NO_SERVER
    assert not state.exists()  # the stale record is cleared
    state.write_text(json.dumps({"backend": "native", "grpc_port": 1, "rest_port": 2, "pid": gone.pid}))
    tasks.versions(MockContext(), model="svm")
    assert capsys.readouterr().out.splitlines()[-1] == "server: not running"
    assert not state.exists()


# ---- a user's mistakes: one line, exit 1, no traceback ---------------------------------------------
NOT_TRAINED = "no trained models under {models}: run `inv train-svm` / `inv train-mnist` first (or `make reproduce`)"


@pytest.mark.parametrize("argv", [
    ["serve"], ["serve", "--dry-run"], ["canary"], ["canary", "--target=k8s", "--dry-run"], ["promote"],
    ["rollback"], ["versions"], ["publish"], ["remove", "--version=1"],
])
def test_a_task_run_before_any_model_is_trained_says_so_in_one_line(build, argv, capsys):
    with pytest.raises(SystemExit) as done:
        Program(namespace=tasks.ns, name="kit", binary="inv").run(["inv", *argv])
    assert done.value.code == 1
    assert capsys.readouterr() == ("", NOT_TRAINED.format(models=build / "models") + "\n")


def test_train_svm_refuses_more_classes_than_the_corpus_has_in_one_line(build, capsys):
    with pytest.raises(SystemExit) as done:
        Program(namespace=tasks.ns, name="kit", binary="inv").run(["inv", "train-svm", "--rows=100", "--classes=500"])
    assert done.value.code == 1
    assert capsys.readouterr() == ("", "--classes must be in 1..128 (the corpus has 128 class names), got 500\n")
    assert help_options("train-svm")["classes"][1].startswith("classes in a generated corpus, 1..128")


def test_make_venv_with_another_python_says_which_one_is_needed_in_one_line(tmp_path):
    other = next((p for p in [*(f"/root/.pyenv/versions/{v}/bin/python3" for v in ("3.12.1", "3.13.0", "3.10.13")),
                              *filter(None, (shutil.which(f"python3.{n}") for n in (12, 13, 10)))]
                  if os.access(p, os.X_OK)), None)
    if other is None:
        pytest.skip("no Python other than 3.11 on this machine to try `make venv PYTHON=...` with")
    for name in ("Makefile", "requirements.txt", "pyproject.toml"):  # a copy: the real .venv stays untouched
        shutil.copy(ROOT / name, tmp_path / name)
    done = subprocess.run(["make", "--no-print-directory", "-C", str(tmp_path), "venv", f"PYTHON={other}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[0].startswith("Python 3.11 is required, found 3.")
    assert not (tmp_path / ".venv").exists()


def test_make_clean_stops_the_server_inv_serve_started_by_its_pid(build):
    # A stand-in server process (pyserving's name in its command line, as the kit's check wants),
    # recorded as `inv serve` records one; the real start-up is tested in tests/kit/serve/test_server.py.
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "pyserving"])
    try:
        build.mkdir()
        (build / "server.json").write_text(json.dumps(
            {"backend": "native", "replicas": [{"grpc_port": 1, "rest_port": 2, "log": "x", "pid": server.pid}]}))
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        done = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "clean"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert server.wait(timeout=10) is not None  # stopped (SIGTERM), not orphaned
        assert f"stopped server pid {server.pid}" in done.stdout and not build.exists()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
