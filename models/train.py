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
    n_scenes: int = 256
    scene_size: int = 192
    cameras: CameraRange = field(default_factory=CameraRange)
    seed: int = 0
    model: DenoiserConfig = field(default_factory=DenoiserConfig)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)


def fit(
    model: nn.Module,
    data: Any,
    steps: int,
    batch_size: int,
    crop: int,
    lr: float,
    progress: Progress | None = None,
) -> list[float]:
    """Minimise MSE of ``model`` on ``data`` with Adam + cosine decay; returns loss history.

    Shared by float training, quantization-aware fine-tuning and self-supervised
    fine-tuning: ``data.batch`` returns ``(input, target)`` or ``(input, target, mask)``,
    and with a mask the loss is taken on the masked pixels only (blind spot).

    Under ``torchrun`` (an initialised ``torch.distributed`` process group, gloo on CPU or
    NCCL on GPUs) the model is wrapped in ``DistributedDataParallel``: every rank draws its
    own batches and gradients are averaged, so the weights stay identical on all ranks.
    """
    net: nn.Module = model
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        net = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
    history: list[float] = []
    net.train()
    for step in range(steps):
        x, t, *mask = data.batch(batch_size, crop)
        err = (net(x) - t) ** 2
        loss = err[mask[0]].mean() if mask else err.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
        if progress is not None:
            progress(step + 1, steps, history[-1])
    net.eval()
    model.eval()
    return history


def training_data(cfg: TrainConfig, seed: int) -> Any:
    """The simulated training data of ``cfg.model``: :class:`SimulatedPairs` for a
    denoiser, :class:`~fluorofpga.models.simdata.SimTriplets` (3 raw SIM frames -> 2×
    image) for a network with ``in_frames > 1``."""
    if cfg.model.in_frames > 1:
        from .simdata import SimTriplets

        if cfg.model.in_frames != 3 or cfg.model.upscale != 2:
            raise ValueError("the SIM training data is 3 raw frames -> 2x image; got "
                             f"{cfg.model.in_frames} frames, upscale {cfg.model.upscale}")
        return SimTriplets(cfg.n_scenes, cfg.scene_size, cfg.model.signal, cfg.cameras, seed)
    return SimulatedPairs(cfg.n_scenes, (cfg.scene_size, cfg.scene_size), cfg.model.signal,
                          cfg.cameras, seed)


def train_denoiser(
    cfg: TrainConfig, progress: Progress | None = None
) -> tuple[PlainDenoiser, dict[str, Any]]:
    """Train a float :class:`PlainDenoiser` from scratch on simulated data.

    A denoiser, or a 3-frame SIM reconstructor when ``cfg.model.in_frames == 3``
    (:func:`training_data`). Returns the model and a log dict (loss history, wall time,
    config, world size). Under ``torchrun`` every rank simulates its own data (seed +
    rank) and :func:`fit` averages the gradients (DDP).
    """
    rank, world = _rank_and_world()
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    data = training_data(cfg, cfg.seed + 1000 * rank)
    model = PlainDenoiser(cfg.model)
    history = fit(model, data, cfg.steps, cfg.batch_size, cfg.crop, cfg.lr,
                  progress if rank == 0 else None)
    log = {"loss": history, "seconds": time.perf_counter() - t0, "config": cfg.to_dict(),
           "world_size": world}
    return model, log


def _rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def main(argv: list[str] | None = None) -> None:
    """Float training from the command line; runs unchanged under ``torchrun``.

    ``torchrun --nproc_per_node N -m fluorofpga.models --out float.pt --steps S``:
    with ``WORLD_SIZE`` > 1 a process group is created (NCCL with GPUs, gloo on CPU),
    data-parallel training runs on every rank and rank 0 writes the checkpoint (and a
    digest of its weights next to it; every rank prints its own, for checking).
    """
    import argparse
    import hashlib
    import os

    from .denoiser import save_checkpoint

    ap = argparse.ArgumentParser(description="fluorofpga float denoiser training (DDP-ready)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--scene-size", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    try:
        cfg = TrainConfig(steps=args.steps, seed=args.seed, n_scenes=args.scenes,
                          scene_size=args.scene_size,
                          model=DenoiserConfig(channels=args.channels, depth=args.depth))
        model, log = train_denoiser(cfg)
        rank, world = _rank_and_world()
        blob = b"".join(p.detach().numpy().tobytes() for p in model.state_dict().values())
        digest = hashlib.sha256(blob).hexdigest()
        print(f"rank {rank}/{world} weights sha256 {digest}", flush=True)
        if rank == 0:
            save_checkpoint(args.out, model, cfg.model, kind="float", train=cfg.to_dict(),
                            world_size=world, weights_sha256=digest)
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()

