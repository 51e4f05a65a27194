"""Memory cgroups (v1) that cap a worker as its systemd unit's MemoryMax does, and meter its runs.

Production runs each Oracle worker as a systemd service whose MemoryMax holds the worker and
the flow runs it starts (deployments/units.py). Here a worker is started inside a cgroup capped
at that MemoryMax, with swap forbidden as MemorySwapMax=0 does; each flow run it starts joins a
cgroup of its own nested below (the process pool's `command` job variable, run_command), capped
at the job's budget, so the kernel both enforces the budget and says what the run used.

Needs root and the cgroup v1 memory controller at /sys/fs/cgroup/memory (`unavailable()`
says why not). Every cgroup made here is removed again, its processes killed first.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MEMORY = Path("/sys/fs/cgroup/memory")
PREFIX = "investflow-"
UNLIMITED = -1
MB = 2**20
_SIZE = re.compile(r"(\d+)([KMG]?)")


def size_bytes(text: str) -> int:
    """A systemd size ("350M", "1G", "512K", bytes) in bytes; systemd counts in 1024s too."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a systemd memory size: {text!r}")
    return int(match[1]) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[match[2]]


def unavailable() -> str | None:
    """Why memory cgroups cannot be made here (not root, no v1 memory controller), or None."""
    if os.geteuid() != 0:
        return "memory cgroups need root"
    if not (MEMORY / "memory.limit_in_bytes").exists():
        return f"no cgroup v1 memory controller mounted at {MEMORY}"
    probe = MEMORY / f"{PREFIX}probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return f"cannot create a cgroup under {MEMORY}: {exc}"
    return None


@dataclass
class Cgroup:
    """One memory cgroup directory."""

    path: Path

    @classmethod
    def create(cls, name: str, limit: int, parent: Path = MEMORY) -> Cgroup:
        group = cls(parent / name)
        group.path.mkdir()
        try:
            group.set_limit(limit)
        except BaseException:
            group.remove()
            raise
        return group

    def set_limit(self, limit: int) -> None:
        """Cap memory at limit bytes (UNLIMITED: none), and memory plus swap at the same.

        Swap is forbidden as the units' MemorySwapMax=0 does. The kernel keeps memory plus swap
        at or above memory alone, so a limit going up is written to memsw first, one going
        down to memory first.
        """
        order = ["memory.limit_in_bytes"]
        if (self.path / "memory.memsw.limit_in_bytes").exists():
            raising = limit == UNLIMITED or limit >= self.limit_bytes
            order.insert(0 if raising else 1, "memory.memsw.limit_in_bytes")
        for name in order:
            self._write(name, limit)

    def command(self, argv: list[str]) -> list[str]:
        """argv, started as a member of this group (and so are its children)."""
        join = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        return ["/bin/sh", "-c", join, str(self.path), *argv]

    def pids(self) -> list[int]:
        with contextlib.suppress(FileNotFoundError):
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        return []

    def children(self) -> list[Cgroup]:
        return [Cgroup(p) for p in self.path.iterdir() if p.is_dir()]

    @property
    def limit_bytes(self) -> int:
        return int(self._read("memory.limit_in_bytes"))

    @property
    def swap_limit_bytes(self) -> int | None:
        """The memory plus swap limit, None where the kernel does not account swap."""
        if not (self.path / "memory.memsw.limit_in_bytes").exists():
            return None
        return int(self._read("memory.memsw.limit_in_bytes"))

    @property
    def peak_bytes(self) -> int:
        """The most memory the kernel ever charged here: anonymous memory and page cache."""
        return int(self._read("memory.max_usage_in_bytes"))

    def reset_peak(self) -> None:
        """Start peak_bytes afresh from the memory charged now."""
        self._write("memory.max_usage_in_bytes", 0)

    @property
    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer took from this group for exceeding its limit."""
        for line in self._read("memory.oom_control").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def remove(self, timeout: float = 10.0) -> None:
        """Kill whatever still runs here, then remove this group and those below it."""
        for child in self.children():
            child.remove(timeout)
        deadline = time.monotonic() + timeout
        while self.path.exists():
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                self.path.rmdir()
            except FileNotFoundError:
                return
            except OSError:  # EBUSY until the killed processes are gone
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def _write(self, name: str, value: int) -> None:
        (self.path / name).write_text(str(value))


@contextlib.contextmanager
def capped(name: str, limit: int) -> Iterator[Cgroup]:
    """A fresh top-level cgroup capped at limit bytes, removed again (processes killed) after."""
    group = Cgroup.create(f"{PREFIX}{name}-{uuid.uuid4().hex[:8]}", limit)
    try:
        yield group
    finally:
        group.remove()


def run_group(worker: Cgroup, flow_run_id) -> Cgroup:
    """The cgroup run_command puts one flow run in."""
    return Cgroup(worker.path / f"run-{flow_run_id}")


def run_command(limit: int, python: str = sys.executable) -> str:
    """A process pool `command` that starts each flow run in a cgroup of its own, capped.

    The group is made below the one the worker started it in (its own), named run-<flow run
    id> and capped at limit bytes, swap included; then the engine is exec'd, so the flow run's
    process and what it starts (pg_dump, redis-server) are all that is there. A resubmitted
    run reuses its group.
    """
    script = (
        # This process's memory cgroup: the worker's, as the kernel reports it.
        'while IFS=: read -r _ c p; do case ",$c," in *,memory,*) g="$p";; esac; '
        "done < /proc/self/cgroup; "
        'd="$0${g%/}/run-$PREFECT__FLOW_RUN_ID" && mkdir -p "$d" '
        '&& echo "$1" > "$d/memory.limit_in_bytes" '
        '&& { [ ! -e "$d/memory.memsw.limit_in_bytes" ] '
        '|| echo "$1" > "$d/memory.memsw.limit_in_bytes"; } '
        '&& echo $$ > "$d/cgroup.procs" && shift && exec "$@"'
    )
    argv = ["/bin/sh", "-c", script, str(MEMORY), str(limit), python, "-m", "prefect.engine"]
    return shlex.join(argv)


@dataclass
class Metered:
    """What one run used: its processes' own peaks, and the kernel's figures for its group."""

    job_peak_mb: float  # every process's VmHWM summed: a bound no sampling can undercut
    flow_process_peak_mb: float  # the flow run process's own VmHWM
    cgroup_peak_mb: float  # anonymous memory and page cache (the dump it wrote) together
    oom_kills: int
    processes: dict[str, float] = field(default_factory=dict)  # program -> largest VmHWM, MB


class Meter:
    """Reads each process in a run's group every interval, until the block ends: its VmHWM.

    VmHWM is a process's own high-water mark of resident memory (bench/memory.py), so a
    reading taken any time before it exits has its peak, however short the spike: only growth
    in its last interval can be missed. The job's peak is the sum over its processes (the flow
    run's python, pg_dump, a scratch redis-server), an upper bound: they need not peak at
    once. A pid counts as the program it last exec'd; a child only ever seen between fork and
    exec (its parent's name still) maps its parent's pages and is not counted again.
    """

    def __init__(self, group: Cgroup, interval: float = 0.02) -> None:
        self.group, self.interval = group, interval
        self.seen: dict[int, tuple[str, int, int]] = {}  # pid -> (program, VmHWM kB, ppid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Meter:
        self._thread.start()
        return self

    def stop(self) -> Metered:
        self._stop.set()
        self._thread.join()
        return self.result()

    def __enter__(self) -> Meter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @staticmethod
    def hwm_kb(pid: int) -> int:
        """A live process's VmHWM in kB (0 once it is gone)."""
        status = _status(pid)
        return _kb(status["VmHWM"]) if status and "VmHWM" in status else 0

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.group.pids():
                status = _status(pid)
                if not status or "VmHWM" not in status:
                    continue  # gone, or a zombie
                name, hwm, ppid = status["Name"], _kb(status["VmHWM"]), int(status["PPid"])
                before = self.seen.get(pid)
                if before and before[0] == name:  # else it exec'd: a new high-water mark
                    hwm = max(hwm, before[1])
                self.seen[pid] = (name, hwm, ppid)
            self._stop.wait(self.interval)

    def result(self) -> Metered:
        counted = [
            (name, kb)
            for name, kb, ppid in self.seen.values()
            if ppid not in self.seen or self.seen[ppid][0] != name
        ]
        processes: dict[str, float] = {}
        for name, kb in counted:
            processes[name] = max(processes.get(name, 0.0), round(kb / 1024, 1))
        pythons = [kb for name, kb in counted if name.startswith("python")]
        made = self.group.path.exists()  # not if the run never started
        return Metered(
            job_peak_mb=round(sum(kb for _, kb in counted) / 1024, 1),
            flow_process_peak_mb=round(max(pythons, default=0) / 1024, 1),
            cgroup_peak_mb=round(self.group.peak_bytes / MB, 1) if made else 0.0,
            oom_kills=self.group.oom_kills if made else 0,
            processes=processes,
        )


def _status(pid: int) -> dict[str, str] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _kb(value: str) -> int:
    return int(value.split()[0])
