""".github/workflows/native.yml runs README.md's two commands, and nothing else, on every push
and pull request, on Ubuntu with Python 3.11."""

from __future__ import annotations

import re

import yaml

from tests.helpers import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "native.yml"


def readme_commands() -> list[str]:
    """The commands of README.md's "The two commands" block, without their comments."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The two commands"):]
    [block] = re.findall(r"```shell\n(.*?)```", section, re.S)[:1]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_names_the_two_commands():
    assert sorted(readme_commands()) == ["make reproduce", "make test"]


def test_native_workflow_runs_exactly_the_readme_commands_on_every_push_and_pull_request():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    # PyYAML reads the bare key `on` as True (YAML 1.1); no branch or path filter on either event.
    assert workflow[True] == {"push": None, "pull_request": None}
    [job] = workflow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu-") and "if" not in job
    steps = job["steps"]
    [setup] = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert str(setup["with"]["python-version"]) == "3.11"
    # Nothing installed by hand: only checkout and setup-python besides the two commands.
    assert {s["uses"].split("@")[0] for s in steps if "uses" in s} == {"actions/checkout", "actions/setup-python"}
    runs = [s["run"].strip() for s in steps if "run" in s]
    assert runs == ["make test", "make reproduce"]
    assert sorted(runs) == sorted(readme_commands())
