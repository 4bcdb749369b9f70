"""The machine a benchmark ran on, measured at the start of the run (never written in by hand), and the spread
of a measure taken several times (one run says little on a shared machine)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def machine() -> dict:
    """CPU count, memory, OS, Python and the load average when the run started (a busy machine is slower)."""
    memory_kb = 0
    with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024**2, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def describe(facts: dict | str) -> str:
    """One line for a results table: '2 cores, 23.5 GB, load 1.79 at start' (older results stored a string,
    some only part of the facts)."""
    if isinstance(facts, str):
        return facts
    parts = [f"{facts['cpus']} cores"] if facts.get("cpus") else []
    if facts.get("memory_gb"):
        parts.append(f"{facts['memory_gb']} GB")
    if facts.get("load_average_at_start"):
        parts.append(f"load {facts['load_average_at_start'][0]} at start")
    return ", ".join(parts) or "not recorded"


def spread(values: list[float], digits: int = 2) -> dict:
    """The spread of repeated measures: {'runs', 'median', 'min', 'max', 'values'} (what bench/report.py renders
    as 'median (min–max, n runs)')."""
    if not values:
        raise ValueError("spread of no values")
    return {
        "runs": len(values),
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "values": [round(v, digits) for v in values],
    }


def timed_runs(fn: Callable[[], object], runs: int = 3, digits: int = 2) -> dict:
    """Call ``fn`` ``runs`` times and return the spread of its wall-clock seconds (see ``spread``); a caller
    that needs what ``fn`` computed keeps it from inside ``fn``."""
    if runs < 1:
        raise ValueError("runs must be at least 1")
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return spread(seconds, digits)
