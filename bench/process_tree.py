"""Wall time, peak memory and CPU time of a command's whole process tree (workers and decoder
children included), read from /proc: what every benchmark in bench/ reports, measured one way."""
from __future__ import annotations

import dataclasses
import os
import resource
import subprocess
import threading
import time

from ecg_common.cpu_time import process_cpu_seconds


def descendants(pid: int) -> list[int]:
    """All descendants of `pid`, read from /proc (no psutil dependency)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclasses.dataclass(frozen=True)
class Run:
    wall_s: float
    peak_mb: float
    cpu_s: float
    stdout: str = ""

    @property
    def cores_busy(self) -> float:
        """Average number of cores the process tree kept busy: CPU seconds / wall seconds."""
        return self.cpu_s / self.wall_s


def measure(command: list[str], cwd: str | None = None) -> Run:
    """Runs `command`; returns its wall time, the peak RSS of its process tree (sampled) and the CPU
    time of the whole tree: per process, the last sample, or what the kernel reports for the reaped
    ones (whichever is larger, as a process can end between two samples), and what it printed.

    The file system is synced first (not timed): a command must not pay for writing back the previous
    command's output (a gigabyte of TFRecords from each baseline, flushed for ~30 s after it ends)."""
    os.sync()
    started = time.monotonic()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    cpu_by_pid: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            tree = [process.pid, *descendants(process.pid)]
            peak = max(peak, sum(_rss_mb(p) for p in tree))
            for pid in tree:
                cpu_by_pid[pid] = max(cpu_by_pid.get(pid, 0.0), process_cpu_seconds(pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({process.returncode}): {stderr.strip().splitlines()[-1:]}")
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (children_after.ru_utime + children_after.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    return Run(wall, peak, max(reaped, sum(cpu_by_pid.values())), stdout)
