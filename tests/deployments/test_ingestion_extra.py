"""The ingestion image's dependencies: its flows import with the ingestion lock alone.

The locks are checked against pyproject.toml first (cheap). Then a fresh venv is built the way
deployments/docker/Dockerfile.ingestion builds the image (the lock it copies, then the project
without dependencies, from a copy of what it copies), and a fresh interpreter there imports
every deployment that runs on the fargate pool's default image, every project module those
import (at the top or inside a function, where a run imports it later) and every package those
modules name, and finds no torch, oci or matplotlib.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deployments.pools import POOLS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deployments" / "docker" / "Dockerfile.ingestion"
LOCKS = ROOT / "requirements"
# What the 256-CPU / 512 MB Fargate task must not pull on every start.
HEAVY = ("torch", "oci", "matplotlib")
# Imported by no module by name, but by SQLAlchemy when a run connects to PostgreSQL.
DRIVERS = ("psycopg",)


def ingestion_deployments() -> dict[str, str]:
    """Deployment name -> entrypoint, for those on the ECS pool that keep its default image."""
    ecs_pools = {p.name for p in POOLS if p.type == "ecs"}
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {
        d["name"]: d["entrypoint"]
        for d in spec["deployments"]
        if d["work_pool"]["name"] in ecs_pools
        and "image" not in (d["work_pool"].get("job_variables") or {})
    }


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY in the ingestion Dockerfile."""
    copies = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, destination = shlex.split(line)[1:]
            copies.append((sources, destination))
    return copies


def pins(lock: Path) -> dict[str, str]:
    """Package -> version pinned by a pip-compile lock."""
    found = {}
    for line in lock.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split("==")
            found[canonicalize_name(name)] = version.strip()
    return found


def test_the_ingestion_image_installs_the_ingestion_lock_only():
    text = DOCKERFILE.read_text()
    assert (["requirements/ingestion.txt"], "requirements/") in dockerfile_copies()
    assert "pip install --no-deps -r requirements/ingestion.txt" in text
    assert "pip install --no-deps ." in text
    locked = pins(LOCKS / "ingestion.txt")
    assert not set(HEAVY) & set(locked)
    assert set(ingestion_deployments()) == {
        "us-prices",
        "kr-prices",
        "macro",
        "universes-us",
        "universes-kr",
        "us-market-prices",
        "kr-market-prices",
    }


def lock_extras(lock: Path, extras: dict[str, list[str]]) -> list[str]:
    """The extras a lock was made from, as its header (written by `make lock`) names them."""
    named = re.search(r"make lock \(extras: (.+)\)", lock.read_text()).group(1)
    if named == "all":
        return list(extras)
    return [] if named == "none" else named.split(",")


def test_each_lock_pins_what_pyproject_asks_at_the_tested_versions():
    """Each lock satisfies pyproject.toml for its extras, at dev.txt's versions."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    tested = pins(LOCKS / "dev.txt")
    installed = set()
    for lock in sorted(LOCKS.glob("*.txt")):
        names = lock_extras(lock, extras)
        installed.update(names if lock.stem != "dev" else [])
        locked = pins(lock)
        wanted = project["dependencies"] + [r for name in names for r in extras[name]]
        for requirement in map(Requirement, wanted):
            name = canonicalize_name(requirement.name)
            assert name in locked, f"{lock.name} lacks {name}: run `make lock`"
            assert requirement.specifier.contains(locked[name], prereleases=True), (
                f"{lock.name} pins {name}=={locked[name]}, outside {requirement}: run `make lock`"
            )
        drift = {n: (v, tested.get(n)) for n, v in locked.items() if tested.get(n) != v}
        assert not drift, f"{lock.name} differs from dev.txt (lock, tested): {drift}"
    assert installed == set(extras) - {"dev"}, "an extra that no route's lock installs"


# Run by the ingestion venv's interpreter: imports everything a run of those flows can
# import, and prints what it found as JSON.
CHECK = r"""
import ast, importlib, importlib.util, json, sys

entrypoints, drivers, heavy = (json.loads(arg) for arg in sys.argv[1:4])
PROJECT = ("flows", "tasks", "blocks", "deployments")
report = {"flows": {}, "failed": {}, "files": {}, "checked": [], "heavy": {}}


def attempt(name):
    try:
        importlib.import_module(name)
        return True
    except Exception as exc:
        report["failed"][name] = f"{type(exc).__name__}: {exc}"
        return False


def named_modules(path):
    # Every module an import statement in the file names, at any depth, except under
    # `if TYPE_CHECKING:` (never run).
    tree = ast.parse(open(path).read())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                try:
                    is_module = importlib.util.find_spec(submodule) is not None
                except ImportError:
                    is_module = False
                yield submodule if is_module else node.module


for name, entrypoint in entrypoints.items():
    path, function = entrypoint.split(":")
    module = path.removesuffix(".py").replace("/", ".")
    if attempt(module):
        report["flows"][name] = type(getattr(sys.modules[module], function)).__name__

for name in drivers:
    attempt(name)

seen = set()
while True:
    todo = [
        m for m, mod in list(sys.modules.items())
        if m.split(".")[0] in PROJECT and m not in seen and getattr(mod, "__file__", None)
    ]
    if not todo:
        break
    for module in todo:
        seen.add(module)
        report["files"][module] = sys.modules[module].__file__
        for named in named_modules(sys.modules[module].__file__):
            if named not in report["checked"]:
                report["checked"].append(named)
                attempt(named)

for name in heavy:
    report["heavy"][name] = [importlib.util.find_spec(name) is not None, name in sys.modules]
print(json.dumps(report))
"""


def pip(venv: Path, *args: str, cwd: Path) -> None:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"pip {' '.join(args)} exited {done.returncode}:\n{output}"


@pytest.fixture(scope="session")
def ingestion_venv(tmp_path_factory) -> Path:
    """A venv holding what the ingestion image holds, built as its Dockerfile builds it."""
    base = tmp_path_factory.mktemp("ingestion-image")
    source = base / "investflow"
    for sources, destination in dockerfile_copies():
        target = source / destination
        for name in sources:
            origin = ROOT / name
            into = target / origin.name if destination.endswith("/") else target
            into.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, into)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip(venv, "install", "--no-deps", "-r", "requirements/ingestion.txt", cwd=source)
    pip(venv, "install", "--no-deps", ".", cwd=source)
    pip(venv, "check", cwd=source)
    return venv


@pytest.mark.slow
@pytest.mark.integration
def test_ingestion_flows_import_with_the_ingestion_lock_alone(ingestion_venv, tmp_path):
    entrypoints = ingestion_deployments()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    done = subprocess.run(
        # -I: no PYTHONPATH, no user site, not the working folder: only what the venv holds.
        [str(ingestion_venv / "bin" / "python"), "-I", "-c", CHECK]
        + [json.dumps(entrypoints), json.dumps(DRIVERS), json.dumps(HEAVY)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.splitlines()[-1])

    assert not report["failed"], json.dumps(report["failed"], indent=1)
    assert report["flows"] == {name: "Flow" for name in entrypoints}
    site = str(ingestion_venv / "lib")
    outside = {m: f for m, f in report["files"].items() if not f.startswith(site)}
    assert not outside, f"imported from outside the venv: {outside}"
    tasks = sorted(m for m in report["files"] if m.startswith("tasks."))
    assert tasks, "no tasks module was imported"
    # The ingestion clients themselves, at least, were imported and are not the heavy ones.
    assert {"yfinance", "fredapi"} <= {m.split(".")[0] for m in report["checked"]}
    assert report["heavy"] == {name: [False, False] for name in HEAVY}, report["heavy"]
