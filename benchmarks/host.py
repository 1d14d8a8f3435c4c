"""Host cost per frame: is the ARM/PC side ever the bottleneck?

- **Host overhead**: a ``FrameRestorer`` around a zero-cost *loopback* accelerator (it
  answers every tile with the "no noise" residual code: no network) at 512², 1024² and 2048²: the
  pixel-in table, tiling and stitching, the pixel-out arithmetic and table, pass-through
  and clipping counts, the output dtype. With and without a calibration's per-pixel maps.
  One and two threads for the per-pixel table work.
- **Emulator vs PyTorch**: the bit-exact emulator (the golden model of the accelerator)
  against the float PyTorch twin of the same network on the same 512² frames.

Candidates are timed in turns and the best of ``--repeats`` is reported with the median:
this machine is shared, and a burst of load should slow every candidate alike.

    python benchmarks/host.py [--bundle DIR] [--repeats 9]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from collections import deque

import numpy as np
import torch
from results_io import write_results  # sibling module: scripts run from benchmarks/

from fluorofpga.host import (
    Accelerator,
    AcceleratorBusy,
    FrameRestorer,
    StreamPipeline,
    load_bundle,
    plan_tiles,
    process_tiled,
)
from fluorofpga.microscope import NoiseModel, SCMOSSensor, calibrate
from fluorofpga.models import int_to_tensor, load_float_model

SIZES = (512, 1024, 2048)
THREADS = (1, 2)  # FrameRestorer(threads=...): the per-pixel table work split over threads


class Loopback(Accelerator):
    """Zero-cost accelerator: answers every tile with the residual code for "no noise"."""

    name = "loopback"

    def __init__(self, tile_shape: tuple[int, int], zero: int) -> None:
        super().__init__(tile_shape, 8, 8)
        self.zero = zero

    def _compute(self, tile: np.ndarray) -> np.ndarray:
        return np.full(tile.shape, self.zero, np.uint8)


def interleaved(fns: dict, repeats: int) -> dict:
    """Seconds per call of each function, timed in turns (min and median of ``repeats``).

    Turns, not blocks: on a machine shared with other jobs a burst of load then slows
    every candidate alike instead of one of them.
    """
    times: dict = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up: buffers, plans, tables, BLAS threads
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: {"min": min(v), "median": float(np.median(v))} for k, v in times.items()}


def host_overhead(bundle, repeats: int) -> dict:
    """Milliseconds per frame of the host's own work, per size, dtype, calibration, threads."""
    noise = NoiseModel.from_camera(0.46, 100.0, 1.6)
    rng = np.random.default_rng(0)
    out: dict = {}
    for size in SIZES:
        frame = rng.integers(90, 3000, (size, size)).astype(np.uint16)
        sensor = SCMOSSensor.random((size, size), rng, hot_pixel_fraction=0.0)
        dark = sensor.acquire(np.zeros((10, size, size)), rng)
        flats = [sensor.acquire(np.full((2, size, size), lv), rng) for lv in (100, 400, 1600)]
        cal = calibrate(dark, flats)
        fns = {}
        for label, calib in (("no calibration", None), ("per-pixel maps", cal)):
            for dtype in ("uint16", "float32"):
                for threads in THREADS:
                    acc = Loopback(bundle.tile_shape, bundle.signal.residual_zero)
                    restorer = FrameRestorer(acc, bundle.tables(noise), bundle.halo, calib,
                                             dtype, threads=threads)
                    fns[f"{label}, {dtype}, {threads} thread{'s' * (threads > 1)}"] = (
                        lambda r=restorer, f=frame: r(f))
        for key, t in interleaved(fns, repeats).items():
            out.setdefault(str(size), {})[key] = {k: 1e3 * v for k, v in t.items()}
            print(size, key, f"{1e3 * t['min']:.1f} ms (median {1e3 * t['median']:.1f})",
                  flush=True)
    return out


class TimedPL(Loopback):
    """The loopback as a PL at ``mpix_s``: tiles queue in the device (two in flight, as
    the PYNQ driver sends them) and each is ready a tile's time after the previous one;
    :meth:`wait` sleeps until then (as the driver waits for the DMA: the GIL is free)."""

    name = "timed-pl"
    max_in_flight = 2

    def __init__(self, tile_shape: tuple[int, int], zero: int, mpix_s: float) -> None:
        super().__init__(tile_shape, zero)
        self.seconds = tile_shape[0] * tile_shape[1] / (mpix_s * 1e6)
        self._ready: deque[tuple[float, np.ndarray]] = deque()
        self._free_at = 0.0

    def submit(self, tile: np.ndarray) -> None:
        """Queue ``tile``: ready when the PL is through the ones before it, plus its time."""
        if len(self._ready) >= self.max_in_flight:
            raise AcceleratorBusy(self.name)
        tile = self._validate(tile)
        self._free_at = max(time.perf_counter(), self._free_at) + self.seconds
        self._ready.append((self._free_at, tile))
        self._in_flight = True

    def wait(self) -> np.ndarray:
        """The oldest tile's output, once the PL would have finished it."""
        ready, tile = self._ready.popleft()
        self._in_flight = bool(self._ready)
        delay = ready - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        return self._check_output(self._compute(tile))


class NullSink:
    """Takes frames and keeps nothing."""

    def write(self, index: int, frame: np.ndarray) -> None:
        """Discard ``frame``."""

    def close(self) -> None:
        """Nothing to close."""


def staged_stream(bundle, mpix_s: float, size: int, frames: int, repeats: int) -> dict:
    """Frames/s of a stream through a PL-timed accelerator, stages overlapped or not.

    One thread of table work per stage (``threads=1``); the same frames, a sink that
    keeps nothing, ``block`` policy (nothing dropped). Best of ``repeats`` runs each,
    in turns.
    """
    noise = NoiseModel.from_camera(0.46, 100.0, 1.6)
    rng = np.random.default_rng(3)
    raw = [rng.integers(90, 3000, (size, size)).astype(np.uint16) for _ in range(4)]
    acc = TimedPL(bundle.tile_shape, bundle.signal.residual_zero, mpix_s)
    restorer = FrameRestorer(acc, bundle.tables(noise), bundle.halo)
    pl_ms = 1e3 * len(plan_tiles((size, size), acc.tile_shape, bundle.halo)) * acc.seconds
    best: dict = {}
    stages: dict = {}
    for _ in range(repeats):
        for staged in (False, True):
            stats = StreamPipeline(((k, raw[k % 4]) for k in range(frames)), restorer,
                                   NullSink(), queue_size=2, drop_policy="block",
                                   staged=staged).run()
            key = "staged" if staged else "one thread"
            if stats.fps > best.get(key, 0.0):
                best[key], stages[key] = stats.fps, stats.stage_ms_mean
    return {"size": size, "frames": frames, "pl_mpix_s": mpix_s,
            "pl_ms_per_frame": pl_ms, "fps": best, "stage_ms_mean": stages,
            "pl_only_fps": 1e3 / pl_ms}


def emulator_vs_torch(bundle, repeats: int, one_thread: bool = False) -> dict:
    """Frames/s of the emulator and of the float PyTorch twin, 512², same frames, in turns.

    ``one_thread``: numpy's BLAS and PyTorch's OpenMP both held to one thread
    (threadpoolctl), a comparison that a loaded machine disturbs far less (BLAS threads
    that wait for a busy core are what a shared machine slows down most).
    """
    model = load_float_model(bundle.file("float_checkpoint"))
    q = np.random.default_rng(1).integers(0, 256, (512, 512)).astype(np.uint8)
    x = int_to_tensor(q)
    limits = contextlib.nullcontext()
    if one_thread:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=1)
    with limits, bundle.accelerator("emulate") as acc, torch.no_grad():
        t = interleaved({"emulator": lambda: process_tiled(q, acc, acc.tile_shape, bundle.halo),
                         "torch": lambda: model(x)}, repeats)
        threads = torch.get_num_threads()
    return {"emulator_fps": 1 / t["emulator"]["min"], "torch_float_fps": 1 / t["torch"]["min"],
            "ratio": t["torch"]["min"] / t["emulator"]["min"],
            "ratio_of_medians": t["torch"]["median"] / t["emulator"]["median"],
            "tiles_per_frame": len(plan_tiles(q.shape, acc.tile_shape, bundle.halo)),
            "torch_threads": threads, "repeats": repeats}


def main() -> None:
    """Run both measurements; write ``benchmarks/results/host.{json,md}``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--pl-mpix", type=float, default=39.7,
                    help="PL speed of the stream measurement, Mpixel/s (default: FINN's "
                         "KV260 estimate of the shipped denoiser, benchmarks/results/compile.md)")
    args = ap.parse_args()
    bundle = load_bundle(args.bundle)
    load = {"before": os.getloadavg()[0]}  # 1-minute load average: others' jobs share the CPU
    overhead = host_overhead(bundle, args.repeats)
    load["after overhead"] = os.getloadavg()[0]
    speed = emulator_vs_torch(bundle, args.repeats)
    load["after emulator"] = os.getloadavg()[0]
    single = emulator_vs_torch(bundle, args.repeats, one_thread=True)
    load["after one thread"] = os.getloadavg()[0]
    stream = staged_stream(bundle, args.pl_mpix, 1024, 30, 3)
    load["after stream"] = os.getloadavg()[0]
    cols = list(next(iter(overhead.values())))
    lines = ["Host work per frame around a zero-cost loopback accelerator, best of "
             f"{args.repeats} (median in brackets), timed in turns on a shared machine.", "",
             "| frame | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for size, row in overhead.items():
        lines.append(f"| {size}² | " + " | ".join(
            f"{row[c]['min']:.1f} ms ({row[c]['median']:.1f})" for c in cols) + " |")
    lines += ["", f"Emulator {speed['emulator_fps']:.2f} frames/s vs float PyTorch "
              f"{speed['torch_float_fps']:.2f} frames/s at 512² (best of {args.repeats} each, "
              f"in turns): ratio {speed['ratio']:.2f} (of medians "
              f"{speed['ratio_of_medians']:.2f}); the emulator runs "
              f"{speed['tiles_per_frame']} tiles of {bundle.tile_shape[0]}² with halos, PyTorch "
              f"the whole frame on {speed['torch_threads']} threads.",
              f"Both on one thread (BLAS and OpenMP held to 1): emulator "
              f"{single['emulator_fps']:.2f} frames/s vs PyTorch {single['torch_float_fps']:.2f} "
              f"frames/s: ratio {single['ratio']:.2f} (of medians "
              f"{single['ratio_of_medians']:.2f}).", "",
              f"Stream of {stream['frames']} frames of {stream['size']}² through a PL at "
              f"{stream['pl_mpix_s']:g} Mpixel/s ({stream['pl_ms_per_frame']:.1f} ms per frame "
              f"with halos: at most {stream['pl_only_fps']:.1f} frames/s), one thread per "
              f"stage: pack, accelerate and unpack one after another "
              f"{stream['fps']['one thread']:.1f} frames/s; on their own threads "
              f"{stream['fps']['staged']:.1f} frames/s (best of 3). Stage means (ms, staged): "
              + ", ".join(f"{k} {v:.1f}" for k, v in stream["stage_ms_mean"]["staged"].items())
              + ".", "",
              f"Load average (1 min) on the {os.cpu_count()} CPUs while measuring: " + ", ".join(
                  f"{v:.1f} {k}" for k, v in load.items()) + "."]
    write_results("host", {"bundle": bundle.name, "overhead_ms": overhead,
                           "emulator_vs_torch": speed,
                           "emulator_vs_torch_one_thread": single, "repeats": args.repeats,
                           "stream": stream,
                           "load_average_1min": load,
                           "machine": platform.processor() or platform.machine(),
                           "cpus": os.cpu_count()},
                  "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
