"""Cores busy over time: runs a command and prints, every interval, the CPU its process tree used,
split into the command's own process (all its threads) and its child processes (decoder children,
worker processes), with the command's log lines in between so the phases can be told apart.

    python bench/cpu_timeline.py [--interval 0.5] -- python -m beam_pipeline --train_dir ... --output_dir ...

Reads /proc (Linux). A column of 2.00 on 2 cores means both were busy for the whole interval.
"""
from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from process_tree import descendants  # noqa: E402 - the same /proc reader as the benchmarks

from ecg_common.cpu_time import process_cpu_seconds  # noqa: E402


def _log_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        if " INFO " in line or line.startswith("wrote ") or line.startswith("error"):
            lines.put(line.rstrip()[:140])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = [part for part in args.command if part != "--"] or parser.error("no command given")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_log_lines, args=(process.stderr, lines), daemon=True).start()
    started, seen = time.monotonic(), {}
    previous = {"own": 0.0, "children": 0.0}
    print(f"{'t (s)':>6} {'total':>6} {'own':>6} {'children':>8}   (cores busy in each interval)")
    while process.poll() is None:
        time.sleep(args.interval)
        for pid in [process.pid, *descendants(process.pid)]:
            seen[pid] = max(seen.get(pid, 0.0), process_cpu_seconds(pid))
        now = {"own": seen.get(process.pid, 0.0), "children": sum(v for p, v in seen.items() if p != process.pid)}
        busy = {key: (now[key] - previous[key]) / args.interval for key in now}
        previous = now
        while not lines.empty():
            print(f"{'':>6} {lines.get()}")
        print(f"{time.monotonic() - started:6.1f} {busy['own'] + busy['children']:6.2f} {busy['own']:6.2f} "
              f"{busy['children']:8.2f}")
    total = sum(seen.values())
    print(f"exit {process.returncode}; {total:.1f} CPU s in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
