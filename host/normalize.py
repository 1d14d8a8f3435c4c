"""Camera ADU <-> accelerator integer formats.

Camera frames are ``uint16`` ADU. The accelerator takes and returns unsigned
integers of ``bits`` bits. One :class:`IntegerFormat` describes one side::

    q   = clip(round((adu - adu_offset) / adu_per_lsb), 0, 2**bits - 1)
    adu = clip(round(q * adu_per_lsb + adu_offset), 0, 65535)

Rounding is numpy's round-half-to-even, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["IntegerFormat"]

_UINT16_MAX = np.iinfo(np.uint16).max
_MAX_BITS = 16


def _check_unsigned_2d(name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind != "u":
        raise ValueError(
            f"{name} must be an unsigned integer array (camera ADU are uint16), got dtype "
            f"{arr.dtype}; convert with .astype(np.uint16) after checking the value range"
        )
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (Y, X) frame, got shape {arr.shape}")
    return arr


@dataclass(frozen=True)
class IntegerFormat:
    """An unsigned integer pixel format and its mapping to camera ADU.

    Attributes:
        bits: Width of the unsigned integer, 1..16.
        adu_offset: ADU value that maps to integer 0 (camera offset / black level).
        adu_per_lsb: ADU per integer step (> 0).
    """

    bits: int
    adu_offset: float
    adu_per_lsb: float

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or int(self.bits) != self.bits:
            raise ValueError(f"bits must be an integer, got {self.bits!r}")
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "adu_offset", float(self.adu_offset))
        object.__setattr__(self, "adu_per_lsb", float(self.adu_per_lsb))
        if not 1 <= self.bits <= _MAX_BITS:
            raise ValueError(f"bits must be in 1..{_MAX_BITS}, got {self.bits}")
        if not math.isfinite(self.adu_offset):
            raise ValueError(f"adu_offset must be finite, got {self.adu_offset!r}")
        if not (math.isfinite(self.adu_per_lsb) and self.adu_per_lsb > 0):
            raise ValueError(f"adu_per_lsb must be finite and > 0, got {self.adu_per_lsb!r}")

    @property
    def max_value(self) -> int:
        """Largest representable integer, ``2**bits - 1``."""
        return (1 << int(self.bits)) - 1

    @property
    def dtype(self) -> np.dtype:
        """Smallest numpy unsigned dtype holding ``bits`` bits (uint8 or uint16)."""
        return np.dtype(np.uint8) if self.bits <= 8 else np.dtype(np.uint16)

    def to_int(self, adu: np.ndarray) -> np.ndarray:
        """Map a ``(Y, X)`` unsigned-integer ADU frame to this integer format."""
        adu = _check_unsigned_2d("adu", adu)
        q = np.round((adu.astype(np.float64) - self.adu_offset) / self.adu_per_lsb)
        return np.clip(q, 0, self.max_value).astype(self.dtype)

    def to_adu(self, q: np.ndarray) -> np.ndarray:
        """Map a ``(Y, X)`` integer frame in this format back to ``uint16`` ADU."""
        q = _check_unsigned_2d("q", q)
        if q.size and int(q.max()) > self.max_value:
            raise ValueError(
                f"q has value {int(q.max())} > {self.max_value}, the maximum of a "
                f"{self.bits}-bit format; is this the right IntegerFormat for this output?"
            )
        adu = np.round(q.astype(np.float64) * self.adu_per_lsb + self.adu_offset)
        return np.clip(adu, 0, _UINT16_MAX).astype(np.uint16)

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types."""
        return {
            "bits": int(self.bits),
            "adu_offset": float(self.adu_offset),
            "adu_per_lsb": float(self.adu_per_lsb),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntegerFormat:
        """Build from a mapping with exactly the keys of :meth:`to_dict`."""
        keys = {"bits", "adu_offset", "adu_per_lsb"}
        missing = keys - set(data)
        extra = set(data) - keys
        if missing or extra:
            raise ValueError(
                f"IntegerFormat needs keys {sorted(keys)}; missing {sorted(missing)}, "
                f"unknown {sorted(extra)}"
            )
        return cls(
            bits=data["bits"],
            adu_offset=data["adu_offset"],
            adu_per_lsb=data["adu_per_lsb"],
        )
