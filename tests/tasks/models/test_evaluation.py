"""The promotion gate: the model against the naive baselines, and whether its edge is luck."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.models import evaluation


def test_baselines_decide_whether_the_model_beats_them():
    rng = np.random.default_rng(3)
    realised = rng.normal(0, 0.015, 60)
    yesterday = np.concatenate([[0.0], realised[:-1]])
    days = np.arange(60)  # one symbol: a sample per date
    good = evaluation.evaluate(realised * 0.5 + rng.normal(0, 0.002, 60), realised, yesterday, days)
    assert good["beats_baselines"], evaluation.promotion_reason(good)
    assert good["zero_return"]["mse"] == pytest.approx(np.mean(realised**2))
    assert good["yesterday_return"]["mse"] == pytest.approx(np.mean((realised - yesterday) ** 2))
    assert good["zero_return"]["hit_rate"] is None  # zero calls no direction
    bad = evaluation.evaluate(-realised, realised, yesterday, days)
    assert not bad["beats_baselines"]
    few = evaluation.evaluate(realised[:10] * 0.5, realised[:10], yesterday[:10], days[:10])
    assert not few["beats_baselines"] and "too few dates" in evaluation.promotion_reason(few)


def test_a_model_no_better_than_zero_is_not_promoted_even_with_a_lower_mse():
    # Predictions that are noise around zero: by luck their MSE lands a hair under the zero
    # forecast's (the 2.300e-04 against 2.302e-04 of a model once promoted), which is no edge.
    rng = np.random.default_rng(11)
    realised = rng.normal(0, 0.015, 600)
    dates = np.repeat(np.arange(60), 10)  # 60 sessions x 10 symbols
    yesterday = rng.normal(0, 0.015, 600)
    for _ in range(200):  # the first lucky draw of pure noise
        noise = rng.normal(0, 0.0003, 600)
        if np.mean((noise - realised) ** 2) < np.mean(realised**2):
            break
    metrics = evaluation.evaluate(noise, realised, yesterday, dates)
    assert metrics["model"]["mse"] < metrics["zero_return"]["mse"]  # the old gate would promote
    assert metrics["model"]["mse"] < metrics["yesterday_return"]["mse"]
    assert not metrics["beats_baselines"]
    assert metrics["tests"]["zero_return"]["p_value"] > 0.05
    assert "vs zero return" in evaluation.promotion_reason(metrics)
