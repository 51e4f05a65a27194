"""train-model and predict-returns on synthetic prices in the real PostgreSQL, under Prefect."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import torch

from flows.models import predict_returns, train_model
from tasks.models import checkpoint, model, storage
from tasks.models.features import WINDOW
from tasks.store.schema import model_versions, predictions
from tasks.store.upsert import upsert_frame
from tests.tasks.models.test_features import synthetic_prices

pytestmark = pytest.mark.integration

# Tiny on purpose: two cores are shared by everyone running tests here.
TINY = dict(epochs=4, hidden=16, batch_size=256, val_sessions=40, threads=1)


@pytest.fixture
def model_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("INVESTFLOW_MODEL_DIR", str(folder))
    return folder


def artifact(key: str) -> str:
    """The newest markdown of an artifact key, as the UI shows it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no artifact {key}"
    return found[0].data


def write_prices(engine, frame: pd.DataFrame) -> None:
    result = upsert_frame(engine, "daily_prices", frame)
    assert not result.rejected


def versions(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(model_versions).order_by(model_versions.c.created_at))
        return pd.DataFrame(rows.mappings().all())


def stored_predictions(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(sa.select(predictions)).mappings().all())


@pytest.fixture
def trained(pg_engine, model_dir):
    """A promoted US model trained on prices with a learnable pattern."""
    write_prices(pg_engine, synthetic_prices(symbols=6, sessions=260, phi=-0.5))
    started = time.monotonic()
    result = train_model(market="US", **TINY)
    result["seconds"] = time.monotonic() - started
    return result


def test_training_on_cpu_is_quick_promotes_a_winner_and_splits_by_time(pg_engine, trained):
    assert trained["seconds"] < 60
    assert trained["device"] == "cpu"
    assert trained["promoted"], trained["metrics"]
    metrics = trained["metrics"]
    assert metrics["model"]["mse"] < metrics["zero_return"]["mse"]
    assert metrics["model"]["mse"] < metrics["yesterday_return"]["mse"]
    train_start, train_end = trained["train_range"]
    val_start, _ = trained["val_range"]
    assert train_start < train_end < val_start

    row = versions(pg_engine).iloc[0]
    assert row["version"] == trained["version"] and row["promoted"]
    assert row["train_end"] == train_end and row["window"] == WINDOW
    saved = Path(row["uri"].removeprefix("file://"))
    assert checkpoint.sha256(saved.read_bytes()) == row["sha256"]
    assert saved.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"

    report = artifact("train-model-us")
    for line in (
        "device: **cpu**",
        "| model |",
        "| baseline: zero return |",
        "| baseline: yesterday's return |",
        "promoted: **yes**",
        "data:image/png;base64,",
    ):
        assert line in report


def test_training_twice_with_the_same_seed_gives_the_same_version(pg_engine, trained):
    again = train_model(market="US", **TINY)
    assert again["version"] == trained["version"]  # the version carries the weights' sha256
    assert again["sha256"] == trained["sha256"]
    assert len(versions(pg_engine)) == 1


def test_a_model_that_does_not_beat_the_baselines_is_not_promoted(pg_engine, trained):
    # The pattern flips sign in the validation window: what was learnt now loses to the naive
    # forecasts, so the new version is registered but the trained one stays promoted.
    with pg_engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM daily_prices"))
    write_prices(pg_engine, synthetic_prices(symbols=6, sessions=260, phi=-0.5, flip_at=220))

    loser = train_model(market="US", **TINY)

    assert not loser["promoted"]
    assert loser["metrics"]["model"]["mse"] >= loser["metrics"]["zero_return"]["mse"]
    table = versions(pg_engine).set_index("version")
    assert len(table) == 2
    assert table.loc[trained["version"], "promoted"]
    assert not table.loc[loser["version"], "promoted"]
    assert f"{trained['version']} stays promoted" in loser["decision"]


def test_prediction_writes_one_row_per_eligible_symbol_and_reruns_change_nothing(
    pg_engine, trained
):
    last = synthetic_prices(symbols=1, sessions=260).trade_date.max()
    young = synthetic_prices(symbols=1, sessions=20, prefix="IPO", seed=5)
    young["trade_date"] = pd.bdate_range(end=last, periods=20).date
    kr = synthetic_prices(symbols=2, sessions=100, prefix="00593", suffix=".KS", seed=9)
    write_prices(pg_engine, pd.concat([young, kr], ignore_index=True))

    first = predict_returns(market="US", device="cpu", batch_size=4)

    assert first["device"] == "cpu"
    assert first["as_of"] == last
    assert first["predicted"] == 6 and first["inserted"] == 6
    assert list(first["skipped"]) == ["IPO000"]
    assert "too little history" in first["skipped"]["IPO000"]
    rows = stored_predictions(pg_engine)
    assert sorted(rows["symbol"]) == [f"S{i:03d}" for i in range(6)]  # no KR symbol, no IPO
    assert set(rows["model_version"]) == {trained["version"]}
    assert set(rows["as_of"]) == {last} and set(rows["horizon"]) == {1}
    assert rows["up_probability"].between(0, 1).all()
    assert set(rows["device"]) == {"cpu"}

    report = artifact("predict-returns-us")
    assert "device: **cpu**" in report and "| IPO000 | too little history" in report

    second = predict_returns(market="US", device="cpu")
    assert (second["inserted"], second["updated"], second["unchanged"]) == (0, 0, 6)
    pd.testing.assert_frame_equal(
        stored_predictions(pg_engine)
        .drop(columns="ingested_at")
        .sort_values("symbol")
        .reset_index(drop=True),
        rows.drop(columns="ingested_at").sort_values("symbol").reset_index(drop=True),
    )


def test_prediction_without_a_promoted_model_completes_quietly_saying_no_model_yet(
    pg_engine, model_dir
):
    # A fresh install: nothing is wrong, so nothing may fail (and so alert, and fall back).
    write_prices(pg_engine, synthetic_prices(symbols=2, sessions=80))
    state = predict_returns(market="US", device="cpu", return_state=True)
    assert state.is_completed()
    assert state.message.startswith("no model yet") and "train-model" in state.message
    assert stored_predictions(pg_engine).empty


def test_a_pinned_version_that_does_not_exist_fails(pg_engine, model_dir):
    with pytest.raises(storage.NoPromotedModel, match="'us-nope' is not registered"):
        predict_returns(market="US", model_version="us-nope", device="cpu")


def test_a_model_of_another_market_is_refused(pg_engine, trained):
    with pytest.raises(model.ModelError, match="trained for market US, not KR"):
        predict_returns(market="KR", model_version=trained["version"], device="cpu")


def test_a_corrupted_checkpoint_is_refused_and_nothing_is_written(pg_engine, trained):
    path = Path(trained["uri"].removeprefix("file://"))
    blob = bytearray(path.read_bytes())
    blob[100] ^= 0xFF
    path.write_bytes(bytes(blob))

    with pytest.raises(checkpoint.ChecksumMismatch, match="differs from the registered"):
        predict_returns(market="US", device="cpu")
    assert stored_predictions(pg_engine).empty


def test_a_pinned_checkpoint_with_another_feature_spec_is_refused(pg_engine, trained, model_dir):
    # A version saved by older code with one feature fewer, registered honestly (sha matches).
    payload = torch.load(trained["uri"].removeprefix("file://"), weights_only=True)
    payload["feature_spec"] = {**payload["feature_spec"], "features": ["log_return", "range"]}
    path = model_dir / "US" / "old.pt"
    torch.save(payload, path)
    with pg_engine.begin() as conn:
        conn.execute(
            model_versions.insert().values(
                version="us-old",
                market="US",
                feature_spec=payload["feature_spec"],
                window=60,
                sha256=checkpoint.sha256(path.read_bytes()),
                uri=path.resolve().as_uri(),
            )
        )

    with pytest.raises(checkpoint.FeatureSpecMismatch, match="us-old.*refusing"):
        predict_returns(market="US", model_version="us-old", device="cpu")
    assert stored_predictions(pg_engine).empty


def test_a_model_trained_on_noise_is_not_promoted_and_the_artifact_says_why(pg_engine, model_dir):
    # No pattern at all: whatever the model learns is noise around the zero forecast.
    write_prices(pg_engine, synthetic_prices(symbols=6, sessions=260, phi=0.0, seed=4))
    result = train_model(market="US", **TINY)
    tests = result["metrics"]["tests"]
    assert not result["promoted"], result["decision"]
    assert tests["zero_return"]["p_value"] >= 0.05
    assert "no version stays promoted" in result["decision"]
    report = artifact("train-model-us")
    assert "Diebold-Mariano p = " in report and "promoted: **no**" in report
    # A lower MSE than both baselines, by luck: what a gate without a margin promoted.
    metrics = result["metrics"]
    assert metrics["model"]["mse"] < metrics["zero_return"]["mse"]
    assert metrics["model"]["mse"] < metrics["yesterday_return"]["mse"]
