"""Validation against the naive baselines, and the test that decides a model's promotion."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from tasks.models.features import Dataset
from tasks.models.model import predict

# A new model is promoted only if its lower squared error is unlikely to be luck: a one-sided
# Diebold-Mariano test against each baseline at this level, on at least this many dates.
PROMOTION_ALPHA = 0.05
MIN_VALIDATION_DATES = 20


def diebold_mariano(loss: np.ndarray, baseline_loss: np.ndarray, dates: np.ndarray) -> dict:
    """One-sided Diebold-Mariano test that loss is below baseline_loss on average.

    Symbols on the same date share the market's move, so the loss differential is averaged
    per date first and the test runs over dates (one-step forecasts: no autocorrelation
    correction). Small p_value: the model's edge is unlikely to be noise.
    """
    diff = pd.Series(loss - baseline_loss).groupby(np.asarray(dates)).mean().to_numpy()
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
    predicted: np.ndarray, realised: np.ndarray, yesterday: np.ndarray, dates: np.ndarray
) -> dict:
    """Validation metrics of the model beside the zero-return and yesterday's-return baselines.

    dates: each sample's target date, over which the Diebold-Mariano test runs.

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
