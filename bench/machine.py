"""The machine a benchmark ran on, measured at the start of the run (never written in by hand)."""

from __future__ import annotations

import os
import platform


def machine() -> dict:
    """CPU count, memory, OS, Python and the load average when the run started (a busy machine is slower)."""
    memory_kb = 0
    with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    return {"cpus": os.cpu_count(), "memory_gb": round(memory_kb / 1024 ** 2, 1), "os": platform.platform(),
            "python": platform.python_version(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def describe(facts: dict | str) -> str:
    """One line for a results table: '2 cores, 23.5 GB, load 1.79 at start' (older results stored a string)."""
    if isinstance(facts, str):
        return facts
    return (f"{facts['cpus']} cores, {facts['memory_gb']} GB, load {facts['load_average_at_start'][0]} "
            f"at start")
