"""Fixtures the model tests share."""

from __future__ import annotations

import pytest

from tasks.models import model
from tasks.models.features import build_dataset
from tests.tasks.models.test_features import synthetic_prices


@pytest.fixture(scope="module")
def data():
    """A small time-split dataset with a learnable pattern."""
    model.set_threads(1)  # two cores shared by everyone: one is plenty for a model this size
    return build_dataset(synthetic_prices(symbols=4, sessions=200), val_sessions=30)
