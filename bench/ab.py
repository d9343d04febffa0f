"""Before/after serving benchmark: this tree's server against another revision's, interleaved.

    .venv/bin/python bench/ab.py --base b392575            (`make bench-ab BASE=b392575`)

Checks the revision out into a temporary git worktree, then runs bench/serving.py (this tree's
client, models and null servers) against each tree's server in turn, A B A B ..., so both see
the same machine state, and prints per cell (model, batching, protocol, concurrency):
  * the median req/s of each side and their ratio (after / before);
  * the same ratio with each run's cell divided by that run's null-server cell (same model and
    protocol): the null servers are the same code on both sides, so a ratio of theirs away from
    1.00 is the machine's noise, and dividing by them takes out what slowed a whole run down.
On a shared 2-core machine a single run's cell moves by 20 % or more; read the null rows first.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_side(server_root: Path, out: Path, args, server_python: str) -> dict:
    command = [sys.executable, str(ROOT / "bench" / "serving.py"), "--no-in-process", "--server-root",
               str(server_root), "--server-python", server_python, "--json", str(out),
               "--concurrency", args.concurrency, "--models", args.models, "--seconds", str(args.seconds)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL if args.quiet else None)
    return json.loads(out.read_text())


def cells(report: dict):
    for model, by_label in report.items():
        for label, by_protocol in by_label.items():
            for protocol, by_c in by_protocol.items():
                for c, value in by_c.items():
                    yield (model, label, protocol, c), value


def summarize(runs: dict[str, list[dict]]) -> list[tuple]:
    """(cell, median before, median after, ratio, null-normalised ratio) for every cell."""
    values: dict = {}
    for side, reports in runs.items():
        for report in reports:
            for key, value in cells(report):
                values.setdefault(key, {}).setdefault(side, []).append(value)
    rows = []
    for key, sides in values.items():
        model, label, protocol, c = key
        before, after = statistics.median(sides["before"]), statistics.median(sides["after"])
        null = values[(model, "null", protocol, c)]
        norm = {side: statistics.median(v / n for v, n in zip(sides[side], null[side])) for side in sides}
        rows.append((key, before, after, after / before if before else 0.0,
                     norm["after"] / norm["before"] if norm["before"] else 0.0))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git revision to compare against (before)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side, interleaved")
    parser.add_argument("--concurrency", default="32")
    parser.add_argument("--models", default="half_plus_two,wide")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument("--base-python", default=sys.executable,
                        help="the Python the base's server runs with, e.g. another venv's, to compare dependency "
                             "versions (TensorFlow) as well as code; default: this one")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(base), args.base],
                       check=True)
        try:
            for n in range(args.rounds):
                for side, root, python in (("before", base, args.base_python), ("after", ROOT, sys.executable)):
                    print(f"# round {n + 1}/{args.rounds}: {side} ({args.base if side == 'before' else 'this tree'})",
                          flush=True)
                    runs[side].append(run_side(root, Path(tmp) / f"{side}-{n}.json", args, python))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    print(f"\nreq/s, median of {args.rounds} interleaved runs; before = {args.base} ({args.base_python}), "
          f"after = this tree ({sys.executable})")
    print(f"{'model':<14} {'batching':<8} {'proto':<5} {'conc':>4} {'before':>8} {'after':>8} {'after/before':>12} "
          f"{'null-normalised':>15}")
    for (model, label, protocol, c), before, after, ratio, norm in summarize(runs):
        shown = "" if label == "null" else f"{norm:15.2f}"
        print(f"{model:<14} {label:<8} {protocol:<5} {c:>4} {before:8.0f} {after:8.0f} {ratio:12.2f} {shown}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
