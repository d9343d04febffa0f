"""The kit's layering: which part of kit/ may import which, read from the sources (no import runs).

Plumbing (paths, process, output, errors, task, steps, model_config) sits at the bottom and imports no
subpackage; serve/ imports only plumbing; the generic rollout imports no target (a target
registers in kit/targets.py); nothing imports upwards, so the graph has no cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

from kit.paths import ROOT

KIT = ROOT / "kit"
PLUMBING = {"paths", "process", "output", "errors", "task", "steps", "model_config"}
# part -> the parts it may import (besides itself). Read as "pipeline may use serve".
ALLOWED = {
    "plumbing": set(),
    "serve": {"plumbing"},
    "pipeline": {"plumbing", "serve"},
    "rollout": {"plumbing", "serve"},
    "images": {"plumbing", "serve"},
    "k8s": {"plumbing", "serve", "images", "rollout"},
    "soak": {"plumbing", "serve", "rollout"},
    "devtools": {"plumbing"},
    "targets": {"plumbing", "rollout", "k8s"},  # the registry of rollout targets: composition only
}


def part(module: str) -> str | None:
    """kit.serve.server -> serve; kit.paths -> plumbing; not kit -> None."""
    names = module.split(".")
    if names[0] != "kit" or len(names) < 2:
        return None
    return "plumbing" if names[1] in PLUMBING else names[1]


def module_name(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path) -> set[str]:
    """Every kit module a file imports, at any depth of the file (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "kit":
                found |= {f"kit.{alias.name}" for alias in node.names}
            elif node.module.startswith("kit."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("kit.")}
    return found


def graph(root: Path = KIT) -> dict[str, dict[str, set[str]]]:
    """part -> part it imports -> the modules that do it."""
    edges: dict[str, dict[str, set[str]]] = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        source = part(name)
        for imported in imports(path):
            target = part(imported)
            if source and target and target != source:
                edges.setdefault(source, {}).setdefault(target, set()).add(name)
    return edges


def violations(edges: dict[str, dict[str, set[str]]]) -> list[str]:
    return [f"{source} imports {target} ({', '.join(sorted(by))})"
            for source, targets in sorted(edges.items()) for target, by in sorted(targets.items())
            if source not in ALLOWED or target not in ALLOWED[source]]


def test_every_part_of_kit_has_a_place_in_the_table():
    parts = {part(module_name(p, KIT)) for p in KIT.rglob("*.py")} - {None}
    assert parts == set(ALLOWED)


def test_no_part_of_kit_imports_one_it_may_not():
    assert violations(graph()) == []


def test_the_allowed_graph_has_no_cycle():
    def reaches(start: str, goal: str, seen: frozenset = frozenset()) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in ALLOWED[start])

    assert [p for p in ALLOWED if reaches(p, p)] == []


def test_the_generic_rollout_imports_no_target_but_its_own_local_one():
    rollout = {module_name(p, KIT): imports(p) for p in (KIT / "rollout").rglob("*.py")}
    assert {m: sorted(i for i in found if i.startswith(("kit.k8s", "kit.targets")))
            for m, found in rollout.items() if any(i.startswith(("kit.k8s", "kit.targets")) for i in found)} == {}


def test_the_guard_catches_an_import_against_the_layering(tmp_path):
    """A copy of kit/ with one arrow back up (serve importing the rollout) is named by the guard."""
    copy = tmp_path / "kit"
    for path in KIT.rglob("*.py"):
        target = copy / path.relative_to(KIT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    server = copy / "serve" / "server.py"
    server.write_text(server.read_text() + "\nfrom kit.rollout import plan  # noqa\n")
    assert violations(graph(copy)) == ["serve imports rollout (kit.serve.server)"]
