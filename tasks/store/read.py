"""Reading the store: daily prices for many symbols (raw or adjusted), macro series as of a day.

    from tasks.store.read import read_prices, read_prices_wide, read_macro
    prices = read_prices(engine, ["AAPL", "MSFT"], "2016-01-01", "2025-12-31", adjusted=True)
    closes = read_prices_wide(engine, ["AAPL", "MSFT"], "2016-01-01", field="close")
    cpi = read_macro(engine, ["CPIAUCSL"], as_of="2024-05-01")  # what FRED said that day

On PostgreSQL prices come through one binary `COPY (SELECT ...) TO STDOUT` of a row per
symbol (its position in the list asked for, and its sessions as one bytea of fixed-width
records, NULLs as NaN), decoded by numpy a symbol at a time straight into the frame's
columns: about what the COPY itself costs, with no Python object per value and no second
copy of the rows. SQLite reads the same rows through its cursor.
"""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.clock import as_date
from tasks.store.schema import macro_vintages

PRICE_COLUMNS = ("open", "high", "low", "close", "adj_close", "volume")
ADJUSTED = ("open", "high", "low", "close")
_FAR_PAST, _FAR_FUTURE = dt.date(1900, 1, 1), dt.date(2999, 12, 31)
_PG_EPOCH = np.datetime64("2000-01-01", "D")
_PG_EPOCH_DAYS = int(_PG_EPOCH.astype(np.int64))  # days from 1970 to 2000
_NS_PER_DAY = 86_400 * 10**9
_HEADER = 19  # PGCOPY signature (11) + flags (4) + extension length (4)

# One COPY row per symbol: its index in the array asked for, and its sessions as one bytea of
# fixed-width big-endian records (date, then the price columns as float8, NULL as NaN),
# dates ascending. psycopg hands over a COPY one row (message) at a time at about 1 us each,
# which for a row per session was most of the read (1.9-2.8 s of 1.26M rows against 0.75 s
# as 500 rows). The symbols are joined as a table (unnest WITH ORDINALITY: its index comes
# with it), each read by its own range scan of the primary key (symbol, trade_date), in date
# order: string_agg keeps its input's order (an ORDER BY inside it sorted again, 1.47 s
# against 1.02 s), and the reader checks it anyway. array_position per row, as this once
# did, cost 6-7 s of server time for 500 symbols.
_PG_PRICES = """
COPY (
  SELECT (s.n - 1)::int4, p.records
  FROM unnest(%(symbols)s::text[]) WITH ORDINALITY AS s(symbol, n)
  CROSS JOIN LATERAL (
    SELECT string_agg(
             date_send(trade_date) || float8send(open) || float8send(high) || float8send(low)
             || float8send(close) || float8send(coalesce(adj_close, 'NaN'::float8))
             || float8send(coalesce(volume::float8, 'NaN'::float8)),
             ''::bytea) AS records
    FROM (
      SELECT * FROM daily_prices
      WHERE symbol = s.symbol AND trade_date BETWEEN %(start)s AND %(end)s
      ORDER BY trade_date OFFSET 0
    ) d
  ) p
  WHERE p.records IS NOT NULL
) TO STDOUT (FORMAT BINARY)
"""
_RECORD = np.dtype([("date", ">i4")] + [(c, ">f8") for c in PRICE_COLUMNS])
# A COPY row: field count (2), the index's length (4) and value, the records' length.
_ROW_HEAD = np.dtype([("fields", ">i2"), ("l_code", ">i4"), ("code", ">i4"), ("l_records", ">i4")])

# Each dividend with the stored close of the session before it: its adjustment factor. The
# close is looked up (one index probe a dividend) only when :lookup_all is true or the
# ex-date is past :end; the frame read holds the closes before the others.
_DIVIDENDS = """
SELECT a.symbol, a.action_date, a.value,
       CASE WHEN :lookup_all OR a.action_date > :end THEN
         (SELECT p.close FROM daily_prices p
          WHERE p.symbol = a.symbol AND p.trade_date < a.action_date
          ORDER BY p.trade_date DESC LIMIT 1)
       END AS prev_close
FROM corporate_actions a
WHERE a.action_type = 'dividend' AND a.symbol IN :symbols AND a.action_date > :start
ORDER BY a.symbol, a.action_date
"""

# For each observation, the value of the vintage that began last on or before :as_of.
_MACRO_AS_OF = """
SELECT v.series_id, v.obs_date, v.value FROM macro_vintages v
WHERE v.series_id IN :ids AND v.obs_date BETWEEN :start AND :end
  AND v.realtime_start = (
    SELECT max(w.realtime_start) FROM macro_vintages w
    WHERE w.series_id = v.series_id AND w.obs_date = v.obs_date AND w.realtime_start <= :as_of)
ORDER BY v.series_id, v.obs_date
"""


def _symbols(symbols) -> list[str]:
    if isinstance(symbols, str):
        symbols = [symbols]
    out = list(dict.fromkeys(str(s).strip().upper() for s in symbols))
    if not out:
        raise ValueError("read_prices: no symbols given")
    return out


def read_prices(
    engine: Engine,
    symbols,
    start=None,
    end=None,
    *,
    adjusted: bool = False,
) -> pd.DataFrame:
    """Daily prices of symbols between start and end (inclusive) as a long frame.

    Columns: symbol (categorical), trade_date (datetime64), open, high, low, close,
    adj_close, volume (float; NaN where NULL), sorted by symbol and date.
    Raw (the default) is the stored rows: Yahoo's basis, split-adjusted to today's shares,
    adj_close its total-return series. adjusted=True also scales open, high, low and close
    of each session by every later dividend in corporate_actions: the factor
    1 - dividend / (close of the session before its ex-date), multiplied over the dividends
    after that session (the CRSP method Yahoo's adj_close follows). Symbols with no stored
    rows are simply absent.
    """
    names = sorted(_symbols(symbols))
    first, last = as_date(start) or _FAR_PAST, as_date(end) or _FAR_FUTURE
    if first > last:
        raise ValueError(f"read_prices: start {first} is after end {last}")
    if engine.dialect.name == "postgresql":
        codes, days, values = _prices_postgres(engine, names, first, last)
    else:
        codes, days, values = _prices_sqlite(engine, names, first, last)
    if adjusted and len(days):
        factor = _dividend_factors(engine, names, codes, days, values["close"], first, last)
        for column in ADJUSTED:
            values[column] *= factor  # in place: no second copy
    return _frame(codes, days, values, names)


def read_prices_wide(
    engine: Engine, symbols, start=None, end=None, *, field: str = "close", adjusted: bool = False
) -> pd.DataFrame:
    """One price field as a frame of dates (rows) by symbols (columns, in the order asked)."""
    if field not in PRICE_COLUMNS:
        raise ValueError(f"read_prices_wide: field {field!r} is not one of {PRICE_COLUMNS}")
    names = _symbols(symbols)
    long = read_prices(engine, names, start, end, adjusted=adjusted)
    wide = long.pivot(index="trade_date", columns="symbol", values=field)
    return wide.reindex(columns=[s for s in names if s in wide.columns])


def _frame(codes, days, values: dict[str, np.ndarray], names: list[str]) -> pd.DataFrame:
    """The long frame over the arrays as they are (copy=False: no column copied or stacked)."""
    symbol = pd.Categorical.from_codes(codes, categories=names)
    return pd.DataFrame({"symbol": symbol, "trade_date": days, **values}, copy=False)


def _prices_postgres(engine: Engine, names, first, last):
    """Codes, days (datetime64[ns]) and the price columns of the COPY, sorted."""
    columns = {
        "symbol": np.empty(0, np.int16 if len(names) < 2**15 else np.int32),
        "trade_date": np.empty(0, "datetime64[ns]"),
    } | {c: np.empty(0) for c in PRICE_COLUMNS}  # fmt: skip
    pending, at, count = bytearray(), _HEADER, 0
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        params = {"symbols": names, "start": first, "end": last}
        with cursor.copy(_PG_PRICES, params) as copy:
            # Each symbol's rows go into the columns as soon as they are whole, so the COPY's
            # bytes are never all held beside the columns made of them.
            for block in copy:
                pending += block
                at, count = _take_rows(pending, at, columns, count)
                if at <= len(pending):  # else the header itself is not all here yet
                    pending, at = pending[at:], 0
    if bytes(pending) != b"\xff\xff":  # what is left must be the trailer alone
        raise RuntimeError(f"read_prices: COPY ended with {len(pending)} stray bytes")
    for array in columns.values():
        array.resize(count, refcheck=False)
    codes, days = columns.pop("symbol"), columns.pop("trade_date")
    # The server sends each symbol's rows in turn, dates ascending, so this only checks; the
    # sort is a guard against a plan that reads otherwise.
    step = np.diff(codes)
    if ((step < 0) | ((step == 0) & (np.diff(days) <= np.timedelta64(0)))).any():
        order = np.lexsort((days, codes))
        codes, days = codes[order], days[order]
        columns = {c: v[order] for c, v in columns.items()}
    return codes, days, columns


def _take_rows(data: bytearray, at: int, columns: dict, count: int) -> tuple[int, int]:
    """Append the whole COPY rows in data from offset at to columns (of which count are
    filled); return the offset after them and the new count."""
    while len(data) - at >= _ROW_HEAD.itemsize:
        head = np.frombuffer(data, dtype=_ROW_HEAD, count=1, offset=at)[0]
        if head["fields"] == -1:  # the trailer
            break
        if head["fields"] != 2 or head["l_code"] != 4 or head["l_records"] % _RECORD.itemsize:
            raise RuntimeError(f"read_prices: a COPY row is not as asked: {head}")
        start, size = at + _ROW_HEAD.itemsize, int(head["l_records"])
        if len(data) - start < size:
            break
        records = np.frombuffer(data, _RECORD, count=size // _RECORD.itemsize, offset=start)
        count = _append(columns, count, int(head["code"]), records)
        at = start + size
    return at, count


def _append(columns: dict, count: int, code: int, records: np.ndarray) -> int:
    """Append one symbol's records to columns (of which count are filled); the new count.

    The columns grow in place (ndarray.resize: realloc, which moves a large block's pages
    instead of copying them), so no part is held twice; they are cut to size at the end.
    """
    end = count + len(records)
    if end > len(columns["close"]):
        capacity = max(end, 2 * len(columns["close"]))
        for array in columns.values():
            array.resize(capacity, refcheck=False)
    columns["symbol"][count:end] = code
    days = columns["trade_date"][count:end].view(np.int64)
    days[:] = records["date"]  # days since 2000-01-01, made nanoseconds since 1970 in place
    days += _PG_EPOCH_DAYS
    days *= _NS_PER_DAY
    for column in PRICE_COLUMNS:
        columns[column][count:end] = records[column]  # byte-swapped as it is copied
    return end


def _prices_sqlite(engine: Engine, names, first, last):
    query = sa.text(
        "SELECT symbol, trade_date, open, high, low, close, adj_close, volume FROM daily_prices "
        "WHERE symbol IN :symbols AND trade_date BETWEEN :start AND :end"
    ).bindparams(sa.bindparam("symbols", expanding=True))
    with engine.connect() as conn:
        result = conn.execute(query, {"symbols": names, "start": first, "end": last}).all()
    if not result:
        empty = {c: np.array([], dtype=np.float64) for c in PRICE_COLUMNS}
        return np.array([], dtype=np.int32), np.array([], "datetime64[ns]"), empty
    columns = list(zip(*result, strict=True))
    position = {s: i for i, s in enumerate(names)}
    codes = np.array([position[s] for s in columns[0]], dtype=np.int32)
    days = pd.to_datetime(pd.Series(columns[1])).to_numpy(dtype="datetime64[ns]")
    # Sorted by the symbols' order in names (Python's, as on PostgreSQL), then date.
    order = np.lexsort((days, codes))
    values = {
        c: np.array(columns[i + 2], dtype=np.float64)[order]  # None -> NaN
        for i, c in enumerate(PRICE_COLUMNS)
    }
    return codes[order], days[order], values


def _dividend_factors(engine: Engine, names, codes, days, close, first, last) -> np.ndarray:
    """Per row: the product of (1 - D / previous close) of the dividends after it.

    The rows are sorted by symbol code, so each symbol's rows are one slice of them; the
    dividends come ordered by symbol, then date, so each symbol's are one run of them.
    """
    query = sa.text(_DIVIDENDS).bindparams(sa.bindparam("symbols", expanding=True))
    params = {"symbols": names, "start": first, "end": last, "lookup_all": False}
    with engine.connect() as conn:
        rows = conn.execute(query, params).all()
    factor = np.ones(len(days))
    if not rows:
        return factor
    # Converted once for all symbols: pandas per symbol, or Python per dividend, cost tenths
    # of a second for 500 symbols' 19,500 dividends.
    symbol, ex_date, value, prev_close = zip(*rows, strict=True)
    position = {s: i for i, s in enumerate(names)}
    code = np.array([position[s] for s in symbol])
    ex = pd.to_datetime(pd.Series(ex_date)).to_numpy(dtype="datetime64[ns]")
    prev = np.array(prev_close, dtype=np.float64)  # None -> NaN
    bounds = np.searchsorted(codes, np.arange(len(names) + 1))
    runs = np.flatnonzero(np.diff(code, prepend=-1, append=-1))
    # Ex-dates up to the range's end were not looked up: the close before each is the
    # symbol's last row read before it; where none was read, the store is asked after all.
    from_rows = ex <= np.datetime64(last, "ns")
    unknown = np.zeros(len(code), dtype=bool)
    for begin, stop in itertools.pairwise(runs):
        mine = slice(bounds[code[begin]], bounds[code[begin] + 1])
        run = np.arange(begin, stop)[from_rows[begin:stop]]
        if mine.start == mine.stop or not len(run):
            continue
        before = np.searchsorted(days[mine], ex[run]) - 1
        prev[run] = close[mine][np.maximum(before, 0)]
        unknown[run[before < 0]] = True
    if unknown.any():
        asked = np.isin(code, np.unique(code[unknown]))
        missing = sorted({symbol[i] for i in np.flatnonzero(asked)})
        with engine.connect() as conn:
            again = conn.execute(query, params | {"symbols": missing, "lookup_all": True}).all()
        prev[asked] = np.array([r[3] for r in again], dtype=np.float64)  # same rows, same order
    step = 1.0 - np.array(value, dtype=np.float64) / prev  # NaN where no session before
    for begin, stop in itertools.pairwise(runs):
        mine = slice(bounds[code[begin]], bounds[code[begin] + 1])
        kept = np.arange(begin, stop)[prev[begin:stop] > 0]  # NaN compares False
        if mine.start == mine.stop or not len(kept):
            continue
        # Suffix products: after[k] = product of the steps of dividends k, k+1, ...
        after = np.append(np.cumprod(step[kept][::-1])[::-1], 1.0)
        # A session before ex-date k is scaled by every dividend from k on.
        factor[mine] = after[np.searchsorted(ex[kept], days[mine], side="right")]
    return factor


def read_macro(engine: Engine, series_ids, as_of=None, start=None, end=None) -> pd.DataFrame:
    """Macro observations as FRED published them on as_of (a long frame: series_id, obs_date,
    value), from the stored vintages; as_of=None gives the values stored now.

    An observation not yet published on as_of is absent; one published as '.' is NaN.
    A series with no stored vintages (its runs had vintages=False) is a clear error, since
    the store cannot say what FRED said on a past day.
    """
    ids = [
        str(s).strip().upper()
        for s in ([series_ids] if isinstance(series_ids, str) else series_ids)
    ]
    if not ids:
        raise ValueError("read_macro: no series given")
    first, last = as_date(start) or _FAR_PAST, as_date(end) or _FAR_FUTURE
    with engine.connect() as conn:
        if as_of is None:
            query = sa.text(
                "SELECT series_id, obs_date, value FROM macro_observations WHERE series_id IN :ids"
                " AND obs_date BETWEEN :start AND :end ORDER BY series_id, obs_date"
            )
            params = {"ids": ids, "start": first, "end": last}
        else:
            kept = set(conn.execute(
                sa.select(macro_vintages.c.series_id).where(macro_vintages.c.series_id.in_(ids))
                .distinct()
            ).scalars())  # fmt: skip
            if missing := [s for s in ids if s not in kept]:
                raise ValueError(
                    f"read_macro: no vintages stored for {', '.join(missing)}: run the macro "
                    "flow with vintages=True to keep what FRED said on each day"
                )
            query = sa.text(_MACRO_AS_OF)
            params = {"ids": ids, "start": first, "end": last, "as_of": as_date(as_of)}
        query = query.bindparams(sa.bindparam("ids", expanding=True))
        rows = conn.execute(query, params).all()
    frame = pd.DataFrame(rows, columns=["series_id", "obs_date", "value"])
    frame["obs_date"] = pd.to_datetime(frame["obs_date"])
    frame["value"] = frame["value"].astype(np.float64)
    return frame
