"""Host cost per frame: is the ARM/PC side ever the bottleneck?

- **Host overhead**: a ``FrameRestorer`` around a zero-cost *loopback* accelerator (it
  returns its input tile's codes untouched: no network) at 512², 1024² and 2048²: the
  pixel-in table, tiling and stitching, the pixel-out arithmetic and table, pass-through
  and clipping counts, the output dtype. With and without a calibration's per-pixel maps.
- **Emulator vs PyTorch**: the bit-exact emulator (the golden model of the accelerator)
  against the float PyTorch twin of the same network on the same 512² frames.

    python benchmarks/host.py [--bundle DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from results_io import write_results  # sibling module: scripts run from benchmarks/

from fluorofpga.host import Accelerator, FrameRestorer, load_bundle
from fluorofpga.microscope import NoiseModel, SCMOSSensor, calibrate
from fluorofpga.models import int_to_tensor, load_float_model

SIZES = (512, 1024, 2048)


class Loopback(Accelerator):
    """Zero-cost accelerator: answers every tile with the residual code for "no noise"."""

    name = "loopback"

    def __init__(self, tile_shape: tuple[int, int], zero: int) -> None:
        super().__init__(tile_shape, 8, 8)
        self.zero = zero

    def _compute(self, tile: np.ndarray) -> np.ndarray:
        return np.full(tile.shape, self.zero, np.uint8)


def best_of(fn, repeats: int) -> float:
    """Fastest of ``repeats`` runs, seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def host_overhead(bundle, repeats: int) -> dict:
    """Milliseconds per frame of the host's own work, per size, dtype and calibration."""
    noise = NoiseModel.from_camera(0.46, 100.0, 1.6)
    rng = np.random.default_rng(0)
    out: dict = {}
    for size in SIZES:
        frame = rng.integers(90, 3000, (size, size)).astype(np.uint16)
        sensor = SCMOSSensor.random((size, size), rng, hot_pixel_fraction=0.0)
        dark = sensor.acquire(np.zeros((10, size, size)), rng)
        flats = [sensor.acquire(np.full((2, size, size), lv), rng) for lv in (100, 400, 1600)]
        cal = calibrate(dark, flats)
        for label, calib in (("no calibration", None), ("per-pixel maps", cal)):
            for dtype in ("uint16", "float32"):
                acc = Loopback(bundle.tile_shape, bundle.signal.residual_zero)
                restorer = FrameRestorer(acc, bundle.tables(noise), bundle.halo, calib, dtype)
                ms = 1e3 * best_of(lambda r=restorer, f=frame: r(f), repeats)
                out.setdefault(str(size), {})[f"{label}, {dtype}"] = ms
                print(size, label, dtype, f"{ms:.1f} ms", flush=True)
    return out


def emulator_vs_torch(bundle, repeats: int) -> dict:
    """Frames/s of the emulator and of the float PyTorch twin, 512², same frames."""
    model = load_float_model(bundle.file("float_checkpoint"))
    q = np.random.default_rng(1).integers(0, 256, (512, 512)).astype(np.uint8)
    with bundle.accelerator("emulate") as acc:
        from fluorofpga.host import process_tiled

        t_emu = best_of(lambda: process_tiled(q, acc.run, acc.tile_shape, bundle.halo), repeats)
    with torch.no_grad():
        x = int_to_tensor(q)
        t_torch = best_of(lambda: model(x), repeats)
    return {"emulator_fps": 1 / t_emu, "torch_float_fps": 1 / t_torch,
            "ratio": t_torch / t_emu, "torch_threads": torch.get_num_threads()}


def main() -> None:
    """Run both measurements; write ``benchmarks/results/host.{json,md}``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    bundle = load_bundle(args.bundle)
    overhead = host_overhead(bundle, args.repeats)
    speed = emulator_vs_torch(bundle, max(2, args.repeats // 2))
    cols = list(next(iter(overhead.values())))
    lines = ["| frame | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for size, row in overhead.items():
        lines.append(f"| {size}² | " + " | ".join(f"{row[c]:.1f} ms" for c in cols) + " |")
    lines += ["", f"Emulator {speed['emulator_fps']:.2f} frames/s vs float PyTorch "
              f"{speed['torch_float_fps']:.2f} frames/s at 512² (ratio {speed['ratio']:.2f}, "
              f"torch threads {speed['torch_threads']})."]
    write_results("host", {"bundle": bundle.name, "overhead_ms": overhead,
                           "emulator_vs_torch": speed,
                           "machine": platform.processor() or platform.machine()},
                  "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
