"""Binary COPY of a frame into PostgreSQL, encoded by numpy a slice at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from tasks.store import schema

COPY_SLICE = 50_000
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # header, no flags, no extension
_TRAILER = b"\xff\xff"
_PG_EPOCH = np.datetime64("2000-01-01", "D")
# Fixed-width binary COPY types: their big-endian numpy dtype.
_FIXED = {"float8": ">f8", "int8": ">i8", "int4": ">i4", "date": ">i4", "bool": "u1"}

# The PostgreSQL binary COPY type of each column type we use.
_PG_TYPES = {
    sa.String: "text",
    sa.Text: "text",
    sa.Date: "date",
    sa.Float: "float8",
    sa.BigInteger: "int8",
    sa.Integer: "int4",
    sa.DateTime: "timestamptz",
    sa.Boolean: "bool",
    sa.JSON: "json",
}


def python_columns(frame: pd.DataFrame, spec: schema.UpsertSpec, columns: list[str]):
    """Column arrays of plain Python values (None for missing) in the order of columns."""
    out = []
    for name in columns:
        col_type = spec.table.c[name].type
        series = frame[name]
        if isinstance(col_type, sa.Date):
            values = pd.to_datetime(series).dt.date.to_numpy(dtype=object)
        elif isinstance(col_type, sa.Float):
            arr = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64")
            values = arr.astype(object)
            values[np.isnan(arr)] = None
        elif isinstance(col_type, sa.Integer):  # BigInteger is a subclass
            arr = pd.to_numeric(series, errors="coerce")
            values = np.array(
                [None if pd.isna(v) else int(v) for v in arr.to_numpy()], dtype=object
            )
        else:
            values = series.astype(object).where(series.notna(), None).to_numpy(dtype=object)
        out.append(values)
    return out


def _pg_type(column: sa.Column) -> str:
    for sa_type, pg in _PG_TYPES.items():
        if isinstance(column.type, sa_type):
            return pg
    raise TypeError(f"no COPY type for {column.table.name}.{column.name}: {column.type}")


def copy_frame(cursor, table: str, spec, columns: list[str], frame: pd.DataFrame) -> None:
    """Binary COPY of frame into table through a psycopg cursor, encoded in slices.

    Columns of text, date, number and boolean types are encoded by numpy straight into COPY's
    binary rows (no Python object per value: a row costs about what COPY itself costs); other
    types (timestamps, JSON) go through psycopg's row writer. Slicing keeps only COPY_SLICE
    rows' encoding alive at a time, so memory stays flat however large the batch.
    """
    types = [_pg_type(spec.table.c[c]) for c in columns]
    cols = ", ".join(f'"{c}"' for c in columns)
    fast = all(t in _FIXED or t == "text" for t in types)
    with cursor.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
        if fast:
            copy.write(_SIGNATURE)
        else:
            copy.set_types(types)
        for start in range(0, len(frame), COPY_SLICE):
            part = frame.iloc[start : start + COPY_SLICE]
            if fast:
                copy.write(binary_rows(part, types, columns))
                continue
            for row in zip(*python_columns(part, spec, columns), strict=True):
                copy.write_row(row)
        if fast:
            copy.write(_TRAILER)


def as_days(series: pd.Series) -> np.ndarray:
    """Dates as datetime64[D]; a column already datetime64 skips pandas' parsing (which looks
    its values over even then: a tenth of a 500k-row COPY)."""
    if pd.api.types.is_datetime64_dtype(series):
        return series.to_numpy(dtype="datetime64[D]")
    return pd.to_datetime(series).to_numpy(dtype="datetime64[D]")


def _encode(series: pd.Series, pg_type: str) -> tuple[np.ndarray, np.ndarray]:
    """One column as (payload per row, its byte length per row; -1 where NULL)."""
    if pg_type == "text":
        values = series.to_numpy(dtype=object)
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        encoded = [str(u).encode() for u in uniques]
        width = max((len(e) for e in encoded), default=1) or 1
        table = np.array(encoded + [b""], dtype=f"S{width}")
        lengths = np.array([len(e) for e in encoded] + [-1], dtype=np.int32)
        return table[codes], lengths[codes]  # code -1 (NULL) picks the last entry
    if pg_type == "date":
        days = as_days(series)
        null = np.isnat(days)
        payload = np.where(null, 0, (days - _PG_EPOCH).astype(np.int64)).astype(">i4")
    elif pg_type == "bool":
        null = series.isna().to_numpy()
        payload = series.fillna(False).to_numpy(dtype=bool).astype("u1")
    else:
        numbers = pd.to_numeric(series, errors="coerce")
        null = numbers.isna().to_numpy()
        kind = np.float64 if pg_type == "float8" else np.int64
        payload = numbers.to_numpy(dtype=np.float64, na_value=0).astype(kind)
        payload = payload.astype(_FIXED[pg_type])
    lengths = np.where(null, -1, payload.dtype.itemsize).astype(np.int32)
    return payload, lengths


def _same_layout(lengths: np.ndarray) -> list[np.ndarray]:
    """Row numbers grouped by identical rows of lengths (one group per row layout).

    Hashing a mixed-radix code of the few distinct lengths per column: sorting whole rows
    (numpy.unique with axis=0) cost more than the COPY itself.
    """
    key, radix = np.zeros(len(lengths), dtype=np.int64), 1
    for column in lengths.T:
        if (column == column[0]).all():  # one length (a fixed-width column, no NULL): as is
            continue
        codes, distinct = pd.factorize(column)
        if len(distinct) > 1:
            if radix * len(distinct) > 1 << 40:  # many layouts: group them the general way
                _, key = np.unique(lengths, axis=0, return_inverse=True)
                key = key.reshape(-1)
                break
            key += codes.astype(np.int64) * radix
            radix *= len(distinct)
    which, distinct = pd.factorize(key)
    if len(distinct) == 1:
        return [np.arange(len(lengths))]
    order = np.argsort(which, kind="stable")
    return np.split(order, np.cumsum(np.bincount(which))[:-1])


def binary_rows(frame: pd.DataFrame, types: list[str], columns: list[str]) -> bytes:
    """frame's rows in PostgreSQL's binary COPY format (no header or trailer).

    Rows of one layout (the same byte length in every field, NULLs alike) are one numpy
    record array, filled a column at a time; a batch has a handful of layouts (symbol lengths,
    a NULL here and there), and row order within a COPY does not matter.
    """
    if frame.empty:
        return b""
    encoded = [_encode(frame[c], t) for c, t in zip(columns, types, strict=True)]
    lengths = np.column_stack([length for _, length in encoded])
    out = []
    for rows in _same_layout(lengths):
        layout = lengths[rows[0]]
        fields = [("n", ">i2")]
        for i, size in enumerate(layout):
            fields.append((f"l{i}", ">i4"))
            if size > 0:
                kind = encoded[i][0].dtype
                fields.append((f"v{i}", f"S{size}" if kind.kind == "S" else kind.str))
        record = np.empty(len(rows), dtype=np.dtype(fields))
        record["n"] = len(columns)
        for i, size in enumerate(layout):
            record[f"l{i}"] = size
            if size > 0:
                record[f"v{i}"] = encoded[i][0][rows]
        out.append(record.tobytes())
    return b"".join(out)
