"""Re-basing: when Yahoo rewrote a symbol's past (split, dividend), find it and say why.

Yahoo serves every symbol's history in today's basis: a split divides all earlier prices by
its ratio, a dividend scales adj_close of all earlier sessions. The store keeps that basis
(README, "Prices"), so a symbol whose past moved is re-fetched whole and rewritten.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.market.frames import Frames
from tasks.store.schema import corporate_actions, daily_prices

# Relative difference past which a stored close or adj_close no longer equals the source's:
# far below any dividend (a 0.1% payout is 1e-3), above float noise in a JSON round trip.
TOLERANCE = 1e-5


def find_rebases(
    prices: pd.DataFrame,
    actions: pd.DataFrame,
    stored_prices: pd.DataFrame,
    stored_actions: pd.DataFrame,
) -> dict[str, str]:
    """Symbols whose stored history the fetched rows show to be in an old basis, with why.

    stored_prices: symbol, trade_date, close, adj_close over the fetched range; stored_actions:
    symbol, action_date, action_type, value from the first fetched date. Only symbols with
    stored rows are considered: a backfill has no past to re-base.
    """
    stored_symbols = set(stored_prices["symbol"]) if not stored_prices.empty else set()
    reasons: dict[str, list[str]] = {}
    if not actions.empty and stored_symbols:
        known = {
            (r.symbol, r.action_date, r.action_type): r.value
            for r in stored_actions.itertuples(index=False)
        }
        for r in actions.itertuples(index=False):
            if r.symbol not in stored_symbols:
                continue
            before = known.get((r.symbol, r.action_date, r.action_type))
            if before is None:
                reasons.setdefault(r.symbol, []).append(
                    f"new {r.action_type} {r.action_date} ({r.value:g})"
                )
            elif not np.isclose(before, r.value, rtol=TOLERANCE, atol=0):
                reasons.setdefault(r.symbol, []).append(
                    f"{r.action_type} {r.action_date} revised {before:g} -> {r.value:g}"
                )
    if stored_symbols and not prices.empty:
        both = prices.merge(
            stored_prices, on=["symbol", "trade_date"], suffixes=("", "_stored"), how="inner"
        )
        # The whole chunk at once, then only the symbols that differ one by one: a daily run's
        # 500 symbols compared a group at a time cost more than reading them from the store.
        codes, names = pd.factorize(both["symbol"])  # in order of appearance, as before
        counts = np.bincount(codes, minlength=len(names))
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for column in ("close", "adj_close"):
            if column not in both:
                continue
            new = pd.to_numeric(both[column], errors="coerce").to_numpy(dtype=float)
            old = pd.to_numeric(both[f"{column}_stored"], errors="coerce").to_numpy(dtype=float)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.abs(new - old) / np.abs(old)
            found[column] = (rel, (rel > TOLERANCE) | (np.isnan(new) != np.isnan(old)))
        hit = np.zeros(len(names), dtype=bool)
        for _, differs in found.values():
            hit[codes[differs]] = True
        for i in np.flatnonzero(hit):
            for column, (rel, differs) in found.items():
                mine = differs & (codes == i)
                if mine.any():
                    worst = np.nanmax(np.where(mine, rel, np.nan))
                    reasons.setdefault(names[i], []).append(
                        f"{column} differs on {int(mine.sum())} of {counts[i]} stored "
                        f"sessions (up to {worst:.3%})"
                    )
    return {s: "; ".join(why) for s, why in reasons.items()}


def replace_symbols(frames: Frames, refetched: Frames, symbols: set[str]) -> Frames:
    """frames with the rows of symbols swapped for the re-fetched ones (pure)."""

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty or "symbol" not in frame:
            return frame
        return frame[~frame["symbol"].isin(symbols)]

    prices = [f for f in (keep(frames.prices), refetched.prices) if not f.empty]
    actions = [f for f in (keep(frames.actions), refetched.actions) if not f.empty]
    return Frames(
        pd.concat(prices, ignore_index=True) if prices else frames.prices.iloc[0:0],
        pd.concat(actions, ignore_index=True) if actions else pd.DataFrame(),
        [i for i in frames.instruments if i["symbol"] not in symbols] + refetched.instruments,
    )


# --------------------------------------------------------------------------- thin I/O


def read_stored(
    engine: Engine, symbols: list[str], since: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stored closes and actions of symbols from since on: what a fetch is compared with."""
    p, a = daily_prices.c, corporate_actions.c
    with engine.connect() as conn:
        prices = pd.DataFrame(
            conn.execute(
                sa.select(p.symbol, p.trade_date, p.close, p.adj_close).where(
                    p.symbol.in_(symbols), p.trade_date >= since
                )
            ).all(),
            columns=["symbol", "trade_date", "close", "adj_close"],
        )
        actions = pd.DataFrame(
            conn.execute(
                sa.select(a.symbol, a.action_date, a.action_type, a.value).where(
                    a.symbol.in_(symbols), a.action_date >= since
                )
            ).all(),
            columns=["symbol", "action_date", "action_type", "value"],
        )
    return prices, actions


def first_dates(engine: Engine, symbols: list[str]) -> dict[str, dt.date]:
    """The oldest stored session per symbol: where a re-based symbol is re-fetched from."""
    p = daily_prices.c
    query = sa.select(p.symbol, sa.func.min(p.trade_date)).where(p.symbol.in_(symbols))
    with engine.connect() as conn:
        return dict(conn.execute(query.group_by(p.symbol)).all())
