"""Supervised training of the denoiser on simulated pairs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .data import CameraRange, SimulatedPairs
from .denoiser import DenoiserConfig, PlainDenoiser

#: progress callback: (step, total_steps, loss) -> None
Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (all defaults fit a few CPU minutes).

    Attributes:
        steps: optimiser steps.
        batch_size: crops per step.
        crop: crop side in pixels.
        lr: Adam learning rate (cosine-decayed to 5 % over ``steps``).
        n_scenes: simulated scenes in the training pool.
        scene_size: side of each simulated scene in pixels.
        cameras: camera and light-level ranges, drawn anew for every crop.
        seed: RNG seed for data and weights.
        model: architecture.
    """

    steps: int = 1500
    batch_size: int = 16
    crop: int = 48
    lr: float = 2e-3
    n_scenes: int = 24
    scene_size: int = 192
    cameras: CameraRange = field(default_factory=CameraRange)
    seed: int = 0
    model: DenoiserConfig = field(default_factory=DenoiserConfig)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)


def fit(
    model: nn.Module,
    data: SimulatedPairs,
    steps: int,
    batch_size: int,
    crop: int,
    lr: float,
    progress: Progress | None = None,
) -> list[float]:
    """Minimise MSE of ``model`` on ``data`` with Adam + cosine decay; returns loss history.

    Shared by float training and quantization-aware fine-tuning.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
    loss_fn = nn.MSELoss()
    history: list[float] = []
    model.train()
    for step in range(steps):
        x, t = data.batch(batch_size, crop)
        loss = loss_fn(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
        if progress is not None:
            progress(step + 1, steps, history[-1])
    model.eval()
    return history


def train_denoiser(
    cfg: TrainConfig, progress: Progress | None = None
) -> tuple[PlainDenoiser, dict[str, Any]]:
    """Train a float :class:`PlainDenoiser` from scratch on simulated pairs.

    Returns the model and a log dict (loss history, wall time, config).
    """
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    data = SimulatedPairs(
        cfg.n_scenes, (cfg.scene_size, cfg.scene_size), cfg.model.signal, cfg.cameras, cfg.seed,
    )
    model = PlainDenoiser(cfg.model)
    history = fit(model, data, cfg.steps, cfg.batch_size, cfg.crop, cfg.lr, progress)
    log = {"loss": history, "seconds": time.perf_counter() - t0, "config": cfg.to_dict()}
    return model, log
