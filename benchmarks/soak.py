"""Soak: a long live stream with zero unaccounted frames and flat memory.

The simulated sCMOS camera, paced at ``--fps`` (a free-running camera: it does not wait
for the stream), goes through the shipped default bundle on the emulated accelerator into
a TIFF (BigTIFF) or OME-Zarr sink, frame by frame, for ``--minutes``: exactly what
``fluorofpga stream --source sim --fps F --size S --frames 1000000000 --sink OUT``
followed by a Ctrl-C does, through the same facade (``app.stream``: drop-oldest, the
sink on its own thread behind a bounded queue). The camera is given 10⁹ frames and the
stream is ended with ``StreamPipeline.stop()`` after ``--minutes`` (the CLI's first
Ctrl-C), so the TIFF sink does not know the length and writes BigTIFF, as for a live
camera.

Every ``--every`` seconds a sample: resident memory (``VmRSS`` and ``RssAnon`` from
``/proc/self/status``), open files, threads, process CPU time, machine load, frames
in/out/dropped, rolling fps and the stream's latency percentiles. A wrapper around the
pipeline's sink (set through ``app.stream``'s ``on_start`` hook; it only observes)
records the index and CRC-32 of every frame handed to the sink.

At the end, pass/fail per criterion:

- **accounting**: ``frames_in == frames_out + dropped``; the written and dropped indices
  are disjoint, cover ``0 .. frames_in - 1`` exactly, and the written ones increase;
- **output**: the file holds exactly ``frames_out`` frames, page by page identical
  (CRC-32) and in the order they were handed to the sink; the sink's own index record
  equals the handed-over indices; no partial file is left;
- **memory flat**: the least-squares slope of RSS over the second half of the run is
  below ``--max-slope`` MiB/min, and max - min RSS after the warm-up (the first
  ``--warmup`` fraction of the run) is below ``--max-range`` MiB.

Results: ``benchmarks/results/NAME.{json,md}`` (written and dropped indices as
inclusive runs ``[first, last]``, lossless). The output itself goes to a temporary
folder removed afterwards (``--out DIR`` keeps it).

    nice -n 10 python benchmarks/soak.py [--minutes 30] [--fps 10] [--size 256]
        [--sink tif|zarr] [--every 10] [--out DIR] [--name soak]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
import zlib
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from results_io import write_results  # sibling module: scripts run from benchmarks/

MIB = 2**20
#: Frames the simulated camera is given: "until stopped" (the stream is ended by time).
CAMERA_FRAMES = 10**9
#: Pass bounds of the memory criteria (MiB/min; MiB), the defaults of the CLI flags.
MAX_SLOPE_MIB_PER_MIN = 1.0
MAX_RANGE_MIB = 16.0
#: Fraction of the run that counts as warm-up (buffers, tables, allocator arenas).
WARMUP_FRACTION = 0.1
#: Sample rows shown in the Markdown table (all of them are in the JSON).
TABLE_ROWS = 16


# ------------------------------------------------------------------ process readings


def _proc_status() -> dict[str, int]:
    """``VmRSS``, ``RssAnon``, ``VmHWM`` of this process in bytes (Linux ``/proc``)."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024  # reported in kB
    return out


def memory_bytes() -> dict[str, int]:
    """Resident memory of this process in bytes: ``rss`` (and ``anon``, ``peak`` on Linux).

    Read from ``/proc/self/status``; psutil (only ``rss``) where there is no ``/proc``.
    """
    try:
        status = _proc_status()
        return {"rss": status["VmRSS"], "anon": status.get("RssAnon", 0),
                "peak": status.get("VmHWM", 0)}  # fmt: skip
    except (OSError, KeyError):
        import psutil

        return {"rss": int(psutil.Process().memory_info().rss), "anon": 0, "peak": 0}


def open_files() -> int:
    """Open file descriptors of this process (-1 where ``/proc`` is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


# ------------------------------------------------------------------------ criteria


def rss_slope_mib_per_min(seconds: Sequence[float], rss_bytes: Sequence[float]) -> float:
    """Least-squares slope of resident memory over time, MiB per minute.

    Raises:
        ValueError: fewer than two samples, or all at the same time.
    """
    t = np.asarray(seconds, dtype=np.float64) / 60.0
    m = np.asarray(rss_bytes, dtype=np.float64) / MIB
    if t.shape != m.shape or t.size < 2 or np.ptp(t) == 0:
        raise ValueError(f"a slope needs >= 2 samples at different times, got {t.size}")
    return float(np.polyfit(t, m, 1)[0])


def memory_verdict(
    seconds: Sequence[float],
    rss_bytes: Sequence[float],
    warmup_s: float,
    max_slope_mib_per_min: float = MAX_SLOPE_MIB_PER_MIN,
    max_range_mib: float = MAX_RANGE_MIB,
) -> dict[str, Any]:
    """Is memory flat? Slope over the second half of the run, range after the warm-up.

    Args:
        seconds: Time of each sample since the stream started, s (increasing).
        rss_bytes: Resident memory at each sample, bytes.
        warmup_s: Samples before this time are left out of the range criterion.
        max_slope_mib_per_min: Pass bound of the slope (its absolute value), MiB/min.
        max_range_mib: Pass bound of max - min RSS after the warm-up, MiB.

    Returns:
        ``slope_mib_per_min``, ``range_mib``, the samples each used, the bounds, and
        ``slope_ok``, ``range_ok`` (False when there were too few samples to judge).
    """
    t = np.asarray(seconds, dtype=np.float64)
    m = np.asarray(rss_bytes, dtype=np.float64)
    if t.shape != m.shape:
        raise ValueError(f"{t.size} times but {m.size} memory samples")
    half = t >= (t[0] + t[-1]) / 2 if t.size else t.astype(bool)
    after = t >= warmup_s
    slope = rss_slope_mib_per_min(t[half], m[half]) if half.sum() >= 2 else None
    spread = float(np.ptp(m[after]) / MIB) if after.sum() >= 2 else None
    return {
        "slope_mib_per_min": slope,
        "slope_samples": int(half.sum()),
        "max_slope_mib_per_min": max_slope_mib_per_min,
        "slope_ok": slope is not None and abs(slope) < max_slope_mib_per_min,
        "range_mib": spread,
        "range_samples": int(after.sum()),
        "warmup_s": warmup_s,
        "max_range_mib": max_range_mib,
        "range_ok": spread is not None and spread < max_range_mib,
    }


def runs(indices: Iterable[int]) -> list[list[int]]:
    """Sorted indices as inclusive runs: ``[0, 1, 2, 5, 7, 8]`` -> ``[[0, 2], [5, 5], [7, 8]]``."""
    out: list[list[int]] = []
    for i in sorted(int(i) for i in indices):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def check_accounting(
    frames_in: int,
    frames_out: int,
    dropped: int,
    dropped_indices: Sequence[int],
    written_indices: Sequence[int],
) -> dict[str, bool]:
    """Every frame read is either written or dropped, once, and listed.

    Returns one boolean per check: ``balance`` (``in == out + dropped``),
    ``dropped_listed`` (as many indices as drops, no duplicate), ``written_counted``
    (as many handed to the sink as ``frames_out``), ``written_in_order`` (strictly
    increasing), ``disjoint`` and ``complete`` (written ∪ dropped = ``0 .. in - 1``).
    """
    written, lost = list(map(int, written_indices)), list(map(int, dropped_indices))
    return {
        "balance": frames_in == frames_out + dropped,
        "dropped_listed": len(lost) == dropped and len(set(lost)) == len(lost),
        "written_counted": len(written) == frames_out,
        "written_in_order": all(a < b for a, b in zip(written, written[1:], strict=False)),
        "disjoint": not set(written) & set(lost),
        "complete": sorted(written + lost) == list(range(frames_in)),
    }


# ---------------------------------------------------------------------- the stream


def crc(frame: np.ndarray) -> int:
    """CRC-32 of a frame's bytes (C order)."""
    return zlib.crc32(np.ascontiguousarray(frame).data)


class RecordingSink:
    """Wraps the pipeline's sink: records index and CRC-32 of every frame, then forwards."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.indices = array("q")  # 8 + 8 bytes per written frame
        self.crcs = array("Q")

    def write(self, index: int, frame: np.ndarray) -> None:
        """Record, then hand the frame to the wrapped sink."""
        self.indices.append(int(index))
        self.crcs.append(crc(frame))
        self.sink.write(index, frame)

    def close(self) -> None:
        """Close the wrapped sink (``app.stream`` wraps its sink in ``KeepOpen``)."""
        self.sink.close()


class Sampler:
    """Samples memory, files, threads, CPU and the live stream counters every ``every_s``."""

    def __init__(self, pipeline: Any, every_s: float) -> None:
        self.pipeline = pipeline
        self.every_s = every_s
        self.samples: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        self._cpu0 = os.times()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def start(self) -> None:
        """Take the first sample now and one every ``every_s`` until :meth:`finish`."""
        self.sample()
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.every_s):
            self.sample()

    def sample(self) -> None:
        """Append one sample."""
        s = self.pipeline.stats
        now, cpu = time.perf_counter(), os.times()
        prev = self.samples[-1] if self.samples else None
        row: dict[str, Any] = {
            "t_s": round(now - self.t0, 3),
            **{f"{k}_mib": round(v / MIB, 2) for k, v in memory_bytes().items()},
            "open_files": open_files(),
            "threads": threading.active_count(),
            "cpu_s": round(cpu.user + cpu.system - self._cpu0.user - self._cpu0.system, 2),
            "load1": round(os.getloadavg()[0], 2),
            "frames_in": s.frames_in, "frames_out": s.frames_out, "dropped": s.dropped,
            "fps_rolling": round(s.fps_rolling, 3), "queued": s.queued,
            "latency_ms_p50": round(s.latency_ms_p50, 1),
            "latency_ms_p95": round(s.latency_ms_p95, 1),
            "latency_ms_p99": round(s.latency_ms_p99, 1),
        }  # fmt: skip
        if prev is not None and row["t_s"] > prev["t_s"]:
            dt = row["t_s"] - prev["t_s"]
            row["fps_in"] = round((row["frames_in"] - prev["frames_in"]) / dt, 3)
            row["fps_out"] = round((row["frames_out"] - prev["frames_out"]) / dt, 3)
            row["cpu_util"] = round((row["cpu_s"] - prev["cpu_s"]) / dt, 3)
        self.samples.append(row)

    def finish(self) -> None:
        """Stop sampling (after one last sample)."""
        self._done.set()
        self._thread.join()
        self.sample()


def verify_tiff(path: Path, crcs: Sequence[int], shape: tuple[int, int]) -> dict[str, Any]:
    """Read the TIFF back page by page: count, order (CRC-32), shape, dtype, format."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = tif.pages
        pages.cache = False  # one page in memory at a time
        n = len(pages)
        mismatch = None
        for k in range(min(n, len(crcs))):
            page = pages[k].asarray()
            if page.shape != shape or page.dtype != np.uint16 or crc(page) != crcs[k]:
                mismatch = k
                break
        series = tif.series[0]
        return {
            "format": "BigTIFF" if tif.is_bigtiff else "classic TIFF",
            "ome": tif.is_ome, "imagej": tif.is_imagej,
            "series_shape": list(series.shape), "series_axes": series.axes,
            "frames": n, "first_mismatch": mismatch,
            "frames_ok": n == len(crcs), "order_ok": mismatch is None,
        }  # fmt: skip


def verify_zarr(path: Path, crcs: Sequence[int], indices: Sequence[int],
                shape: tuple[int, int]) -> dict[str, Any]:  # fmt: skip
    """Read the OME-Zarr store back frame by frame; its recorded indices and completeness."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    arr = group["0"]
    attrs = dict(group.attrs.get("fluorofpga", {}))
    n = int(arr.shape[0])
    mismatch = None
    for k in range(min(n, len(crcs))):
        frame = np.asarray(arr[k])
        if frame.shape != shape or crc(frame) != crcs[k]:
            mismatch = k
            break
    return {
        "format": "OME-Zarr", "array_shape": list(arr.shape), "frames": n,
        "complete_attr": attrs.get("complete"),
        "indices_attr_ok": attrs.get("frame_indices") == list(indices),
        "first_mismatch": mismatch, "frames_ok": n == len(crcs), "order_ok": mismatch is None,
    }  # fmt: skip


def soak(minutes: float, fps: float, size: int, sink_kind: str, every_s: float,
         out_dir: Path, queue_size: int = 4, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Stream for ``minutes``; return the facade's summary, samples and the recorded frames."""
    from fluorofpga import app

    sink_path = out_dir / ("soak.tif" if sink_kind == "tif" else "soak.ome.zarr")
    seconds = 60.0 * minutes
    held: dict[str, Any] = {}

    def on_start(pipeline: Any) -> None:
        keep_open = pipeline.sink  # KeepOpen(BackgroundSink(TiffSink | OmeZarrSink))
        held["file_sink"] = keep_open.sink.sink
        held["recorder"] = pipeline.sink = RecordingSink(keep_open)
        held["sampler"] = Sampler(pipeline, every_s)
        held["timer"] = threading.Timer(seconds, pipeline.stop)
        held["timer"].daemon = True
        previous = signal.getsignal(signal.SIGINT)
        held["sigint"] = previous
        signal.signal(signal.SIGINT, lambda *_: pipeline.stop())  # Ctrl-C: end early, cleanly
        held["sampler"].start()
        held["timer"].start()

    before = {"threads": threading.active_count(), "open_files": open_files()}
    t0 = time.perf_counter()
    try:
        summary = app.stream("sim", sink_path, frames=CAMERA_FRAMES, fps=fps,
                             drop="drop-oldest", queue_size=queue_size, size=size, seed=seed,
                             on_start=on_start)  # fmt: skip
    finally:
        if "timer" in held:
            held["timer"].cancel()
            signal.signal(signal.SIGINT, held["sigint"])
    held["sampler"].finish()
    wall = time.perf_counter() - t0
    after = {"threads": threading.active_count(), "open_files": open_files()}
    recorder: RecordingSink = held["recorder"]
    file_sink = held["file_sink"]
    shape = (size, size)
    if sink_kind == "tif":
        readback = verify_tiff(sink_path, recorder.crcs, shape)
    else:
        readback = verify_zarr(sink_path, recorder.crcs, recorder.indices, shape)
    readback["sink_indices_ok"] = list(file_sink.indices) == list(recorder.indices)
    readback["sink_frames_written"] = file_sink.frames_written
    readback["partial_left"] = file_sink.partial_path.exists()
    readback["bytes"] = _size_on_disk(sink_path)
    return {"summary": summary, "samples": held["sampler"].samples, "wall_s": wall,
            "written": list(recorder.indices), "readback": readback,
            "sink_path": str(sink_path), "before": before, "after": after}  # fmt: skip


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------------- report


def report(run: dict[str, Any], args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The JSON results and the Markdown table of one soak run."""
    s, samples, rb = run["summary"], run["samples"], run["readback"]
    acct = check_accounting(s["frames_in"], s["frames_out"], s["dropped"],
                            s["dropped_indices"], run["written"])  # fmt: skip
    t = [r["t_s"] for r in samples]
    mem = memory_verdict(t, [r["rss_mib"] * MIB for r in samples], args.warmup * t[-1],
                         args.max_slope, args.max_range)  # fmt: skip
    anon = memory_verdict(t, [r["anon_mib"] * MIB for r in samples], args.warmup * t[-1],
                          args.max_slope, args.max_range)  # fmt: skip
    output_ok = (rb["frames_ok"] and rb["order_ok"] and rb["sink_indices_ok"]
                 and not rb["partial_left"] and rb["frames"] == s["frames_out"]
                 and rb.get("complete_attr", True) is not False
                 and rb.get("indices_attr_ok", True))  # fmt: skip
    criteria = {
        "zero unaccounted frames": all(acct.values()),
        "output holds every written frame, in order": bool(output_ok),
        f"RSS slope (2nd half) < {args.max_slope:g} MiB/min": mem["slope_ok"],
        f"RSS max-min after warm-up < {args.max_range:g} MiB": mem["range_ok"],
    }
    after = [r for r in samples[:-1] if r["t_s"] >= args.warmup * t[-1]]  # while streaming
    files = sorted({r["open_files"] for r in after})
    threads = sorted({r["threads"] for r in after})
    loads = [r["load1"] for r in samples]
    results = {
        "passed": all(criteria.values()), "criteria": criteria,
        "config": {"minutes": args.minutes, "fps": args.fps, "size": args.size,
                   "sink": args.sink, "every_s": args.every, "queue_size": args.queue,
                   "drop_policy": s["drop_policy"], "backend": s["backend"],
                   "bundle": s["bundle"], "camera_frames": CAMERA_FRAMES},
        "accounting": acct, "memory_rss": mem, "memory_anon": anon, "readback": rb,
        "stream": {k: v for k, v in s.items() if k != "dropped_indices"},
        "wall_s": run["wall_s"],
        "written_runs": runs(run["written"]), "dropped_runs": runs(s["dropped_indices"]),
        "open_files_after_warmup": files, "threads_after_warmup": threads,
        "before_stream": run["before"], "after_stream": run["after"],
        "load1_mean": float(np.mean(loads)), "load1_max": float(np.max(loads)),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "samples": samples,
    }  # fmt: skip
    return results, _markdown(results, args)


def _markdown(r: dict[str, Any], args: argparse.Namespace) -> str:
    s, mem, anon, rb = r["stream"], r["memory_rss"], r["memory_anon"], r["readback"]
    samples = r["samples"]
    drop_pct = 100.0 * s["dropped"] / max(s["frames_in"], 1)
    fmt_slope = (lambda v: "n/a" if v is None else f"{v:+.3f}")  # noqa: E731
    fmt_range = (lambda v: "n/a" if v is None else f"{v:.1f}")  # noqa: E731
    lines = [
        f"Soak: simulated camera at {args.fps:g} fps, {args.size}², through `{s['bundle']}` "
        f"on the `{s['backend']}` accelerator into {rb['format']} ({args.sink}), "
        f"{s['drop_policy']}, for {r['wall_s'] / 60:.1f} min "
        f"(`python benchmarks/soak.py --minutes {args.minutes:g} --fps {args.fps:g} "
        f"--size {args.size} --sink {args.sink}`).",
        "",
        "| criterion | result |",
        "|---|---|",
        *(f"| {name} | {'pass' if ok else '**FAIL**'} |" for name, ok in r["criteria"].items()),
        "",
        f"- frames in {s['frames_in']}, out {s['frames_out']}, dropped {s['dropped']} "
        f"({drop_pct:.1f} %); in - out - dropped = "
        f"{s['frames_in'] - s['frames_out'] - s['dropped']}; checks: "
        + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in r["accounting"].items()),
        f"- output: {rb['frames']} frames read back ({rb['bytes'] / MIB:.0f} MiB), first "
        f"CRC mismatch: {rb['first_mismatch']}, sink's index record equals the handed-over "
        f"indices: {rb['sink_indices_ok']}, partial file left: {rb['partial_left']}",
        f"- sustained: {s['fps']:.2f} frames/s out ({s['mpix_per_s']:.3f} Mpixel/s), "
        f"process {s['process_ms_mean']:.0f} ms/frame, read {s['read_ms_mean']:.1f} ms, "
        f"hand-off to the sink thread {s['handoff_ms_mean']:.2f} ms, sink write "
        f"{s['write_ms_mean']:.2f} ms; latency p50/p95/p99 {s['latency_ms_p50']:.0f}/"
        f"{s['latency_ms_p95']:.0f}/{s['latency_ms_p99']:.0f} ms (max "
        f"{s['latency_ms_max']:.0f})",
        f"- machine load (1-min average, {r['cpus']} CPUs): mean {r['load1_mean']:.2f}, max "
        f"{r['load1_max']:.2f}",
        f"- RSS: slope over the second half {fmt_slope(mem['slope_mib_per_min'])} MiB/min "
        f"({mem['slope_samples']} samples), max-min after {mem['warmup_s']:.0f} s warm-up "
        f"{fmt_range(mem['range_mib'])} MiB; anonymous memory: slope "
        f"{fmt_slope(anon['slope_mib_per_min'])} MiB/min, range "
        f"{fmt_range(anon['range_mib'])} MiB; peak RSS {samples[-1]['peak_mib']:.0f} MiB",
        f"- while streaming after warm-up: open files {r['open_files_after_warmup']}, "
        f"threads {r['threads_after_warmup']} (the sampler's included); before / after the "
        f"stream: open files {r['before_stream']['open_files']} / "
        f"{r['after_stream']['open_files']}, threads {r['before_stream']['threads']} / "
        f"{r['after_stream']['threads']}",
        "",
        "| t (min) | RSS MiB | anon MiB | in | out | dropped | fps in/out | cpu | load | "
        "latency p50/p95/p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    step = max(1, -(-len(samples) // TABLE_ROWS))
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    for row in shown:
        lines.append(
            f"| {row['t_s'] / 60:.1f} | {row['rss_mib']:.1f} | {row['anon_mib']:.1f} | "
            f"{row['frames_in']} | {row['frames_out']} | {row['dropped']} | "
            f"{row.get('fps_in', 0):.1f}/{row.get('fps_out', 0):.2f} | "
            f"{row.get('cpu_util', 0):.2f} | {row['load1']:.1f} | "
            f"{row['latency_ms_p50']:.0f}/{row['latency_ms_p95']:.0f}/"
            f"{row['latency_ms_p99']:.0f} |")  # fmt: skip
    lines += ["", "fps in/out and cpu (process CPU-seconds per second) are over the interval "
              "since the previous row's sample; latency percentiles are cumulative."]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the soak; write ``benchmarks/results/NAME.{json,md}``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the stream, min")
    ap.add_argument("--fps", type=float, default=10.0, help="camera frame rate, frames/s")
    ap.add_argument("--size", type=int, default=256, help="frame side, pixels")
    ap.add_argument("--sink", choices=("tif", "zarr"), default="tif")
    ap.add_argument("--every", type=float, default=10.0, help="sampling interval, s")
    ap.add_argument("--queue", type=int, default=4, help="frames between camera and accelerator")
    ap.add_argument("--warmup", type=float, default=WARMUP_FRACTION,
                    help="fraction of the run left out of the RSS range criterion")
    ap.add_argument("--max-slope", type=float, default=MAX_SLOPE_MIB_PER_MIN,
                    help="pass bound of the RSS slope, MiB/min")
    ap.add_argument("--max-range", type=float, default=MAX_RANGE_MIB,
                    help="pass bound of max-min RSS after warm-up, MiB")
    ap.add_argument("--out", type=Path, default=None,
                    help="keep the output in this (new or empty) folder")
    ap.add_argument("--name", default="soak", help="results file name (without suffix)")
    args = ap.parse_args()
    if not args.minutes > 0 or not args.fps > 0 or not args.every > 0:
        ap.error("--minutes, --fps and --every must be > 0")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        if any(args.out.iterdir()):
            ap.error(f"--out {args.out}: the folder is not empty")
        out_dir = args.out
    else:
        out_dir = Path(tempfile.mkdtemp(prefix="fluorofpga-soak-"))
    try:
        run = soak(args.minutes, args.fps, args.size, args.sink, args.every, out_dir,
                   queue_size=args.queue)  # fmt: skip
        results, table = report(run, args)
    finally:
        if args.out is None:
            shutil.rmtree(out_dir, ignore_errors=True)
    write_results(args.name, results, table)
    raise SystemExit(0 if results["passed"] else 1)


if __name__ == "__main__":
    main()
