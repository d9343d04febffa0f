"""The kit's one error type for a user's mistake: a step run before the one it needs, an option
out of range. Every task shows it as one line and exits 1 (kit/task.py); anything else that
escapes a task is a bug, and keeps its traceback."""
from __future__ import annotations


class KitError(RuntimeError):
    """A mistake the user can fix; its message says how, in one line."""
