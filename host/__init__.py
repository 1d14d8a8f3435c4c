"""fluorofpga.host: the driver that runs on the board's ARM (PYNQ, Python 3.10, numpy 1.x).

Imports numpy and ``fluorofpga.microscope`` only (never torch, Brevitas, FINN,
qonnx or ``fluorofpga.hw``), so it runs on the board's own Python.

Public API
----------
Accelerator interface (:mod:`.accelerator`)
    ``Accelerator`` - abstract fixed-tile integer accelerator: ``tile_shape``,
    ``in_bits``, ``out_bits``, ``name``; ``submit(tile)`` / ``wait()`` /
    ``run(tile)``, ``busy``, ``close()``, context manager. Backends implement
    ``_compute(tile)`` (or ``_start`` / ``_finish`` for asynchronous devices).
    ``AcceleratorError``, ``AcceleratorBusy``, ``BoardNotFound``.
Restoration (:mod:`.restore`)
    ``FrameRestorer(acc, tables, halo, calibration=None, dtype="uint16")`` - raw ADU
    frame in, restored ``uint16``/``float32`` ADU out: per-pixel calibration maps,
    pixel-in table (ADU -> GAT code), accelerator tile by tile, pixel-out (residual ->
    clean code -> ADU); ``.counts`` (saturated / above-range pixels passed through,
    residual codes at their limits, clipped outputs). The tables are
    ``fluorofpga.microscope.signal.SignalTables``. ``.stages()``: ``pack`` ->
    ``accelerate`` -> ``unpack`` (a ``Packed`` frame between them), run on their own
    threads by ``StreamPipeline``.
Tiling (:mod:`.tiling`, pure numpy)
    ``Tile``, ``plan_tiles(frame_shape, tile_shape, halo)``,
    ``tile(frame, plan)``, ``stitch(outputs, plan, frame_shape)``,
    ``process_tiled(frame, fn, tile_shape, halo)`` - bit-identical to an untiled
    run when ``halo`` >= the receptive-field radius and the frame >= the tile.
Sources (:mod:`.sources`), iterables of ``(index, uint16 YX frame)``
    ``SimulatedCameraSource`` (``ground_truth(index)``), ``TiffStackSource`` (a file or a
    folder of TIFFs, memory-mapped or page by page, never loaded whole),
    ``GenICamSource`` (``harvesters``, optional), ``IterableSource`` (any frames),
    ``ZmqSource`` (:mod:`.netstream`, frames from a ``ZmqSink``).
Sinks (:mod:`.sinks`), ``write(index, frame)`` / ``close()`` / ``abort()``
    ``MemorySink``, ``TiffSink`` (frame by frame into ``<name>.partial.tif``, renamed on
    a clean ``close()``; ``abort()`` keeps the marked partial file), ``OmeZarrSink``
    (appended frame by frame through ``ome-zarr``, ``<name>.partial.zarr`` until
    complete), ``ZmqSink`` (:mod:`.netstream`, PUSH/PUB with index, shape, dtype and
    calibration per message), ``open_sink(target)``, ``BackgroundSink`` (writes on its
    own thread behind a bounded queue that never drops), ``KeepOpen``.
Streaming (:mod:`.stream`, :mod:`.display`)
    ``StreamPipeline(source, process, sink, queue_size, drop_policy, progress, staged)``
    ``.run() -> StreamStats`` (frames in/out, dropped and their indices, fps and
    rolling fps, latency mean/max/p50/p95/p99, read/process/write ms per frame and
    ``stage_ms_mean`` per stage); a ``process`` with ``stages()`` runs as a pipeline
    of threads, bounded queues between them, frames dropped only before the first;
    ``drop_policy``: ``block``, ``drop-oldest``, ``drop-newest``; ``.stop()`` ends a
    stream cleanly. ``live_display(total)``: ``rich`` panel in a terminal, ipywidgets
    progress in Jupyter (text without ipywidgets).

Live SIM (:mod:`.simstream`)
    ``SimGrouper(source, max_frames)`` - raw frames ``(index, frame[, position])`` in,
    complete angle-major groups ``(group, (9, Y, X))`` out; a lost frame, frames out of
    order or a stream ending mid-group discard the group as a ``GroupEvent`` (kind,
    frame indices, reason), counted, never reconstructed. ``SimReconstructor`` - the
    classical Wiener (``wiener_sim``) of one group with fixed parameters (loaded, or
    estimated from the first group), drift checked every N groups.
    ``SimulatedSimCameraSource`` - raw SIM frames of the forward model with positions.
    ``SimReconstructor(..., hardware=restorer)`` runs the same Wiener through a
    Wiener-SIM bundle instead (below).
Wiener SIM through a bundle (:mod:`.wienerrestore`)
    ``WienerSimRestorer`` (``Bundle.wiener_restorer(acc, zero_adu)``) - a raw 9-frame
    group and its measured parameters in, the 2x image (ADU above zero) out: linear
    codes, ``demodulate_int`` with registers from the parameters, the bundle's filter on
    the accelerator; ``check_design`` / ``check_optics`` refuse parameters or optics the
    bundle was not compiled for. ``Bundle.is_wiener``, ``Bundle.linear_codes``.

Bundles and backends (:mod:`.bundle`, :mod:`.emulate`)
    ``load_bundle(path=None)`` -> ``Bundle`` (default: the shipped pre-trained one;
    manifest version 2, version 1 refused): ``signal`` (``SignalSpec``),
    ``tables(noise, adc_max)``, ``tile_shape``, ``halo``,
    ``accelerator(backend="emulate")``, ``restorer(acc, noise, calibration, dtype)``.
    ``BundleError``. ``default_bundle_path()`` (KV260), ``shipped_bundle_path(board)``
    (the shipped bundle compiled for a board: ``pynq-z2`` has its own),
    ``default_sim_bundle_path()`` (the learned 3-frame SIM bundle).
    ``EmulatedAccelerator`` - bit-exact CPU execution of the hardware-layer graph
    (``load_hw_graph``, ``run_hw_graph`` for untiled reference runs).
    ``PynqAccelerator`` (:mod:`.pynq_backend`) - the bitstream on a PYNQ board: AXI DMA
    with two tiles in flight, named kernel registers, ``load_tables``, ``reset()`` after
    a DMA error or timeout (``pynq`` imported lazily; tests: ``tests/pynq_standin.py``).
    Denoiser and SIM bundles alike: a SIM bundle streams channels-last tiles (``frames``
    codes in, ``upscale²`` out; the kernel's ``REG_CHANNELS`` checked), its tables stay
    on the host.

Typical use::

    bundle = load_bundle()
    with bundle.accelerator("emulate") as acc:
        process = bundle.restorer(acc, NoiseModel.from_calibration(cal), cal)
        stats = StreamPipeline(SimulatedCameraSource(100, fps=30), process,
                               TiffSink("out.tif")).run()
"""

from .accelerator import (
    Accelerator,
    AcceleratorBusy,
    AcceleratorError,
    BoardNotFound,
)
from .bundle import (
    Bundle,
    BundleError,
    default_bundle_path,
    default_sim_bundle_path,
    load_bundle,
    shipped_bundle_path,
)
from .display import live_display
from .emulate import EmulatedAccelerator, HwGraph, load_hw_graph, run_hw_graph
from .netstream import ZmqSink, ZmqSource
from .pynq_backend import PynqAccelerator
from .restore import OUTPUT_DTYPES, FrameRestorer, Packed
from .simstream import GroupEvent, SimGrouper, SimReconstructor, SimulatedSimCameraSource
from .sinks import BackgroundSink, KeepOpen, MemorySink, OmeZarrSink, TiffSink, open_sink
from .sources import (
    CameraError,
    GenICamSource,
    IterableSource,
    SimulatedCameraSource,
    TiffStackSource,
)
from .stream import DROP_POLICIES, StreamPipeline, StreamStats
from .tiling import Tile, plan_tiles, process_tiled, stitch, tile

__all__ = [
    "Bundle",
    "BundleError",
    "EmulatedAccelerator",
    "PynqAccelerator",
    "HwGraph",
    "default_bundle_path",
    "shipped_bundle_path",
    "default_sim_bundle_path",
    "load_bundle",
    "load_hw_graph",
    "run_hw_graph",
    "Accelerator",
    "AcceleratorBusy",
    "AcceleratorError",
    "BoardNotFound",
    "BackgroundSink",
    "CameraError",
    "DROP_POLICIES",
    "GenICamSource",
    "IterableSource",
    "OmeZarrSink",
    "ZmqSink",
    "ZmqSource",
    "live_display",
    "open_sink",
    "FrameRestorer",
    "OUTPUT_DTYPES",
    "KeepOpen",
    "MemorySink",
    "Packed",
    "SimulatedCameraSource",
    "SimulatedSimCameraSource",
    "GroupEvent",
    "SimGrouper",
    "SimReconstructor",
    "StreamPipeline",
    "StreamStats",
    "Tile",
    "TiffSink",
    "TiffStackSource",
    "plan_tiles",
    "process_tiled",
    "stitch",
    "tile",
]
