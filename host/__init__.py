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
    ``frame_processor(acc, input_format, output_format, halo)`` - ``uint16`` ADU
    frame in, restored ``uint16`` ADU frame out, through the accelerator.
Tiling (:mod:`.tiling`, pure numpy)
    ``Tile``, ``plan_tiles(frame_shape, tile_shape, halo)``,
    ``tile(frame, plan)``, ``stitch(outputs, plan, frame_shape)``,
    ``process_tiled(frame, fn, tile_shape, halo)`` - bit-identical to an untiled
    run when ``halo`` >= the receptive-field radius and the frame >= the tile.
Normalisation (:mod:`.normalize`)
    ``IntegerFormat(bits, adu_offset, adu_per_lsb)`` with ``to_int(adu)``,
    ``to_adu(q)``, ``to_dict()``, ``from_dict()``.
Sources (:mod:`.sources`), iterables of ``(index, uint16 YX frame)``
    ``SimulatedCameraSource`` (``ground_truth(index)``), ``TiffStackSource``.
Sinks (:mod:`.sinks`), ``write(index, frame)`` / ``close()``
    ``MemorySink``, ``TiffSink`` (atomic ``TYX`` stack on close).
Streaming (:mod:`.stream`)
    ``StreamPipeline(source, process, sink, queue_size, drop_policy, progress)``
    ``.run() -> StreamStats`` (frames in/out, dropped and their indices, fps,
    latency).

Bundles and backends (:mod:`.bundle`, :mod:`.emulate`)
    ``load_bundle(path=None)`` -> ``Bundle`` (default: the shipped pre-trained one):
    ``input_format``, ``output_format``, ``tile_shape``, ``halo``,
    ``accelerator(backend="emulate")``, ``restorer(acc)``. ``BundleError``.
    ``EmulatedAccelerator`` - bit-exact CPU execution of the hardware-layer graph
    (``load_hw_graph``, ``run_hw_graph`` for untiled reference runs).

Typical use::

    with SomeAccelerator(...) as acc:
        process = frame_processor(acc, in_fmt, out_fmt, halo)
        stats = StreamPipeline(SimulatedCameraSource(100, fps=30), process,
                               TiffSink("out.tif")).run()
"""

from .accelerator import (
    Accelerator,
    AcceleratorBusy,
    AcceleratorError,
    BoardNotFound,
    frame_processor,
)
from .bundle import Bundle, BundleError, default_bundle_path, load_bundle
from .emulate import EmulatedAccelerator, HwGraph, load_hw_graph, run_hw_graph
from .normalize import IntegerFormat
from .sinks import MemorySink, TiffSink
from .sources import SimulatedCameraSource, TiffStackSource
from .stream import StreamPipeline, StreamStats
from .tiling import Tile, plan_tiles, process_tiled, stitch, tile

__all__ = [
    "Bundle",
    "BundleError",
    "EmulatedAccelerator",
    "HwGraph",
    "default_bundle_path",
    "load_bundle",
    "load_hw_graph",
    "run_hw_graph",
    "Accelerator",
    "AcceleratorBusy",
    "AcceleratorError",
    "BoardNotFound",
    "IntegerFormat",
    "MemorySink",
    "SimulatedCameraSource",
    "StreamPipeline",
    "StreamStats",
    "Tile",
    "TiffSink",
    "TiffStackSource",
    "frame_processor",
    "plan_tiles",
    "process_tiled",
    "stitch",
    "tile",
]
