"""How many CPUs this process may use: `--pyserving_num_workers=auto`.

os.cpu_count() counts the machine's; a container or a `taskset` gives a process fewer. Both
limits count: the CPU affinity mask, and the cgroup's CPU quota (v2 `cpu.max`, v1
`cpu.cfs_quota_us`/`cpu.cfs_period_us`), rounded up (a 1.5-CPU limit gets 2 workers: the
second one still has half a CPU to use, and a worker waiting on I/O costs little).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP) -> Optional[float]:
    """The cgroup's CPU limit in CPUs, or None when there is none (or no cgroup file to read)."""
    try:  # cgroup v2: "max 100000" (no limit) or "<quota> <period>"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: a quota of -1 is no limit
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available(root: Path = CGROUP) -> int:
    """CPUs this process may use: the affinity mask, capped by the cgroup quota; at least 1."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_quota(root)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(count, 1)
