"""The return model: seeded CPU training, batched inference, the device it runs on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.models import model

CPU = torch.device("cpu")
TINY = model.ModelConfig(hidden=8, epochs=2, batch_size=256, seed=3)


def test_same_data_and_seed_give_the_same_weights_on_cpu(data):
    first = model.fit(data, TINY, CPU)
    second = model.fit(data, TINY, CPU)
    other_seed = model.fit(data, model.ModelConfig(hidden=8, epochs=2, seed=4), CPU)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not torch.equal(first.head.weight, other_seed.head.weight)


def test_batched_inference_matches_one_symbol_at_a_time(data):
    net = model.fit(data, TINY, CPU)
    x = data.windows(data.val_idx[:50])
    batched, probs = model.predict(net, x, 0.01, CPU, batch_size=16)
    one_by_one = np.concatenate(
        [model.predict(net, x[i : i + 1], 0.01, CPU)[0] for i in range(len(x))]
    )
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-8)
    assert ((probs > 0) & (probs < 1)).all()


def test_device_is_cpu_without_cuda_and_cuda_cannot_be_forced():
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    assert model.pick_device("auto").type == "cpu"
    assert model.pick_device("cpu").type == "cpu"
    with pytest.raises(model.ModelError, match="no CUDA device"):
        model.pick_device("cuda")
    with pytest.raises(ValueError):
        model.pick_device("tpu")
