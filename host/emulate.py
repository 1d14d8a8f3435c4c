"""``emulate`` backend: bit-exact CPU execution of the compiled hardware-layer graph.

This is the golden model of the deployed accelerator. It reads the dataflow partition
exported by ``fluorofpga.hw`` (``hw_layers.json`` + ``hw_layers.npz``) and executes each
layer with numpy exactly as FINN defines it:

* ``FMPadding``: zero padding ``[top, left, bottom, right]``;
* ``ConvolutionInputGenerator``: sliding windows, vector order (ky, kx, channel);
* ``MVAU``: integer matrix product, then multi-threshold activation
  ``out = #{t in T[c] : acc >= t} + ActVal`` (or the raw accumulator if
  ``noActivation``);
* ``Thresholding``: the same activation on its input;
* ``Reshape``, ``StreamingDataWidthConverter``, ``StreamingFIFO``: identity on the
  stream (a reshape keeps row-major element order, so the pixel stream is unchanged).

Integer products are computed in float64 BLAS, exact for |values| < 2**53. No FINN, onnx
or torch: it runs on the board's own Python.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .accelerator import Accelerator

_EXACT_LIMIT = 2.0**53
_EXACT_LIMIT_F32 = 2.0**24


@dataclass
class HwGraph:
    """A loaded hardware-layer graph: layer dicts in stream order plus their arrays."""

    layers: list[dict[str, Any]]
    arrays: dict[str, np.ndarray]
    input_shape: list[int]
    output_shape: list[int]
    input_datatype: str
    output_datatype: str
    image: dict[str, int]

    @property
    def tile_shape(self) -> tuple[int, int]:
        """(H, W) of the image stream the graph was compiled for."""
        return (int(self.image["height"]), int(self.image["width"]))


_RECREATE = "re-create the bundle (`fluorofpga train`) or copy it again"
# What numpy / zipfile raise on a truncated or damaged .npz (BadZipFile on a bad CRC too)
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def load_hw_graph(json_path: str | Path) -> HwGraph:
    """Load ``hw_layers.json`` and the ``hw_layers.npz`` beside it, checking both.

    Every array is read (so a truncated or corrupt archive fails its CRC here, not in the
    middle of a stream), and every array a layer refers to must be present.

    Raises:
        BundleError: (a ``ValueError``) either file is missing, truncated, corrupt, of
            another format or version, or inconsistent; the message names the file and
            says to re-create the bundle.
    """
    from .bundle import BundleError

    json_path = Path(json_path)
    npz_path = json_path.with_suffix(".npz")
    for path in (json_path, npz_path):
        if not path.is_file():
            raise BundleError(f"{path}: hardware-layer file missing; {_RECREATE}")
    try:
        spec = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{json_path}: truncated or corrupt ({e}); {_RECREATE}") from None
    if not isinstance(spec, dict) or spec.get("format") != "fluorofpga-hw-layers" or (
        spec.get("version") != 1
    ):
        raise BundleError(f"{json_path}: not a version-1 fluorofpga hardware-layer file")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except _NPZ_ERRORS as e:
        raise BundleError(
            f"{npz_path}: truncated or corrupt ({type(e).__name__}: {e}); {_RECREATE}"
        ) from None
    try:
        graph = HwGraph(
            layers=list(spec["layers"]),
            arrays=arrays,
            input_shape=spec["input"]["shape"],
            output_shape=spec["output"]["shape"],
            input_datatype=spec["input"]["datatype"],
            output_datatype=spec["output"]["datatype"],
            image=spec["image"],
        )
        graph.tile_shape  # noqa: B018 - checks image height/width
        missing = [
            f"{layer['name']}.{key}={layer[key]}"
            for layer in graph.layers
            for key in ("weights", "thresholds")
            if key in layer and layer[key] not in arrays
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{json_path}: incomplete hardware-layer file ({e!r}); {_RECREATE}"
                          ) from None
    if missing:
        raise BundleError(
            f"{npz_path}: lacks the arrays {', '.join(missing)} that {json_path.name} refers "
            f"to; {_RECREATE}"
        )
    return graph


def _pad(x: np.ndarray, layer: dict[str, Any]) -> np.ndarray:
    top, left, bottom, right = (int(p) for p in layer["Padding"])
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def _window(layer: dict[str, Any]) -> tuple[int, int]:
    """Kernel size of a sliding-window layer (stride 1, dilation 1, not depthwise only)."""
    kh, kw = (int(k) for k in layer["ConvKernelDim"])
    stride = [int(s) for s in layer.get("Stride", [1, 1])]
    dilation = [int(d) for d in layer.get("Dilation", [1, 1])]
    if stride != [1, 1] or dilation != [1, 1] or int(layer.get("depthwise", 0)):
        raise NotImplementedError(f"{layer['name']}: only stride 1, dilation 1, non-depthwise")
    return kh, kw


def _conv(x: np.ndarray, window: tuple[int, int], w: np.ndarray, ftype: type) -> np.ndarray:
    """The sliding window + matrix product of an MVAU, without materialising the window.

    ``w`` rows are ordered (ky, kx, channel) like FINN's ``ConvolutionInputGenerator``
    output; the result is the sum over kernel taps of the shifted single-tap products,
    each a plain 2-D BLAS product. All values are integers and every partial sum stays
    below the exactness limit of ``ftype`` (checked by the caller), so the order of the
    additions does not matter: the result is exact.
    """
    kh, kw = window
    n, h, wd, c = x.shape
    oh, ow = h - kh + 1, wd - kw + 1
    flat = x.reshape(n * h * wd, c)
    acc = np.zeros((n, oh, ow, w.shape[1]), dtype=ftype)
    for ky in range(kh):
        for kx in range(kw):
            k = ky * kw + kx
            tap = (flat @ w[k * c : (k + 1) * c]).reshape(n, h, wd, -1)
            acc += tap[:, ky : ky + oh, kx : kx + ow]
    return acc


def _threshold(acc: np.ndarray, thresholds: np.ndarray, act_val: int) -> np.ndarray:
    """``#{t in T[c] : acc[..., c] >= t} + act_val`` per channel c (T sorted ascending)."""
    channels = acc.shape[-1]
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.shape[0] == 1 and channels > 1:
        thr = np.broadcast_to(thr, (channels, thr.shape[1]))
    cols = np.ascontiguousarray(acc.reshape(-1, channels).T)
    out = np.empty(cols.shape, dtype=np.int32)
    for ch in range(channels):
        out[ch] = np.searchsorted(thr[ch], cols[ch], side="right")
    return (out.T + int(act_val)).reshape(acc.shape)


def _mvau(
    x: np.ndarray, layer: dict[str, Any], arrays: dict[str, np.ndarray],
    window: tuple[int, int] | None,
) -> np.ndarray:
    if int(layer.get("binaryXnorMode", 0)):
        raise NotImplementedError(f"{layer['name']}: binary XNOR mode is not emulated")
    w = arrays[layer["weights"]]
    bound = float(np.abs(x).max(initial=0)) * float(np.abs(w).sum(axis=0).max(initial=0))
    if bound >= _EXACT_LIMIT:
        raise OverflowError(f"{layer['name']}: accumulator may exceed 2**53; not exact")
    # float32 BLAS is exact while every partial sum stays below 2**24, float64 below 2**53
    ftype = np.float32 if bound < _EXACT_LIMIT_F32 else np.float64
    wf = w.astype(ftype)
    xf = x.astype(ftype, copy=False)
    if window is not None:
        acc = _conv(xf, window, wf, ftype)
    else:
        acc = (xf.reshape(-1, xf.shape[-1]) @ wf).reshape(*xf.shape[:-1], -1)
    if int(layer.get("noActivation", 0)) or "thresholds" not in layer:
        return np.rint(acc).astype(np.int64 if ftype is np.float64 else np.int32)
    return _threshold(acc, arrays[layer["thresholds"]], int(layer.get("ActVal", 0)))


def run_hw_graph(graph: HwGraph, image: np.ndarray) -> np.ndarray:
    """Run the graph on one integer image of any size (H, W) or (H, W, C); int64 out.

    The compiled tile size is not enforced here (the layers are size-agnostic), so the
    same function gives the untiled reference a tiled run must reproduce.
    """
    x = np.asarray(image)
    if x.dtype.kind not in "ui":
        raise ValueError(f"image must hold integers, got {x.dtype}")
    if x.ndim == 2:
        x = x[:, :, None]
    x = x[None].astype(np.int32)
    window = None  # a sliding window waiting for its MVAU (fused, never materialised)
    for layer in graph.layers:
        op = layer["op"]
        if op == "FMPadding":
            x = _pad(x, layer)
        elif op == "ConvolutionInputGenerator":
            window = _window(layer)
        elif op == "MVAU":
            x = _mvau(x, layer, graph.arrays, window)
            window = None
        elif op == "Thresholding":
            x = _threshold(x, graph.arrays[layer["thresholds"]],
                           int(layer.get("ActVal", 0)))
        elif op in ("Reshape", "StreamingDataWidthConverter", "StreamingFIFO"):
            continue
        else:
            raise NotImplementedError(f"{layer['name']}: {op} is not emulated")
        if window is not None and op != "ConvolutionInputGenerator":
            raise NotImplementedError(f"{layer['name']}: a sliding window must feed an MVAU")
    out = x[0]
    return out[:, :, 0] if out.shape[-1] == 1 else out


class EmulatedAccelerator(Accelerator):
    """The ``emulate`` backend: executes the hardware-layer graph bit-exactly on the CPU.

    Args:
        graph: loaded hardware-layer graph (:func:`load_hw_graph`).
        in_bits, out_bits: pixel widths (from the bundle manifest).
        tile_shape: compiled tile; defaults to the graph's input shape.
    """

    name = "emulate"

    def __init__(
        self,
        graph: HwGraph,
        in_bits: int = 8,
        out_bits: int = 8,
        tile_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__(tile_shape or graph.tile_shape, in_bits, out_bits)
        self.graph = graph

    def _compute(self, tile: np.ndarray) -> np.ndarray:
        out = run_hw_graph(self.graph, tile)
        return out.astype(np.uint8 if self.out_bits <= 8 else np.uint16)
