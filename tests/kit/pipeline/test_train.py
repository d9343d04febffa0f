"""kit/pipeline/train.py's training steps, cached by their real inputs, without training anything.

The steps run for real (kit.pipeline.train -> kit.steps, the inputs each step declares, the stamps under
KIT_BUILD_DIR = tmp_path); only the shell commands they would run are answered by `Programs`,
which records each command and writes the files that program would write. So "reused" and
"running" here are the pipeline's own decisions, and a rerun visibly replaces the exported model.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from kit.paths import ROOT
from kit.pipeline import query
from kit.pipeline import train as pipeline


class Programs:
    """Stands in for the shell: records each command, writes the outputs of the program it names."""

    def __init__(self):
        self.commands: list[str] = []

    def __call__(self, command: str) -> None:
        self.commands.append(command)
        argv = shlex.split(command)
        program = argv[argv.index("-m") + 1]
        if program == "models.svm.corpus":
            for flag in ("--out", "--dev_out"):
                out = Path(argv[argv.index(flag) + 1])
                out.parent.mkdir(parents=True, exist_ok=True)  # as corpus.py does
                out.write_text(f"corpus from: {command}\n")
            return
        if program == "models.svm.train":
            base, version = argv[argv.index("--export_path_base") + 1], argv[argv.index("--model_version") + 1]
        elif program == "models.mnist.mnist_saved_model":
            base, version = argv[-1], next(a.split("=", 1)[1] for a in argv if a.startswith("--model_version="))
        else:
            raise AssertionError(f"unexpected command: {command}")
        export = Path(base) / version
        (export / "variables").mkdir(parents=True)  # fails if a stale export was left in place
        (export / "saved_model.pb").write_text(f"exported by: {command}")

    def ran(self) -> list[str]:
        """The programs run since the last call."""
        names = [shlex.split(c)[shlex.split(c).index("-m") + 1] for c in self.commands]
        self.commands.clear()
        return names


SVM, MNIST, CORPUS = "models.svm.train", "models.mnist.mnist_saved_model", "models.svm.corpus"


@pytest.fixture
def mnist_data(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (data / name).write_bytes(name.encode())
    return data


def train_both(programs, svm=None, mnist=None):
    pipeline.train_svm(programs, **{"rows": 200, "classes": 4, **(svm or {})})
    pipeline.train_mnist(programs, **(mnist or {}))
    return programs.ran()


def exported(build, model) -> str:
    return (build / "models" / model / "1" / "saved_model.pb").read_text()


def test_a_second_run_with_the_same_inputs_reuses_every_step(build, mnist_data, capsys):
    programs = Programs()
    assert train_both(programs, mnist={"data_dir": str(mnist_data)}) == [CORPUS, SVM, MNIST]
    out = capsys.readouterr().out
    assert "[svm-data] running" in out and "[train-svm] running" in out and "[train-mnist] running" in out
    assert train_both(programs, mnist={"data_dir": str(mnist_data)}) == []
    out = capsys.readouterr().out
    for step in ("svm-data", "train-svm", "train-mnist"):
        assert f"[{step}] reused: inputs unchanged since" in out
    assert "running" not in out


def test_changed_parameters_rerun_exactly_the_steps_they_belong_to(build, capsys):
    programs = Programs()
    train_both(programs)
    assert train_both(programs, svm={"epochs": 7}, mnist={"iterations": 300}) == [SVM, MNIST]
    assert "--num_epochs 7" in exported(build, "svm") and "--training_iteration=300" in exported(build, "mnist")
    assert train_both(programs, svm={"epochs": 7}) == [MNIST]  # back to 1000 iterations; the SVM is current
    assert train_both(programs, svm={"epochs": 7, "regulation_rate": 1e-3, "seed": 1}) == [SVM]
    assert train_both(programs, svm={"epochs": 7, "regulation_rate": 1e-3, "seed": 1}, mnist={"seed": 1}) == [MNIST]
    out = capsys.readouterr().out
    assert "[train-svm] reused" in out and "[train-mnist] reused" in out


def test_a_new_corpus_size_regenerates_the_data_and_retrains_the_svm_only(build):
    programs = Programs()
    train_both(programs)
    assert train_both(programs, svm={"rows": 300}) == [CORPUS, SVM]
    assert "svm_300x4_train.csv" in exported(build, "svm")
    assert train_both(programs, svm={"rows": 300, "classes": 5}) == [CORPUS, SVM]
    assert train_both(programs, svm={"rows": 300, "classes": 5}) == []


def test_changed_svm_data_retrains_the_svm_and_not_mnist(build):
    programs = Programs()
    train_both(programs)
    before = exported(build, "svm")
    (build / "models" / "svm" / "1" / "variables" / "stale").write_text("from the old run")
    with (build / "data" / "svm_200x4_train.csv").open("a") as train:
        train.write("@kg.Fund 基金@规模 是多少,Fund.规模\n")
    assert train_both(programs) == [SVM]
    assert exported(build, "svm") == before  # same command, new data: the export was replaced ...
    assert not (build / "models" / "svm" / "1" / "variables" / "stale").exists()  # ... not updated in place
    (build / "data" / "svm_200x4_dev.csv").write_text("dev changed\n")
    assert train_both(programs) == [SVM]


def test_changed_mnist_data_retrains_mnist_and_not_the_svm(build, mnist_data):
    programs = Programs()
    mnist = {"data_dir": str(mnist_data)}
    train_both(programs, mnist=mnist)
    assert f"--data_dir {mnist_data}" in exported(build, "mnist")
    (mnist_data / "t10k-labels-idx1-ubyte.gz").write_bytes(b"other labels")
    assert train_both(programs, mnist=mnist) == [MNIST]
    (mnist_data / "t10k-labels-idx1-ubyte.gz").unlink()
    assert train_both(programs, mnist=mnist) == [MNIST]
    assert train_both(programs) == [MNIST]  # the offline stand-in instead of that folder


@pytest.mark.parametrize("model,program", [("svm", SVM), ("mnist", MNIST)])
def test_a_deleted_export_is_retrained(build, model, program):
    programs = Programs()
    train_both(programs)
    (build / "models" / model / "1" / "saved_model.pb").unlink()
    assert train_both(programs) == [program]


def test_another_version_is_another_export(build):
    programs = Programs()
    train_both(programs)
    assert train_both(programs, svm={"version": 2}) == [SVM]
    assert sorted(p.name for p in (build / "models" / "svm").iterdir()) == ["1", "2"]


# Every project file a step's program imports must be among the step's inputs, or a change to it
# is served stale. The truth: import each program for real, in a fresh interpreter, and list the
# project's modules it loaded.
IMPORTED = r"""
import importlib, json, sys
from pathlib import Path
root, found = Path.cwd().resolve(), {}
for program in sys.argv[1:]:
    importlib.import_module(program)
    # The project's own modules: under the root, but not the virtual environment kept there.
    mine = {n: Path(m.__file__).resolve() for n, m in list(sys.modules.items())
            if getattr(m, "__file__", None) and Path(m.__file__).resolve().is_relative_to(root)
            and "site-packages" not in Path(m.__file__).parts}
    found[program] = sorted(str(p.relative_to(root)) for p in mine.values())
    for name in mine:  # the next program imports its own from scratch
        del sys.modules[name]
print(json.dumps(found))
"""


def test_each_step_s_inputs_cover_every_project_file_its_program_imports(build, mnist_data):
    programs = Programs()
    train_both(programs, mnist={"data_dir": str(mnist_data)})
    done = subprocess.run([sys.executable, "-c", IMPORTED, CORPUS, SVM, MNIST], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    imported = json.loads(done.stdout)
    missed = {}
    for step, program in [("svm-data", CORPUS), ("train-svm", SVM), ("train-mnist", MNIST)]:
        inputs = json.loads((build / ".stamps" / f"{step}.json").read_text())["inputs"]
        assert f"{program.replace('.', '/')}.py" in imported[program]
        missed[step] = [p for p in imported[program] if p not in inputs
                        and not any(Path(p).is_relative_to(i) for i in inputs if (ROOT / i).is_dir())]
    assert missed == {"svm-data": [], "train-svm": [], "train-mnist": []}, "code a step runs is not in its key"
    assert "pyserving/runtime/warmup.py" in imported[SVM]  # the truth is not trivially empty
    svm_inputs = json.loads((build / ".stamps" / "train-svm.json").read_text())["inputs"]
    assert {str(build / "data" / "svm_200x4_train.csv"), str(build / "data" / "svm_200x4_dev.csv")} <= set(svm_inputs)
    mnist_inputs = json.loads((build / ".stamps" / "train-mnist.json").read_text())["inputs"]
    assert {str(p) for p in mnist_data.iterdir()} <= set(mnist_inputs)


def test_queries_take_one_port_or_one_per_replica():
    """The commands query_svm and query_mnist run, read back by the clients' own parsers."""
    from client import balancing, client, mnist_client, rest

    commands = []
    query.query_svm(commands.append, 8501, label="stable")
    query.query_svm(commands.append, [8501, 8511])
    query.query_mnist(commands.append, 8500)
    query.query_mnist(commands.append, (8500, 8510))
    one, several = (client.build_parser().parse_args(shlex.split(c)[2:]).url for c in commands[:2])
    assert one == "http://127.0.0.1:8501/v1/models/svm/labels/stable"
    assert rest.split_replica_urls(several) == (["http://127.0.0.1:8501", "http://127.0.0.1:8511"], "/v1/models/svm")
    one, several = (mnist_client.build_parser().parse_args(shlex.split(c)[2:]).server for c in commands[2:])
    assert balancing.grpc_target(one) == "127.0.0.1:8500"
    assert balancing.grpc_target(several) == "ipv4:127.0.0.1:8500,127.0.0.1:8510"
