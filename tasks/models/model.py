"""The return model: a small GRU over 60-session windows, its training and batched inference."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tasks.models.features import FEATURES, Dataset


class ModelError(RuntimeError):
    """A model cannot be used; the message says what to do."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape and training knobs; saved in the checkpoint so it can be rebuilt."""

    hidden: int = 32
    layers: int = 1
    epochs: int = 8
    batch_size: int = 512
    lr: float = 2e-3
    seed: int = 7


class ReturnGRU(nn.Module):
    """GRU over the window; a linear head gives the next return (scaled) and an up logit."""

    def __init__(self, hidden: int = 32, layers: int = 1, n_features: int = len(FEATURES)):
        super().__init__()
        self.gru = nn.GRU(n_features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return self.head(h[-1])


def pick_device(device: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device='cuda' was asked for but no CUDA device is visible here")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def set_threads(threads: int | None = None) -> int:
    """Cap CPU threads: a GRU this small gains nothing past a few, and the hosts are shared."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = threads or min(4, usable or 1)
    torch.set_num_threads(threads)
    return threads


def _loss(out: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    scaled = target / scale
    mse = nn.functional.mse_loss(out[:, 0], scaled)
    bce = nn.functional.binary_cross_entropy_with_logits(out[:, 1], (target > 0).float())
    return mse + 0.1 * bce


def fit(data: Dataset, config: ModelConfig, device: torch.device) -> ReturnGRU:
    """Train with a fixed seed; on CPU the same data and seed give the same weights."""
    torch.manual_seed(config.seed)
    model = ReturnGRU(config.hidden, config.layers).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    cuda = device.type == "cuda"
    # Mixed precision only where it pays: fp16 autocast and loss scaling on the GPU.
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    order = torch.Generator().manual_seed(config.seed)
    scale = data.normaliser.target_scale
    train = data.train_idx
    model.train()
    for _ in range(config.epochs):
        perm = train[torch.randperm(len(train), generator=order).numpy()]
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start : start + config.batch_size]
            x = torch.from_numpy(data.windows(idx)).to(device, non_blocking=cuda)
            y = torch.from_numpy(data.targets(idx).astype(np.float32)).to(device)
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
                out = model(x)
            loss = _loss(out.float(), y, scale)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
    return model.eval()


def predict(
    model: nn.Module, x: np.ndarray, scale: float, device: torch.device, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Batched inference: (predicted log return, up probability) per window."""
    returns, probs = [], []
    cuda = device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, torch.float16, enabled=cuda):
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[start : start + batch_size]).to(device)
            out = model(batch).float()
            returns.append((out[:, 0] * scale).cpu().numpy())
            probs.append(torch.sigmoid(out[:, 1]).cpu().numpy())
    if not returns:
        return np.empty(0), np.empty(0)
    return np.concatenate(returns).astype("float64"), np.concatenate(probs).astype("float64")
