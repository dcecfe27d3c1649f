"""CPU time of a process, read from /proc: the decoder pool, the run summary and the benchmarks use it."""
from __future__ import annotations

import os


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used so far, from /proc (0 once it is gone, or off Linux)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0
