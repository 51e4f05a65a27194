"""Model features from daily_prices: per-symbol windows, train-only normalisation, time split."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

WINDOW = 60
FEATURES = ("log_return", "range", "volume_change")
# What a checkpoint was trained on; prediction refuses a checkpoint whose spec differs.
FEATURE_SPEC = {
    "version": 1,
    "features": list(FEATURES),
    "price": "adj_close, else close",
    "window": WINDOW,
    "target": "next session log return",
    "horizon": 1,
    "normalisation": "per market, mean/std of the training window",
    "clip": 8.0,
}
# The daily_prices columns the features are built from.
FEATURE_INPUT_COLUMNS = ["symbol", "trade_date", "high", "low", "close", "adj_close", "volume"]


def session_features(prices: pd.DataFrame) -> pd.DataFrame:
    """Per-session features of each symbol from its own consecutive stored sessions.

    The first session of a symbol has no previous one, so it is dropped.
    """
    frame = prices.sort_values(["symbol", "trade_date"], kind="stable").reset_index(drop=True)
    price = frame["adj_close"].where(frame["adj_close"].notna() & (frame["adj_close"] > 0))
    price = price.fillna(frame["close"]).astype("float64")
    volume = pd.to_numeric(frame["volume"], errors="coerce").fillna(0.0).astype("float64")
    first = frame["symbol"].ne(frame["symbol"].shift())
    with np.errstate(divide="ignore", invalid="ignore"):
        out = pd.DataFrame(
            {
                "symbol": frame["symbol"].to_numpy(),
                "trade_date": pd.to_datetime(frame["trade_date"]).dt.date.to_numpy(),
                "log_return": np.log(price / price.shift()),
                "range": np.log(frame["high"].astype("float64") / frame["low"].astype("float64")),
                "volume_change": np.log1p(volume) - np.log1p(volume.shift()),
            }
        )
    out = out[~first.to_numpy()]
    values = out[list(FEATURES)].to_numpy()
    return out[np.isfinite(values).all(axis=1)].reset_index(drop=True)


@dataclass(frozen=True)
class Normaliser:
    """Feature means and standard deviations, fitted on the training window only."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    target_scale: float
    clip: float = FEATURE_SPEC["clip"]

    @classmethod
    def fit(cls, features: np.ndarray, targets: np.ndarray) -> Normaliser:
        std = features.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        scale = float(targets.std()) if targets.size and targets.std() > 1e-12 else 1.0
        return cls(tuple(features.mean(axis=0).tolist()), tuple(std.tolist()), scale)

    def apply(self, features: np.ndarray) -> np.ndarray:
        normed = (features - np.asarray(self.mean)) / np.asarray(self.std)
        return np.clip(normed, -self.clip, self.clip).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "target_scale": self.target_scale,
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Normaliser:
        return cls(tuple(data["mean"]), tuple(data["std"]), data["target_scale"], data["clip"])


@dataclass
class Dataset:
    """Normalised feature rows of every symbol end to end, and the samples over them.

    A sample is the position t of its window's last session: inputs rows t-59..t of one
    symbol, target the log return of that symbol's next session (row t+1).
    """

    x: np.ndarray  # (rows, features) float32, normalised
    returns: np.ndarray  # (rows,) raw log returns, for targets and baselines
    dates: np.ndarray  # (rows,) datetime.date of each row
    train_idx: np.ndarray
    val_idx: np.ndarray
    normaliser: Normaliser
    symbols: list[str] = field(default_factory=list)

    def windows(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), WINDOW, features) inputs ending at each position."""
        return self.x[idx[:, None] + np.arange(-WINDOW + 1, 1)]

    def targets(self, idx: np.ndarray) -> np.ndarray:
        return self.returns[idx + 1]

    def target_dates(self, idx: np.ndarray) -> np.ndarray:
        return self.dates[idx + 1]

    @property
    def train_range(self) -> tuple[dt.date, dt.date]:
        dates = self.target_dates(self.train_idx)
        return min(dates), max(dates)

    @property
    def val_range(self) -> tuple[dt.date, dt.date]:
        dates = self.target_dates(self.val_idx)
        return min(dates), max(dates)


class NotEnoughData(ValueError):
    """The store holds too little history to train on."""


def build_dataset(prices: pd.DataFrame, val_sessions: int = 60) -> Dataset:
    """Time-split samples: every training target precedes the first validation target date.

    The validation window is the market's last val_sessions target dates; normalisation is
    fitted on the rows up to the newest training target, so nothing after it leaks in.
    """
    feats = session_features(prices)
    raw = feats[list(FEATURES)].to_numpy(dtype="float64")
    returns = feats["log_return"].to_numpy(dtype="float64")
    dates = feats["trade_date"].to_numpy()
    symbols = feats["symbol"].to_numpy()
    # Positions whose window and next-session target lie within one symbol.
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    ends = np.r_[starts[1:], len(symbols)]
    chunks = [np.arange(s + WINDOW - 1, e - 1) for s, e in zip(starts, ends) if e - s > WINDOW]
    samples = np.concatenate(chunks) if chunks else np.array([], dtype=np.int64)
    if samples.size == 0:
        raise NotEnoughData(
            f"no symbol has more than {WINDOW + 1} sessions of clean history; ingest prices first"
        )
    target_dates = dates[samples + 1]
    distinct = np.unique(target_dates)
    if len(distinct) <= val_sessions:
        raise NotEnoughData(
            f"only {len(distinct)} target sessions, not enough for {val_sessions} validation "
            f"sessions plus training; ingest more history or lower val_sessions"
        )
    val_start = distinct[-val_sessions]
    train_idx = samples[target_dates < val_start]
    val_idx = samples[target_dates >= val_start]
    train_end = dates[train_idx + 1].max()
    fit_rows = dates <= train_end
    normaliser = Normaliser.fit(raw[fit_rows], returns[train_idx + 1])
    return Dataset(
        x=normaliser.apply(raw),
        returns=returns,
        dates=dates,
        train_idx=train_idx,
        val_idx=val_idx,
        normaliser=normaliser,
        symbols=sorted(set(symbols.tolist())),
    )


@dataclass
class LatestWindows:
    """Each eligible symbol's window as of the market's last session, and who was skipped."""

    as_of: dt.date | None
    symbols: list[str]
    x: np.ndarray  # (symbols, WINDOW, features) float32, normalised
    skipped: dict[str, str]


def latest_windows(prices: pd.DataFrame, normaliser: Normaliser) -> LatestWindows:
    """Windows of the last WINDOW sessions per symbol, ending on the market's last session.

    A symbol is skipped (with the reason) when it lacks the history or has not traded on
    the last session; nothing is padded or guessed.
    """
    if prices.empty:
        return LatestWindows(None, [], np.empty((0, WINDOW, len(FEATURES)), np.float32), {})
    as_of = pd.to_datetime(prices["trade_date"]).dt.date.max()
    feats = session_features(prices)
    raw = feats[list(FEATURES)].to_numpy(dtype="float64")
    dates = feats["trade_date"].to_numpy()
    symbols = feats["symbol"].to_numpy()
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]]) if len(symbols) else []
    ends = np.r_[starts[1:], len(symbols)] if len(symbols) else []
    keep, positions, skipped = [], [], {}
    for s, e in zip(starts, ends):
        symbol = str(symbols[s])
        if dates[e - 1] != as_of:
            skipped[symbol] = f"no session on {as_of} (last: {dates[e - 1]})"
        elif e - s < WINDOW:
            skipped[symbol] = f"too little history: {e - s} of {WINDOW} sessions"
        else:
            keep.append(symbol)
            positions.append(e - 1)
    seen = set(symbols.tolist())
    for symbol in sorted(set(prices["symbol"].astype(str)) - seen):
        skipped[symbol] = f"too little history: 0 of {WINDOW} sessions"
    idx = np.asarray(positions, dtype=np.int64)
    x = (
        normaliser.apply(raw[idx[:, None] + np.arange(-WINDOW + 1, 1)])
        if keep
        else (np.empty((0, WINDOW, len(FEATURES)), np.float32))
    )
    return LatestWindows(as_of, keep, x, dict(sorted(skipped.items())))
