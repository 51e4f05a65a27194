"""cProfile of a job's main thread and its fetch pool, summed into rows a result file can hold."""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
from contextlib import contextmanager

# Where a thread only waits for another (Prefect's loop threads, the pool's queue): not work.
IDLE = ("acquire", "poll", "sleep", "'get' of '_queue", "select", "wait", "join")
OURS = ("tasks/", "flows/")


@contextmanager
def profiled(out: dict, top: int = 20, pool_prefix: str = "yahoo"):
    """Profile the block's thread and the pool threads it starts (named pool_prefix*).

    cProfile sees only the thread that enabled it and yfinance parses in a thread pool, so each
    pool thread gets a profiler of its own at its first event; all are merged at the end.
    out gets "self" (functions by their own time, idle waits left out) and "ours" (the
    project's functions by cumulative time: the phases of the job).
    """
    main, others = cProfile.Profile(), []

    def start_thread_profile(*_):
        if threading.current_thread().name.startswith(pool_prefix):
            prof = cProfile.Profile()
            others.append(prof)
            prof.enable()  # replaces this hook for the rest of the thread
        else:
            sys.setprofile(None)

    threading.setprofile(start_thread_profile)
    main.enable()
    try:
        yield
    finally:
        main.disable()
        threading.setprofile(None)
        stats = pstats.Stats(main)
        for prof in others:
            prof.create_stats()
            stats.add(prof)
        rows = []
        for (path, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():
            short = "/".join(path.split("/")[-3:]) if path != "~" else ""
            rows.append((f"{short}:{line}({name})", calls, tottime, cumtime, path))
        busy = [r for r in rows if not any(w in r[0] for w in IDLE)]
        busy.sort(key=lambda r: -r[2])
        out["self"] = [
            {"function": r[0], "calls": r[1], "tottime_s": round(r[2], 2)} for r in busy[:top]
        ]
        ours = [
            r for r in rows if any(f"/{p}" in r[4] for p in OURS) and "site-packages" not in r[4]
        ]
        ours.sort(key=lambda r: -r[3])
        out["ours"] = [
            {"function": r[0], "calls": r[1], "cumtime_s": round(r[3], 2)} for r in ours[:top]
        ]
