"""The images build from their locks, hold what their lock pins, and refuse a broken recipe.

Built as a user builds them (`make images`: docker build of deployments/docker/Dockerfile.*
from the checkout). A broken lock line, Dockerfile line or prefect.yaml entrypoint must fail
the build, not the first run in production.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deployments.docker import engine

# The first test to use the images fixture builds every image: about 8 minutes on a machine
# without the layers cached, more than the suite's 600 s per test.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (engine.ROOT / "requirements" / f"{name}.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            package, version = line.split(";")[0].strip().split("==")
            pins[canonical(package)] = version.strip()
    return pins


def installed(tag: str) -> dict[str, str]:
    out = engine.docker("run", "--rm", "--network", "host", tag, "pip", "list",
                        "--format", "freeze").stdout  # fmt: skip
    return {
        canonical(line.split("==")[0]): line.split("==")[1]
        for line in out.splitlines()
        if "==" in line
    }


@pytest.mark.parametrize("name,lock", [("ingestion", "ingestion"), ("cpu", "model")])
def test_an_image_holds_exactly_what_its_lock_pins(images, name, lock):
    have = installed(images[name])
    pins = lock_pins(lock)
    differ = {p: (v, have.get(p)) for p, v in pins.items() if have.get(p) != v}
    assert differ == {}, f"{name} image differs from requirements/{lock}.txt: {differ}"
    if name == "ingestion":
        # Fargate pulls it for every run: no model or OCI stack in it.
        assert not {"torch", "oci", "matplotlib"} & set(have)


def test_the_gpu_recipe_builds_and_loads_the_model_flows(images):
    out = engine.docker(
        "run", "--rm", "--network", "host", images["gpu"],
        "python", "-m", "deployments.images", "check", "gpu",
    ).stdout  # fmt: skip
    assert "train-model: flows/models.py:train_model" in out
    assert "predict-returns: flows/models.py:predict_returns" in out
    user = engine.docker("run", "--rm", images["gpu"], "id", "-un").stdout.strip()
    assert user == "investflow"  # runs never as root


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the tracked tree, to break one file of."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=engine.ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for rel in files:
        source = engine.ROOT / rel
        if source.is_file():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tmp_path / rel)
    return tmp_path


def broken_build(context: Path) -> str:
    proc, _ = engine.build("ingestion", "broken", context=context)
    engine.docker("image", "rm", "investflow-ingestion:broken", check=False)
    assert proc.returncode != 0, "the build passed"
    return proc.stdout + proc.stderr


def test_a_lock_pinning_a_release_that_does_not_exist_fails_the_build(images, checkout):
    lock = checkout / "requirements" / "ingestion.txt"
    text = lock.read_text()
    version = lock_pins("ingestion")["yfinance"]
    lock.write_text(text.replace(f"yfinance=={version}", "yfinance==0.0.404"))
    out = broken_build(checkout)
    assert "yfinance==0.0.404" in out


def test_a_broken_dockerfile_line_fails_the_build(images, checkout):
    dockerfile = checkout / "deployments" / "docker" / "Dockerfile.ingestion"
    dockerfile.write_text(dockerfile.read_text().replace("COPY flows flows", "COPY flowz flows"))
    out = broken_build(checkout)
    assert "flowz" in out


def test_an_entrypoint_naming_no_flow_fails_the_build(images, checkout):
    spec = checkout / "prefect.yaml"
    spec.write_text(
        spec.read_text().replace(
            "flows/prices.py:ingest_us_prices", "flows/prices.py:ingest_us_pricez"
        )
    )
    out = broken_build(checkout)
    assert "deployment us-prices (flows/prices.py:ingest_us_pricez)" in out
