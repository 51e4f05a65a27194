"""Checkpoints: weights with everything needed to use them, refused when corrupt or stale."""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass

import torch
from torch import nn

from tasks.models.features import FEATURE_SPEC, WINDOW, Normaliser
from tasks.models.model import ModelConfig, ModelError, ReturnGRU


class ChecksumMismatch(ModelError):
    """The stored checkpoint's bytes differ from what was registered."""


class FeatureSpecMismatch(ModelError):
    """The checkpoint was trained on features the code no longer builds."""


def checkpoint_bytes(
    model: nn.Module,
    config: ModelConfig,
    normaliser: Normaliser,
    *,
    market: str,
    train_range: tuple,
    val_range: tuple,
    metrics: dict,
) -> bytes:
    """Serialise weights with everything needed to use them; no timestamps, so same in, same out."""
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    payload = {
        "state_dict": state,
        "config": asdict(config),
        "feature_spec": FEATURE_SPEC,
        "window": WINDOW,
        "normaliser": normaliser.to_dict(),
        "market": market,
        "train_range": [d.isoformat() for d in train_range],
        "val_range": [d.isoformat() for d in val_range],
        "metrics": metrics,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class LoadedModel:
    """A verified checkpoint, ready to predict."""

    model: ReturnGRU
    normaliser: Normaliser
    payload: dict


def load_checkpoint(
    data: bytes, expected_sha256: str, device: torch.device, *, version: str = "?"
) -> LoadedModel:
    """Verify the bytes and the feature spec, then rebuild the model; refuse on any mismatch."""
    actual = sha256(data)
    if actual != expected_sha256:
        raise ChecksumMismatch(
            f"model {version}: checkpoint sha256 {actual[:12]}… differs from the registered "
            f"{expected_sha256[:12]}…; the file is corrupt or was replaced. Refusing to use it: "
            f"re-run train-model or pin another model_version"
        )
    # weights_only: a checkpoint is data, never code to execute.
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if payload.get("feature_spec") != FEATURE_SPEC or payload.get("window") != WINDOW:
        raise FeatureSpecMismatch(
            f"model {version} was trained on feature spec {payload.get('feature_spec')} "
            f"(window {payload.get('window')}) but this code builds {FEATURE_SPEC}; "
            f"refusing to predict with it: re-run train-model"
        )
    config = ModelConfig(**payload["config"])
    model = ReturnGRU(config.hidden, config.layers)
    model.load_state_dict(payload["state_dict"])
    return LoadedModel(
        model.to(device).eval(), Normaliser.from_dict(payload["normaliser"]), payload
    )
