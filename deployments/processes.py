"""The local stack's processes: started in their own session, recorded by pid, stopped whole.

Each process `make up` starts gets a session of its own (setsid), so everything it starts in
turn (a worker's flow-run processes, a flow's pg_dump) can be found by its session id even
after its parent has died, and stopped with it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

from tasks import clock

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".prefect"
PIDS = STATE / "pids"
LOGS = STATE / "logs"


def recorded_pid(name: str) -> int | None:
    """The pid make up recorded for name, if that process is still a Prefect process."""
    try:
        pid = int((PIDS / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    # After a reboot the number may belong to something else: only claim our own command.
    args = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
    return pid if "prefect" in args.stdout else None


def recorded_names() -> list[str]:
    """Every name with a pid file, workers first (stop them before their server)."""
    names = sorted(p.stem for p in PIDS.glob("*.pid")) if PIDS.exists() else []
    return sorted(names, key=lambda n: n == "server")


def fingerprint(env: dict[str, str]) -> str:
    """A digest of the settings a process was started with (ours and Prefect's)."""
    relevant = sorted((k, v) for k, v in env.items() if k.startswith(("INVESTFLOW_", "PREFECT_")))
    return hashlib.sha256(repr(relevant).encode()).hexdigest()


def started_with(name: str) -> str | None:
    path = PIDS / f"{name}.env-sha256"
    return path.read_text().strip() if path.exists() else None


def start(name: str, argv: list[str], env: dict[str, str]) -> int:
    """Start argv in a session of its own; its output is appended to .prefect/logs/NAME.log."""
    PIDS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab") as log:
        stamp = clock.shown(clock.now())
        log.write(f"\n===== {stamp} make up started {name} =====\n".encode())
        log.flush()
        proc = spawn(argv, env, log)
    (PIDS / f"{name}.pid").write_text(f"{proc.pid}\n")
    (PIDS / f"{name}.env-sha256").write_text(fingerprint(env) + "\n")
    return proc.pid


def spawn(argv: list[str], env: dict[str, str], log: BinaryIO) -> subprocess.Popen:
    """argv from the repository root in a session of its own, its output into log."""
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def process_table() -> list[tuple[int, int, int]]:
    """(pid, parent pid, session id) of every process on the machine."""
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,sid="], capture_output=True, text=True)
    rows = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return rows


def family(leaders: set[int]) -> set[int]:
    """The leaders, every process in their sessions, and every descendant of any of them."""
    table = process_table()
    found = set(leaders) | {pid for pid, _, sid in table if sid in leaders}
    grew = True
    while grew:
        children = {pid for pid, ppid, _ in table if ppid in found}
        grew = not children <= found
        found |= children
    found.discard(os.getpid())
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purpose: it only waits for its parent to read its status.
    stat = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return bool(stat.stdout.strip()) and not stat.stdout.strip().startswith("Z")


def terminate(pids: set[int], grace_s: float) -> set[int]:
    """SIGTERM, then SIGKILL whatever still runs after grace_s; returns those that were killed."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    stubborn = {p for p in pids if alive(p)}
    for pid in stubborn:
        _signal(pid, signal.SIGKILL)
    return stubborn


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def forget(name: str) -> None:
    for suffix in (".pid", ".env-sha256"):
        (PIDS / f"{name}{suffix}").unlink(missing_ok=True)
