"""`make mutate`'s summary: mutmut's results per mutated module, as one table.

mutmut 3 keeps one `<module path>.meta` JSON file per mutated module under mutants/, whose
`exit_code_by_key` maps each mutant to the exit code of its test run (None: not run yet). The
exit codes are read with mutmut's own table (mutmut.stats.status_by_exit_code), so a status
here is the one `mutmut results` and `mutmut browse` show.

    python -m kit.devtools.mutation_report [mutants_dir] [--survivors]
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Callable, Mapping, Optional

COLUMNS = ("mutants", "killed", "survived", "timeout", "no tests", "other")
# mutmut statuses that are a kill for the score (a type checker's catch is one too, if configured).
KILLED = ("killed", "caught by type check")


def status_table() -> Callable[[Optional[int]], str]:
    from mutmut.stats import status_by_exit_code  # the pinned mutmut's own mapping

    return lambda code: status_by_exit_code[code]


def module_name(meta: Path, root: Path) -> str:
    return meta.relative_to(root).as_posix().removesuffix(".meta")


def read_results(root: Path) -> dict[str, dict[str, Optional[int]]]:
    """module path -> {mutant name: exit code}, for every module that has mutants."""
    results = {}
    for meta in sorted(root.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            results[module_name(meta, root)] = codes
    return results


def count(codes: Mapping[str, Optional[int]], status: Callable[[Optional[int]], str]) -> Counter:
    """mutants, killed, survived, timeout, no tests and other (not checked, suspicious, segfault...)."""
    counts = Counter({column: 0 for column in COLUMNS})
    for code in codes.values():
        name = status(code)
        column = "killed" if name in KILLED else name if name in COLUMNS else "other"
        counts[column] += 1
        counts["mutants"] += 1
    return counts


def score(counts: Mapping[str, int]) -> str:
    """Caught out of judged: (killed + timeout) / (killed + timeout + survived). A timeout is a
    catch (the mutant hangs or stalls the tests); mutants no test reaches, or not run, are left out."""
    caught = counts["killed"] + counts["timeout"]
    judged = caught + counts["survived"]
    return f"{100 * caught / judged:.0f}%" if judged else "-"


def table(results: Mapping[str, Mapping[str, Optional[int]]], status: Callable[[Optional[int]], str]) -> str:
    rows = [(module, count(codes, status)) for module, codes in results.items()]
    total = sum((c for _, c in rows), Counter({column: 0 for column in COLUMNS}))
    width = max([len("module"), len("total")] + [len(m) for m, _ in rows])
    header = f"{'module':<{width}}" + "".join(f"{c:>10}" for c in COLUMNS) + f"{'score':>8}"
    lines = [header, "-" * len(header)]
    for module, counts in rows + [("total", total)]:
        if module == "total":
            lines.append("-" * len(header))
        lines.append(f"{module:<{width}}" + "".join(f"{counts[c]:>10}" for c in COLUMNS) + f"{score(counts):>8}")
    return "\n".join(lines)


def survivors(results: Mapping[str, Mapping[str, Optional[int]]], status: Callable[[Optional[int]], str]) -> list[str]:
    return [name for codes in results.values() for name, code in codes.items() if status(code) == "survived"]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mutants_dir", nargs="?", default="mutants", type=Path)
    parser.add_argument("--survivors", action="store_true", help="also list the surviving mutants")
    args = parser.parse_args(argv)
    results = read_results(args.mutants_dir)
    if not results:
        print(f"no mutmut results under {args.mutants_dir}/: run `make mutate` first")
        return 1
    status = status_table()
    print(table(results, status))
    if args.survivors:
        print("\nsurvivors (`.venv/bin/mutmut show <name>` shows the change):")
        print("\n".join(f"  {name}" for name in survivors(results, status)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
