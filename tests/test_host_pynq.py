"""The ``pynq`` backend, run unchanged against a stand-in device found by PYNQ's discovery.

Needs the board environment (``pynq`` 4.0, numpy < 2); skipped where ``pynq`` is not
importable. ``tests/pynq_standin.py`` models the AXI DMA and the kernel behind PYNQ's own
``Overlay`` / ``MMIO`` / ``allocate`` / DMA drivers. The denoiser and both shipped SIM
bundles (the learned ``sim3``: 3 channels in, 4 out; the classical ``wiener9``: 9
demodulated channels in, 4 out) run on it, compared with the emulator. The ``board`` test
runs on a real board only.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from fluorofpga.host import (
    AcceleratorBusy,
    AcceleratorError,
    BoardNotFound,
    SimulatedSimCameraSource,
    default_bundle_path,
    load_bundle,
)
from fluorofpga.host import pynq_backend as pb
from fluorofpga.host.bundle import MANIFEST, MANIFEST_VERSION, BundleError
from fluorofpga.host.pynq_backend import pixel_in_words, pixel_out_words
from fluorofpga.microscope.signal import NoiseModel

TILE_SECONDS = 0.3  # timeout used for the hang test


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


needs_pynq = pytest.mark.skipif(
    not _have("pynq"),
    reason="pynq is not importable (it pins numpy<2): run in the board environment "
           "(`make test` runs tests/test_host_*.py again in .venv-board)")


def _standin():
    """tests/pynq_standin.py, loaded by path (pytest runs with --import-mode=importlib)."""
    name = "fluorofpga_tests_pynq_standin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("pynq_standin.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _bundle_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped bundle at the current manifest version."""
    path = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), path)
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("version") != MANIFEST_VERSION:
        from fluorofpga.microscope.signal import SignalSpec

        manifest = {**manifest, "version": MANIFEST_VERSION,
                    "signal": manifest.get("signal", SignalSpec().to_dict())}  # fmt: skip
    (path / MANIFEST).write_text(json.dumps(manifest))
    return path


@pytest.fixture
def make_bundle(tmp_path):
    """``make_bundle(sg_length_width=26, shipped=None, design_of=None, **design)`` -> a
    copy of a shipped bundle (default the denoiser; ``"sim3"``, ``"wiener9"``) with a
    stand-in bitstream, compiled from the hardware-layer graph of the bundle
    ``design_of`` (default its own) with the ``write_design`` options ``design``."""

    def make(sg_length_width: int = 26, shipped: str | None = None,
             design_of: str | None = None, **design):
        path = tmp_path / (shipped or "bundle")
        if shipped is not None:
            shutil.copytree(default_bundle_path().parent / shipped, path)
        else:
            try:
                bundle = load_bundle()
                shutil.copytree(bundle.path, path)
            except BundleError:  # the shipped bundle is being replaced: copy and upgrade
                path = _bundle_dir(tmp_path)
        manifest = json.loads((path / MANIFEST).read_text())
        bundle = load_bundle(path)
        source = bundle if design_of is None else load_bundle(
            default_bundle_path().parent / design_of)
        _standin().write_design(path / "bitstream", source.file("hw_layers"),
                                bundle.tile_shape, bundle.in_bits, bundle.out_bits,
                                sg_length_width=sg_length_width, **design)
        manifest["files"]["bitstream"] = "bitstream/fluorofpga.bit"
        (path / MANIFEST).write_text(json.dumps(manifest))
        return load_bundle(path)

    return make


@pytest.fixture
def device():
    """The stand-in device, as PYNQ's active device; faults cleared afterwards."""
    dev = _standin().standin_device()
    yield dev
    dev.hang = False
    dev.mm2s.fail_next = dev.s2mm.fail_next = False


def _tiles(bundle, n: int, seed: int = 0) -> list[np.ndarray]:
    """Full-range random code tiles (channels-last ``(th, tw, frames)`` for a SIM bundle)."""
    rng = np.random.default_rng(seed)
    hi = 1 << bundle.in_bits
    shape = bundle.tile_shape if bundle.frames == 1 else (*bundle.tile_shape, bundle.frames)
    return [rng.integers(0, hi, size=shape).astype(np.uint8) for _ in range(n)]


def test_table_words_match_the_hw_kernels():
    """The host's table words are the pixel kernels' formats (``hw.pixel_kernels``)."""
    pk = pytest.importorskip("fluorofpga.hw.pixel_kernels",
                             reason="fluorofpga.hw is not installed in the board environment")
    from fluorofpga.microscope.signal import SignalSpec, SignalTables

    tables = SignalTables(SignalSpec(), NoiseModel.from_camera(2.0, 100.0, 3.0),
                          adc_max=4095)
    params = pk.PixelKernelParams.from_spec(tables.spec)
    np.testing.assert_array_equal(pixel_in_words(tables), pk.pixel_in_table(tables, params))
    np.testing.assert_array_equal(pixel_out_words(tables), pk.pixel_out_table(tables, params))


@needs_pynq
def test_standin_restores_like_the_emulator(make_bundle, device):
    bundle = make_bundle()
    tiles = _tiles(bundle, 5)
    with bundle.accelerator("emulate") as emu:
        expected = [emu.run(t) for t in tiles]
    n_alloc = len(device.allocations)
    with bundle.accelerator("pynq") as acc:
        assert acc.name == "pynq"
        from pynq.lib.dma import DMA

        assert isinstance(acc.dma, DMA)  # PYNQ's own driver, bound from the .hwh
        got = [acc.run(t) for t in tiles]
        # pipelined: two in flight
        acc.submit(tiles[0])
        acc.submit(tiles[1])
        with pytest.raises(AcceleratorBusy):
            acc.submit(tiles[2])
        got2 = [acc.wait()]
        for t in tiles[2:]:
            acc.submit(t)
            got2.append(acc.wait())
        got2.append(acc.wait())
        assert not acc.busy
    for g, e in zip(got + got2, expected + expected, strict=True):
        assert g.dtype == np.uint8 and g.shape == bundle.tile_shape
        np.testing.assert_array_equal(g, e)
    # buffers allocated once: two input and two output buffers, for all 10 tiles
    assert len(device.allocations) - n_alloc == 4


@needs_pynq
def test_double_buffering_overlaps(make_bundle, device):
    bundle = make_bundle()
    tiles = _tiles(bundle, 3, seed=1)
    with bundle.accelerator("pynq") as acc:
        device.events.clear()
        acc.submit(tiles[0])
        acc.submit(tiles[1])
        before_collect = len(device.events)  # tile 0 not yet collected
        first = acc.wait()
        acc.submit(tiles[2])
        acc.wait()
        acc.wait()
        in_addrs = [b.physical_address for b in acc._in_bufs]
    sends = [(i, d[0]) for i, (what, d) in enumerate(device.events) if what == "send"]
    # tile 1 went to the second input buffer and the device saw it before tile 0 was
    # collected; tile 2 reused the first one
    assert [a for i, a in sends if i < before_collect] == in_addrs
    assert [a for i, a in sends if i >= before_collect] == in_addrs[:1]
    assert sum(1 for what, _ in device.events if what == "tile") == 3
    # every send of an input buffer follows a flush of it (the device copy is then current)
    for i, (what, detail) in enumerate(device.events):
        if what == "send":
            assert ("flush", detail[0]) in device.events[:i]
    with bundle.accelerator("emulate") as emu:
        np.testing.assert_array_equal(first, emu.run(tiles[0]))


@needs_pynq
def test_transfers_split_at_the_dma_maximum(make_bundle, device):
    bundle = make_bundle(sg_length_width=12)  # 4095 bytes, 4088 after 8-byte alignment
    tiles = _tiles(bundle, 2, seed=2)
    with bundle.accelerator("pynq") as acc:
        assert acc.max_transfer_bytes == 4088
        device.events.clear()
        got = [acc.run(t) for t in tiles]
    tile_bytes = bundle.tile_shape[0] * bundle.tile_shape[1]
    sends = [d[1] for what, d in device.events if what == "send"]
    recvs = [d[1] for what, d in device.events if what == "recv"]
    per_tile = -(-tile_bytes // 4088)
    assert len(sends) == len(recvs) == 2 * per_tile
    assert max(sends) <= 4095 and max(recvs) <= 4095 and sum(sends) == 2 * tile_bytes
    with bundle.accelerator("emulate") as emu:
        for g, t in zip(got, tiles, strict=True):
            np.testing.assert_array_equal(g, emu.run(t))


@needs_pynq
def test_hang_times_out_with_an_actionable_message(make_bundle, device):
    bundle = make_bundle()
    tiles = _tiles(bundle, 2, seed=3)
    acc = bundle.accelerator("pynq")
    acc.timeout_s = TILE_SECONDS
    device.hang = True
    acc.submit(tiles[0])
    with pytest.raises(AcceleratorError, match=r"DMA did not finish within 0\.3 s: is the "
                       r"bitstream the bundle's\? run `fluorofpga verify`; reset with "
                       r"acc\.reset\(\)"):
        acc.wait()
    with pytest.raises(AcceleratorError, match="reset"):
        acc.submit(tiles[1])  # faulted until reset
    device.hang = False
    acc.reset()
    with bundle.accelerator("emulate") as emu:
        np.testing.assert_array_equal(acc.run(tiles[1]), emu.run(tiles[1]))
    acc.close()


@needs_pynq
@pytest.mark.parametrize("channel", ["recv", "send"])
def test_dma_error_is_recovered_by_reset(make_bundle, device, channel):
    bundle = make_bundle()
    tiles = _tiles(bundle, 3, seed=4)
    with bundle.accelerator("pynq") as acc, bundle.accelerator("emulate") as emu:
        np.testing.assert_array_equal(acc.run(tiles[0]), emu.run(tiles[0]))
        device.inject_error(channel)
        with pytest.raises(AcceleratorError, match=r"error.*acc\.reset\(\)"):
            acc.run(tiles[1])
        assert not acc.busy
        acc.reset()
        assert ("dma_reset", None) in device.events and ("kernel_reset", None) in device.events
        for t in tiles[1:]:
            np.testing.assert_array_equal(acc.run(t), emu.run(t))


@needs_pynq
def test_tables_are_loaded_into_the_kernel(make_bundle, device):
    bundle = make_bundle()
    tables = bundle.tables(NoiseModel.from_camera(2.0, 100.0, 3.0), adc_max=4095)
    from fluorofpga.host.pynq_backend import PynqAccelerator

    with PynqAccelerator.from_bundle(bundle, tables=tables) as acc:
        np.testing.assert_array_equal(device.in_lut, pixel_in_words(tables))
        n = tables.out_lut.size
        np.testing.assert_array_equal(device.out_lut[:n], pixel_out_words(tables))
        assert device.tables_loaded == 3
        both = pb.STATUS_IN_LUT | pb.STATUS_OUT_LUT
        assert int(acc.kernel.read(pb.REG_STATUS)) & both == both
        words = pixel_in_words(tables)
        assert words[4095] >> bundle.signal.in_bits == 1  # saturated flag at adc_max
        assert words[0] >> bundle.signal.in_bits == 0


@needs_pynq
def test_close_frees_the_buffers(make_bundle, device):
    bundle = make_bundle()
    acc = bundle.accelerator("pynq")
    mine = device.allocations[-4:]
    assert not any(a.freed for a in mine)
    acc.run(_tiles(bundle, 1)[0])
    acc.close()
    acc.close()  # idempotent
    assert all(a.freed for a in mine)
    assert acc.closed
    with pytest.raises(AcceleratorError, match="closed"):
        acc.submit(_tiles(bundle, 1)[0])


@needs_pynq
def test_wrong_bitstream_is_refused(make_bundle, device, tmp_path):
    bundle = make_bundle()
    from fluorofpga.host.pynq_backend import PynqAccelerator

    with pytest.raises(AcceleratorError, match=r"tile \(64, 64\).*fluorofpga verify"):
        PynqAccelerator(bundle.file("bitstream"), (64, 64))


# -- SIM bundles: multi-channel tiles ------------------------------------------------------

#: Camera frame of the SIM tests: two 128² tiles with the bundles' halos (7 and 4 pixels).
SIM_FRAME = (96, 160)


def _sim_groups(bundle, n: int, seed: int) -> tuple[np.ndarray, object]:
    """``n`` raw groups ``(frames, Y, X)`` of the simulated SIM camera for ``bundle``
    (3 frames, one per angle, or 9: 3 angles x 3 phases), and the camera."""
    cam = SimulatedSimCameraSource(0, SIM_FRAME, seed=seed, phases=bundle.frames // 3)
    rng = np.random.default_rng(seed)
    return np.stack([cam.raw_group(rng) for _ in range(n)]), cam.camera


def _design_parameters(bundle) -> list:
    """The Wiener bundle's design pattern (``reconstruction.angles``) as parameters."""
    from fluorofpga.microscope import AngleParameters

    return [AngleParameters(a["kx"], a["ky"], a["phase_rad"], a["modulation"])
            for a in bundle.manifest["reconstruction"]["angles"]]


@needs_pynq
def test_learned_sim_bundle_on_pynq_equals_the_emulator(make_bundle, device):
    """sim3 (3 GAT codes in, 4 sub-pixel codes out) through SimRestorer: whole groups,
    bit-identical; 3 -> 4 channels in the kernel's register; tiles pipelined."""
    bundle = make_bundle(shipped="sim3")
    groups, camera = _sim_groups(bundle, 2, seed=11)
    noise = NoiseModel.from_camera(camera.gain_e_per_adu, camera.offset_adu,
                                   camera.read_noise_e)
    with bundle.accelerator("emulate") as emu:
        restore = bundle.sim_restorer(emu, noise, dtype="float32")
        expected = [restore(g) for g in groups]
        counts = restore.counts.to_dict()
        tiles = _tiles(bundle, 3, seed=12)
        expected_tiles = [emu.run(t) for t in tiles]
    n_alloc = len(device.allocations)
    with bundle.accelerator("pynq") as acc:
        assert (acc.in_channels, acc.out_channels) == (3, 4)
        assert int(acc.kernel.read(pb.REG_CHANNELS)) == 0x0403
        restore = bundle.sim_restorer(acc, noise, dtype="float32")
        got = [restore(g) for g in groups]
        acc.submit(tiles[0])  # two multi-channel tiles in flight
        acc.submit(tiles[1])
        got_tiles = [acc.wait()]
        acc.submit(tiles[2])
        got_tiles += [acc.wait(), acc.wait()]
    # buffers of th*tw*C codes: 3 in, 4 out, allocated once
    sizes = [a.ddr.size for a in device.allocations[n_alloc:]]
    assert sizes == [128 * 128 * 3] * 2 + [128 * 128 * 4] * 2
    for g, e in zip(got, expected, strict=True):
        assert g.shape == (2 * SIM_FRAME[0], 2 * SIM_FRAME[1])
        np.testing.assert_array_equal(g, e)
    assert restore.counts.to_dict() == counts
    for g, e in zip(got_tiles, expected_tiles, strict=True):
        assert g.shape == (128, 128, 4) and g.dtype == np.uint8
        np.testing.assert_array_equal(g, e)


@needs_pynq
def test_wiener_sim_bundle_on_pynq_equals_the_emulator(make_bundle, device):
    """wiener9 (9 demodulated channels in, 4 out; the demodulation on the host) through
    WienerSimRestorer: whole groups, bit-identical, the same counts."""
    bundle = make_bundle(shipped="wiener9")
    groups, camera = _sim_groups(bundle, 2, seed=13)
    params = _design_parameters(bundle)
    results = {}
    for backend in ("emulate", "pynq"):
        with bundle.accelerator(backend) as acc:
            restore = bundle.wiener_restorer(acc, camera.offset_adu)
            results[backend] = ([restore(g, params) for g in groups], dict(restore.counts),
                                restore.step)
            if backend == "pynq":
                assert (acc.in_channels, acc.out_channels) == (9, 4)
                assert int(acc.kernel.read(pb.REG_CHANNELS)) == 0x0409
    (emulated, counts, step), (on_pynq, pynq_counts, pynq_step) = results.values()
    assert pynq_counts == counts and pynq_step == step and counts["pixels"] > 0
    for g, e in zip(on_pynq, emulated, strict=True):
        assert g.shape == (2 * SIM_FRAME[0], 2 * SIM_FRAME[1])
        np.testing.assert_array_equal(g, e)


@needs_pynq
@pytest.mark.parametrize(("shipped", "c_in", "send_bytes"),
                         [("sim3", 3, 4080), ("wiener9", 9, 4032)])
def test_multichannel_transfers_split_at_whole_pixels(make_bundle, device, shipped, c_in,
                                                      send_bytes):
    """A 4095-byte DMA (4088 aligned): a tile of 3 or 9 channels in and 4 out crosses many
    transfers, each a whole number of pixels (3 x 1360 / 9 x 448 pixels in, 4 x 1022 out
    = the kernel's packet); the result is still the emulator's."""
    bundle = make_bundle(sg_length_width=12, shipped=shipped)
    tiles = _tiles(bundle, 2, seed=14)
    with bundle.accelerator("pynq") as acc:
        assert acc.max_transfer_bytes == 4088 and acc.send_bytes == send_bytes
        assert acc.packet_bytes == 4088 == int(acc.kernel.read(pb.REG_PACKET_BYTES))
        device.events.clear()
        got = [acc.run(t) for t in tiles]
    pixels = bundle.tile_shape[0] * bundle.tile_shape[1]
    sends = [d[1] for what, d in device.events if what == "send"]
    recvs = [d[1] for what, d in device.events if what == "recv"]
    assert len(sends) == 2 * -(-pixels * c_in // send_bytes)
    assert len(recvs) == 2 * -(-pixels * 4 // 4088)
    assert max(sends) <= 4095 and max(recvs) <= 4095
    assert all(n % c_in == 0 for n in sends) and all(n % 4 == 0 for n in recvs)
    assert sum(sends) == 2 * pixels * c_in and sum(recvs) == 2 * pixels * 4
    with bundle.accelerator("emulate") as emu:
        for g, t in zip(got, tiles, strict=True):
            np.testing.assert_array_equal(g, emu.run(t))


@needs_pynq
def test_a_kernel_of_other_channels_is_refused(make_bundle, device):
    """REG_CHANNELS is checked against the bundle like REG_TILE / REG_BITS."""
    # the SIM bundle's bitstream built for 1 -> 1 channels
    sim = make_bundle(shipped="sim3", in_channels=1, out_channels=1)
    with pytest.raises(AcceleratorError, match=r"kernel compiled for 1 -> 1 channels per "
                       r"pixel \(REG_CHANNELS 0x0101\), the bundle needs 3 -> 4; is the "
                       r"bitstream the bundle's\? run `fluorofpga verify`"):
        sim.accelerator("pynq")
    # the denoiser opened on the SIM kernel's bitstream (same tile and bits)
    denoiser = make_bundle(design_of="sim3")
    with pytest.raises(AcceleratorError, match=r"3 -> 4 channels per pixel.*needs 1 -> 1"):
        denoiser.accelerator("pynq")


@needs_pynq
def test_a_kernel_without_the_channel_register(make_bundle, device):
    """A kernel from before REG_CHANNELS reads 0 there: it streams 1-channel tiles, so
    the denoiser runs on it unchanged and a SIM bundle is refused."""
    denoiser = make_bundle(channels_register=False)
    tiles = _tiles(denoiser, 2, seed=15)
    with denoiser.accelerator("pynq") as acc, denoiser.accelerator("emulate") as emu:
        assert int(acc.kernel.read(pb.REG_CHANNELS)) == 0
        for t in tiles:
            np.testing.assert_array_equal(acc.run(t), emu.run(t))
    sim = make_bundle(shipped="wiener9", channels_register=False)
    with pytest.raises(AcceleratorError, match=r"REG_CHANNELS reads 0\): it predates "
                       r"multi-channel streaming.*needs 9 -> 4 channels"):
        sim.accelerator("pynq")


@needs_pynq
def test_sim_bundle_tables_stay_on_the_host(make_bundle, device):
    """No denoiser tables are written into a SIM kernel; the buffers are released."""
    bundle = make_bundle(shipped="sim3")
    tables = bundle.tables(NoiseModel.from_camera(2.0, 100.0, 3.0))
    from fluorofpga.host.pynq_backend import PynqAccelerator

    n_alloc = len(device.allocations)
    with pytest.raises(ValueError, match="SimRestorer / WienerSimRestorer"):
        PynqAccelerator.from_bundle(bundle, tables=tables)
    assert all(a.freed for a in device.allocations[n_alloc:])
    assert device.tables_loaded == 0 and not device.in_lut.any()


def test_pynq_backend_without_bitstream_or_pynq_is_board_not_found(tmp_path):
    try:
        bundle = load_bundle()
    except BundleError:
        bundle = load_bundle(_bundle_dir(tmp_path))
    if "bitstream" in bundle.manifest.get("files", {}):
        pytest.skip("the shipped bundle has a bitstream")
    with pytest.raises(BoardNotFound, match="no bitstream"):
        bundle.accelerator("pynq")
    from fluorofpga.host.pynq_backend import PynqAccelerator

    for name in ("sim3", "wiener9"):  # SIM bundles: the same clear refusal, no other
        sim = load_bundle(default_bundle_path().parent / name)
        with pytest.raises(BoardNotFound, match=f"bundle {sim.name} has no bitstream"):
            sim.accelerator("pynq")
        with pytest.raises(BoardNotFound, match=f"bundle {sim.name} has no bitstream"):
            PynqAccelerator.from_bundle(sim)


def test_missing_pynq_is_board_not_found():
    if _have("pynq"):
        pytest.skip("pynq is installed here")
    from fluorofpga.host.pynq_backend import PynqAccelerator

    with pytest.raises(BoardNotFound, match="'pynq' package is not installed"):
        PynqAccelerator("nothing.bit", (8, 8))


@pytest.mark.board
def test_on_a_real_board_matches_the_emulator():
    """On a PYNQ board with the bundle's bitstream: board == emulator on random tiles."""
    if not _have("pynq"):
        pytest.skip("needs a PYNQ board (pynq is not installed here)")
    import pynq

    devices = [d for d in pynq.Device.devices if type(d).__name__ != "StandinDevice"]
    if not devices:
        pytest.skip("needs a PYNQ board (pynq found no device)")
    bundle = load_bundle()
    if "bitstream" not in bundle.manifest.get("files", {}):
        pytest.skip(f"the bundle {bundle.name} has no bitstream (built without Vivado)")
    from fluorofpga.host.pynq_backend import PynqAccelerator

    tiles = _tiles(bundle, 8, seed=5)
    with PynqAccelerator.from_bundle(bundle, device=devices[0]) as acc, \
            bundle.accelerator("emulate") as emu:
        for t in tiles:
            np.testing.assert_array_equal(acc.run(t), emu.run(t))
