"""What the benchmark scripts print about the machine: CPU model, load average, wall time.

Imported by the scripts beside it (``python benchmarks/<script>.py`` puts this folder on the
import path)."""

from __future__ import annotations

import os
import platform
import time


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def wall_time_footer(t_start: float) -> str:
    """The closing line: wall time since ``t_start`` (``time.perf_counter``) and load average."""
    load = os.getloadavg()
    return (
        f"benchmark wall time {time.perf_counter() - t_start:.0f} s; load average at end "
        f"(1/5/15 min) {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    )
