"""kit/devtools/mutation_report.py: `make mutate`'s table, read from mutmut's own result files."""
from __future__ import annotations

import json

from kit.devtools import mutation_report


def write_meta(root, module, codes):
    meta = root / f"{module}.meta"
    meta.parent.mkdir(parents=True, exist_ok=True)
    # The keys mutmut 3.8 writes; only exit_code_by_key is read.
    meta.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": {},
                                "type_check_error_by_key": {}, "durations_by_key": {},
                                "estimated_durations_by_key": {}}))


def test_counts_per_module_with_mutmuts_own_exit_code_meanings(tmp_path, capsys):
    write_meta(tmp_path, "pkg/a.py", {"pkg.a.x_f__mutmut_1": 1, "pkg.a.x_f__mutmut_2": 0, "pkg.a.x_f__mutmut_3": 36,
                                      "pkg.a.x_g__mutmut_1": 33, "pkg.a.x_g__mutmut_2": None, "pkg.a.x_g__mutmut_3": 3})
    write_meta(tmp_path, "pkg/b.py", {"pkg.b.x_h__mutmut_1": 1})
    write_meta(tmp_path, "pkg/__init__.py", {})  # a module without mutants is left out
    assert mutation_report.main([str(tmp_path), "--survivors"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in out if line.startswith(("pkg/", "total"))}
    #                      mutants killed survived timeout no-tests other score
    assert rows == {"pkg/a.py": ["6", "2", "1", "1", "1", "1", "75%"],  # (2 killed + 1 timeout) of 4 tested
                    "pkg/b.py": ["1", "1", "0", "0", "0", "0", "100%"],
                    "total": ["7", "3", "1", "1", "1", "1", "80%"]}
    assert out[-1].strip() == "pkg.a.x_f__mutmut_2"  # the one survivor, by name


def test_without_results_it_says_what_to_run(tmp_path, capsys):
    assert mutation_report.main([str(tmp_path / "mutants")]) == 1
    assert "run `make mutate` first" in capsys.readouterr().out
