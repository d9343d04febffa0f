"""Run an Invoke task and freeze it at one file-system step, so that a test can kill it there.

    python tests/e2e/freeze_at.py MARKER STEP PATTERN -- TASK ARGS...

An audit hook (PEP 578) watches the task's own file-system calls; at the first STEP whose path
matches PATTERN (fnmatch), before that step runs, it writes MARKER (the step and its path) and
stops the whole process with SIGSTOP. At exactly that point of the task's code, the test then
kills whatever it wants by pid (the task included), or checks what must hold there and lets the
task go on (SIGCONT): no sleep-and-hope. STEPs:

  rename  os.rename / os.replace, matched on the target path (e.g. a version folder renamed into place)
  write   a file opened for writing, frozen at its first write: after the open truncated it,
          before anything was written to it

A script run as a subprocess by tests/e2e/test_updates.py and test_replicas.py, not a test module.
"""
from __future__ import annotations

import fnmatch
import os
import signal
import sys


def main() -> None:
    marker, step, pattern, dashes, *task = sys.argv[1:]
    assert dashes == "--" and step in ("rename", "write"), sys.argv
    fired = False

    def freeze(what: str) -> None:
        nonlocal fired
        fired = True  # the marker's own open and rename come back through the hook
        with open(marker + ".part", "w") as f:
            f.write(what)
        os.replace(marker + ".part", marker)
        os.kill(os.getpid(), signal.SIGSTOP)

    def at_first_write(path: str):
        def profile(_frame, event, arg):
            if event == "c_call" and getattr(arg, "__name__", "") == "write":
                sys.setprofile(None)
                freeze(f"write {path}")
        return profile

    def hook(event: str, args: tuple) -> None:
        if fired:
            return
        if step == "rename" and event == "os.rename":
            path = os.fsdecode(os.fspath(args[1]))
            if fnmatch.fnmatch(path, pattern):
                freeze(f"rename {os.fsdecode(os.fspath(args[0]))} -> {path}")
        elif step == "write" and event == "open" and not isinstance(args[0], int):
            mode, flags = args[1], args[2]  # open(): mode is a str; os.open(): None, and flags say it
            writing = any(c in mode for c in "wax+") if mode else bool(flags & (os.O_WRONLY | os.O_RDWR))
            path = os.fsdecode(os.fspath(args[0]))
            if writing and fnmatch.fnmatch(path, pattern):
                sys.setprofile(at_first_write(path))

    sys.addaudithook(hook)
    sys.argv = ["inv", *task]
    from invoke.main import program

    program.run()


if __name__ == "__main__":
    main()
