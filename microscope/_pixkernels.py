"""Compiled per-pixel loops of the signal tables and the calibration maps (numba), and
the emulator's threshold tables (``host.emulate``).

Each kernel does, in one pass over a flat range ``[start, stop)``, exactly what the numpy
chunk loops of :mod:`fluorofpga.microscope.signal` do in several: the same float64
operations in the same order (no fast-math, so no fused multiply-add), round half to even,
the same casts. The two paths give identical bits (``tests/test_host_restore.py``,
``tests/test_host_emulate.py``); numpy remains the reference and the fallback when numba
is not installed or ``FLUOROFPGA_NUMPY_PIXELS=1`` is set. The kernels release the GIL, so
the thread split of ``signal._in_parts`` runs them on several cores.

:func:`kernels` returns None when they are not available.
"""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np

__all__ = ["KERNELS", "kernels", "load"]

#: Pixels per block of a gather followed by arithmetic (the block's values stay in L1).
_BLOCK = 2048


def load() -> SimpleNamespace | None:
    """Compile (lazily, cached on disk) the kernels; None without numba or when disabled."""
    if os.environ.get("FLUOROFPGA_NUMPY_PIXELS", "") not in ("", "0"):
        return None
    try:
        import numba
    except Exception:  # not installed, or built for another numpy: the numpy loops
        return None

    def jit(fn: Any) -> Any:
        options = {"nogil": True, "fastmath": False, "boundscheck": False}
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError:  # no writable cache location (a read-only install)
            return numba.njit(**options)(fn)

    # Each kernel loops over slices of its arrays: with ``range(start, stop)`` indices numba
    # must allow for negative ones, which stops vectorisation (about 6x slower).

    @jit
    def encode_range(table, adu, out, start, stop):  # pragma: no cover - compiled
        a, o = adu[start:stop], out[start:stop]
        top = table.size - 1
        for i in range(a.size):
            o[i] = table[min(a[i], top)]

    @jit
    def code_counts(q, r, adu, out_max, in_max, adc_max):  # pragma: no cover - compiled
        """[saturated, passed through, residual 0, residual top] (a vectorised pass)."""
        n_sat = n_pass = n_r0 = n_rtop = 0
        for i in range(q.size):
            sat = adu[i] >= adc_max
            n_sat += sat
            n_pass += sat | (q[i] >= in_max)
            n_r0 += r[i] == 0
            n_rtop += r[i] == out_max
        return n_sat, n_pass, n_r0, n_rtop

    @jit
    def decode_range(table, q, r, adu, out, shift, out_max, in_max, adc_max, start,
                     stop):  # pragma: no cover - compiled
        qs, rs, a_s, o = q[start:stop], r[start:stop], adu[start:stop], out[start:stop]
        top = table.size - 1
        for i in range(o.size):
            pair = (((np.int64(qs[i]) << shift) & 0xFFFF) | np.int64(rs[i])) & 0xFFFF
            value = table[min(pair, top)]
            hit = (a_s[i] >= adc_max) | (qs[i] >= in_max)
            o[i] = a_s[i] if hit else value
        n_sat, n_pass, n_r0, n_rtop = code_counts(qs, rs, a_s, out_max, in_max, adc_max)
        return np.array([n_sat, n_pass, n_r0, n_rtop], np.int64)

    @jit
    def to_uniform_range(raw, hot_at, hot_value, offset, ratio, has_ratio, offset0, adc_max,
                         out, start, stop):  # pragma: no cover - compiled
        rw, off, o = raw[start:stop], offset[start:stop], out[start:stop]
        top = np.float64(adc_max)
        if has_ratio:  # (repaired - offset) * ratio + offset0, rounded, clipped
            rt = ratio[start:stop]
            for i in range(o.size):
                c = np.rint((np.float64(rw[i]) - off[i]) * rt[i] + offset0)
                o[i] = np.uint16(min(max(c, 0.0), top))
        else:
            for i in range(o.size):
                c = np.rint((np.float64(rw[i]) - off[i]) + offset0)
                o[i] = np.uint16(min(max(c, 0.0), top))
        for k in range(hot_at.size):  # hot pixels: from their repaired value
            i = hot_at[k]
            if start <= i < stop:
                c = np.float64(hot_value[k]) - offset[i]
                if has_ratio:
                    c = c * ratio[i]
                c = np.rint(c + offset0)
                out[i] = np.uint16(min(max(c, 0.0), top))
        for i in range(o.size):  # saturated stays saturated
            if rw[i] >= adc_max:
                o[i] = adc_max

    def maps_decoder(has_ratio, to_uint16, direct):
        """The maps' pixel-out for one combination (constants, so each loop is straight).

        The codes are combined as the pixel-out kernel does (``c = clip(mul·q + zero − r,
        0, ctop)``, or ``c = r`` for a direct code) and ``lut[c]`` read from a table that
        stays in L1 (``2**code_bits`` entries): the pair table's entry for codes within
        their widths (the caller checks the residual codes).
        """

        @jit
        def maps_decode_range(lut, mul, zero, ctop, q, r, raw, uni, offset, ratio, offset0,
                              out_max, in_max, adc_max, out, start,
                              stop):  # pragma: no cover - compiled
            q, r, raw, uni = q[start:stop], r[start:stop], raw[start:stop], uni[start:stop]
            offset, out = offset[start:stop], out[start:stop]
            ratio = ratio[start:stop] if has_ratio else ratio[:1]
            n_clip = n_sat = n_pass = n_r0 = n_rtop = 0
            cb = np.empty(_BLOCK, np.int64)
            buf = np.empty(_BLOCK)
            for b0 in range(0, out.size, _BLOCK):  # index, gather, then straight arithmetic
                m = min(_BLOCK, out.size - b0)
                qs, rs, rw, us = q[b0:b0 + m], r[b0:b0 + m], raw[b0:b0 + m], uni[b0:b0 + m]
                off, o = offset[b0:b0 + m], out[b0:b0 + m]
                rt = ratio[b0:b0 + m] if has_ratio else ratio[:1]
                for k in range(m):
                    if direct:
                        cb[k] = min(np.int64(rs[k]), ctop)
                    else:
                        c = np.int64(qs[k]) * mul + zero - np.int64(rs[k])
                        cb[k] = min(max(c, 0), ctop)
                for k in range(m):
                    buf[k] = lut[cb[k]]
                for k in range(m):
                    c = buf[k] - offset0  # (values - offset0) / ratio + offset
                    if has_ratio:
                        c = c / rt[k]
                    c = c + off[k]
                    sat = us[k] >= adc_max
                    hit = sat | (qs[k] >= in_max)
                    n_sat += sat
                    n_pass += hit
                    n_r0 += rs[k] == 0
                    n_rtop += rs[k] == out_max
                    c = np.float64(rw[k]) if hit else c
                    if to_uint16:
                        c = np.rint(c)
                        clipped = min(max(c, 0.0), 65535.0)
                        n_clip += clipped != c
                        c = clipped
                    o[k] = c
            return np.array([n_sat, n_pass, n_r0, n_rtop, n_clip], np.int64)

        return maps_decode_range

    maps_decode = {(has_ratio, to_uint16, direct): maps_decoder(has_ratio, to_uint16, direct)
                   for has_ratio in (False, True) for to_uint16 in (False, True)
                   for direct in (False, True)}

    @jit
    def activate(acc, lo, hi, base, table, out):  # pragma: no cover - compiled
        """``out[c, i] = table[clip(acc[c, i], lo[c], hi[c]) + base[c]]`` (the emulator's
        thresholds as a table; every sum is an exact integer, the index clipped to the
        table as ``np.take(mode="clip")`` does)."""
        top = table.size - 1
        for c in range(acc.shape[0]):
            row, o = acc[c], out[c]
            lo_c, hi_c, base_c = lo[c], hi[c], base[c]
            for i in range(row.size):
                k = np.int64(min(max(row[i], lo_c), hi_c) + base_c)
                o[i] = table[min(max(k, 0), top)]

    @jit
    def activate3(x, lo, hi, base, table, out):  # pragma: no cover - compiled
        """:func:`activate` of a ``(C, H, W)`` view of any integer-valued dtype, each value
        taken as float64 first (a standalone thresholding layer; no copy of ``x``)."""
        top = table.size - 1
        for c in range(x.shape[0]):
            lo_c, hi_c, base_c = lo[c], hi[c], base[c]
            for y in range(x.shape[1]):
                row, o = x[c, y], out[c, y]
                for i in range(row.size):
                    k = np.int64(min(max(np.float64(row[i]), lo_c), hi_c) + base_c)
                    o[i] = table[min(max(k, 0), top)]

    return SimpleNamespace(activate=activate, activate3=activate3, encode_range=encode_range,
                           decode_range=decode_range, to_uniform_range=to_uniform_range,
                           maps_decode=maps_decode)


_UNSET: Any = object()
_LOCK = threading.Lock()
#: The compiled kernels, None (numba missing or ``FLUOROFPGA_NUMPY_PIXELS=1``), or not yet
#: loaded: use :func:`kernels` (importing numba takes about a second; only pixel work pays).
KERNELS: Any = _UNSET


def kernels() -> SimpleNamespace | None:
    """The compiled kernels (loaded on first use), or None: use the numpy loops."""
    global KERNELS
    if KERNELS is _UNSET:
        with _LOCK:
            if KERNELS is _UNSET:
                KERNELS = load()
    return KERNELS
