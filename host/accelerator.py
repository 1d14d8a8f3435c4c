"""The accelerator interface every backend implements.

An :class:`Accelerator` processes one fixed-size tile of unsigned integers at a
time with a ``submit(tile)`` / ``wait()`` protocol, mirroring DMA send and
receive on the board. Backends (``emulate``: bit-exact CPU golden model;
``pynq``: the board; ``rtlsim`` in ``hw/``) subclass it and implement
:meth:`Accelerator._compute`, or override :meth:`Accelerator._start` /
:meth:`Accelerator._finish` for asynchronous devices. The base class owns all
validation, so every backend rejects the same bad input with the same message.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType

import numpy as np

__all__ = [
    "Accelerator",
    "AcceleratorBusy",
    "AcceleratorError",
    "BoardNotFound",
]

_MAX_BITS = 16


class AcceleratorError(RuntimeError):
    """Base class of accelerator errors (misuse of the submit/wait protocol, device faults)."""


class AcceleratorBusy(AcceleratorError):
    """A tile was submitted while the previous one is still in flight."""

    def __init__(self, name: str = "accelerator") -> None:
        super().__init__(
            f"{name}: the previous tile is still in flight; call wait() to collect its "
            "result before submitting the next tile"
        )


class BoardNotFound(AcceleratorError):
    """No FPGA board (or no loadable overlay) was found."""

    def __init__(self, detail: str = "") -> None:
        msg = (
            "no PYNQ board found: run this on the board's own Python (PYNQ image) with the "
            "bitstream and .hwh of the bundle present, or use the 'emulate' backend to run "
            "the bit-exact CPU model instead"
        )
        super().__init__(f"{msg} ({detail})" if detail else msg)


def _unsigned_dtype(bits: int) -> np.dtype:
    return np.dtype(np.uint8) if bits <= 8 else np.dtype(np.uint16)


class Accelerator(abc.ABC):
    """A fixed-tile integer image-to-image accelerator.

    Attributes:
        tile_shape: ``(th, tw)`` tile size the network was compiled for, pixels.
        in_bits: Width of the unsigned input pixels.
        out_bits: Width of the unsigned output pixels.
        name: Backend name (``"emulate"``, ``"pynq"``, ...).
        in_channels, out_channels: values per pixel in and out (1 for the denoiser; a
            3-frame SIM reconstructor takes 3 and returns 4 sub-pixels). With more than
            one, tiles are channels-last ``(th, tw, C)``: the order the pixels stream in.

    Only one tile may be in flight: ``submit`` then ``wait``, or ``run`` for both.
    Usable as a context manager; :meth:`close` releases the device.
    """

    name: str = "abstract"
    #: Tiles that may be submitted before the first :meth:`wait` (asynchronous devices
    #: raise it; :func:`~fluorofpga.host.tiling.process_tiled` submits that far ahead).
    max_in_flight: int = 1

    def __init__(
        self,
        tile_shape: Sequence[int],
        in_bits: int = 8,
        out_bits: int = 8,
        name: str | None = None,
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> None:
        for label, n in (("in_channels", in_channels), ("out_channels", out_channels)):
            if int(n) != n or n < 1:
                raise ValueError(f"{label} must be a positive integer, got {n!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        if len(tile_shape) != 2 or any(int(s) != s or s < 1 for s in tile_shape):
            raise ValueError(f"tile_shape must be two positive integers, got {tuple(tile_shape)}")
        for label, bits in (("in_bits", in_bits), ("out_bits", out_bits)):
            if int(bits) != bits or not 1 <= bits <= _MAX_BITS:
                raise ValueError(f"{label} must be an integer in 1..{_MAX_BITS}, got {bits!r}")
        self.tile_shape: tuple[int, int] = (int(tile_shape[0]), int(tile_shape[1]))
        self.in_bits: int = int(in_bits)
        self.out_bits: int = int(out_bits)
        if name is not None:
            self.name = name
        self._in_flight = False
        self._closed = False
        self._pending: np.ndarray | None = None

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of an input tile: ``tile_shape``, or ``(th, tw, in_channels)``."""
        return self.tile_shape if self.in_channels == 1 else (*self.tile_shape,
                                                               self.in_channels)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of an output tile: ``tile_shape``, or ``(th, tw, out_channels)``."""
        return self.tile_shape if self.out_channels == 1 else (*self.tile_shape,
                                                                self.out_channels)

    # -- backend hooks ---------------------------------------------------------------------

    @abc.abstractmethod
    def _compute(self, tile: np.ndarray) -> np.ndarray:
        """Compute one validated ``tile_shape`` integer tile; return the integer output tile."""

    def _start(self, tile: np.ndarray) -> None:
        """Begin processing ``tile`` (default: remember it; computed in :meth:`_finish`)."""
        self._pending = tile

    def _finish(self) -> np.ndarray:
        """Complete the tile begun by :meth:`_start` and return its output."""
        tile, self._pending = self._pending, None
        if tile is None:
            raise AcceleratorError(f"{self.name}: no pending tile; _start() was not called")
        return self._compute(tile)

    def _release(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Free device resources (default: nothing)."""

    # -- public protocol -------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True while a submitted tile has not been collected with :meth:`wait`."""
        return self._in_flight

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _validate(self, tile: np.ndarray) -> np.ndarray:
        if not isinstance(tile, np.ndarray):
            raise ValueError(f"tile must be a numpy array, got {type(tile).__name__}")
        if tile.dtype.kind != "u":
            raise ValueError(
                f"tile dtype must be an unsigned integer type (uint8/uint16), got {tile.dtype}; "
                "encode camera frames with the bundle's signal tables first (Bundle.restorer)"
            )
        if tile.shape != self.in_shape:
            raise ValueError(
                f"tile shape {tile.shape} does not match the accelerator's compiled tile shape "
                f"{self.in_shape}; cut frames with fluorofpga.host.tiling.process_tiled"
            )
        limit = 1 << self.in_bits
        if tile.size and tile.dtype.itemsize * 8 > self.in_bits and int(tile.max()) >= limit:
            raise ValueError(
                f"tile value {int(tile.max())} does not fit in {self.in_bits} input bits "
                f"(max {limit - 1}); check the signal tables (SignalTables.encode)"
            )
        return np.ascontiguousarray(tile, dtype=_unsigned_dtype(self.in_bits))

    def submit(self, tile: np.ndarray) -> None:
        """Validate ``tile`` and start processing it.

        Raises:
            ValueError: Wrong dtype (not unsigned integer), wrong shape, or values
                that do not fit in ``in_bits``.
            AcceleratorBusy: The previous tile has not been collected with :meth:`wait`.
            AcceleratorError: The accelerator was closed.
        """
        if self._closed:
            raise AcceleratorError(f"{self.name}: accelerator is closed; create a new one")
        if self._in_flight:
            raise AcceleratorBusy(self.name)
        tile = self._validate(tile)
        self._start(tile)
        self._in_flight = True

    def wait(self) -> np.ndarray:
        """Block until the submitted tile is done and return its output tile.

        The output has dtype uint8 (``out_bits <= 8``) or uint16.

        Raises:
            AcceleratorError: Nothing is in flight, or the backend returned a
                malformed result.
        """
        if not self._in_flight:
            raise AcceleratorError(
                f"{self.name}: nothing in flight; call submit(tile) before wait()"
            )
        try:
            out = self._finish()
        finally:
            self._in_flight = False
        return self._check_output(out)

    def _check_output(self, out: np.ndarray) -> np.ndarray:
        out = np.asarray(out)
        if out.shape != self.out_shape:
            raise AcceleratorError(
                f"{self.name}: backend returned shape {out.shape}, expected {self.out_shape}"
            )
        if out.dtype.kind not in "ui":
            raise AcceleratorError(
                f"{self.name}: backend returned dtype {out.dtype}, expected unsigned integers"
            )
        fits = out.dtype.kind == "u" and out.dtype.itemsize * 8 <= self.out_bits
        if out.size and not fits and (int(out.min()) < 0
                                      or int(out.max()) >= 1 << self.out_bits):
            raise AcceleratorError(
                f"{self.name}: backend output range [{int(out.min())}, {int(out.max())}] "
                f"exceeds {self.out_bits} unsigned bits; the backend does not match the bundle"
            )
        return out.astype(_unsigned_dtype(self.out_bits), copy=False)

    def run(self, tile: np.ndarray) -> np.ndarray:
        """Process one tile: :meth:`submit` then :meth:`wait`."""
        self.submit(tile)
        return self.wait()

    def close(self) -> None:
        """Release the device. Idempotent; a tile still in flight is abandoned."""
        if self._closed:
            return
        self._closed = True
        self._in_flight = False
        self._pending = None
        self._release()

    def __enter__(self) -> Accelerator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, tile_shape={self.tile_shape}, "
            f"in_bits={self.in_bits}, out_bits={self.out_bits}"
            + (f", channels={self.in_channels}->{self.out_channels})"
               if (self.in_channels, self.out_channels) != (1, 1) else ")")
        )
