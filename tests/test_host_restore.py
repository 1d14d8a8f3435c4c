"""FrameRestorer: tables around the accelerator, pass-through and clipping counted.

Runs in the board environment too (numpy 1.x, no torch).
"""

import numpy as np
import pytest

from fluorofpga.host import Accelerator, FrameRestorer
from fluorofpga.microscope import NoiseModel, SignalSpec, SignalTables, gat, inverse_gat

SPEC = SignalSpec()
NOISE = NoiseModel.from_camera(gain_e_per_adu=2.0, offset_adu=100.0, read_noise_e=1.5)


class ConstantResidual(Accelerator):
    """A 'network' that always answers one residual code (zero noise by default)."""

    name = "constant"

    def __init__(self, code=SPEC.residual_zero, tile_shape=(16, 16)):
        super().__init__(tile_shape, SPEC.in_bits, SPEC.out_bits)
        self.code = code

    def _compute(self, tile):
        return np.full(tile.shape, self.code, np.uint8)


def frame(shape=(40, 37), seed=0, top=600):
    return np.random.default_rng(seed).integers(90, top, shape).astype(np.uint16)


def test_zero_residual_returns_the_input_quantised_to_the_code_step():
    tables = SignalTables(SPEC, NOISE)
    restorer = FrameRestorer(ConstantResidual(), tables, halo=1, dtype="float32")
    x = frame()
    out = restorer(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    z_in, z_out = gat(x, NOISE), gat(out.astype(np.float64), NOISE)
    coded = z_in > 0.2  # where the GAT is not clamped at zero
    assert np.abs(z_out - z_in)[coded].max() <= SPEC.in_step / 2 + 1e-6
    assert restorer.counts.pixels == x.size and restorer.counts.residual_at_limit == 0


def test_residual_code_moves_the_output_by_its_step():
    tables = SignalTables(SPEC, NOISE)
    x = frame()
    base = FrameRestorer(ConstantResidual(), tables, 1, dtype="float32")(x)
    moved = FrameRestorer(ConstantResidual(SPEC.residual_zero - 32), tables, 1,
                          dtype="float32")(x)
    dz = gat(moved.astype(np.float64), NOISE) - gat(base.astype(np.float64), NOISE)
    coded = gat(x, NOISE) > 0.2
    assert np.allclose(dz[coded], 32 * SPEC.residual_step, atol=1e-4)  # one σ brighter


def test_saturated_and_above_range_pixels_pass_through_and_are_counted():
    tables = SignalTables(SPEC, NOISE, adc_max=4095)
    x = frame()
    x[0, :5] = 4095  # at the ADC maximum
    bright = int(np.ceil(tables.max_adu())) + 50
    x[1, :7] = bright  # above the input code's range
    restorer = FrameRestorer(ConstantResidual(SPEC.residual_zero + 20), tables, 1)
    out = restorer(x)
    assert np.array_equal(out[0, :5], x[0, :5]) and np.array_equal(out[1, :7], x[1, :7])
    assert restorer.counts.saturated == 5 and restorer.counts.above_range == 7
    assert out.dtype == np.uint16


def test_uint16_output_clipping_is_counted():
    tables = SignalTables(SPEC, NOISE)
    x = np.full((16, 16), 95, np.uint16)  # a dark frame below the offset
    restorer = FrameRestorer(ConstantResidual(255), tables, 1)  # "all noise": darker still
    out = restorer(x)
    assert restorer.counts.residual_at_limit == x.size
    assert (out >= 0).all()
    clipped = int(np.count_nonzero(np.rint(restorer.tables.out_lut[
        SPEC.combine(tables.encode(x), 255)]) < 0))
    assert restorer.counts.clipped_output == clipped


def test_bad_frames_refused_with_clear_errors():
    restorer = FrameRestorer(ConstantResidual(), SignalTables(SPEC, NOISE), 1)
    with pytest.raises(ValueError, match="unsigned-integer"):
        restorer(np.zeros((16, 16), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        restorer(np.zeros((2, 16, 16), np.uint16))
    with pytest.raises(ValueError, match="dtype"):
        FrameRestorer(ConstantResidual(), SignalTables(SPEC, NOISE), 1, dtype="int8")


def test_tables_agree_with_closed_forms():
    tables = SignalTables(SPEC, NOISE)
    adu = np.arange(65536, dtype=np.float64)
    expected = np.clip(np.rint(gat(adu, NOISE) / SPEC.in_step), 0, SPEC.in_max)
    assert np.array_equal(tables.in_lut, expected)
    codes = np.arange(1 << SPEC.code_bits)
    assert np.allclose(tables.out_lut, inverse_gat(codes * SPEC.residual_step, NOISE))
    # closed-form round trip
    y = np.linspace(NOISE.zero_level() + 1, 5000, 101)
    assert np.allclose(inverse_gat(gat(y, NOISE), NOISE), y)
