"""docs/flag-tests.md (kit/devtools/flag_tests.py): every flag of the README's flag table has a test that
names it with `@pytest.mark.flags`, that test does use the flag (the name appears in it, in a
fixture it takes or in its module's constants; the marker itself does not count), and the file
is up to date. A new flag without a test fails here."""
from __future__ import annotations

import ast
import re

from kit.devtools import compat_table, flag_tests
from kit.paths import ROOT


def readme_flags() -> list[str]:
    """The flag names of the README's flag table."""
    readme = (ROOT / "README.md").read_text()
    rows = readme.partition(compat_table.BEGIN)[2].partition(compat_table.END)[0]
    return re.findall(r"^\| `--(\w+)` \|", rows, flags=re.MULTILINE)


def fixture_sources(path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """{fixture name: (its text, the fixtures it takes)} for the fixtures a test module sees: its
    own and its conftests'."""
    sources: dict[str, tuple[str, tuple[str, ...]]] = {}
    folder = path.parent
    files = [path]
    while folder != ROOT:
        files.append(folder / "conftest.py")
        folder = folder.parent
    for file in reversed(files):  # the nearest definition wins, as in pytest
        if not file.exists():
            continue
        text = file.read_text()
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and any("fixture" in ast.unparse(d) for d in node.decorator_list):
                sources[node.name] = (ast.get_source_segment(text, node), tuple(a.arg for a in node.args.args))
    return sources


def fixtures_text(fixtures: dict, names) -> str:
    """The text of the named fixtures and of every fixture they take, transitively."""
    seen, todo, parts = set(), list(names), []
    while todo:
        name = todo.pop()
        if name in seen or name not in fixtures:
            continue
        seen.add(name)
        text, takes = fixtures[name]
        parts.append(text)
        todo.extend(takes)
    return "\n".join(parts)


def test_every_flag_of_the_readme_has_a_test_that_names_it():
    flags = readme_flags()
    assert len(flags) == len(flag_tests.FLAGS) >= 49
    tested = {flag for test in flag_tests.marked_tests() for flag in test.flags}
    assert [f for f in flags if f not in tested] == [], "add a test with @pytest.mark.flags(...) for these flags"
    assert sorted(tested - set(flags)) == [], "markers naming no flag of the README's table"


def module_constants(path) -> str:
    """The text of a module's top-level assignments (a list of flag names a test loops over)."""
    text = path.read_text()
    return "\n".join(ast.get_source_segment(text, node) for node in ast.parse(text).body
                     if isinstance(node, (ast.Assign, ast.AnnAssign)))


def test_a_test_that_names_a_flag_uses_it():
    for test in flag_tests.marked_tests():
        path = ROOT / test.node_id.partition("::")[0]
        fixtures = fixture_sources(path)
        text = "\n".join([test.source, fixtures_text(fixtures, test.fixtures), module_constants(path)])
        for flag in test.flags:
            assert flag in text, f"{test.node_id} is marked for --{flag} but neither it nor its fixtures use it"


def test_the_table_of_flag_tests_is_up_to_date():
    assert flag_tests.DOC.read_text() == flag_tests.current(), "run: python -m kit.devtools.flag_tests --write"


def test_markers_must_name_flags_as_literals(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "import pytest\nNAMES = ['port']\n\n@pytest.mark.flags(*NAMES)\ndef test_y():\n    pass\n")
    try:
        flag_tests.marked_tests(tmp_path)
    except ValueError as exc:
        assert str(exc) == "tests/test_x.py::test_y: name the flags of pytest.mark.flags as string literals"
    else:
        raise AssertionError("a marker without literal names was read")
