"""Model features: per-symbol windows, train-only normalisation, a split with no look-ahead."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tasks.models.features import (
    FEATURES,
    WINDOW,
    NotEnoughData,
    build_dataset,
    latest_windows,
    session_features,
)


def synthetic_prices(
    symbols=6,
    sessions=260,
    phi=-0.5,
    seed=0,
    start="2023-01-02",
    prefix="S",
    suffix="",
    flip_at: int | None = None,
) -> pd.DataFrame:
    """Daily bars whose log returns follow r_t = phi * r_(t-1) + noise.

    flip_at: from that session on, phi changes sign, so a model fitted before it fails after.
    """
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, periods=sessions).date
    frames = []
    for i in range(symbols):
        noise = rng.normal(0, 0.01, sessions)
        r = np.zeros(sessions)
        for t in range(1, sessions):
            coef = -phi if flip_at is not None and t >= flip_at else phi
            r[t] = coef * r[t - 1] + noise[t]
        close = 100 * np.exp(np.cumsum(r))
        spread = np.abs(rng.normal(0, 0.01, sessions)) + 1e-4
        frames.append(
            pd.DataFrame(
                {
                    "symbol": f"{prefix}{i:03d}{suffix}",
                    "trade_date": dates,
                    "open": close,
                    "high": close * np.exp(spread),
                    "low": close * np.exp(-spread),
                    "close": close,
                    "adj_close": close,
                    "volume": rng.integers(1_000, 5_000, sessions),
                    "currency": "USD",
                    "source": "synthetic",
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_features_are_log_return_range_and_volume_change_per_symbol():
    prices = pd.DataFrame(
        {
            "symbol": ["A", "A", "A", "B", "B"],
            "trade_date": [dt.date(2024, 1, d) for d in (2, 3, 4, 2, 3)],
            "high": [11.0, 12.0, 13.0, 50.0, 55.0],
            "low": [9.0, 10.0, 11.0, 40.0, 44.0],
            "close": [10.0, 11.0, 12.0, 45.0, 50.0],
            # adj_close wins where present; B's missing one falls back to close.
            "adj_close": [5.0, 5.5, 6.6, None, None],
            "volume": [100, 300, 0, 10, 10],
        }
    )
    out = session_features(prices)
    assert list(out["symbol"]) == ["A", "A", "B"]  # each symbol's first session has no return
    a = out[out.symbol == "A"]
    assert a["log_return"].tolist() == pytest.approx([np.log(1.1), np.log(1.2)])
    assert a["range"].tolist() == pytest.approx([np.log(1.2), np.log(13 / 11)])
    assert a["volume_change"].tolist() == pytest.approx([np.log(301 / 101), np.log(1 / 301)])
    assert out[out.symbol == "B"]["log_return"].item() == pytest.approx(np.log(50 / 45))


def test_newest_training_target_precedes_the_validation_window():
    data = build_dataset(synthetic_prices(symbols=4, sessions=200), val_sessions=30)
    train_end = max(data.target_dates(data.train_idx))
    val_start = min(data.target_dates(data.val_idx))
    assert train_end < val_start
    assert len(np.unique(data.target_dates(data.val_idx))) == 30
    assert data.train_range[1] == train_end and data.val_range[0] == val_start


def test_a_window_never_spans_two_symbols():
    prices = synthetic_prices(symbols=3, sessions=120)
    data = build_dataset(prices, val_sessions=10)
    feats = session_features(prices)
    owner = feats["symbol"].to_numpy()
    for idx in (data.train_idx, data.val_idx):
        window_rows = idx[:, None] + np.arange(-WINDOW + 1, 2)  # inputs and the target row
        assert (owner[window_rows] == owner[window_rows[:, :1]]).all()


def test_normalisation_is_fitted_on_the_training_window_only():
    prices = synthetic_prices(symbols=3, sessions=200)
    base = build_dataset(prices, val_sessions=30)
    # Wild prices in the validation period must not move the normalisation.
    late = pd.to_datetime(prices["trade_date"]).dt.date > base.train_range[1]
    shocked = prices.copy()
    for col in ("open", "high", "low", "close", "adj_close"):
        shocked.loc[late, col] *= np.linspace(1, 50, late.sum())
    shocked.loc[late, "volume"] *= 1000
    after = build_dataset(shocked, val_sessions=30)
    assert after.train_range == base.train_range
    assert after.normaliser == base.normaliser
    train_rows = base.dates <= base.train_range[1]
    assert np.abs(base.x[train_rows].mean(axis=0)).max() < 1e-3  # centred on training rows


def test_too_little_history_is_a_clear_error():
    with pytest.raises(NotEnoughData, match="sessions"):
        build_dataset(synthetic_prices(symbols=2, sessions=WINDOW), val_sessions=5)


def test_latest_windows_end_on_the_last_session_and_skip_what_cannot_be_built():
    full = synthetic_prices(symbols=3, sessions=WINDOW + 20)
    last_30 = sorted(full.trade_date.unique())[-30]
    short = synthetic_prices(symbols=1, sessions=30, prefix="NEW", start=str(last_30))
    stale = synthetic_prices(symbols=1, sessions=WINDOW + 10, prefix="OLD")
    stale = stale[stale.trade_date < full.trade_date.max()]
    prices = pd.concat([full, short, stale], ignore_index=True)
    prices = prices[pd.to_datetime(prices.trade_date).dt.date <= full.trade_date.max()]
    data = build_dataset(full, val_sessions=5)

    out = latest_windows(prices, data.normaliser)

    assert out.as_of == full.trade_date.max()
    assert out.symbols == ["S000", "S001", "S002"]
    assert out.x.shape == (3, WINDOW, len(FEATURES))
    assert set(out.skipped) == {"NEW000", "OLD000"}
    assert "too little history" in out.skipped["NEW000"]
    assert "no session on" in out.skipped["OLD000"]
    # The window is the symbol's last WINDOW feature rows, normalised as in training.
    feats = session_features(full[full.symbol == "S001"])
    expected = data.normaliser.apply(feats[list(FEATURES)].to_numpy()[-WINDOW:])
    np.testing.assert_allclose(out.x[1], expected, rtol=1e-6)
