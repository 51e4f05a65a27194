"""Model I/O: prices in, checkpoints to storage (folder or S3Bucket block), model_versions,
predictions out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from blocks.names import MODEL_BUCKET
from tasks.market.calendars import market_of
from tasks.models.features import FEATURE_INPUT_COLUMNS, FEATURE_SPEC, WINDOW, LatestWindows
from tasks.models.model import ModelError
from tasks.store import schema
from tasks.store.read import read_prices


class NoPromotedModel(ModelError):
    """No version is promoted for the market yet."""


# ---------------------------------------------------------------------------- prices


def market_symbols(engine: Engine, market: str) -> dict[str, dt.date]:
    """Symbols of a market with their newest stored session (instruments, else the suffix)."""
    with engine.connect() as conn:
        newest = conn.execute(
            sa.select(
                schema.daily_prices.c.symbol, sa.func.max(schema.daily_prices.c.trade_date)
            ).group_by(schema.daily_prices.c.symbol)
        ).all()
        listed = dict(
            conn.execute(sa.select(schema.instruments.c.symbol, schema.instruments.c.market)).all()
        )
    return {s: d for s, d in newest if (listed.get(s) or market_of(s).code) == market}


def load_prices(engine: Engine, market: str, sessions: int | None = None) -> pd.DataFrame:
    """A market's daily prices; with sessions, only each symbol's last that many sessions.

    Prediction reads only a recent date range, so 5,000 symbols stay a few MB in memory.
    """
    symbols = market_symbols(engine, market)
    if not symbols:
        return pd.DataFrame(columns=FEATURE_INPUT_COLUMNS)
    since = None
    if sessions:
        # 60 sessions span about 90 calendar days; the slack covers long holidays.
        since = max(symbols.values()) - dt.timedelta(days=int(sessions * 1.6) + 30)
    # The store's read path (tasks/store/read.py): one binary COPY on PostgreSQL.
    frame = read_prices(engine, sorted(symbols), since)
    frame = frame.assign(
        symbol=frame["symbol"].astype(str), trade_date=frame["trade_date"].dt.date
    )[FEATURE_INPUT_COLUMNS]
    if sessions:
        frame = frame.groupby("symbol", sort=False).tail(sessions).reset_index(drop=True)
    return frame


def prediction_prices(engine: Engine, market: str) -> pd.DataFrame:
    """Enough sessions per symbol for one window: WINDOW features need WINDOW + 1 prices."""
    return load_prices(engine, market, sessions=WINDOW + 1)


# ---------------------------------------------------------------------------- storage


class LocalStorage:
    """Checkpoints as files in a folder (settings.model_dir)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def put(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # a reader never sees half a checkpoint
        return path.resolve().as_uri()

    def get(self, uri: str) -> bytes:
        return Path(uri.removeprefix("file://")).read_bytes()


class S3Storage:
    """Checkpoints in the S3Bucket block named investflow-models (AWS, MinIO, OCI)."""

    def __init__(self, block):
        self.block = block

    def put(self, name: str, data: bytes) -> str:
        key = self.block.write_path(name, data)
        return f"s3://{self.block.bucket_name}/{key}"

    def get(self, uri: str) -> bytes:
        key = uri.removeprefix(f"s3://{self.block.bucket_name}/")
        return self.block.read_path(key)


def open_storage(model_dir: Path, use_block: bool = True) -> LocalStorage | S3Storage:
    """The S3Bucket block when it is configured, else the local model folder."""
    if use_block:
        try:
            from prefect_aws.s3 import S3Bucket

            return S3Storage(S3Bucket.load(MODEL_BUCKET))
        except ValueError:  # no such block document (or type) on this server
            pass
    return LocalStorage(model_dir)


def read_checkpoint(uri: str, model_dir: Path) -> bytes:
    """Fetch a checkpoint's bytes wherever it was stored."""
    storage = open_storage(model_dir, use_block=uri.startswith("s3://"))
    if uri.startswith("s3://") and not isinstance(storage, S3Storage):
        raise FileNotFoundError(f"{uri} is in S3 but the {MODEL_BUCKET} block is not configured")
    try:
        return storage.get(uri)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"checkpoint {uri} is missing from model storage") from exc


# ---------------------------------------------------------------------------- registry


def register_version(engine: Engine, row: dict) -> bool:
    """Record a version in model_versions; True when new (a re-run of the same one is a no-op)."""
    table = schema.model_versions
    with engine.begin() as conn:
        found = conn.execute(
            sa.select(table.c.sha256).where(table.c.version == row["version"])
        ).scalar()
        if found is not None:
            return False
        conn.execute(table.insert().values(**row))
    return True


def version_name(market: str, train_end: dt.date, sha: str) -> str:
    """A version's name: its market, its last training target and its checkpoint's hash."""
    return f"{market.lower()}-{train_end:%Y%m%d}-{sha[:12]}"


def save_version(
    engine: Engine, checkpoints, market: str, blob: bytes, png: bytes, sha: str, meta: dict
) -> dict:
    """Put the checkpoint and its plot in storage, then register the version in model_versions.

    The files land first: a registered version always has its checkpoint.
    """
    version = version_name(market, meta["train_range"][1], sha)
    uri = checkpoints.put(f"{market}/{version}.pt", blob)
    plot_uri = checkpoints.put(f"{market}/{version}.png", png)
    register_version(
        engine,
        {
            "version": version,
            "market": market,
            "feature_spec": FEATURE_SPEC,
            "window": WINDOW,
            "train_start": meta["train_range"][0],
            "train_end": meta["train_range"][1],
            "metrics": meta["metrics"],
            "sha256": sha,
            "uri": uri,
        },
    )
    return {"version": version, "sha256": sha, "uri": uri, "plot_uri": plot_uri}


def promote(engine: Engine, version: str, market: str) -> None:
    """Make version the market's one promoted model, in one transaction."""
    table = schema.model_versions
    with engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.market == market, table.c.version != version, table.c.promoted)
            .values(promoted=False)
        )
        conn.execute(
            table.update()
            .where(table.c.version == version, ~table.c.promoted)
            .values(promoted=True, promoted_at=sa.func.now())
        )


def promoted_version(engine: Engine, market: str) -> str | None:
    table = schema.model_versions
    with engine.connect() as conn:
        return conn.execute(
            sa.select(table.c.version).where(table.c.market == market, table.c.promoted)
        ).scalar()


def find_version(engine: Engine, market: str, pinned: str | None = None) -> dict:
    """The pinned version, else the market's promoted one; a clear error when there is none."""
    table = schema.model_versions
    query = sa.select(table)
    if pinned:
        query = query.where(table.c.version == pinned)
    else:
        query = query.where(table.c.market == market, table.c.promoted)
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None and pinned:
        raise NoPromotedModel(f"model_version {pinned!r} is not registered in model_versions")
    if row is None:
        raise NoPromotedModel(
            f"no promoted model for market {market}: run the train-model flow "
            f"(prefect deployment run 'train-model/...') until a version beats the baselines"
        )
    if row["market"] != market:
        raise ModelError(
            f"model_version {row['version']!r} was trained for market {row['market']}, not "
            f"{market}: its normalisation does not fit {market} prices"
        )
    return dict(row)


# ---------------------------------------------------------------------------- predictions


def predictions_frame(
    version: str, windows: LatestWindows, returns, probs, device: str
) -> pd.DataFrame:
    """The predictions rows: each windowed symbol's next-session return and up probability."""
    return pd.DataFrame(
        {
            "model_version": version,
            "symbol": windows.symbols,
            "as_of": windows.as_of,
            "horizon": 1,
            "predicted_return": returns,
            "up_probability": probs,
            "device": device,
        }
    )
