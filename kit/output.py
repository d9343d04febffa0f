"""What the kit's child processes (training, clients) show: TensorFlow's start-up noise on a
CPU-only machine is dropped unless --verbose, and progress bars appear when the kit's own output
is a terminal.

Measured with TensorFlow 2.21 on a machine without a GPU: TF_CPP_MIN_LOG_LEVEL=2 (the kit's
default) hides TensorFlow's INFO and WARNING log lines but not the `failed call to cuInit` ERROR
line; 3 hides that too, and real errors with it. Neither hides three lines absl prints before its
logging is initialised, each twice in one import of TensorFlow:
`WARNING: All log messages before absl::InitializeLog() ...`, `I0000 ... port.cc:N] oneDNN custom
operations are on ...` and `I0000 ... cudart_stub.cc:N] Could not find cuda drivers ...`; nor does
CUDA_VISIBLE_DEVICES. (2.20 printed an `MLIR V1 optimization pass is not enabled` line instead of
the last two.) So the level stays at 2 and those lines are dropped from the children's stderr by
pattern.
"""
from __future__ import annotations

import re
import shutil
import sys
from typing import TextIO

NOISE = re.compile(
    r"failed call to cuInit"
    r"|^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|\] oneDNN custom operations are on\. You may see slightly different numerical results"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\.$"
)


class QuietLines:
    """A text stream for a child's stderr: passes every line on except NOISE lines."""

    def __init__(self, target: TextIO):
        self.target = target
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not NOISE.search(line):
                self.target.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        """Pass on a last line that did not end in a newline."""
        if self.pending and not NOISE.search(self.pending):
            self.target.write(self.pending)
        self.pending = ""
        self.target.flush()


def child_env(verbose: bool) -> dict[str, str]:
    """Environment for a child: every TensorFlow log line when verbose; and, when the kit writes
    to a terminal, the child's rich progress bars drawn through the kit's pipe."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "0"} if verbose else {}
    if sys.stdout.isatty():
        env.update(TTY_COMPATIBLE="1", TTY_INTERACTIVE="1", COLUMNS=str(shutil.get_terminal_size().columns))
    return env
