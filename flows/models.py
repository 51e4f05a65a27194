"""Train the return model weekly on the GPU desktop; predict returns daily on GPU or CPU."""

from __future__ import annotations

import functools
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import Abort
from prefect.runtime import flow_run
from prefect.states import Completed
from pydantic import Field

from tasks.models import checkpoint, evaluation, features, model, report, storage
from tasks.params import AtLeastOne, Device, MarketCode
from tasks.settings import get_settings
from tasks.store.engine import engine_from_settings
from tasks.store.upsert import upsert_frame

# Engines, frames and models are not worth hashing for a cache: every task runs every time.
load_prices = task(storage.load_prices, name="load-prices", cache_policy=NO_CACHE)
build_dataset = task(features.build_dataset, name="build-dataset", cache_policy=NO_CACHE)
fit_model = task(model.fit, name="fit-model", cache_policy=NO_CACHE)
validate_model = task(evaluation.validate, name="validate-model", cache_policy=NO_CACHE)


class StaleRun(Abort):
    """This process no longer holds its flow run: the server moved it on while it was away.

    An Abort, as when the server refuses a state: the engine proposes no state of its own
    (a Failed would land on the attempt that now holds the run) and the process exits 0.
    """


def ensure_run_is_ours(what: str, doing: str = "writing") -> None:
    """Refuse to write when the server no longer has this process's Running state.

    A desktop that slept (or lost its route) past the heartbeat window woke to a run the
    server marked Crashed and then resubmitted, cancelled or handed to the CPU fallback: what
    it computed is stale, and writing it would give a second set of predictions, or promote a
    model over a newer one. Called right before each write; outside a flow run it does nothing.
    """
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.state is None:
        return
    mine = context.flow_run.state
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(context.flow_run.id)
    if current.state is None or current.state.id != mine.id or not current.state.is_running():
        raise StaleRun(
            f"not {doing} {what}: this process was away (asleep or cut off) while the server "
            f"moved run {context.flow_run.id} on to {current.state_name} "
            f"({current.state.message if current.state else 'no state'}). Nothing was written; "
            "the run that replaced it writes the results."
        )


def fails_only_while_ours(fn):
    """A flow body whose failure is reported only if the run is still this process's.

    A process cut off past the heartbeat window fails on its next database call; when its link
    returns it would propose Failed over the Cancelled or Crashed the server set meanwhile (Prefect
    accepts both), so a run the CPU fallback finished would read Failed and alert. Here the
    failure becomes a StaleRun (an Abort: the engine proposes nothing) when the run moved on.
    """

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Abort:
            raise
        except Exception as exc:
            ensure_run_is_ours(f"its failure ({type(exc).__name__})", "reporting")
            raise

    return guarded


@task(name="upsert-predictions", cache_policy=NO_CACHE)
def upsert(engine, table: str, frame, flow_run_id=None):
    """Write the predictions, if this process still holds its run."""
    ensure_run_is_ours(f"{len(frame)} predictions")
    return upsert_frame(engine, table, frame, flow_run_id=flow_run_id)


@task(cache_policy=NO_CACHE)
def store_version(engine, checkpoints, market: str, blob: bytes, png: bytes, meta: dict) -> dict:
    """Save the checkpoint and its plot, and register the version in model_versions."""
    ensure_run_is_ours(f"model version of {market}")
    return storage.save_version(
        engine, checkpoints, market, blob, png, checkpoint.sha256(blob), meta
    )


# Weekly on the desktop GPU; two hours is far past a normal run and stops a hung one.
@flow(name="train-model", log_prints=True, timeout_seconds=7200)
@fails_only_while_ours
def train_model(
    market: MarketCode = "US",
    epochs: AtLeastOne = 8,
    hidden: AtLeastOne = 32,
    batch_size: AtLeastOne = 512,
    lr: Annotated[float, Field(gt=0.0, le=1.0)] = 2e-3,
    seed: int = 7,
    val_sessions: AtLeastOne = 60,
    history_sessions: AtLeastOne | None = 1500,
    device: Device = "auto",
    threads: AtLeastOne | None = None,
) -> dict:
    """Train on the market's history, report against the baselines, promote only a winner."""
    logger = get_run_logger()
    settings = get_settings()
    engine = engine_from_settings(settings)
    torch_device = model.pick_device(device)
    model.set_threads(threads)
    logger.info("training %s on %s", market, torch_device)

    data = training_data(engine, market, history_sessions, val_sessions)
    config = model.ModelConfig(
        hidden=hidden, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed
    )
    net = fit_model(data, config, torch_device)
    metrics, predicted = validate(net, data, torch_device)
    stored, png = save_version(engine, settings, market, net, config, data, metrics, predicted)
    decision = promote_if_better(engine, market, stored["version"], metrics)
    result = {
        **stored,
        "market": market,
        "device": str(torch_device),
        "promoted": metrics["beats_baselines"],
        "decision": decision,
        "metrics": metrics,
        "train_range": data.train_range,
        "val_range": data.val_range,
    }
    report.publish_training(result, png)
    return result


def training_data(engine, market: str, history_sessions: int | None, val_sessions: int):
    """The market's recent history as training and validation windows, split by time."""
    prices = load_prices(engine, market, sessions=history_sessions)
    data = build_dataset(prices, val_sessions=val_sessions)
    del prices
    get_run_logger().info(
        "%d training and %d validation samples from %d symbols",
        len(data.train_idx),
        len(data.val_idx),
        len(data.symbols),
    )
    return data


def validate(net, data, torch_device) -> tuple[dict, object]:
    """The model and both baselines on the validation window; the metrics name both ranges."""
    metrics, predicted = validate_model(net, data, torch_device)
    metrics |= {
        "train_range": [d.isoformat() for d in data.train_range],
        "val_range": [d.isoformat() for d in data.val_range],
    }
    return metrics, predicted


def save_version(engine, settings, market: str, net, config, data, metrics, predicted):
    """The checkpoint and its validation plot, stored and registered: (version facts, plot)."""
    blob = checkpoint.checkpoint_bytes(
        net,
        config,
        data.normaliser,
        market=market,
        train_range=data.train_range,
        val_range=data.val_range,
        metrics=metrics,
    )
    png = report.plot_png(
        predicted,
        data.targets(data.val_idx),
        f"{market} validation {data.val_range[0]}..{data.val_range[1]}",
    )
    checkpoints = storage.open_storage(settings.model_dir)
    meta = {"train_range": data.train_range, "metrics": metrics}
    return store_version(engine, checkpoints, market, blob, png, meta), png


def promote_if_better(engine, market: str, version: str, metrics: dict) -> str:
    """Promote the version only if it beats both baselines; say why either way."""
    why = evaluation.promotion_reason(metrics)
    if metrics["beats_baselines"]:
        ensure_run_is_ours(f"the promotion of {version}")
        storage.promote(engine, version, market)
        decision = report.promotion_decision(True, why)
    else:
        decision = report.promotion_decision(False, why, storage.promoted_version(engine, market))
    get_run_logger().info("version %s: %s", version, decision)
    return decision


@task(name="cancel-replaced-run", cache_policy=NO_CACHE)
def cancel_replaced_run(replaces: str) -> str:
    """Cancel the desktop run this one stands in for, unless it has started after all."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        original = client.read_flow_run(UUID(replaces))
        if original.state is None or not (
            original.state.is_scheduled() or original.state.is_pending()
        ):
            return original.state_name or "unknown"
        # A desktop that wakes later must not run the same prediction a second time.
        client.set_flow_run_state(
            original.id,
            Cancelled(message=f"replaced by the CPU fallback run {flow_run.get_id()}"),
            force=True,
        )
    return "Cancelled"


@flow(name="predict-returns", log_prints=True, timeout_seconds=1200)
@fails_only_while_ours
def predict_returns(
    market: MarketCode = "US",
    model_version: str | None = None,
    device: Device = "auto",
    batch_size: AtLeastOne = 4096,
    threads: AtLeastOne | None = None,
    replaces: str | None = None,
) -> dict:
    """Predict every eligible symbol's next-session return with the promoted (or pinned) model.

    replaces: the id of a desktop run this run stands in for (set by the fallback trigger);
    it is cancelled if it has not started.
    """
    logger = get_run_logger()
    if replaces:
        logger.info("standing in for run %s (now %s)", replaces, cancel_replaced_run(replaces))
    settings = get_settings()
    engine = engine_from_settings(settings)
    torch_device = model.pick_device(device)
    model.set_threads(threads)

    try:
        row = storage.find_version(engine, market, model_version)
    except storage.NoPromotedModel as exc:
        if model_version:
            raise  # a pinned version that does not exist is a mistake worth an alert
        # A fresh install, or no version has beaten the baselines yet: nothing is wrong.
        logger.info("no model yet: %s", exc)
        return Completed(message=f"no model yet: {exc}", data={"market": market, "predicted": 0})
    loaded = load_model(row, settings, torch_device)
    windows = latest_windows(engine, market, loaded)
    result = predict_and_write(
        engine, market, row["version"], loaded, windows, torch_device, batch_size
    )
    report.publish_prediction(result)
    return result


def load_model(row: dict, settings, torch_device):
    """The version's checkpoint, its sha256 and feature spec checked, on the device."""
    blob = storage.read_checkpoint(row["uri"], settings.model_dir)
    loaded = checkpoint.load_checkpoint(blob, row["sha256"], torch_device, version=row["version"])
    del blob
    get_run_logger().info("model %s on device %s", row["version"], torch_device)
    return loaded


def latest_windows(engine, market: str, loaded) -> features.LatestWindows:
    """Each symbol's window as of the last session; who cannot be windowed is named."""
    prices = load_prices(engine, market, sessions=features.WINDOW + 1)
    windows = features.latest_windows(prices, loaded.normaliser)
    del prices
    if windows.skipped:
        get_run_logger().warning(
            "skipped %d symbols: %s",
            len(windows.skipped),
            ", ".join(f"{s} ({why})" for s, why in windows.skipped.items()),
        )
    return windows


def predict_and_write(engine, market, version, loaded, windows, torch_device, batch_size) -> dict:
    """Predict every windowed symbol and upsert the predictions; the run's counts."""
    returns, probs = model.predict(
        loaded.model, windows.x, loaded.normaliser.target_scale, torch_device, batch_size
    )
    frame = storage.predictions_frame(version, windows, returns, probs, torch_device.type)
    written = upsert(engine, "predictions", frame, flow_run_id=flow_run.id)
    return {
        "market": market,
        "model_version": version,
        "device": str(torch_device),
        "as_of": windows.as_of,
        "predicted": len(frame),
        "inserted": written.inserted,
        "updated": written.updated,
        "unchanged": written.unchanged,
        "skipped": windows.skipped,
    }
