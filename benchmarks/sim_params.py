"""Benchmark of SIM parameter estimation: time per 512² 3x3 stack and accuracy vs photons.

    python benchmarks/sim_params.py      # writes benchmarks/results/sim_params.{json,md}

Standard simulated set (cell-like specimens, NA 1.2, 520 nm, 65 nm pixels, k = 0.85 of
the cut-off, m = 0.9, sCMOS noise, 10 photons background) with random pattern
directions, random phase offsets and random errors (angle σ 0.01 rad per angle, phase
σ 0.05 rad per frame), new seeds. At each peak photon level (20, 100, 500, 2000) and on
the noise-free frames, the estimate is compared with the truth: relative error of |k|,
error of the direction, error of the phase offset (the truth for an equidistant-phase
model is the circular mean of ``φ_j − 2πj/3``), modulation; and the measured phase
steps against the true per-frame phases. Time: wall clock (median and best of repeats)
and CPU time of the process, per stack; the machine's load average is recorded, since
the 2 cores are shared.

"Before" is the estimator of an earlier revision (``--before-rev``, loaded with
``git show``), run on the first ``--before-seeds`` seeds of every level (it takes
~10-40 s per stack).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
from results_io import write_results  # sibling module: scripts run from benchmarks/

from fluorofpga.microscope import (
    WeakPatternWarning,
    estimate_parameters,
    make_pattern,
    render_specimen,
    simulate_sim,
)

OPTICS = {"na": 1.2, "wavelength_nm": 520.0, "pixel_size_nm": 65.0}
LEVELS = (20.0, 100.0, 500.0, 2000.0)
ANGLE_ERROR_RAD = 0.01
PHASE_ERROR_RAD = 0.05
SEED_OFFSET = 9000  # new seeds, not those of the tests or the microscope benchmark
REPO = Path(__file__).resolve().parents[1]


def load_before(revision: str) -> ModuleType | None:
    """The ``sim_recon`` module of ``revision`` as a submodule of the installed package."""
    try:
        source = subprocess.run(
            ["git", "show", f"{revision}:microscope/sim_recon.py"], cwd=REPO,
            capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"before: revision {revision} not reachable ({exc}); measuring after only")
        return None
    name = "fluorofpga.microscope._sim_recon_before"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "fluorofpga.microscope"
    sys.modules[name] = module
    exec(compile(source, f"{revision}:microscope/sim_recon.py", "exec"), module.__dict__)
    return module


def acquisition(size: int, seed: int, peak: float):
    rng = np.random.default_rng(seed)
    pattern = make_pattern(
        start_angle_rad=rng.uniform(0, np.pi / 3),
        phase_offsets_rad=tuple(rng.uniform(0, 2 * np.pi, 3)),
        angle_error_rad=ANGLE_ERROR_RAD, phase_error_rad=PHASE_ERROR_RAD, rng=rng,
    )
    specimen = render_specimen((2 * size, 2 * size), rng, filaments=size // 6, puncta=size,
                               nuclei=1)
    data = simulate_sim(specimen, pattern, peak_photons=peak, background_photons=10.0,
                        rng=rng, **OPTICS)
    return data, pattern


def wrap(angle: np.ndarray) -> np.ndarray:
    return np.angle(np.exp(1j * np.asarray(angle)))


def errors(estimated, pattern) -> dict[str, list[float]]:
    """Per angle errors against the truth (see the module docstring)."""
    truth = pattern.angle_parameters(**OPTICS)
    n = pattern.n_phases
    out: dict[str, list[float]] = {"frequency": [], "angle_rad": [], "phase_rad": [],
                                   "modulation": [], "step_rad": []}
    for a, (est, true) in enumerate(zip(estimated, truth, strict=True)):
        phases = np.asarray(pattern.phases_rad[a])
        offset = np.angle(np.mean(np.exp(1j * (phases - 2 * np.pi * np.arange(n) / n))))
        out["frequency"].append(est.k_cycles_per_px / true.k_cycles_per_px - 1)
        out["angle_rad"].append(float(wrap(est.angle_rad - true.angle_rad)))
        out["phase_rad"].append(float(wrap(est.phase_rad - offset)))
        out["modulation"].append(est.modulation)
        steps = getattr(estimated, "phase_steps_rad", ())
        if steps:
            measured = np.asarray(steps[a])
            out["step_rad"].extend(wrap(measured - (phases - phases[0]))[1:].tolist())
    return out


def summary(rows: list[dict[str, list[float]]], times: list[float], cpu: list[float]) -> dict:
    merged = {key: np.concatenate([r[key] for r in rows]) for key in rows[0]}
    freq, angle, phase = merged["frequency"], merged["angle_rad"], merged["phase_rad"]
    result = {
        "stacks": len(rows),
        "frequency_error_mean": float(freq.mean()),
        "frequency_error_rms": float(np.sqrt(np.mean(freq**2))),
        "frequency_error_max": float(np.abs(freq).max()),
        "angle_error_rms_rad": float(np.sqrt(np.mean(angle**2))),
        "angle_error_max_rad": float(np.abs(angle).max()),
        "phase_error_rms_rad": float(np.sqrt(np.mean(phase**2))),
        "phase_error_max_rad": float(np.abs(phase).max()),
        "modulation_mean": float(merged["modulation"].mean()),
        "per_angle": {key: value.tolist() for key, value in merged.items()},
    }
    if merged["step_rad"].size:
        result["phase_step_error_rms_rad"] = float(np.sqrt(np.mean(merged["step_rad"] ** 2)))
    if times:
        result.update(time_median_s=float(np.median(times)), time_best_s=float(np.min(times)),
                      cpu_median_s=float(np.median(cpu)))
    return result


def timed(estimate, raw, camera) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WeakPatternWarning)
        result = estimate(raw, camera=camera, **OPTICS)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run(size: int, seeds: int, before_seeds: int, before: ModuleType | None,
        repeats: int) -> dict:
    methods = {"after": estimate_parameters}
    if before is not None:
        methods["before"] = before.estimate_parameters
    out: dict = {}
    clean: dict[str, list] = {name: [] for name in methods}
    for peak in LEVELS:
        level: dict = {}
        rows: dict[str, list] = {name: [] for name in methods}
        times: dict[str, list[float]] = {name: [] for name in methods}
        cpu: dict[str, list[float]] = {name: [] for name in methods}
        for index in range(seeds):
            data, pattern = acquisition(size, SEED_OFFSET + int(peak) * 100 + index, peak)
            for name, estimate in methods.items():
                if name == "before" and index >= before_seeds:
                    continue
                for _ in range(repeats if name == "after" else 1):
                    estimated, wall, used = timed(estimate, data.raw, data.camera)
                    times[name].append(wall)
                    cpu[name].append(used)
                rows[name].append(errors(estimated, pattern))
                if peak == LEVELS[0]:  # noise-free frames of the same scenes, once
                    estimated, _, _ = timed(estimate, data.photons, None)
                    clean[name].append(errors(estimated, pattern))
            print(f"{peak:g} photons, stack {index + 1}/{seeds}", flush=True)
        for name in methods:
            level[name] = summary(rows[name], times[name], cpu[name])
        out[f"{peak:g}"] = level
    out["noise-free"] = {name: summary(rows, [], []) for name, rows in clean.items()}
    return out


def table(res: dict) -> str:
    lines = [
        "# SIM parameter estimation", "",
        f"{res['size']}² camera pixels, 3 angles × 3 phases, {res['seeds']} scenes per level "
        f"(before: {res['before_seeds']}), pattern errors σ {ANGLE_ERROR_RAD} rad (angle), "
        f"{PHASE_ERROR_RAD} rad (phase per frame); load average during the run "
        f"{res['load_average'][0]:.1f} / {res['load_average'][1]:.1f} on {os.cpu_count()} "
        "shared cores. Before = revision " + str(res["before_rev"]) + ".", "",
        "| peak photons | method | time / stack s (median, best; CPU) | |k| error mean % | "
        "rms % | max % | angle rms / max mdeg | phase rms / max mrad | modulation | "
        "step rms mrad |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level, methods in res["levels"].items():
        for name, m in methods.items():
            timing = (f"{m['time_median_s']:.2f}, {m['time_best_s']:.2f}; {m['cpu_median_s']:.2f}"
                      if "time_median_s" in m else "–")
            step = (f"{1e3 * m['phase_step_error_rms_rad']:.0f}"
                    if "phase_step_error_rms_rad" in m else "–")
            lines.append(
                f"| {level} | {name} | {timing} | {100 * m['frequency_error_mean']:+.4f} | "
                f"{100 * m['frequency_error_rms']:.4f} | {100 * m['frequency_error_max']:.4f} | "
                f"{np.rad2deg(m['angle_error_rms_rad']) * 1e3:.1f} / "
                f"{np.rad2deg(m['angle_error_max_rad']) * 1e3:.1f} | "
                f"{1e3 * m['phase_error_rms_rad']:.0f} / {1e3 * m['phase_error_max_rad']:.0f} | "
                f"{m['modulation_mean']:.3f} | {step} |"
            )
    lines += [
        "",
        "Phase errors are against the equidistant-phase offset (circular mean of "
        "φ_j − 2πj/3); step = the measured phase of each frame relative to the angle's "
        "first frame against the truth (the per-frame phase errors, σ 0.05 rad, included).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats per stack (after)")
    ap.add_argument("--before-rev", default="e936250",
                    help="revision whose estimator is 'before' ('' for none)")
    ap.add_argument("--before-seeds", type=int, default=2)
    args = ap.parse_args()
    before = load_before(args.before_rev) if args.before_rev else None
    load_start = os.getloadavg()
    levels = run(args.size, args.seeds, args.before_seeds, before, args.repeats)
    load_end = os.getloadavg()
    res = {
        "size": args.size, "seeds": args.seeds, "repeats": args.repeats,
        "before_rev": args.before_rev if before is not None else None,
        "before_seeds": args.before_seeds if before is not None else 0,
        "load_average": [load_start[0], load_end[0]],
        "levels": levels,
    }
    write_results("sim_params", res, table(res))


if __name__ == "__main__":
    main()
