"""The README's flag compatibility table, generated from pyserving.flags (so it cannot drift).

`python -m kit.devtools.compat_table` prints it; `--write` replaces it in README.md between the markers.
"""
from __future__ import annotations

import sys

from kit.paths import ROOT
from pyserving.flags import FLAGS

BEGIN = "<!-- flags-table:begin -->"
END = "<!-- flags-table:end -->"


def table() -> str:
    rows = ["| Flag | Default | pyserving |", "|---|---|---|"]
    for flag in FLAGS:
        default = "(auto: 4 x CPUs)" if flag.name in ("rest_api_num_threads", "grpc_max_threads") else (
            "(CPUs)" if flag.name == "num_tflite_pools"
            else repr(flag.default).lower() if isinstance(flag.default, bool)
            else f'"{flag.default}"' if isinstance(flag.default, str) else str(flag.default))
        support = {"yes": "supported", "extension": "**pyserving extension**",
                   "refused": "accepted, **refused when set** (start-up stops with one line)"}.get(
            flag.support, "accepted, **no effect** (warns when set)")
        rows.append(f"| `--{flag.name}` | {default} | {support}: {flag.help} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        path = ROOT / "README.md"
        path.write_text(render(path.read_text()))
    else:
        print(table())
