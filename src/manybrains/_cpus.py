"""How many CPUs this process may really use.

``os.cpu_count()`` counts the machine's CPUs; a container or ``taskset`` often gives a process
fewer. Starting more CPU-bound workers than usable CPUs only adds context switches.
"""

from __future__ import annotations

import math
import os


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup, in CPUs, or None when unlimited or unknown."""
    v2 = _read(os.path.join(root, "cpu.max"))
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return _ratio(quota, period)
    v1 = os.path.join(root, "cpu")
    return _ratio(_read(os.path.join(v1, "cpu.cfs_quota_us")),
                  _read(os.path.join(v1, "cpu.cfs_period_us")))


def _ratio(quota: str | None, period: str | None) -> float | None:
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:  # "max", missing or malformed: no quota
        return None
    return q / p if q > 0 and p > 0 else None


def _read(path: str) -> str | None:
    # plain open(), not pathlib: this runs on the import path of every cold start
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
