"""Time comes from one place: only tasks/clock.py reads the wall clock.

flows/, tasks/, blocks/ and deployments/ read `clock.now()` (and `clock.wall()`), so a test sets
the time in one place and every time shown to a person goes through `clock.shown`. A direct
`datetime.now()`, `date.today()`, `utcnow()` or `time.time()` anywhere else fails here.
`time.monotonic()` (a deadline, not a time of day) is not a clock read in this sense.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("blocks", "tasks", "flows", "deployments")
THE_CLOCK = Path("tasks/clock.py")
READS = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today"), ("datetime", "today")}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def clock_reads(root: Path) -> tuple[list[str], int]:
    """Each wall-clock read outside tasks/clock.py ("path:line name"), and files read."""
    found, scanned = [], 0
    for package in SCANNED:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if rel == THE_CLOCK:
                continue
            scanned += 1
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if not isinstance(node, ast.Call):
                    continue
                name = dotted(node.func)
                owner, _, attr = name.rpartition(".")
                if (owner.rpartition(".")[2], attr) in READS or name == "time.time":
                    found.append(f"{rel}:{node.lineno} {name}")
    return found, scanned


def test_only_the_clock_module_reads_the_time():
    found, scanned = clock_reads(ROOT)
    assert scanned >= 40  # the real tree was read, not an empty folder
    assert found == []


def test_the_check_finds_each_way_of_reading_the_time(tmp_path):
    bad = {
        "flows/a.py": "import datetime as dt\nx = dt.datetime.now(dt.UTC)\n",
        "tasks/b.py": "from datetime import date\ndef f():\n    return date.today()\n",
        "blocks/c.py": "import datetime\nx = datetime.datetime.utcnow()\n",
        "deployments/d.py": "import time\nstamp = time.time()\n",
    }
    allowed = {
        "tasks/clock.py": "import datetime as dt\ndef now():\n    return dt.datetime.now(dt.UTC)\n",
        "tasks/e.py": "import time\nfrom tasks import clock\nx, t = clock.now(), time.monotonic()",
    }
    for rel, text in {**bad, **allowed}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    found, scanned = clock_reads(tmp_path)

    assert scanned == len(bad) + len(allowed) - 1
    assert sorted(f.split(":")[0] for f in found) == sorted(bad)
