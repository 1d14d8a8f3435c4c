"""Accelerator protocol and validation messages."""

import numpy as np
import pytest

from fluorofpga.host import (
    Accelerator,
    AcceleratorBusy,
    AcceleratorError,
    BoardNotFound,
    plan_tiles,
    process_tiled,
)


class ShiftAccelerator(Accelerator):
    """Integer 'network': a right shift by in_bits - out_bits (a pointwise op, halo 0)."""

    name = "shift"

    def __init__(self, tile_shape=(16, 16), in_bits=8, out_bits=8):
        super().__init__(tile_shape, in_bits, out_bits)
        self.computed = 0
        self.released = 0

    def _compute(self, tile):
        self.computed += 1
        return tile >> (self.in_bits - self.out_bits)

    def _release(self):
        self.released += 1


class BrokenAccelerator(ShiftAccelerator):
    def _compute(self, tile):
        return tile.astype(np.int32) + 1000


def test_run_returns_result_and_dtype():
    acc = ShiftAccelerator(in_bits=10, out_bits=8)
    t = np.arange(256, dtype=np.uint16).reshape(16, 16) * 3
    out = acc.run(t)
    assert out.dtype == np.uint8
    assert np.array_equal(out, t >> 2)
    assert not acc.busy


def test_submit_while_busy_raises_and_wait_clears():
    acc = ShiftAccelerator()
    t = np.zeros((16, 16), np.uint8)
    acc.submit(t)
    assert acc.busy
    with pytest.raises(AcceleratorBusy, match=r"call wait\(\)"):
        acc.submit(t)
    assert acc.computed == 0 or acc.computed == 1  # compute may happen in submit or wait
    acc.wait()
    assert not acc.busy
    acc.submit(t)  # allowed again
    acc.wait()


def test_wait_without_submit_raises():
    acc = ShiftAccelerator()
    with pytest.raises(AcceleratorError, match=r"nothing in flight.*submit"):
        acc.wait()
    acc.run(np.zeros((16, 16), np.uint8))
    with pytest.raises(AcceleratorError, match="nothing in flight"):
        acc.wait()


@pytest.mark.parametrize(
    ("tile", "match"),
    [
        (np.zeros((16, 16), np.int16), "unsigned integer"),
        (np.zeros((16, 16), np.float32), "unsigned integer"),
        (np.zeros((16, 15), np.uint8), r"shape \(16, 15\).*\(16, 16\)"),
        (np.zeros((1, 16, 16), np.uint8), "shape"),
        (np.full((16, 16), 256, np.uint16), "256 does not fit in 8 input bits"),
        ([[0] * 16] * 16, "numpy array"),
    ],
)
def test_bad_tiles_raise_value_error(tile, match):
    acc = ShiftAccelerator()
    with pytest.raises(ValueError, match=match):
        acc.submit(tile)
    assert not acc.busy  # a rejected tile leaves nothing in flight


def test_backend_output_is_checked():
    acc = BrokenAccelerator()
    with pytest.raises(AcceleratorError, match="exceeds 8 unsigned bits"):
        acc.run(np.zeros((16, 16), np.uint8))
    assert not acc.busy


def test_close_and_context_manager():
    with ShiftAccelerator() as acc:
        acc.submit(np.zeros((16, 16), np.uint8))
    assert acc.closed and not acc.busy and acc.released == 1
    acc.close()
    assert acc.released == 1  # idempotent
    with pytest.raises(AcceleratorError, match="closed"):
        acc.submit(np.zeros((16, 16), np.uint8))


def test_constructor_validation_and_errors_say_what_to_do():
    with pytest.raises(ValueError, match="tile_shape"):
        ShiftAccelerator(tile_shape=(16,))
    with pytest.raises(ValueError, match="in_bits"):
        ShiftAccelerator(in_bits=17)
    assert "emulate" in str(BoardNotFound())
    assert issubclass(AcceleratorBusy, AcceleratorError)
    assert issubclass(AcceleratorError, RuntimeError)


def test_abstract_base_cannot_be_instantiated():
    with pytest.raises(TypeError):
        Accelerator((16, 16))


def test_process_tiled_through_accelerator():
    acc = ShiftAccelerator(tile_shape=(16, 16))
    frame = np.random.default_rng(0).integers(0, 256, size=(40, 50), dtype=np.uint8)
    out = process_tiled(frame, acc.run, acc.tile_shape, halo=2)
    assert np.array_equal(out, frame)


class QueueAccelerator(ShiftAccelerator):
    """An asynchronous device: up to two tiles in flight, answered in order."""

    max_in_flight = 2

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.queue = []
        self.most_in_flight = 0
        self.fail_at = None

    def submit(self, tile):
        if len(self.queue) >= self.max_in_flight:
            raise AcceleratorBusy(self.name)
        tile = self._validate(tile)
        if self.fail_at is not None and self.computed + len(self.queue) == self.fail_at:
            raise ValueError("device refused the tile")
        self.queue.append(tile)
        self._in_flight = True
        self.most_in_flight = max(self.most_in_flight, len(self.queue))

    def wait(self):
        if not self.queue:
            raise AcceleratorError("nothing in flight")
        out = self._compute(self.queue.pop(0))
        self._in_flight = bool(self.queue)
        return self._check_output(out)


@pytest.mark.parametrize("fn", ["accelerator", "run"])
def test_process_tiled_submits_ahead_on_an_asynchronous_accelerator(fn):
    acc = QueueAccelerator(tile_shape=(16, 16))
    frame = np.random.default_rng(1).integers(0, 256, size=(70, 41), dtype=np.uint8)
    out = process_tiled(frame, acc if fn == "accelerator" else acc.run, acc.tile_shape, 2)
    assert np.array_equal(out, frame)
    assert acc.most_in_flight == 2  # tile n+1 was sent before tile n was collected
    assert not acc.busy and acc.computed == len(plan_tiles(frame.shape, acc.tile_shape, 2))


def test_process_tiled_collects_tiles_in_flight_after_an_error():
    acc = QueueAccelerator(tile_shape=(16, 16))
    acc.fail_at = 4
    frame = np.zeros((70, 41), np.uint8)
    with pytest.raises(ValueError, match="refused"):
        process_tiled(frame, acc, acc.tile_shape, 2)
    assert not acc.busy and not acc.queue  # drained: the accelerator is usable again
    acc.fail_at = None
    assert np.array_equal(process_tiled(frame, acc.run, acc.tile_shape, 2), frame)


def test_process_tiled_into_a_reused_output():
    acc = ShiftAccelerator(tile_shape=(16, 16))
    frame = np.random.default_rng(2).integers(0, 256, size=(40, 50), dtype=np.uint8)
    out = np.empty(frame.shape, np.uint8)
    assert process_tiled(frame, acc, acc.tile_shape, 2, out=out) is out
    assert np.array_equal(out, frame)
    with pytest.raises(ValueError, match="dtype"):
        process_tiled(frame, acc, acc.tile_shape, 2, out=np.empty(frame.shape, np.uint16))
    with pytest.raises(ValueError, match="last two axes"):
        process_tiled(frame, acc, acc.tile_shape, 2, out=np.empty((40, 49), np.uint8))
