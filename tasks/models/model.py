"""The return model: a small GRU over 60-session windows, its training, inference and checkpoint."""

from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from tasks.models.features import FEATURE_SPEC, FEATURES, WINDOW, Dataset, Normaliser


class ModelError(RuntimeError):
    """A model cannot be used; the message says what to do."""


class NoPromotedModel(ModelError):
    """No version is promoted for the market yet."""


class ChecksumMismatch(ModelError):
    """The stored checkpoint's bytes differ from what was registered."""


class FeatureSpecMismatch(ModelError):
    """The checkpoint was trained on features the code no longer builds."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape and training knobs; saved in the checkpoint so it can be rebuilt."""

    hidden: int = 32
    layers: int = 1
    epochs: int = 8
    batch_size: int = 512
    lr: float = 2e-3
    seed: int = 7


class ReturnGRU(nn.Module):
    """GRU over the window; a linear head gives the next return (scaled) and an up logit."""

    def __init__(self, hidden: int = 32, layers: int = 1, n_features: int = len(FEATURES)):
        super().__init__()
        self.gru = nn.GRU(n_features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return self.head(h[-1])


def pick_device(device: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device='cuda' was asked for but no CUDA device is visible here")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def set_threads(threads: int | None = None) -> int:
    """Cap CPU threads: a GRU this small gains nothing past a few, and the hosts are shared."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = threads or min(4, usable or 1)
    torch.set_num_threads(threads)
    return threads


def _loss(out: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    scaled = target / scale
    mse = nn.functional.mse_loss(out[:, 0], scaled)
    bce = nn.functional.binary_cross_entropy_with_logits(out[:, 1], (target > 0).float())
    return mse + 0.1 * bce


def fit(data: Dataset, config: ModelConfig, device: torch.device) -> ReturnGRU:
    """Train with a fixed seed; on CPU the same data and seed give the same weights."""
    torch.manual_seed(config.seed)
    model = ReturnGRU(config.hidden, config.layers).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    cuda = device.type == "cuda"
    # Mixed precision only where it pays: fp16 autocast and loss scaling on the GPU.
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    order = torch.Generator().manual_seed(config.seed)
    scale = data.normaliser.target_scale
    train = data.train_idx
    model.train()
    for _ in range(config.epochs):
        perm = train[torch.randperm(len(train), generator=order).numpy()]
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start : start + config.batch_size]
            x = torch.from_numpy(data.windows(idx)).to(device, non_blocking=cuda)
            y = torch.from_numpy(data.targets(idx).astype(np.float32)).to(device)
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
                out = model(x)
            loss = _loss(out.float(), y, scale)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
    return model.eval()


def predict(
    model: nn.Module, x: np.ndarray, scale: float, device: torch.device, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Batched inference: (predicted log return, up probability) per window."""
    returns, probs = [], []
    cuda = device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, torch.float16, enabled=cuda):
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[start : start + batch_size]).to(device)
            out = model(batch).float()
            returns.append((out[:, 0] * scale).cpu().numpy())
            probs.append(torch.sigmoid(out[:, 1]).cpu().numpy())
    if not returns:
        return np.empty(0), np.empty(0)
    return np.concatenate(returns).astype("float64"), np.concatenate(probs).astype("float64")


# A new model is promoted only if its lower squared error is unlikely to be luck: a one-sided
# Diebold-Mariano test against each baseline at this level, on at least this many dates.
PROMOTION_ALPHA = 0.05
MIN_VALIDATION_DATES = 20


def diebold_mariano(loss: np.ndarray, baseline_loss: np.ndarray, dates=None) -> dict:
    """One-sided Diebold-Mariano test that loss is below baseline_loss on average.

    Symbols on the same date share the market's move, so the loss differential is averaged
    per date first and the test runs over dates (one-step forecasts: no autocorrelation
    correction). Small p_value: the model's edge is unlikely to be noise.
    """
    diff = loss - baseline_loss
    if dates is not None:
        diff = pd.Series(diff).groupby(np.asarray(dates)).mean().to_numpy()
    n = len(diff)
    mean = float(np.mean(diff)) if n else 0.0
    sd = float(np.std(diff, ddof=1)) if n > 1 else 0.0
    if sd == 0:
        stat, p = (-math.inf, 0.0) if mean < 0 else (math.inf, 1.0)
    else:
        stat = mean / (sd / math.sqrt(n))
        p = 0.5 * math.erfc(-stat / math.sqrt(2))  # normal CDF at stat
    base = float(np.mean(baseline_loss)) if len(baseline_loss) else 0.0
    return {
        "dm_stat": stat if math.isfinite(stat) else None,
        "p_value": p,
        "dates": n,
        "relative_improvement": (base - float(np.mean(loss))) / base if base else 0.0,
    }


def evaluate(
    predicted: np.ndarray, realised: np.ndarray, yesterday: np.ndarray, dates=None
) -> dict:
    """Validation metrics of the model beside the zero-return and yesterday's-return baselines.

    beats_baselines: the model's MSE is lower than both and significantly so (Diebold-Mariano,
    PROMOTION_ALPHA, over at least MIN_VALIDATION_DATES dates).
    """

    def scores(guess: np.ndarray) -> dict:
        err = guess - realised
        # A forecast of exactly zero calls no direction, so it has no hit rate (None, not NaN:
        # the metrics are stored as JSON).
        calls = guess != 0
        hit = (
            float(np.mean(np.sign(guess[calls]) == np.sign(realised[calls])))
            if calls.any()
            else None
        )
        return {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err))), "hit_rate": hit}

    guesses = {"zero_return": np.zeros_like(realised), "yesterday_return": yesterday}
    metrics = {"model": scores(predicted), **{k: scores(g) for k, g in guesses.items()}}
    metrics["samples"] = len(realised)
    loss = (predicted - realised) ** 2
    metrics["tests"] = {
        k: diebold_mariano(loss, (g - realised) ** 2, dates) for k, g in guesses.items()
    }
    metrics["alpha"] = PROMOTION_ALPHA
    metrics["beats_baselines"] = all(
        t["p_value"] < PROMOTION_ALPHA and t["dates"] >= MIN_VALIDATION_DATES
        for t in metrics["tests"].values()
    )
    return metrics


def promotion_reason(metrics: dict) -> str:
    """Why a model is (or is not) promoted, in numbers."""
    parts = []
    for name, test in metrics["tests"].items():
        mse, base = metrics["model"]["mse"], metrics[name]["mse"]
        verdict = (
            "too few dates"
            if test["dates"] < MIN_VALIDATION_DATES
            else "significant"
            if test["p_value"] < PROMOTION_ALPHA
            else "not significant"
        )
        parts.append(
            f"vs {name.replace('_', ' ')}: MSE {mse:.4e} vs {base:.4e} "
            f"({test['relative_improvement']:+.2%}), Diebold-Mariano p = {test['p_value']:.3f} "
            f"over {test['dates']} dates: {verdict}"
        )
    return "; ".join(parts) + f" (promotion needs p < {PROMOTION_ALPHA} against both)"


def validate(model: nn.Module, data: Dataset, device: torch.device) -> tuple[dict, np.ndarray]:
    """Score the validation window; returns metrics and the model's predictions there."""
    idx = data.val_idx
    predicted, _ = predict(model, data.windows(idx), data.normaliser.target_scale, device)
    realised = data.targets(idx)
    # Yesterday's return is the window's last log return, known when the forecast is made.
    metrics = evaluate(predicted, realised, data.returns[idx], data.target_dates(idx))
    return metrics, predicted


# ---------------------------------------------------------------------------- checkpoint


def checkpoint_bytes(
    model: nn.Module,
    config: ModelConfig,
    normaliser: Normaliser,
    *,
    market: str,
    train_range: tuple,
    val_range: tuple,
    metrics: dict,
    feature_spec: dict | None = None,
) -> bytes:
    """Serialise weights with everything needed to use them; no timestamps, so same in, same out."""
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    payload = {
        "state_dict": state,
        "config": asdict(config),
        "feature_spec": feature_spec or FEATURE_SPEC,
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
