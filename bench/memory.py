"""Peak resident memory of this process, the way every benchmark here reports it."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's own peak RSS in MB: VmHWM, the high-water mark of its memory since exec.

    Not getrusage's ru_maxrss: Linux carries that across exec, so a child started from a large
    parent (a benchmark holding a stand-in and a Prefect server) would report the parent's size
    at fork time instead of its own.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
