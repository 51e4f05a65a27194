"""Row checks run before any write: which rows of a batch are refused, and why."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

SYMBOL_RE = re.compile(r"^[A-Z0-9.^=-]{1,20}$")
PRICE_COLUMNS = ("open", "high", "low", "close")


@dataclass(frozen=True)
class Rejected:
    """One refused row: its key, the reason, and the row itself."""

    row_key: str
    reason: str
    payload: dict

    def __str__(self) -> str:
        return f"{self.row_key}: {self.reason}"


def _jsonable(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _row_key(row: pd.Series, key: tuple[str, ...]) -> str:
    return "/".join(str(_jsonable(row[k])) for k in key)


class Reasons:
    """The first reason each row of a batch is refused for: a small code per row, so marking
    500k rows compares integers, not strings."""

    def __init__(self, rows: int) -> None:
        self.code = np.zeros(rows, dtype=np.int8)
        self.texts = [""]

    def mark(self, mask, why: str) -> None:
        """Refuse the rows of mask (NA counts as no) that have no reason yet, for why."""
        if isinstance(mask, pd.Series | pd.DataFrame):
            mask = mask.to_numpy(dtype=bool, na_value=False)
        hit = np.asarray(mask, dtype=bool) & (self.code == 0)
        if hit.any():
            if why not in self.texts:
                self.texts.append(why)
            self.code[hit] = self.texts.index(why)

    def bad(self) -> np.ndarray:
        return self.code != 0

    def of(self, row: int) -> str:
        return self.texts[self.code[row]]


def _reasons_for_prices(frame: pd.DataFrame, reasons: Reasons) -> None:
    """Mark the price rows refused, and why."""
    # Check each distinct symbol once: a batch has few symbols and many rows.
    symbols = frame["symbol"]
    bad_symbols = [s for s in symbols.unique() if not SYMBOL_RE.match(str(s))]
    if bad_symbols:
        reasons.mark(symbols.isin(bad_symbols), "symbol outside [A-Z0-9.^=-]{1,20}")
    # As numpy columns: DataFrame.apply and its frames of booleans cost a daily write more
    # than its 2,500 rows.
    prices = {c: _floats(frame[c]) for c in PRICE_COLUMNS if c in frame.columns}
    if prices:
        values = np.vstack(list(prices.values()))
        reasons.mark(np.isnan(values).any(axis=0), "missing (NaN) price")
        with np.errstate(invalid="ignore"):
            reasons.mark((values < 0).any(axis=0), "negative price")
    with np.errstate(invalid="ignore"):
        if "adj_close" in frame.columns:
            reasons.mark(_floats(frame["adj_close"]) < 0, "negative price")
        if "high" in prices and "low" in prices:
            reasons.mark(prices["high"] < prices["low"], "high < low")
        if "volume" in frame.columns:
            reasons.mark(_floats(frame["volume"]) < 0, "negative volume")


def _floats(column: pd.Series) -> np.ndarray:
    """A column as float64, what is not a number as NaN (pandas.to_numeric's coerce)."""
    if column.dtype == np.float64:
        return column.to_numpy()
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


TABLE_CHECKS = {"daily_prices": _reasons_for_prices}


def _keys(frame: pd.DataFrame, key: tuple[str, ...]) -> tuple[np.ndarray, pd.Series]:
    """Rows missing a key value, and rows whose key occurs more than once (every copy).

    Each key column factorized once to integer codes (-1 for a missing value) and combined
    into one int64: hashing tuples of Python objects (DataFrame.duplicated) cost a quarter of
    a 500k-row write, and asking pandas which values are missing cost as much again.
    """
    combined, radix = np.zeros(len(frame), dtype=np.int64), 1
    missing = np.zeros(len(frame), dtype=bool)
    for column in key:
        codes, distinct = pd.factorize(frame[column])
        missing |= codes < 0
        if radix * (len(distinct) + 1) > 1 << 62:  # would overflow: the general way
            return missing, frame.duplicated(list(key), keep=False)
        combined += (codes.astype(np.int64) + 1) * radix
        radix *= len(distinct) + 1
    dup = pd.Series(combined).duplicated(keep=False).to_numpy()
    return missing, pd.Series(dup, index=frame.index)


def split_rejects(
    frame: pd.DataFrame, table_name: str, key: tuple[str, ...]
) -> tuple[pd.DataFrame, list[Rejected]]:
    """Return the rows fit to write and the refused ones with their reasons."""
    if frame.empty:
        return frame, []
    reasons = Reasons(len(frame))
    if check := TABLE_CHECKS.get(table_name):
        check(frame, reasons)
    missing, duplicated = _keys(frame, key)
    reasons.mark(missing, "missing key value")
    # Every copy of a key is refused: the batch does not say which one is right.
    reasons.mark(duplicated, "duplicate key within the batch")
    bad = reasons.bad()
    if not bad.any():
        return frame, []  # no copy of a clean batch
    rejects = [
        Rejected(
            row_key=_row_key(row, key),
            reason=reasons.of(position),
            payload={c: _jsonable(row[c]) for c in frame.columns},
        )
        for position, (_, row) in zip(np.flatnonzero(bad), frame[bad].iterrows(), strict=True)
    ]
    return frame[~bad], rejects


def fingerprint(table_name: str, rejected: Rejected) -> str:
    """One refused row's identity: the same row refused again by a re-run has the same one."""
    text = json.dumps(
        [table_name, rejected.row_key, rejected.reason, rejected.payload],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()
