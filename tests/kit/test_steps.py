"""kit/steps.py: a step reruns exactly when its key (parameters, input files, code) changes or an
output is gone, and is reused, without running, otherwise.

Real files in tmp_path; the build folder (where the stamps go) is pointed there by KIT_BUILD_DIR.
"""
from __future__ import annotations

import json
import re

import pytest

from kit import steps
from kit.paths import ROOT


class Step:
    """One step over real files: an input folder of code, a data file, one output; counts its runs."""

    def __init__(self, root, name="make-thing"):
        self.name = name
        self.code = root / "src"
        self.code.mkdir(parents=True)
        (self.code / "main.py").write_text("print('v1')\n")
        (self.code / "pkg").mkdir()
        (self.code / "pkg" / "helper.py").write_text("K = 1\n")
        self.data = root / "data.csv"
        self.data.write_text("a,b\n1,2\n")
        self.output = root / "out" / f"{name}.bin"
        self.runs = 0

    def action(self):
        self.runs += 1
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.output.write_text(f"run {self.runs}")

    def run(self, params=None, **kwargs) -> bool:
        return steps.run_step(self.name, params if params is not None else {"epochs": 20},
                              [self.code, self.data], [self.output], self.action, **kwargs)


@pytest.fixture
def step(tmp_path, build):
    step = Step(tmp_path / "work")
    assert step.run() is True and step.runs == 1
    return step


def test_unchanged_inputs_are_reused_without_running(step, build, capsys):
    capsys.readouterr()
    assert step.run() is False
    assert step.runs == 1 and step.output.read_text() == "run 1"
    out = capsys.readouterr().out
    assert out.startswith("[make-thing] reused: inputs unchanged since ") and str(step.output) in out
    stamp = json.loads((build / ".stamps" / "make-thing.json").read_text())
    assert stamp["params"] == {"epochs": 20}
    assert stamp["inputs"] == [str(step.code), str(step.data)]


def test_a_changed_parameter_reruns(step, capsys):
    assert step.run({"epochs": 7}) is True and step.runs == 2
    assert "[make-thing] running" in capsys.readouterr().out
    assert step.run({"epochs": 7}) is False  # the new key is recorded
    assert step.run({"epochs": 20}) is True and step.runs == 3  # and going back is a change too


def test_a_changed_data_file_reruns(step):
    step.data.write_text("a,b\n1,3\n")
    assert step.run() is True and step.runs == 2
    assert step.run() is False


def test_a_missing_data_file_and_its_arrival_each_rerun(step):
    step.data.unlink()
    assert step.run() is True and step.runs == 2
    step.data.write_text("a,b\n1,2\n")  # the original content again: still a change from "missing"
    assert step.run() is True and step.runs == 3


@pytest.mark.parametrize("change", ["edit", "edit-nested", "add", "delete"])
def test_a_changed_code_file_in_an_input_folder_reruns(step, change):
    if change == "edit":
        (step.code / "main.py").write_text("print('v2')\n")
    elif change == "edit-nested":
        (step.code / "pkg" / "helper.py").write_text("K = 2\n")
    elif change == "add":
        (step.code / "pkg" / "extra.py").write_text("")
    else:
        (step.code / "pkg" / "helper.py").unlink()
    assert step.run() is True and step.runs == 2
    assert step.run() is False


def test_a_deleted_output_reruns(step):
    step.output.unlink()
    assert step.run() is True and step.runs == 2
    assert step.output.read_text() == "run 2"


def test_only_the_step_whose_input_changed_reruns(tmp_path, build):
    first, second = Step(tmp_path / "one", "first"), Step(tmp_path / "two", "second")
    assert first.run() and second.run()
    first.data.write_text("changed\n")
    assert first.run() is True and second.run() is False
    (second.code / "main.py").write_text("print('v2')\n")
    assert first.run() is False and second.run() is True
    assert (first.runs, second.runs) == (2, 2)


def test_a_step_that_fails_to_produce_its_output_records_nothing(tmp_path, build):
    step = Step(tmp_path / "work")
    step.action = lambda: None  # "succeeds" without writing the output
    with pytest.raises(RuntimeError, match=r"\[make-thing\] finished without producing .*make-thing.bin"):
        step.run()
    assert not (build / ".stamps").exists()


def test_a_dry_run_runs_the_printing_action_and_records_nothing(tmp_path, build, capsys):
    step = Step(tmp_path / "work")
    assert step.run(dry_run=True) is False
    assert step.runs == 1  # the action ran (with a printing runner, in real use)
    assert capsys.readouterr().out.startswith("[make-thing] dry run: would run")
    assert not (build / ".stamps").exists()
    step.output.unlink()
    assert step.run() is True and step.runs == 2  # nothing was recorded: the real run runs


def test_a_dry_run_says_what_the_real_run_would_reuse_and_runs_nothing(step, capsys):
    capsys.readouterr()
    assert step.run(dry_run=True) is False and step.runs == 1  # not even the printing action
    out = capsys.readouterr().out
    assert out.startswith("[make-thing] dry run: would reuse: inputs unchanged since ") and str(step.output) in out
    assert step.run({"epochs": 7}, dry_run=True) is False and step.runs == 2  # a change: it would run
    assert capsys.readouterr().out.startswith("[make-thing] dry run: would run")
    step.output.unlink()
    assert step.run(dry_run=True) is False and step.runs == 3  # an output gone: it would run
    assert capsys.readouterr().out.startswith("[make-thing] dry run: would run")
    step.output.unlink()  # this test's action wrote it again; a printing runner writes nothing
    assert step.run() is True and step.runs == 4  # and the real run agrees


def test_the_stamps_follow_the_build_folder(tmp_path, monkeypatch, step, build):
    assert (build / ".stamps" / "make-thing.json").is_file()
    monkeypatch.setenv("KIT_BUILD_DIR", str(tmp_path / "other-build"))
    assert step.run() is True and step.runs == 2  # a build folder without stamps: nothing to reuse
    assert (tmp_path / "other-build" / ".stamps" / "make-thing.json").is_file()


def test_the_digest_covers_parameters_file_names_and_contents(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("x")
    b.write_text("x")
    assert steps.digest({"n": 1}, [a]) == steps.digest({"n": 1}, [a])
    assert steps.digest({"n": 1, "m": 2}, [a, b]) == steps.digest({"m": 2, "n": 1}, [b, a])  # order-free
    keys = {steps.digest({"n": 1}, [a]), steps.digest({"n": 2}, [a]), steps.digest({"n": 1}, [b]),
            steps.digest({"n": 1}, [a, b]), steps.digest({"n": 1}, [])}
    assert len(keys) == 5


# ---- what the survivors of `make mutate` showed untested ----------------------------------------
def test_parameters_that_json_cannot_hold_are_keyed_and_recorded_as_text(tmp_path, build):
    step = Step(tmp_path / "work")
    assert step.run({"data": tmp_path / "a.csv", "epochs": 3}) is True
    stamp = json.loads((build / ".stamps" / "make-thing.json").read_text())
    assert stamp["params"] == {"data": str(tmp_path / "a.csv"), "epochs": 3}
    assert step.run({"data": tmp_path / "a.csv", "epochs": 3}) is False
    assert step.run({"data": tmp_path / "b.csv", "epochs": 3}) is True  # another path: another key


def test_inputs_inside_the_repository_are_recorded_relative_to_it(tmp_path, build):
    step = Step(tmp_path / "work")
    assert steps.run_step("code", {}, [ROOT / "kit" / "steps.py", step.data], [step.output], step.action)
    stamp = json.loads((build / ".stamps" / "code.json").read_text())
    assert stamp["inputs"] == ["kit/steps.py", str(step.data)]


def test_what_a_step_says(tmp_path, build, capsys):
    step = Step(tmp_path / "work")
    second = tmp_path / "work" / "out" / "second.bin"

    def action():
        step.action()
        second.write_text("2")

    assert steps.run_step("pair", {}, [step.data], [step.output, second], action) is True
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[pair] running"
    done = re.fullmatch(r"\[pair\] done in (\d+\.\d) s", lines[1])
    assert done and float(done.group(1)) < 60
    assert steps.run_step("pair", {}, [step.data], [step.output, second], action) is False
    reused = capsys.readouterr().out.strip()
    when = json.loads((build / ".stamps" / "pair.json").read_text())["when"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", when)
    assert reused == f"[pair] reused: inputs unchanged since {when} ({step.output}, {second})"


def test_a_step_names_every_output_it_failed_to_produce(tmp_path, build):
    one, two = tmp_path / "one.bin", tmp_path / "two.bin"
    with pytest.raises(RuntimeError) as err:
        steps.run_step("none", {}, [], [one, two], lambda: None)
    assert str(err.value) == f"[none] finished without producing {one}, {two}"


def test_python_sources_are_the_project_files_a_module_imports_even_inside_functions():
    sources = steps.python_sources("pyserving.core.server_core")
    shown = {str(p.relative_to(ROOT)) for p in sources}
    assert {"pyserving/__init__.py", "pyserving/core/server_core.py", "pyserving/core/manager.py",
            "pyserving/core/source.py", "pyserving/errors.py"} <= shown
    assert "pyserving/core/config.py" in shown  # imported inside ServerCore._poll
    assert all(p.is_relative_to(ROOT) for p in sources) and sources == sorted(sources)
    assert "pyserving/protocols/rest.py" not in shown  # not imported: not an input
