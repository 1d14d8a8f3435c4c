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


# -- the optimised path against a straightforward reference ------------------------------


def _max3x3(q):
    """3x3 maximum with zero padding (a 'network' of receptive-field radius 1)."""
    p = np.pad(q, 1)
    h, w = q.shape
    return np.max([p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)


def _net(q):
    """Residual codes that depend on the neighbourhood and reach 0 and 255."""
    return ((_max3x3(q).astype(np.int64) * 37 + q.astype(np.int64) * 11) % 256).astype(np.uint8)


class NeighbourhoodNet(Accelerator):
    name = "neighbourhood"

    def __init__(self, tile_shape=(16, 16)):
        super().__init__(tile_shape, SPEC.in_bits, SPEC.out_bits)

    def _compute(self, tile):
        return _net(tile)


def reference_restore(tables, frame, dtype, cal=None):
    """The pixel path written out plainly: float64 arithmetic, untiled, masks and counts."""
    spec, adc_max = tables.spec, tables.adc_max
    frame = np.asarray(frame)
    if cal is None:
        uniform = frame
    else:
        # the maps are held as float32 (PixelMaps), the arithmetic is float64
        offset = np.asarray(cal.offset_adu).astype(np.float32).astype(np.float64)
        gain = (np.full(offset.shape, cal.gain_e_per_adu) if cal.gain_map_e_per_adu is None
                else np.asarray(cal.gain_map_e_per_adu, np.float64))
        ratio = (gain / cal.gain_e_per_adu).astype(np.float32).astype(np.float64)
        offset0 = float(np.median(offset))
        repaired = cal.repair_hot_pixels(frame).astype(np.float64)
        uniform = np.clip(np.rint((repaired - offset) * ratio + offset0), 0, adc_max)
        uniform = uniform.astype(np.uint16)
        uniform[frame >= adc_max] = adc_max
    q = tables.in_lut[np.minimum(uniform, adc_max)]
    r = _net(q)
    values = tables.out_lut[spec.combine(q, r)]
    saturated = uniform >= adc_max
    passthrough = saturated | (q >= spec.in_max)
    if cal is None:
        values[passthrough] = uniform[passthrough]
    else:
        values = (values - offset0) / ratio + offset
        values[passthrough] = frame[passthrough]
    counts = {"pixels": frame.size, "saturated": int(saturated.sum()),
              "above_range": int(passthrough.sum() - saturated.sum()),
              "residual_at_limit": int(((r == 0) | (r == spec.out_max)).sum()),
              "clipped_output": 0}
    if dtype == "float32":
        return values.astype(np.float32), counts
    rounded = np.rint(values)
    counts["clipped_output"] = int(((rounded < 0) | (rounded > 65535)).sum())
    return np.clip(rounded, 0, 65535).astype(np.uint16), counts


def _hard_frame(shape, adc_max, seed):
    """Random ADU with zeros, the ADC maximum, 65535 and bright (above range) pixels."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, min(adc_max, 3000), shape).astype(np.uint16)
    x.flat[rng.choice(x.size, x.size // 10, replace=False)] = 0
    x.flat[rng.choice(x.size, x.size // 20, replace=False)] = adc_max
    x.flat[rng.choice(x.size, x.size // 50, replace=False)] = 65535
    x.flat[rng.choice(x.size, x.size // 20, replace=False)] = rng.integers(
        0, 65536, x.size // 20)
    return x


#: Cameras whose pixel-out table clips at both ends of uint16 (a = 20 ADU per e-, b > 0),
#: one at neither end, and a 12-bit one whose ADC maximum lies inside the input range.
CAMERAS = [
    (NoiseModel(20.0, 5.0), 65535),
    (NoiseModel.from_camera(0.46, 100.0, 1.6), 65535),
    (NoiseModel.from_camera(2.0, 100.0, 1.5), 4095),
    (NoiseModel(0.05, 0.3), 1000),
]


@pytest.fixture(params=[(None, 1, "compiled"), (999, 2, "compiled"), (None, 1, "numpy"),
                        (999, 2, "numpy")],
                ids=["one chunk", "chunks of 999, 2 threads", "numpy, one chunk",
                     "numpy, chunks of 999, 2 threads"])
def threads(request, monkeypatch):
    """Threads for the restorer; chunked lookups cut at odd places when more than one.

    Each case runs the compiled per-pixel kernels (numba) and the numpy loops: both must
    give the plain reference's bits.
    """
    from fluorofpga.microscope import _pixkernels, signal

    chunk, n, path = request.param
    if path == "compiled" and _pixkernels.kernels() is None:
        pytest.skip("numba is not installed (or FLUOROFPGA_NUMPY_PIXELS is set): the numpy "
                    "loops run instead")
    if path == "numpy":
        monkeypatch.setattr(_pixkernels, "KERNELS", None)
    if chunk is not None:
        monkeypatch.setattr(signal, "_CHUNK", chunk)
    return n


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize(("noise", "adc_max"), CAMERAS)
def test_optimised_restorer_equals_the_plain_reference(noise, adc_max, dtype, threads):
    tables = SignalTables(SPEC, noise, adc_max=adc_max)
    restorer = FrameRestorer(NeighbourhoodNet(), tables, halo=1, dtype=dtype, threads=threads)
    total = {}
    for seed, shape in enumerate([(67, 45), (16, 16), (130, 97), (67, 45)]):  # buffers reused
        x = _hard_frame(shape, adc_max, seed)
        got = restorer(x)
        want, counts = reference_restore(tables, x, dtype)
        assert got.dtype == want.dtype
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8))  # bit for bit
        for key, value in counts.items():
            total[key] = total.get(key, 0) + value
    assert restorer.counts.to_dict() == total
    assert total["saturated"] and total["above_range"] and total["residual_at_limit"]
    if dtype == "uint16" and noise.a == 20.0:
        assert total["clipped_output"] > 0  # the clip path was exercised


@pytest.mark.parametrize("gain_map", [True, False], ids=["gain map", "offset map only"])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_optimised_restorer_with_calibration_maps_equals_the_reference(dtype, gain_map,
                                                                      threads):
    from fluorofpga.microscope import Calibration

    rng = np.random.default_rng(7)
    shape = (50, 61)
    hot = np.zeros(shape, bool)
    hot.flat[rng.choice(hot.size, 30, replace=False)] = True
    cal = Calibration(offset_adu=rng.normal(100.0, 3.0, shape),
                      read_noise_adu=np.full(shape, 1.2), gain_e_per_adu=0.5,
                      gain_map_e_per_adu=rng.normal(0.5, 0.03, shape) if gain_map else None,
                      hot_pixels=hot)
    # a large read noise puts the darkest outputs below zero ADU: clipping counted
    noise = NoiseModel(a=2.0, b=400.0)
    tables = SignalTables(SPEC, noise, 4095)
    restorer = FrameRestorer(NeighbourhoodNet(), tables, halo=1, calibration=cal, dtype=dtype,
                             threads=threads)
    total: dict = {}
    for seed in range(2):
        x = _hard_frame(shape, 4095, seed)
        got = restorer(x)
        want, counts = reference_restore(tables, x, dtype, cal)
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
        for key, value in counts.items():
            total[key] = total.get(key, 0) + value
    assert restorer.counts.to_dict() == total
    assert total["saturated"] and total["above_range"] and total["residual_at_limit"]
    if dtype == "uint16":
        assert total["clipped_output"] > 0  # the clip path was exercised


@pytest.mark.parametrize("gain_map", [False, True])
def test_pixel_maps_to_uniform_equals_the_plain_formula_with_hot_pixels_at_the_edges(
        gain_map, threads):
    from fluorofpga.microscope import Calibration
    from fluorofpga.microscope.signal import PixelMaps

    rng = np.random.default_rng(11)
    shape = (40, 53)  # more than one chunk of 999
    hot = np.zeros(shape, bool)
    hot[[0, 0, -1, -1, 4, 0, 5], [0, -1, 0, -1, 0, 6, 7]] = True  # corners, edges, inside
    hot[5, 8] = True  # a hot neighbour of a hot pixel
    cal = Calibration(offset_adu=rng.normal(100.0, 3.0, shape),
                      read_noise_adu=np.full(shape, 1.2), gain_e_per_adu=0.5,
                      gain_map_e_per_adu=rng.normal(0.5, 0.03, shape) if gain_map else None,
                      hot_pixels=hot)
    maps = PixelMaps(cal, 4095)
    x = _hard_frame(shape, 4095, 3)
    x[0, :3] = 0
    offset = np.asarray(cal.offset_adu).astype(np.float32).astype(np.float64)  # float32 maps
    ratio = ((np.asarray(cal.gain_map_e_per_adu) / 0.5).astype(np.float32).astype(np.float64)
             if gain_map else 1.0)
    want = (cal.repair_hot_pixels(x).astype(np.float64) - offset) * ratio + np.median(offset)
    want = np.clip(np.rint(want), 0, 4095).astype(np.uint16)
    want[x >= 4095] = 4095
    assert np.array_equal(maps.to_uniform(x, threads=threads), want)


@pytest.mark.parametrize("dtype", [None, "uint16", "float32"])
def test_compiled_and_numpy_table_lookups_agree_bit_for_bit(dtype, monkeypatch):
    from fluorofpga.microscope import CodeCounts, _pixkernels

    if _pixkernels.kernels() is None:
        pytest.skip("numba is not installed (or FLUOROFPGA_NUMPY_PIXELS is set)")
    tables = SignalTables(SPEC, NoiseModel(a=2.0, b=400.0), adc_max=4095)
    x = _hard_frame((301, 257), 4095, 5)
    r = np.random.default_rng(5).integers(0, 256, x.shape).astype(np.uint8)
    r[0, :9] = 0
    r[1, :9] = SPEC.out_max
    results = []
    for kernels in (_pixkernels.kernels(), None):
        monkeypatch.setattr(_pixkernels, "KERNELS", kernels)
        counts = CodeCounts()
        q = tables.encode(x, threads=2)
        out = tables.decode(x, q, r, counts, dtype, threads=2)
        results.append((q, out, counts.to_dict()))
    (q1, out1, c1), (q2, out2, c2) = results
    assert np.array_equal(q1, q2)
    assert out1.dtype == out2.dtype and np.array_equal(out1.view(np.uint8), out2.view(np.uint8))
    assert c1 == c2 and c1["saturated"] and c1["above_range"] and c1["residual_at_limit"]


@pytest.mark.parametrize("spec", [
    SPEC,
    SignalSpec.direct(),
    SignalSpec(out_bits=6, residual_zero=32),  # uint16 residual codes wider than 6 bits
], ids=["residual", "direct", "6-bit residual, codes beyond it"])
@pytest.mark.parametrize("gain_map", [True, False], ids=["gain map", "offset map only"])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_compiled_and_numpy_maps_decode_agree_bit_for_bit(spec, gain_map, dtype, monkeypatch):
    """The maps' compiled pixel-out combines the codes and reads the small clean-code table;
    the numpy loop reads the pair table: the same bits for every code, counts included."""
    from fluorofpga.microscope import Calibration, CodeCounts, _pixkernels
    from fluorofpga.microscope.signal import PixelMaps

    if _pixkernels.kernels() is None:
        pytest.skip("numba is not installed (or FLUOROFPGA_NUMPY_PIXELS is set)")
    rng = np.random.default_rng(13)
    shape = (97, 131)
    cal = Calibration(offset_adu=rng.normal(100.0, 3.0, shape),
                      read_noise_adu=np.full(shape, 1.2), gain_e_per_adu=0.5,
                      gain_map_e_per_adu=rng.normal(0.5, 0.03, shape) if gain_map else None)
    tables = SignalTables(spec, NoiseModel(a=2.0, b=400.0), 4095)
    maps = PixelMaps(cal, 4095)
    x = _hard_frame(shape, 4095, 9)
    uniform = maps.to_uniform(x)
    q = tables.encode(uniform)
    wide = spec.out_bits < 8
    r = rng.integers(0, 1 << (16 if wide else spec.out_bits), shape).astype(
        np.uint16 if wide else np.uint8)
    r[0, :9], r[1, :9] = 0, spec.out_max
    results = []
    for kernels in (_pixkernels.kernels(), None):
        monkeypatch.setattr(_pixkernels, "KERNELS", kernels)
        counts = CodeCounts()
        out = maps.decode(tables, x, uniform, q, r, counts, dtype, threads=2)
        results.append((out, counts.to_dict()))
    (out1, c1), (out2, c2) = results
    assert out1.dtype == out2.dtype and np.array_equal(out1.view(np.uint8), out2.view(np.uint8))
    assert c1 == c2 and c1["saturated"] and c1["residual_at_limit"]
    if spec.kind == "gat-residual":  # (the direct code's range reaches the ADC maximum)
        assert c1["above_range"]
        if dtype == "uint16":  # the read noise clips at 0
            assert c1["clipped_output"] > 0
