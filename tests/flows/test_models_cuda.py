"""train-model and predict-returns on CUDA (mixed precision), on a tiny SQLite store.

The CPU path is tested in test_models.py on every machine; this one runs where a GPU is
visible (the gpu-desktop route) and says why it was skipped everywhere else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import torch

from flows.models import predict_returns, train_model
from tasks.store.schema import predictions
from tasks.store.upsert import upsert_frame
from tests.tasks.models.test_features import synthetic_prices

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason=(
            "CUDA is not available on this machine: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
            "run this on a host with an NVIDIA GPU and a CUDA build of torch"
        ),
    ),
]

TINY = dict(epochs=4, hidden=16, batch_size=256, val_sessions=40, threads=1)


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("INVESTFLOW_MODEL_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def stored(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(predictions).order_by(predictions.c.symbol))
        return pd.DataFrame(rows.mappings().all())


def test_train_and_predict_on_cuda_agree_with_the_cpu(sqlite_engine, model_dir):
    assert not upsert_frame(sqlite_engine, "daily_prices", synthetic_prices(6, 260)).rejected

    trained = train_model(market="US", device="cuda", **TINY)
    assert trained["device"].startswith("cuda")
    on_gpu = predict_returns(market="US", model_version=trained["version"], device="cuda")

    assert on_gpu["device"].startswith("cuda") and on_gpu["predicted"] == 6
    gpu_rows = stored(sqlite_engine)
    assert set(gpu_rows["device"]) == {"cuda"} and len(gpu_rows) == 6

    # The checkpoint trained on the GPU predicts the same on the CPU, within fp16 autocast.
    on_cpu = predict_returns(market="US", model_version=trained["version"], device="cpu")
    assert on_cpu["updated"] == 6  # the device column changed, the keys did not
    cpu_rows = stored(sqlite_engine)
    np.testing.assert_allclose(
        gpu_rows["predicted_return"], cpu_rows["predicted_return"], rtol=0.05, atol=1e-4
    )
