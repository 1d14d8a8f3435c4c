"""Learned 3-frame SIM bundles: the chain of custody, the host's reconstruction, the CLI.

One tiny SIM bundle (8 channels, 3 layers, 32² tiles, a few training steps: its quality is
not the point here) is built once through the real chain: simulated SIM training data,
Brevitas QAT, QONNX export, the finn-plus build with the boundary transposes removed
(NHWC streams), hardware-layer export and chain-of-custody verification.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from fluorofpga import app as facade
from fluorofpga.cli import app
from fluorofpga.host import load_bundle
from fluorofpga.host.emulate import load_hw_graph, run_hw_graph
from fluorofpga.microscope import (
    NoiseModel,
    SCMOSCamera,
    depth_to_space,
    make_pattern,
    read_image_meta,
    render_specimen,
    sim_ground_truth,
    simulate_sim,
    space_to_depth,
)
from fluorofpga.models import SimTriplets

pytestmark = pytest.mark.slow

runner = CliRunner()
SIZE = 48  # camera pixels of the raw test frames (larger than the 32² tile: tiled)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("simbundle") / "sim3"
    spec = facade.BundleRecipe(name="tiny-sim3", task="sim", train_steps=30, qat_steps=10,
                               tile=32, scenes=4, channels=8, depth=3, target_mpix_per_s=5)
    return facade.make_bundle(out, spec)


def raw_groups(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    """``n`` raw 3-frame groups (3 angles x 1 phase) of cell-like scenes, uint16."""
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(n):
        pattern = make_pattern(n_angles=3, n_phases=1, k_fraction=0.85,
                               phase_offsets_rad=tuple(rng.uniform(0, 6.28, 3)))
        specimen = render_specimen((2 * size, 2 * size), rng, filaments=8, puncta=40,
                                   nuclei=1)
        groups.append(simulate_sim(specimen, pattern, peak_photons=200.0,
                                   camera=SCMOSCamera(), rng=rng).raw)
    return np.concatenate(groups)


def test_manifest_states_frames_order_upscaling_and_signal(bundle) -> None:
    m = bundle.manifest
    assert m["task"] == "sim" and bundle.task == "sim"
    assert m["input"]["frames"] == 3 and "angle" in m["input"]["order"]
    assert m["output"]["upscale"] == 2 and m["signal"]["kind"] == "gat-direct"
    acc = bundle.accelerator("emulate")
    assert (acc.in_channels, acc.out_channels) == (3, 4)
    assert acc.in_shape == (32, 32, 3) and acc.out_shape == (32, 32, 4)


def test_every_stage_gives_the_same_integers_on_camera_and_full_range_tiles(bundle) -> None:
    v = bundle.manifest["verification"]
    assert v["bit_exact"], v["stages"]
    assert set(v["stages"]) >= {"brevitas", "qonnx", "finn:step_streamline",
                                "finn:step_minimize_bit_width", "host:emulate"}
    assert all(n == 0 for n in v["stages"].values())
    # the full-range tiles reach thresholds the camera tiles alone do not
    full, camera = v["thresholds_exercised"], v["thresholds_exercised_camera_only"]
    assert sum(full.values()) > sum(camera.values())
    tiles = facade.sample_tiles(bundle, 1, seed=3)
    assert all(t.shape == (3, 32, 32) for t in tiles)
    assert any(int(t.max()) == 255 for t in tiles) and any(int(t.min()) == 0 for t in tiles)


def test_a_changed_weight_in_the_hardware_graph_fails_verification(bundle, tmp_path) -> None:
    from fluorofpga.hw import execute_int

    graph = bundle.file("finn_build") / "intermediate_models" / "step_minimize_bit_width.onnx"
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(graph))
    mvau = next(n for n in model.graph.node if n.op_type.startswith("MVAU"))
    w = model.get_initializer(mvau.input[1]).copy()
    w.flat[0] = w.flat[0] + 1 if w.flat[0] < 7 else w.flat[0] - 1
    model.set_initializer(mvau.input[1], w)
    changed = tmp_path / "changed.onnx"
    model.save(str(changed))
    tiles = facade.sample_tiles(bundle, 1, seed=0)
    same = [np.array_equal(execute_int(graph, t), execute_int(changed, t)) for t in tiles]
    assert not all(same)


def test_tiled_reconstruction_equals_the_whole_frame_reference(bundle) -> None:
    from fluorofpga.app import simulated_camera_noise

    group = raw_groups(1, seed=1)
    noise = simulated_camera_noise()
    with bundle.accelerator("emulate") as acc:
        restore = bundle.sim_restorer(acc, noise, dtype="float32")
        image = restore(group)
    tables = bundle.tables(noise)
    codes = tables.encode(group)
    whole = run_hw_graph(load_hw_graph(bundle.file("hw_layers")), np.moveaxis(codes, 0, -1))
    reference = depth_to_space(tables.out_lut[np.moveaxis(whole, -1, 0)])
    assert image.shape == (2 * SIZE, 2 * SIZE) and image.dtype == np.float32
    np.testing.assert_array_equal(image, reference.astype(np.float32))
    assert restore.counts.pixels == 4 * SIZE * SIZE


def test_saturated_input_pixels_pass_through_and_are_counted(bundle) -> None:
    from fluorofpga.app import simulated_camera_noise

    group = raw_groups(1, seed=2)
    group[1, 5, 7] = 65535
    with bundle.accelerator("emulate") as acc:
        restore = bundle.sim_restorer(acc, simulated_camera_noise())
        image = restore(group)
    assert (image[10:12, 14:16] == 65535).all()
    assert restore.counts.saturated == 4
    with pytest.raises(ValueError, match="3 raw frames"):
        restore(group[:2])
    with pytest.raises(ValueError, match="unsigned-integer"):
        restore(group.astype(np.float32))


def test_a_sim_bundle_is_not_a_denoiser_and_a_denoiser_not_a_sim_bundle(bundle, tmp_path
                                                                         ) -> None:
    from fluorofpga.app import simulated_camera_noise
    from fluorofpga.host.bundle import BundleError

    with bundle.accelerator("emulate") as acc:
        with pytest.raises(BundleError, match="fluorofpga sim --model"):
            bundle.restorer(acc, simulated_camera_noise())
        with pytest.raises(ValueError, match="tile shape"):
            acc.run(np.zeros((32, 32), np.uint8))
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, raw_groups(1, seed=3), photometric="minisblack")
    r = runner.invoke(app, ["denoise", str(raw), str(tmp_path / "out.tif"), "--axes", "TYX",
                            "--model", str(bundle.path)])
    assert r.exit_code == 2 and "not a denoiser" in " ".join(r.stderr.split())
    r = runner.invoke(app, ["sim", str(raw), str(tmp_path / "sim.tif"), "--model",
                            str(load_bundle().path)])
    assert r.exit_code == 2 and "not a SIM reconstructor" in " ".join(r.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.tif"]


def test_sim_cli_reconstructs_groups_onto_the_2x_grid_with_metadata(bundle, tmp_path
                                                                     ) -> None:
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, raw_groups(2, seed=4), imagej=True, resolution=(1 / 0.065,
                     1 / 0.065), metadata={"axes": "TYX", "unit": "um", "finterval": 0.02})
    out = tmp_path / "sim.tif"
    r = runner.invoke(app, ["sim", str(raw), str(out), "--model", str(bundle.path)])
    assert r.exit_code == 0, r.output
    assert "estimated from the frames" in " ".join(r.stdout.split())
    image, meta = read_image_meta(out)
    assert image.shape == (2, 2 * SIZE, 2 * SIZE) and image.dtype == np.float32
    assert meta.axes == "TYX"
    assert meta.pixel_size_um[1] == pytest.approx(0.0325, rel=1e-3)
    assert meta.frame_interval == pytest.approx(0.06, rel=1e-3)  # 3 raw frames per image
    # an incomplete group and a mismatching --frames: one error each, nothing written
    bad = tmp_path / "seven.tif"
    tifffile.imwrite(bad, raw_groups(3, seed=5)[:7], photometric="minisblack")
    for args, message in (([str(bad)], "not a multiple of 3"),
                          ([str(raw), "--frames", "9"], "reconstructs from 3")):
        r = runner.invoke(app, ["sim", *args, str(tmp_path / "x.tif"), "--model",
                                str(bundle.path)])
        assert r.exit_code == 2 and message in " ".join(r.stderr.split()), r.output
    assert not (tmp_path / "x.tif").exists()


def test_training_target_is_in_widefield_units_and_the_pixel_shuffle_inverts() -> None:
    uniform = np.ones((64, 64))
    truth = sim_ground_truth(uniform, units="widefield")
    assert truth[16:-16, 16:-16] == pytest.approx(1.0, rel=1e-3)  # = the widefield peak
    rng = np.random.default_rng(0)
    fine = rng.random((2, 10, 12))
    assert np.array_equal(depth_to_space(space_to_depth(fine)), fine)
    assert np.array_equal(space_to_depth(fine)[:, 3], fine[:, 1::2, 1::2])
    data = SimTriplets(2, 40, seed=0)
    x, t = data.batch(3, 24)
    assert x.shape == (3, 3, 24, 24) and t.shape == (3, 4, 24, 24)
    assert torch.all(x >= 0) and torch.all(x < 1)


def test_the_network_rtl_simulates_bit_exactly_with_stalls(bundle, tmp_path) -> None:
    """Rung 6 for a SIM network: the stitched RTL (3 input beats and 4 output beats per
    pixel, as FINN folds the first and last layer) in Verilator == the emulator, on
    full-range and camera tiles, free-running and under random idle/backpressure."""
    from fluorofpga.hw.rtlsim_backend import RtlsimAccelerator

    rtl = RtlsimAccelerator.from_bundle(bundle, work_dir=tmp_path)
    d = rtl.design
    assert (d.in_channels, d.out_channels) == (3, 4)
    assert d.in_beats * d.in_bits == 3 * 8 and d.out_beats * d.out_bits == 4 * 8
    stalled = RtlsimAccelerator(d, idle_prob=0.3, backpressure_prob=0.5, seed=1)
    tiles = facade.sample_tiles(bundle, 1, seed=7)
    with bundle.accelerator("emulate") as emu:
        for i, tile in enumerate([tiles[0], tiles[2], tiles[-1]]):  # camera, random, top
            x = np.ascontiguousarray(np.moveaxis(tile, 0, -1))
            acc = stalled if i == 1 else rtl
            np.testing.assert_array_equal(acc.run(x), emu.run(x))
    # cycles per tile within 10 % of FINN's estimate (free-running)
    assert rtl.cycles[-1] == pytest.approx(d.estimated_cycles, rel=0.10)

    # the board kernel around it (the driver's registers; one channel a DMA beat, as the
    # driver packs a channels-last tile): the same codes, TLAST on whole pixels
    from fluorofpga.hw.kernel import generate_kernel, simulate_kernel

    kernel = generate_kernel(d)
    assert (kernel.in_width, kernel.out_width, kernel.out_pixel_bytes) == (8, 8, 4)
    x = np.ascontiguousarray(np.moveaxis(tiles[2], 0, -1))  # random full-range codes
    packet = 4 * 250 + 2  # bytes: the packet ends on the pixel that reaches it
    run = simulate_kernel(kernel, x[None], packet, idle_prob=0.2, backpressure_prob=0.3)
    with bundle.accelerator("emulate") as emu:
        np.testing.assert_array_equal(run.words[0], emu.run(x))
    n_beats = x.shape[0] * x.shape[1] * 4
    full, rest = divmod(n_beats, 1004)
    assert run.packets == [1004] * full + ([rest] if rest else [])
    assert run.registers["reset.CHANNELS"] == 0x0403
    assert run.registers["end.TILES_DONE"] == 1


def test_stream_sim_with_a_bundle_groups_by_3_and_counts_broken_groups(bundle, tmp_path
                                                                       ) -> None:
    from fluorofpga.host.simstream import SimGrouper, SimulatedSimCameraSource

    out = tmp_path / "live.tif"
    r = facade.stream("sim", str(out), bundle_path=bundle.path, frames=12, size=SIZE,
                      sim=True, na=1.2, wavelength_nm=520, pixel_size_um=0.065, seed=1)
    assert r["frames_per_group"] == 3 and r["groups_reconstructed"] == 4
    assert "learned 3-frame" in r["computed_on"]
    assert r["reconstruction"]["noise_from"] == "the simulated camera"
    image, meta = read_image_meta(out)
    assert image.shape == (4, 2 * SIZE, 2 * SIZE)
    assert meta.pixel_size_um[1] == pytest.approx(0.0325, rel=1e-3)
    # pack / accelerate / unpack ran on their own threads, bit-identical to the restorer
    assert set(r["stage_ms_mean"]) == {"pack", "accelerate", "unpack"}
    cam = SimulatedSimCameraSource(12, (SIZE, SIZE), seed=1, na=1.2, wavelength_nm=520,
                                   pixel_size_nm=65.0, phases=1)  # the stream's camera
    camera = cam.camera
    noise = NoiseModel.from_camera(camera.gain_e_per_adu, camera.offset_adu,
                                   camera.read_noise_e)
    with bundle.accelerator("emulate") as acc:
        restore = bundle.sim_restorer(acc, noise, None, dtype="float32")
        for k, (_, group) in enumerate(SimGrouper(cam, phases=1)):
            np.testing.assert_array_equal(image[k], restore(np.asarray(group)))
    # a frame lost inside a group: that group is discarded and listed, the rest go on
    cam = SimulatedSimCameraSource(9, (SIZE, SIZE), seed=2, phases=1)
    lossy = [item for item in cam if item[0] != 4]
    grouper = SimGrouper(lossy, phases=1)
    groups = [g for _, g in grouper]
    assert [g.first_index for g in groups] == [0, 6]
    assert grouper.incomplete == 1 and grouper.events[0].indices == (3, 5)
    # a recorded stack needs no optics: the network uses none; the pixel size comes from
    # the file (halved on output), or there is none and the summary says so (frames large
    # enough to estimate the noise from one group)
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, raw_groups(2, seed=6, size=80), imagej=True, resolution=(1 / 0.065,
                     1 / 0.065), metadata={"axes": "TYX", "unit": "um"})
    r = facade.stream(str(raw), str(tmp_path / "file.tif"), bundle_path=bundle.path, sim=True)
    assert r["groups_reconstructed"] == 2 and r["optics"]["na"] is None
    assert r["pixel_size_out_nm"] == pytest.approx(32.5, rel=1e-3)
    assert read_image_meta(tmp_path / "file.tif")[1].pixel_size_um[1] == pytest.approx(
        0.0325, rel=1e-3)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, raw_groups(1, seed=7, size=80), photometric="minisblack")
    r = facade.stream(str(plain), str(tmp_path / "plain_out.tif"), bundle_path=bundle.path,
                      sim=True)
    assert r["pixel_size_out_nm"] is None and "no pixel size" in r["notes"][0]
    with pytest.raises(ValueError, match="--na"):  # a given value is still checked
        facade.stream(str(raw), str(tmp_path / "y.tif"), bundle_path=bundle.path, sim=True,
                      na=12.0)
    # a denoiser is no SIM bundle, and a SIM bundle does not take classical parameters
    with pytest.raises(ValueError, match="denoise bundle"):
        facade.stream("sim", str(tmp_path / "x.tif"), bundle_path=load_bundle().path,
                      sim=True, na=1.2, wavelength_nm=520, pixel_size_um=0.065)
    assert not (tmp_path / "x.tif").exists()


def test_compile_counts_reconstructions_and_the_sim_tables(bundle, tmp_path) -> None:
    r = facade.compile_bundle(tmp_path / "c", "kv260", 30, (256, 256), bundle.path)
    assert any("30 reconstructions/s of 3 raw 256x256 frames" in n for n in r["notes"])
    assert r["layers"]["sim_pixel_in"]["BRAM_18K"] == 3 * 32  # 3 tables of 64 Ki x 9 bit
    assert r["camera"]["mpix_per_s"] == pytest.approx(30 * 256 * 256 / 1e6)
    assert (tmp_path / "c" / "vivado" / "stitched.onnx").is_file()
    # the pynq backend takes SIM bundles (tests/test_host_pynq.py, on the stand-in board);
    # this one was built without Vivado: no bitstream, a clear BoardNotFound
    from fluorofpga.host import BoardNotFound
    from fluorofpga.host.pynq_backend import PynqAccelerator

    with pytest.raises(BoardNotFound, match=f"bundle {bundle.name} has no bitstream"):
        PynqAccelerator.from_bundle(bundle)


def test_a_calibration_maps_every_raw_frame_and_the_output_stays_uniform(bundle) -> None:
    from fluorofpga.microscope import Calibration, NoiseModel
    from fluorofpga.microscope.signal import PixelMaps

    group = raw_groups(1, seed=6)
    rng = np.random.default_rng(0)
    offset = 100.0 + rng.normal(0, 3, (SIZE, SIZE))  # per-pixel offsets (fixed pattern)
    cal = Calibration(offset_adu=offset, read_noise_adu=np.full((SIZE, SIZE), 1.5),
                      gain_e_per_adu=0.46, qe=0.8)
    noise = NoiseModel.from_calibration(cal, extra_rounding=True)
    with bundle.accelerator("emulate") as acc:
        calibrated = bundle.sim_restorer(acc, noise, cal, dtype="float32")(group)
        maps = PixelMaps(cal)
        uniform = np.stack([maps.to_uniform(f) for f in group])
        plain = bundle.sim_restorer(acc, noise, dtype="float32")(uniform)
    np.testing.assert_array_equal(calibrated, plain)
    with pytest.raises(ValueError):
        bundle.sim_restorer(acc, noise, cal)(group[:, :32, :32])  # another sensor size
