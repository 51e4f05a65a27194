"""The docker engine and the project's images, once per test session (see engine.py)."""

from __future__ import annotations

import pytest

from tests.conftest import IN_CI
from tests.deployments.docker import engine


@pytest.fixture(scope="session")
def docker_engine():
    try:
        with engine.engine(IN_CI):
            yield
    except engine.Unavailable as exc:
        if IN_CI:
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def torch_index(docker_engine):
    with engine.torch_index() as url:
        yield url


@pytest.fixture(scope="session")
def images(docker_engine, torch_index) -> dict[str, str]:
    """Every image built from the checkout as `make images` builds it: name -> tag.

    The GPU recipe gets the CPU torch wheel (no CUDA build can be had or run here), which
    proves every step of it but the torch build itself.
    """
    engine.ensure_base_image()
    # The GPU recipe's torch from the same CPU index: every step but the CUDA build.
    index = {"TORCH_INDEX_URL": torch_index, "GPU_TORCH_INDEX_URL": torch_index}
    proc, _ = engine.build(" ".join(engine.IMAGES), engine.TAG, env=index)
    assert proc.returncode == 0, f"make images:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    built = {name: f"investflow-{name}:{engine.TAG}" for name in engine.IMAGES}
    # The layers the rebuilt ones replaced, so the machine's disk does not fill run by run.
    engine.docker("image", "prune", "--force", check=False)
    return built
