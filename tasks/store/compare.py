"""Which rows of a daily_prices batch differ from the stored ones, found by reading them back.

An upsert used to stage every row that might conflict and let PostgreSQL compare them with a
hash join against the table: for 500k rows that is a COPY into the stage, a join of 500k by
500k and then the few updates (1.1 s against 0.72 s for a COPY of the same rows). Reading the
stored rows of the same symbols and days back through one binary COPY of a row per symbol
(as tasks.store.read does) and comparing them with numpy costs about a third of that, and
only the rows that are new or differ are staged. The server still has the last word: the
staged rows go through ON CONFLICT ... WHERE the row IS DISTINCT, so a row this marks
changed that is not is still counted unchanged. What it must never do is call a changed row
unchanged; so a doubt (a symbol whose stored rows do not share one currency and source, a
column it does not know) marks the rows changed, or gives the batch back to the server.
"""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd

from tasks.store.copy import as_days

FLOATS = ("open", "high", "low", "close", "adj_close", "volume")
TEXTS = ("currency", "source")
_PG_EPOCH = np.datetime64("2000-01-01", "D")
_HEADER = 19  # PGCOPY signature (11) + flags (4) + extension length (4)
_RECORD = np.dtype([("date", ">i4")] + [(c, ">f8") for c in FLOATS])
_MIXED = -2  # a symbol whose stored rows hold more than one value of a text column

# A row per symbol, each read by a range scan of the primary key over the days the batch
# has for it: the symbol's position in the arrays, its rows as fixed-width records (NULL as
# NaN; volume as float8, exact below 2**53), and per text column the least and greatest value
# with the count of non-NULL ones: one value all rows share, or none, or a mixture.
_STORED = """
COPY (
  SELECT (s.n - 1)::int4, p.records, p.rows,
         p.currency_min, p.currency_max, p.currencies, p.source_min, p.source_max, p.sources
  FROM unnest(%(symbols)s::text[], %(starts)s::date[], %(ends)s::date[])
       WITH ORDINALITY AS s(symbol, first, last, n)
  CROSS JOIN LATERAL (
    SELECT string_agg(
             date_send(trade_date) || float8send(open) || float8send(high) || float8send(low)
             || float8send(close) || float8send(coalesce(adj_close, 'NaN'::float8))
             || float8send(coalesce(volume::float8, 'NaN'::float8)),
             ''::bytea) AS records,
           count(*)::int4 AS rows,
           min(currency) AS currency_min, max(currency) AS currency_max,
           count(currency)::int4 AS currencies,
           min(source) AS source_min, max(source) AS source_max, count(source)::int4 AS sources
    FROM (
      SELECT * FROM daily_prices
      WHERE symbol = s.symbol AND trade_date BETWEEN s.first AND s.last
      ORDER BY trade_date OFFSET 0
    ) d
  ) p
  WHERE p.rows > 0
) TO STDOUT (FORMAT BINARY)
"""
_FIELDS = 9


def changed_prices(cursor, frame: pd.DataFrame, codes: np.ndarray, names: list[str], columns):
    """A mask of frame's rows that are new or differ from the stored daily_prices row, or
    None when this cannot tell (a column it does not compare): then the server compares all.

    codes: each row's entity (symbol) as an index into names, as tasks.store.upsert.Entities.
    The stored rows are compared as they arrive, up to _BATCH_RECORDS of them at once, and
    let go: what is held beside the frame is a few integers per row and one batch.
    """
    values = [c for c in columns if c not in ("symbol", "trade_date")]
    if any(c not in FLOATS and c not in TEXTS for c in values):
        return None
    days = (as_days(frame["trade_date"]) - _PG_EPOCH).astype(np.int32)
    used = np.unique(codes)  # the symbols asked for, in order; a row's is its place here
    place = np.full(len(names), -1, dtype=np.int64)
    place[used] = np.arange(len(used))
    asked = place[codes]
    order = np.lexsort((days, asked))  # the rows of each symbol together, by date
    bounds = np.searchsorted(asked[order], np.arange(len(used) + 1))
    firsts, lasts = days[order[bounds[:-1]]], days[order[bounds[1:] - 1]]
    params = {
        "symbols": [names[i] for i in used],
        "starts": list((firsts + _PG_EPOCH).astype(object)),
        "ends": list((lasts + _PG_EPOCH).astype(object)),
    }
    ours = {c: _numbers(frame[c], integer=c == "volume") for c in values if c in FLOATS}
    ours |= {c: _text_ids(frame[c]) for c in values if c in TEXTS}
    changed = np.ones(len(frame), dtype=bool)  # new, until found stored
    batch: list[tuple[int, np.ndarray, dict]] = []  # symbols read and not compared yet
    held = [0]  # their records

    def compare() -> None:
        """Compare the batch's symbols at once: a daily batch has 500 symbols of a few rows
        each, and numpy's dozen calls per symbol cost more than the rows themselves."""
        places = np.array([place for place, _, _ in batch], dtype=np.int64)
        lengths = [len(records) for _, records, _ in batch]
        records = np.concatenate([records for _, records, _ in batch])
        theirs = _keys(np.repeat(places, lengths), records["date"])
        by_key = np.argsort(theirs, kind="stable")
        theirs = theirs[by_key]
        rows = np.concatenate([order[bounds[p] : bounds[p + 1]] for p in places])
        mine = _keys(asked[rows], days[rows])
        hit = np.minimum(np.searchsorted(theirs, mine), len(theirs) - 1)
        found = theirs[hit] == mine
        rows, hit = rows[found], by_key[hit[found]]
        differs = np.zeros(len(rows), dtype=bool)
        for column in values:
            if column in FLOATS:
                a, b = ours[column][rows], records[column][hit]
                differs |= (a != b) & ~(np.isnan(a) & np.isnan(b))
            else:
                ids, known = ours[column]
                # A mixture of stored values: the server decides, row by row.
                want = [
                    -2 if texts[column] is _MIXED_VALUE else known.get(texts[column], -3)
                    for _, _, texts in batch
                ]
                differs |= ids[rows] != np.repeat(np.array(want, dtype=np.int64), lengths)[hit]
        changed[rows] = differs
        batch.clear()
        held[0] = 0

    def take(at: int, records: np.ndarray, texts: dict) -> None:
        batch.append((at, records.copy(), texts))  # a copy: the COPY buffer moves on
        held[0] += len(records)
        if held[0] >= _BATCH_RECORDS:
            compare()

    _read_stored(cursor, params, take)
    if batch:
        compare()
    return changed


# Stored records compared at once: enough to make numpy's per-call cost vanish (a daily
# batch's are one batch), few enough (under half a MB) to leave the write's peak memory as it
# was when each symbol was compared alone.
_BATCH_RECORDS = 1 << 13


def _keys(places: np.ndarray, days: np.ndarray) -> np.ndarray:
    """(symbol's place, day) as one sortable int64."""
    return (places.astype(np.int64) << 32) | (days.astype(np.int64) + 2**31)


def _numbers(series: pd.Series, *, integer: bool) -> np.ndarray:
    """A column as the float8 it is stored as (NaN for NULL), as tasks.store.copy encodes it:
    a BIGINT column gets the number truncated to an integer."""
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    if integer:
        whole = ~np.isnan(numbers)
        numbers = numbers.copy()
        numbers[whole] = numbers[whole].astype(np.int64).astype(np.float64)
    return numbers


def _text_ids(series: pd.Series) -> tuple[np.ndarray, dict]:
    """A text column as an id per row (-1 for NULL) and the ids of its values, as stored
    (str of each value, as tasks.store.copy encodes it)."""
    codes, uniques = pd.factorize(series.to_numpy(dtype=object), use_na_sentinel=True)
    known: dict = {None: -1}
    for u in uniques:
        known.setdefault(str(u), len(known) - 1)
    ids = np.array([known[str(u)] for u in uniques] + [-1], dtype=np.int32)
    return ids[codes], known


_MIXED_VALUE = object()


def _read_stored(cursor, params: dict, compare) -> None:
    """Hand each symbol's stored records (place, records, the text values its rows share:
    None for NULL, or _MIXED_VALUE) to compare, as each arrives whole."""
    pending, at = bytearray(), _HEADER
    with cursor.copy(_STORED, params) as copy:
        for block in copy:
            pending += block
            at = _take_rows(pending, at, compare)
            if at <= len(pending):  # else the header itself is not all here yet
                del pending[:at]
                at = 0
    if bytes(pending) != b"\xff\xff":  # what is left must be the trailer alone
        raise RuntimeError(f"changed_prices: COPY ended with {len(pending)} stray bytes")


_INT2, _INT4 = struct.Struct(">h"), struct.Struct(">i")


def _take_rows(data: bytearray, at: int, compare) -> int:
    """Hand the whole COPY rows in data from offset at to compare; the offset after them."""
    view = memoryview(data)
    try:
        while len(data) - at >= 2:
            (fields,) = _INT2.unpack_from(data, at)
            if fields == -1:  # the trailer
                break
            if fields != _FIELDS:
                raise RuntimeError(f"changed_prices: a COPY row has {fields} fields")
            cells, end = [], at + 2
            for _ in range(fields):
                if len(data) - end < 4:
                    return at
                (size,) = _INT4.unpack_from(data, end)
                end += 4
                if size >= 0 and len(data) - end < size:
                    return at
                cells.append(None if size < 0 else view[end : end + size])
                end += max(size, 0)
            (place,), (rows,) = _INT4.unpack(cells[0]), _INT4.unpack(cells[2])
            if len(cells[1]) != rows * _RECORD.itemsize:
                raise RuntimeError("changed_prices: a symbol's records are not as asked")
            texts = {}
            for i, column in enumerate(TEXTS):
                low, high, present = cells[3 + 3 * i : 6 + 3 * i]
                (present,) = _INT4.unpack(present)
                if present == 0:
                    texts[column] = None
                elif present == rows and low == high:
                    texts[column] = bytes(low).decode()
                else:
                    texts[column] = _MIXED_VALUE
            records = np.frombuffer(cells[1], _RECORD)
            compare(place, records, texts)
            del records, cells
            at = end
        return at
    finally:
        view.release()
