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
  stream (a reshape keeps row-major element order, so the pixel stream is unchanged);
* ``DuplicateStreams``: every output is the input (a skip connection's fork);
* ``ElementwiseAdd`` of two streams: the exact integer sum (its join; FINN's output
  datatype always holds it). With a fork the layers carry their stream names
  (``inputs`` / ``outputs``) and the program keeps the tensors of the other branch.

Each MVAU is one BLAS product of the weights with the stacked window taps (im2col), in
float32 when every partial sum of integers is below 2**24 (checked from the weights and
the input range when the graph is compiled for a tile size), else float64 (2**53); the
thresholds are tabulated per channel. No FINN, onnx or torch: it runs on the board's own
Python (numpy 1.x).
"""

from __future__ import annotations

import json
import threading
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fluorofpga.microscope import _pixkernels

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

    @property
    def out_channels(self) -> int:
        """Values per output pixel (the last axis of an NHWC output, 1 for NCHW 1-channel)."""
        shape = self.output_shape
        return 1 if len(shape) != 4 or shape[1] == 1 else int(shape[-1])


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


_MAX_TABLE = 1 << 22  # entries of all threshold tables of one layer (else searchsorted)


def _window(layer: dict[str, Any]) -> tuple[int, int]:
    """Kernel size of a sliding-window layer (stride 1, dilation 1, not depthwise only)."""
    kh, kw = (int(k) for k in layer["ConvKernelDim"])
    stride = [int(s) for s in layer.get("Stride", [1, 1])]
    dilation = [int(d) for d in layer.get("Dilation", [1, 1])]
    if stride != [1, 1] or dilation != [1, 1] or int(layer.get("depthwise", 0)):
        raise NotImplementedError(f"{layer['name']}: only stride 1, dilation 1, non-depthwise")
    return kh, kw


def _datatype_range(name: str) -> tuple[int, int] | None:
    """Integer range of a FINN datatype name (``UINT8``, ``INT4``, ``BINARY``), else None."""
    name = str(name).upper()
    if name == "BINARY":
        return 0, 1
    for prefix, signed in (("UINT", False), ("INT", True)):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            bits = int(name[len(prefix):])
            return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return None


class _Activation:
    """``#{t in T[c] : v >= t} + act_val`` per channel c, for exact integer inputs ``v``.

    Within the range the inputs can take, the count is a step function of an integer, so
    it is tabulated (one table per channel, all in one array, indexed by the clipped
    value plus the channel's offset; below the lowest threshold the count is 0, from the
    highest on it is ``len(T[c])``). When the tables would be too large (or thresholds
    are not finite) it falls back to ``np.searchsorted`` per channel. Both count the
    thresholds, so their order in ``T[c]`` does not matter.
    """

    def __init__(self, thresholds: np.ndarray, act_val: int, channels: int,
                 lo: np.ndarray, hi: np.ndarray) -> None:
        thr = np.asarray(thresholds, dtype=np.float64)
        if thr.ndim != 2 or thr.shape[0] not in (1, channels):
            raise ValueError(f"thresholds of shape {thr.shape} for {channels} channels")
        if thr.shape[0] == 1 and channels > 1:
            thr = np.broadcast_to(thr, (channels, thr.shape[1]))
        self.sorted = np.sort(thr, axis=1)
        self.act_val = int(act_val)
        self.channels = channels
        self.range = (self.act_val, self.act_val + thr.shape[1])
        # the smallest integer type of the outputs: small tables, and the next layer's
        # copy into its padded buffer converts anyway
        self.dtype = np.result_type(np.min_scalar_type(self.range[0]),
                                    np.min_scalar_type(self.range[1]))
        self.table: np.ndarray | None = None
        if thr.size and not np.isfinite(thr).all():
            return
        if thr.shape[1]:
            t_lo = np.floor(self.sorted[:, 0]) - 1  # counts 0 here and below
            t_hi = np.ceil(self.sorted[:, -1])  # counts all from here on
        else:
            t_lo = t_hi = np.zeros(channels)
        lo_c = np.maximum(t_lo, lo).astype(np.int64)
        hi_c = np.maximum(np.minimum(t_hi, hi).astype(np.int64), lo_c)
        sizes = hi_c - lo_c + 1
        if int(sizes.sum()) > _MAX_TABLE:
            return
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        table = np.empty(int(sizes.sum()), self.dtype)
        for c in range(channels):
            values = np.arange(lo_c[c], hi_c[c] + 1, dtype=np.float64)
            table[starts[c]: starts[c] + sizes[c]] = (
                np.searchsorted(self.sorted[c], values, side="right") + self.act_val)
        self.table = table
        self.lo = lo_c[:, None].astype(np.float64)
        self.hi = hi_c[:, None].astype(np.float64)
        self.base = (starts - lo_c)[:, None].astype(np.float64)
        self.bounds: dict[np.dtype, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def bounds_for(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lo, hi, base)`` as ``(channels, 1)`` columns for accumulators of ``dtype``."""
        dtype = np.dtype(dtype)
        if dtype not in self.bounds:
            exact = np.abs(self.base).max(initial=0) < _EXACT_LIMIT_F32
            base_dtype = dtype if exact else np.dtype(np.float64)
            self.bounds[dtype] = (self.lo.astype(dtype), self.hi.astype(dtype),
                                  self.base.astype(base_dtype))
        return self.bounds[dtype]

    def __call__(self, acc: np.ndarray, idx: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Activate ``acc`` (channels, n), clobbering it; ``idx`` an intp work array."""
        if self.table is None:
            for c in range(self.channels):
                out[c] = np.searchsorted(self.sorted[c], acc[c], side="right") + self.act_val
            return out
        lo, hi, base = self.bounds_for(acc.dtype)
        kernels = _pixkernels.kernels()
        if kernels is not None and acc.ndim == 2 and out.ndim == 2:  # one compiled pass
            kernels.activate(acc, lo[:, 0], hi[:, 0], base[:, 0], self.table, out)
            return out
        np.clip(acc, lo, hi, out=acc)  # lo, hi lie within the accumulator's exact range
        # clipped, acc + base is an index in [0, 2**22]: an exact sum (base is exact in
        # acc's dtype, else float64), and the cast of an exact integer to intp is exact
        np.add(acc, base, out=idx, casting="unsafe")
        return np.take(self.table, idx, out=out, mode="clip")


class _Pool:
    """Work arrays shared by the layers of one program (they run one after the other).

    Sharing keeps the working set of a tile in cache. A layer's input is copied into its
    own padded buffer before it writes any shared array, so an output that is a view of
    a shared array is consumed before that array is written again. Padded buffers are
    shared only between layers that pad the same way (their zero border never changes).
    """

    def __init__(self) -> None:
        self.arrays: dict[tuple[Any, ...], np.ndarray] = {}

    def get(self, name: Any, shape: tuple[int, ...], dtype: Any,
            zeros: bool = False) -> np.ndarray:
        """The shared array ``name`` of this shape and dtype."""
        key = (name, shape, np.dtype(dtype).str)
        if key not in self.arrays:
            self.arrays[key] = (np.zeros if zeros else np.empty)(shape, dtype)
        return self.arrays[key]


class _Mvau:
    """One MVAU with the padding and sliding window before it, for one input size.

    The padded input lives in a buffer whose border stays zero. With a ``kh x kw``
    window over a row-major ``(C, Hp, Wp)`` buffer, the window's tap ``(ky, kx)`` for all
    outputs is one contiguous slice of the flattened buffer, starting at ``ky·Wp + kx``
    (outputs then come out on a grid ``Wp`` wide, whose last ``kw − 1`` columns are
    discarded). The ``kw`` taps of window row 0 are stacked (rows ordered (kx, channel)
    as FINN's ``ConvolutionInputGenerator``), ``kh`` rows longer than the output; window
    row ``ky`` is the same stack shifted by ``ky·Wp`` columns. One BLAS product of all
    window rows' weights with the stack gives every row's partial sums; shifted by
    ``ky·Wp`` columns and added they are the accumulator. (One product per layer: BLAS
    threads meet once per layer, which matters on a loaded machine.)

    Exactness: the inputs and weights are integers and the largest possible
    ``sum(|w|·|x|)`` of an output is below 2**24 (float32) or 2**53 (float64): every
    partial sum BLAS forms in any order is an exactly representable integer.
    """

    def __init__(self, layer: dict[str, Any], arrays: dict[str, np.ndarray],
                 shape: tuple[int, int, int], lo: float, hi: float,
                 pad: tuple[int, int, int, int], window: tuple[int, int],
                 pool: _Pool) -> None:
        name = layer["name"]
        if int(layer.get("binaryXnorMode", 0)):
            raise NotImplementedError(f"{name}: binary XNOR mode is not emulated")
        c, h, w = shape
        top, left, bottom, right = pad
        kh, kw = window
        hp, wp = h + top + bottom, w + left + right
        self.ho, self.wo = hp - kh + 1, wp - kw + 1
        if self.ho < 1 or self.wo < 1:
            raise ValueError(f"{name}: a {kh}x{kw} window does not fit a {hp}x{wp} input")
        weights = np.asarray(arrays[layer["weights"]], dtype=np.float64)
        k = kh * kw * c
        if weights.ndim != 2 or weights.shape[0] != k:
            raise ValueError(f"{name}: weights {weights.shape} for {k} inputs per output")
        lo, hi = min(lo, 0.0) if any(pad) else lo, max(hi, 0.0) if any(pad) else hi
        bound = float((np.abs(weights) * max(abs(lo), abs(hi))).sum(axis=0).max(initial=0))
        if bound >= _EXACT_LIMIT:
            raise OverflowError(f"{name}: accumulator may exceed 2**53; not exact")
        # float32 BLAS is exact while every partial sum stays below 2**24, float64 below 2**53
        self.dtype = np.dtype(np.float32 if bound < _EXACT_LIMIT_F32 else np.float64)
        co = weights.shape[1]
        # (Co, kw·C) per window row ky: FINN orders the rows of `weights` (ky, kx, channel)
        # (kh·Co, kw·C): the weights of window row ky (FINN orders the rows of `weights`
        # (ky, kx, channel)) in rows ky·Co .. (ky+1)·Co, one BLAS product for all rows
        self.weights = np.ascontiguousarray(np.concatenate(
            [weights[ky * kw * c: (ky + 1) * kw * c].T for ky in range(kh)]), dtype=self.dtype)
        acc_lo = np.minimum(weights * lo, weights * hi).sum(axis=0)
        acc_hi = np.maximum(weights * lo, weights * hi).sum(axis=0)
        self.top, self.left, self.h, self.w = top, left, h, w
        # outputs on the Wp-wide grid: ho rows of wp, the last kw - 1 columns discarded;
        # kw - 1 spare zeros after each channel keep the last taps inside the buffer
        self.padded = pool.get(("padded", top, left, h, w), (c, hp * wp + kw - 1),
                               self.dtype, zeros=True)
        self.grid = self.padded[:, : hp * wp].reshape(c, hp, wp)
        self.length = self.ho * wp
        self.kw = kw
        self.cols = pool.get("cols", (kw * c, hp * wp), self.dtype)  # window row 0, all kh
        self.acc = pool.get("acc", (co, self.length), self.dtype)
        self.kh = kh
        self.rows = pool.get("rows", (kh * co, hp * wp), self.dtype) if kh > 1 else None
        self.pool = pool
        self.wp, self.channels, self.out_channels = wp, c, co
        self.activation: _Activation | None = None
        if not int(layer.get("noActivation", 0)) and "thresholds" in layer:
            self.activation = _Activation(arrays[layer["thresholds"]], int(layer.get(
                "ActVal", 0)), co, acc_lo, acc_hi)
            self.range = self.activation.range
            self.idx = pool.get("idx", (co, self.length), np.intp)
            self.values = pool.get("values", (co, self.length), self.activation.dtype)
        else:
            self.range = (float(acc_lo.min(initial=0)), float(acc_hi.max(initial=0)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` in, ``(Co, Ho, Wo)`` out (a view of this layer's buffers)."""
        self.grid[:, self.top: self.top + self.h, self.left: self.left + self.w] = x
        c, n, wp = self.channels, self.length, self.wp
        span = self.cols.shape[1]
        for kx in range(self.kw):
            self.cols[kx * c: (kx + 1) * c] = self.padded[:, kx: kx + span]
        if self.rows is None:
            np.matmul(self.weights, self.cols[:, :n], out=self.acc)
        else:  # window row ky's products, shifted ky rows up, summed
            co, rows = self.out_channels, self.rows
            np.matmul(self.weights, self.cols, out=rows)
            np.add(rows[:co, :n], rows[co: 2 * co, wp: wp + n], out=self.acc)
            for ky in range(2, self.kh):
                self.acc += rows[ky * co: (ky + 1) * co, ky * wp: ky * wp + n]
        out = self.acc
        if self.activation is not None:
            out = self.activation(self.acc, self.idx, self.values)
        return out.reshape(self.out_channels, self.ho, self.wp)[:, :, : self.wo]


class _Threshold:
    """A standalone ``Thresholding`` layer."""

    def __init__(self, layer: dict[str, Any], arrays: dict[str, np.ndarray],
                 shape: tuple[int, int, int], lo: float, hi: float) -> None:
        c = shape[0]
        self.shape = shape
        self.activation = _Activation(arrays[layer["thresholds"]], int(layer.get("ActVal", 0)),
                                      c, np.full(c, lo), np.full(c, hi))
        self.range = self.activation.range
        self.values = np.empty((c, shape[1] * shape[2]), self.activation.dtype)
        self.idx = np.empty(self.values.shape, np.intp)
        self.acc = np.empty(self.values.shape, np.float64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` in and out."""
        act = self.activation
        kernels = _pixkernels.kernels()
        if kernels is not None and act.table is not None and x.shape == self.shape:
            lo, hi, base = act.bounds_for(self.acc.dtype)  # x read as float64, uncopied
            out = self.values.reshape(self.shape)
            kernels.activate3(x, lo[:, 0], hi[:, 0], base[:, 0], act.table, out)
            return out
        self.acc.reshape(self.shape)[...] = x
        return act(self.acc, self.idx, self.values).reshape(self.shape)


class _Pad:
    """A padding that no MVAU absorbs."""

    def __init__(self, pad: tuple[int, int, int, int], lo: float, hi: float) -> None:
        self.pad = pad
        self.range = (min(lo, 0.0), max(hi, 0.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        top, left, bottom, right = self.pad
        return np.pad(x, ((0, 0), (top, bottom), (left, right)))


class _Store:
    """Keep a copy of the stream under the names of the tensors it is (a fork's outputs,
    or a branch left for the other one); the stream passes on unchanged."""

    def __init__(self, names: Sequence[str], env: dict[str, np.ndarray],
                 value_range: tuple[float, float]) -> None:
        self.names, self.env, self.range = list(names), env, value_range

    def __call__(self, x: np.ndarray) -> np.ndarray:
        kept = np.array(x, copy=True)  # x may be a view of a buffer the next layer reuses
        for n in self.names:
            self.env[n] = kept
        return x


class _Load:
    """Continue with a kept tensor (the other branch of a fork)."""

    def __init__(self, name: str, env: dict[str, np.ndarray],
                 value_range: tuple[float, float]) -> None:
        self.name, self.env, self.range = name, env, value_range

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.env[self.name]


class _AddKept:
    """``ElementwiseAdd`` of the stream and a kept tensor: exact integer sum (int64)."""

    def __init__(self, name: str, env: dict[str, np.ndarray],
                 value_range: tuple[float, float]) -> None:
        self.name, self.env, self.range = name, env, value_range

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.rint(x).astype(np.int64) + np.rint(self.env[self.name]).astype(np.int64)


class _Program:
    """The graph compiled for one input size and value range: layers with their buffers."""

    def __init__(self, graph: HwGraph, shape: tuple[int, int, int], lo: float,
                 hi: float) -> None:
        steps: list[Any] = []
        pool = _Pool()
        pad = (0, 0, 0, 0)
        window: tuple[int, int] | None = None
        c, h, w = shape
        env: dict[str, np.ndarray] = {}  # tensors kept for the other branch of a fork
        kept: dict[str, tuple[int, int, int, float, float]] = {}  # their (c, h, w, lo, hi)
        current: str | None = None  # name of the stream being followed (branched graphs)

        def add(step: Any) -> None:
            nonlocal lo, hi
            steps.append(step)
            lo, hi = (float(v) for v in step.range)

        def flush(name: str) -> None:
            """Apply a pending padding before the stream forks, joins or is left."""
            nonlocal pad, h, w
            if window is not None:
                raise NotImplementedError(f"{name}: a sliding window must feed an MVAU")
            if any(pad):
                add(_Pad(pad, lo, hi))
                h, w = h + pad[0] + pad[2], w + pad[1] + pad[3]
                pad = (0, 0, 0, 0)

        def switch(name: str, to: str) -> None:
            """Leave the current stream (kept) and continue with the kept tensor ``to``."""
            nonlocal c, h, w, lo, hi
            flush(name)
            if to not in kept:
                raise NotImplementedError(f"{name}: input {to} comes from no earlier layer")
            if current is not None and current not in kept:
                add(_Store([current], env, (lo, hi)))
                kept[current] = (c, h, w, lo, hi)
            c, h, w, lo2, hi2 = kept[to]
            add(_Load(to, env, (lo2, hi2)))

        for layer in graph.layers:
            op = layer["op"]
            ins, outs = layer.get("inputs"), layer.get("outputs")
            if ins and current is not None and op != "ElementwiseAdd" and ins[0] != current:
                switch(layer["name"], ins[0])
            if window is not None and op not in ("MVAU", "Reshape",
                                                 "StreamingDataWidthConverter",
                                                 "StreamingFIFO"):
                raise NotImplementedError(f"{layer['name']}: a sliding window must feed an "
                                          "MVAU")
            if op == "FMPadding":
                more = tuple(int(p) for p in layer["Padding"])
                pad = tuple(a + b for a, b in zip(pad, more, strict=True))
            elif op == "ConvolutionInputGenerator":
                window = _window(layer)
            elif op == "MVAU":
                step = _Mvau(layer, graph.arrays, (c, h, w), lo, hi, pad, window or (1, 1),
                             pool)
                add(step)
                c, h, w = step.out_channels, step.ho, step.wo
                pad, window = (0, 0, 0, 0), None
            elif op == "Thresholding":
                if any(pad):
                    add(_Pad(pad, lo, hi))
                    h, w = h + pad[0] + pad[2], w + pad[1] + pad[3]
                    pad = (0, 0, 0, 0)
                add(_Threshold(layer, graph.arrays, (c, h, w), lo, hi))
            elif op == "DuplicateStreams":
                if not outs:
                    raise NotImplementedError(f"{layer['name']}: a fork without stream names")
                flush(layer["name"])
                add(_Store(outs, env, (lo, hi)))
                kept.update({o: (c, h, w, lo, hi) for o in outs})
            elif op == "ElementwiseAdd":
                if not ins or len(ins) != 2:
                    raise NotImplementedError(f"{layer['name']}: only the sum of two streams "
                                              "(named) is emulated")
                if current not in ins:
                    switch(layer["name"], ins[0])
                    current = ins[0]
                flush(layer["name"])
                other = ins[1] if ins[0] == current else ins[0]
                if other not in kept:
                    raise NotImplementedError(f"{layer['name']}: input {other} comes from "
                                              "no earlier layer")
                oc, oh, ow, olo, ohi = kept[other]
                if (oc, oh, ow) != (c, h, w):
                    raise ValueError(f"{layer['name']}: adds {(c, h, w)} and {(oc, oh, ow)}")
                add(_AddKept(other, env, (lo + olo, hi + ohi)))
            elif op in ("Reshape", "StreamingDataWidthConverter", "StreamingFIFO"):
                pass
            else:
                raise NotImplementedError(f"{layer['name']}: {op} is not emulated")
            if outs:
                current = outs[0]
        if window is not None:
            raise NotImplementedError("the graph ends in a sliding window without its MVAU")
        if any(pad):
            add(_Pad(pad, lo, hi))
        self.steps = steps
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` integers in, ``(C', H', W')`` int64 out."""
        with self.lock:
            for step in self.steps:
                x = step(x)
            return np.rint(x).astype(np.int64) if x.dtype.kind == "f" else x.astype(np.int64)


def _program(graph: HwGraph, shape: tuple[int, int, int], lo: int, hi: int) -> _Program:
    """The compiled program for inputs of ``shape`` within ``[lo, hi]`` (cached)."""
    known = _datatype_range(graph.input_datatype)
    if known is not None and known[0] <= lo and hi <= known[1]:
        lo, hi = known  # one program for every input the datatype allows
    key = (shape, lo, hi)
    programs = graph.__dict__.setdefault("_programs", {})
    if key not in programs:
        if len(programs) >= 8:
            programs.clear()
        programs[key] = _Program(graph, shape, float(lo), float(hi))
    return programs[key]


def run_hw_graph(graph: HwGraph, image: np.ndarray) -> np.ndarray:
    """Run the graph on one integer image of any size (H, W) or (H, W, C); int64 out.

    The compiled tile size is not enforced here (the layers are size-agnostic), so the
    same function gives the untiled reference a tiled run must reproduce.
    """
    x = np.asarray(image)
    if x.dtype.kind not in "ui":
        raise ValueError(f"image must hold integers, got {x.dtype}")
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 3:
        x = x.transpose(2, 0, 1)  # channels first inside
    else:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {x.shape}")
    lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
    out = _program(graph, tuple(int(s) for s in x.shape), lo, hi)(x)
    return out[0] if out.shape[0] == 1 else out.transpose(1, 2, 0)


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
        super().__init__(tile_shape or graph.tile_shape, in_bits, out_bits,
                         in_channels=int(graph.image.get("channels", 1)),
                         out_channels=graph.out_channels)
        self.graph = graph

    def _compute(self, tile: np.ndarray) -> np.ndarray:
        out = run_hw_graph(self.graph, tile)
        return out.astype(np.uint8 if self.out_bits <= 8 else np.uint16)
