"""CPU and memory of a process tree from /proc (Linux), as the reference's cpu_snap.py reads them."""

from __future__ import annotations

import os
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime ticks) of pid, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


@dataclass(frozen=True, slots=True)
class CpuSnap:
    tree_ticks: int        # utime+stime of pid and its descendants
    machine_total: int     # sum of the first 8 fields of /proc/stat's cpu line
    machine_idle: int      # idle + iowait


def cpu_snap(pid: int | None) -> CpuSnap:
    ticks = 0
    if pid:
        info = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                st = _stat(int(d))
                if st:
                    info[int(d)] = st
        want = {pid}
        changed = True
        while changed:  # bounded: each pass adds at least one pid or stops
            changed = False
            for p, (ppid, _) in info.items():
                if ppid in want and p not in want:
                    want.add(p)
                    changed = True
        ticks = sum(info[p][1] for p in want if p in info)
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return CpuSnap(ticks, sum(v[:8]), v[3] + v[4])


def cpu_pct(a: CpuSnap, b: CpuSnap, wall_s: float) -> float:
    """CPU% of the tree between two snaps (100 = one core busy)."""
    return (b.tree_ticks - a.tree_ticks) / CLK_TCK / wall_s * 100.0 if wall_s > 0 else 0.0


def machine_busy_pct(a: CpuSnap, b: CpuSnap) -> float:
    """Whole machine busy between two snaps, in 'cores x 100' like the reference (200 = both cores)."""
    d = b.machine_total - a.machine_total
    return (d - (b.machine_idle - a.machine_idle)) / d * 100.0 * NPROC if d > 0 else 0.0


def rss_kib(pid: int) -> int:
    """VmRSS of pid in KiB (0 when gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
