"""Checkpoints: the same weights give the same bytes; corrupt or stale ones are refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from tasks.models import checkpoint, model
from tasks.models.features import FEATURE_SPEC

CPU = torch.device("cpu")
TINY = model.ModelConfig(hidden=8, epochs=2, batch_size=256, seed=3)


def serialise(net, data) -> bytes:
    return checkpoint.checkpoint_bytes(
        net,
        TINY,
        data.normaliser,
        market="US",
        train_range=data.train_range,
        val_range=data.val_range,
        metrics={"samples": 1},
    )


def test_identical_weights_give_identical_bytes(data):
    first = model.fit(data, TINY, CPU)
    second = model.fit(data, TINY, CPU)
    # The version id carries the checkpoint's sha256, so a re-run repeats it too.
    assert checkpoint.sha256(serialise(first, data)) == checkpoint.sha256(serialise(second, data))


def test_checkpoint_round_trip_predicts_the_same(data):
    net = model.fit(data, TINY, CPU)
    blob = serialise(net, data)
    loaded = checkpoint.load_checkpoint(blob, checkpoint.sha256(blob), CPU, version="v1")
    x = data.windows(data.val_idx[:20])
    assert np.array_equal(
        model.predict(net, x, 1.0, CPU)[0], model.predict(loaded.model, x, 1.0, CPU)[0]
    )
    assert loaded.normaliser == data.normaliser
    assert loaded.payload["train_range"] == [d.isoformat() for d in data.train_range]
    assert loaded.payload["feature_spec"] == FEATURE_SPEC and loaded.payload["window"] == 60


def test_a_corrupted_checkpoint_is_refused(data):
    blob = bytearray(serialise(model.fit(data, TINY, CPU), data))
    expected = checkpoint.sha256(bytes(blob))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(checkpoint.ChecksumMismatch, match="v9.*differs from the registered"):
        checkpoint.load_checkpoint(bytes(blob), expected, CPU, version="v9")


def test_a_checkpoint_with_another_feature_spec_is_refused(data):
    # What older code with one feature fewer would have saved.
    payload = torch.load(io.BytesIO(serialise(model.fit(data, TINY, CPU), data)), weights_only=True)
    payload["feature_spec"] = {**FEATURE_SPEC, "features": ["log_return", "range"]}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    blob = buffer.getvalue()
    with pytest.raises(checkpoint.FeatureSpecMismatch, match="re-run train-model"):
        checkpoint.load_checkpoint(blob, checkpoint.sha256(blob), CPU, version="old")
