"""Binary COPY of a frame into PostgreSQL, converted a slice at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from tasks.store import schema

COPY_SLICE = 50_000

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
    """Binary COPY of frame into table through a psycopg cursor, converted in slices.

    Slicing keeps the Python objects of only COPY_SLICE rows alive at a time, so memory stays
    flat however large the batch.
    """
    types = [_pg_type(spec.table.c[c]) for c in columns]
    cols = ", ".join(f'"{c}"' for c in columns)
    with cursor.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for start in range(0, len(frame), COPY_SLICE):
            arrays = python_columns(frame.iloc[start : start + COPY_SLICE], spec, columns)
            for row in zip(*arrays, strict=True):
                copy.write_row(row)
