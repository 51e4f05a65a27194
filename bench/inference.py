"""Benchmark: next-session predictions for 5,000 symbols x 60-session windows, batched vs a loop.

Run: .venv/bin/python bench/inference.py [--symbols N] [--threads T] [--no-store].
Writes bench/results/inference.json (batched_per_s, loop_per_s, ratio, device, peak_rss_mb,
plus details). Both timings use the same model in the same run. By default the windows come
through the real CPU path of predict-returns: prices written to a scratch PostgreSQL database
(INVESTFLOW_TEST_DATABASE_URL, default local postgres), read back with the flow's loader,
windowed, predicted and upserted, so peak_rss_mb is the whole job's peak, not just the model's.
With a GPU, the same comparison runs there too and is reported under "gpu".
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import create_store, drop_store  # noqa: E402
from tasks import model  # noqa: E402
from tasks.features import WINDOW, Normaliser, latest_windows, session_features  # noqa: E402
from tasks.model_store import prediction_prices  # noqa: E402
from tasks.store import get_engine, upsert_frame  # noqa: E402

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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_it(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def compare(net, x: np.ndarray, scale: float, device: torch.device, batch_size: int) -> dict:
    """Predictions per second, batched and one symbol per call, on one device."""
    net = net.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    model.predict(net, x[:64], scale, device)  # warm-up
    batched_s = time_it(lambda: model.predict(net, x, scale, device, batch_size), 3)
    loop_s = time_it(
        lambda: [model.predict(net, x[i : i + 1], scale, device) for i in range(len(x))], 1
    )
    return {
        "batched_per_s": round(len(x) / batched_s, 1),
        "loop_per_s": round(len(x) / loop_s, 1),
        "ratio": round(loop_s / batched_s, 1),
        "device": device.type,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument(
        "--threads", type=int, default=None, help="default: this machine's cores (up to 4)"
    )
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--no-store", action="store_true", help="skip the PostgreSQL round trip")
    args = parser.parse_args()
    model.set_threads(args.threads)
    torch.manual_seed(0)
    net = model.ReturnGRU().eval()  # production shape; weights do not change the speed

    prices = synthetic_prices(args.symbols, WINDOW + 1)
    feats = session_features(prices)
    normaliser = Normaliser.fit(
        feats[["log_return", "range", "volume_change"]].to_numpy(), feats["log_return"].to_numpy()
    )
    engine, url, store_s = None, None, None
    if not args.no_store:
        url = create_store()
        engine = get_engine(url)
        upsert_frame(engine, "daily_prices", prices)
    del prices, feats

    try:
        start = time.perf_counter()
        if engine is not None:
            prices = prediction_prices(engine, "US")  # the flow's own loader
        else:
            prices = synthetic_prices(args.symbols, WINDOW + 1)
        windows = latest_windows(prices, normaliser)
        del prices
        cpu = torch.device("cpu")
        returns, probs = model.predict(
            net, windows.x, normaliser.target_scale, cpu, args.batch_size
        )
        if engine is not None:
            upsert_frame(
                engine,
                "predictions",
                pd.DataFrame(
                    {
                        "model_version": "bench",
                        "symbol": windows.symbols,
                        "as_of": windows.as_of,
                        "horizon": 1,
                        "predicted_return": returns,
                        "up_probability": probs,
                        "device": "cpu",
                    }
                ),
            )
        store_s = round(time.perf_counter() - start, 2)

        result = compare(net, windows.x, normaliser.target_scale, cpu, args.batch_size)
        threads = torch.get_num_threads()
        # The same comparison as the Fargate fallback task sees it: one vCPU.
        model.set_threads(1)
        one_vcpu = compare(net, windows.x, normaliser.target_scale, cpu, args.batch_size)
        model.set_threads(args.threads)
        result |= {
            "one_thread": {k: one_vcpu[k] for k in ("batched_per_s", "loop_per_s", "ratio")},
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "symbols": len(windows.symbols),
            "window": WINDOW,
            "threads": threads,
            "batch_size": args.batch_size,
            "end_to_end_s": store_s,
            "through_postgres": engine is not None,
            "torch": torch.__version__,
        }
        if torch.cuda.is_available():
            result["gpu"] = compare(
                net, windows.x, normaliser.target_scale, torch.device("cuda"), args.batch_size
            )
    finally:
        if engine is not None:
            engine.dispose()
            drop_store(url)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:>16}: {value}")
    ok = result["ratio"] >= 20 and result["peak_rss_mb"] < 1536
    print("targets (ratio >= 20, peak RSS < 1.5 GB):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
