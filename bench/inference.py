"""Benchmark: next-session predictions for 5,000 symbols x 60-session windows, batched vs a loop.

Run: .venv/bin/python bench/inference.py [--symbols N] [--threads T] [--repeats R].
Writes bench/results/inference.json. Both sides of each ratio run the same model on the same
windows in the same run, R times each, interleaved, and the medians are compared. The loop
baseline is the fair one: a single inference_mode context around the whole loop and the
model called once per symbol (no per-call setup), checked to give the batched predictions.
The windows come from prices written to a scratch PostgreSQL database
(INVESTFLOW_TEST_DATABASE_URL, default local postgres) and read back with the flow's loader;
then the real predict-returns flow runs end to end on one thread (the Fargate task's vCPU)
under a Prefect server of its own, as make up runs it: load, window, predict, upsert 5,000
predictions.
peak_rss_mb is this process's peak over all of it. With a GPU, the batched/loop comparison
runs there too and is reported under "gpu".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.memory import peak_rss_mb  # noqa: E402
from bench.scratch import create_store, drop_store  # noqa: E402
from tasks.models import checkpoint, model, storage  # noqa: E402
from tasks.models.features import FEATURE_SPEC, WINDOW, Normaliser, latest_windows, session_features  # noqa: E402
from tasks.store.engine import get_engine
from tasks.store.upsert import upsert_frame  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "inference.json"


def synthetic_prices(symbols: int, sessions: int, seed: int = 11) -> pd.DataFrame:
    """Random-walk daily bars for symbols US tickers over the same business days."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2024-01-02", periods=sessions).date
    r = rng.normal(0, 0.015, (symbols, sessions))
    close = 50 * np.exp(np.cumsum(r, axis=1))
    spread = np.abs(rng.normal(0, 0.01, (symbols, sessions))) + 1e-4
    return pd.DataFrame(
        {
            "symbol": np.repeat([f"B{i:05d}" for i in range(symbols)], sessions),
            "trade_date": np.tile(dates, symbols),
            "open": close.ravel(),
            "high": (close * np.exp(spread)).ravel(),
            "low": (close * np.exp(-spread)).ravel(),
            "close": close.ravel(),
            "adj_close": close.ravel(),
            "volume": rng.integers(1e4, 1e6, symbols * sessions),
            "currency": "USD",
            "source": "bench",
        }
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def loop_predict(net, x: np.ndarray, scale: float, device: torch.device):
    """The per-symbol baseline, written fairly: one context for the loop, one call per window."""
    cuda = device.type == "cuda"
    outs = []
    with torch.inference_mode(), torch.autocast(device.type, torch.float16, enabled=cuda):
        for i in range(len(x)):
            outs.append(net(torch.from_numpy(x[i : i + 1]).to(device)).float())
        out = torch.cat(outs)
        return (out[:, 0] * scale).cpu().numpy(), torch.sigmoid(out[:, 1]).cpu().numpy()


def compare(net, x, scale: float, device: torch.device, batch_size: int, repeats: int) -> dict:
    """Predictions per second, batched and one symbol per call: medians of repeats each."""
    net = net.to(device)
    batched_out = model.predict(net, x, scale, device, batch_size)  # warm-up, and the check
    loop_out = loop_predict(net, x, scale, device)
    tol = 1e-2 if device.type == "cuda" else 1e-4  # fp16 on the GPU
    np.testing.assert_allclose(batched_out[0], loop_out[0], rtol=tol, atol=1e-6)
    batched, loop = [], []
    for _ in range(repeats):
        batched.append(timed(lambda: model.predict(net, x, scale, device, batch_size)))
        loop.append(timed(lambda: loop_predict(net, x, scale, device)))
    b, lp = statistics.median(batched), statistics.median(loop)
    return {
        "batched_per_s": round(len(x) / b, 1),
        "loop_per_s": round(len(x) / lp, 1),
        "ratio": round(lp / b, 1),
        "device": device.type,
        "batched_runs_s": [round(t, 3) for t in batched],
        "loop_runs_s": [round(t, 3) for t in loop],
    }


def flow_end_to_end(url: str, net, normaliser, batch_size: int, repeats: int) -> dict:
    """predict-returns (the flow itself) on one thread: medians of repeats, predictions emptied
    before each run so every run writes all of them, as a new session's run does; against a
    Prefect server as make up runs it (bench/scratch.py prefect_server), not
    prefect_test_harness's plain SQLite one, whose writes wait for a lock no deployed run
    waits for."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from bench.scratch import prefect_server
    from flows.models import predict_returns

    engine = get_engine(url)
    with contextlib.ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        server = prefect_server("sqlite", home / "server")
        server.start()
        stack.callback(server.stop)
        # Prefect read its settings when this module's imports loaded it: the flow's client is
        # pointed at the bench's server for the block, as make up's own steps are.
        stack.enter_context(temporary_settings({PREFECT_API_URL: server.api_url}))
        models = str(home / "models")
        Path(models).mkdir()
        os.environ.update(INVESTFLOW_DATABASE_URL=url, INVESTFLOW_MODEL_DIR=models)
        day = pd.Timestamp("2024-01-02").date()
        blob = checkpoint.checkpoint_bytes(
            net,
            model.ModelConfig(),
            normaliser,
            market="US",
            train_range=(day, day),
            val_range=(day, day),
            metrics={"samples": 0},
        )
        row = {
            "version": "us-bench",
            "market": "US",
            "feature_spec": FEATURE_SPEC,
            "window": WINDOW,
            "train_start": day,
            "train_end": day,
            "metrics": {"samples": 0},
            "sha256": checkpoint.sha256(blob),
            "uri": storage.LocalStorage(Path(models)).put("US/us-bench.pt", blob),
        }
        storage.register_version(engine, row)
        storage.promote(engine, "us-bench", "US")
        runs, predicted = [], 0
        for _ in range(repeats):
            with engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM predictions"))
            start = time.perf_counter()
            result = predict_returns(market="US", device="cpu", batch_size=batch_size, threads=1)
            runs.append(time.perf_counter() - start)
            predicted = result["predicted"]
            assert result["inserted"] == predicted, result
    return {
        "seconds": round(statistics.median(runs), 2),
        "runs_s": [round(t, 2) for t in runs],
        "predicted": predicted,
        "threads": 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument(
        "--threads", type=int, default=None, help="default: this machine's cores (up to 4)"
    )
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threads = model.set_threads(args.threads)
    load_before = os.getloadavg()[0]
    torch.manual_seed(0)
    net = model.ReturnGRU().eval()  # production shape; weights do not change the speed

    prices = synthetic_prices(args.symbols, WINDOW + 1)
    feats = session_features(prices)
    normaliser = Normaliser.fit(
        feats[["log_return", "range", "volume_change"]].to_numpy(), feats["log_return"].to_numpy()
    )
    url = create_store()
    try:
        engine = get_engine(url)
        upsert_frame(engine, "daily_prices", prices)
        del prices, feats
        windows = latest_windows(storage.prediction_prices(engine, "US"), normaliser)
        cpu, scale = torch.device("cpu"), normaliser.target_scale
        result = compare(net, windows.x, scale, cpu, args.batch_size, args.repeats)
        # The same comparison as the Fargate fallback task sees it: one vCPU.
        model.set_threads(1)
        one = compare(net, windows.x, scale, cpu, args.batch_size, args.repeats)
        result["one_thread"] = {k: one[k] for k in ("batched_per_s", "loop_per_s", "ratio")}
        result["one_thread"] |= {k: one[k] for k in ("batched_runs_s", "loop_runs_s")}
        if torch.cuda.is_available():
            result["gpu"] = compare(
                net, windows.x, scale, torch.device("cuda"), args.batch_size, args.repeats
            )
            net = net.cpu()
        result["predict_returns_one_thread"] = flow_end_to_end(
            url, net, normaliser, args.batch_size, max(3, args.repeats // 2)
        )
        engine.dispose()
    finally:
        drop_store(url)

    result |= {
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "symbols": len(windows.symbols),
        "window": WINDOW,
        "threads": threads,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "statistic": "median",
        "torch": torch.__version__,
        # The host is shared: the 1-minute load average says how quiet it was.
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:>26}: {value}")
    ok = result["ratio"] >= 20 and result["peak_rss_mb"] < 1536
    print("targets (ratio >= 20, peak RSS < 1.5 GB):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
