"""End-to-end: shipped bundle, demo, denoise CLI and bundle creation through the facade."""

import json

import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from fluorofpga import app as facade
from fluorofpga.cli import app as cli
from fluorofpga.host import (
    load_bundle,
)
from fluorofpga.microscope import WidefieldMicroscope, read_tiff, write_tiff

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


def test_shipped_bundle_manifest(bundle):
    m = bundle.manifest
    assert m["format"] == "fluorofpga-bundle" and m["version"] == 2
    assert bundle.tile_shape == (128, 128)
    assert bundle.halo == m["network"]["depth"]  # halo = receptive-field radius
    assert m["input"]["bits"] == 8 and m["output"]["bits"] == 8
    assert bundle.signal.kind == "gat-residual"
    assert "simulated only" in m["training"]["data"]
    assert m["verification"]["bit_exact"] is True
    for key in ("float_checkpoint", "quant_checkpoint", "qonnx", "hw_layers", "finn_build"):
        assert bundle.file(key).exists()


@pytest.mark.slow
def test_shipped_bundle_chain_of_custody(bundle):
    result = facade.verify_bundle(bundle, n_images=1, seed=7)
    assert result["bit_exact"], result["stages"]
    assert {"brevitas", "qonnx", "host:emulate"} <= set(result["stages"])


@pytest.mark.slow
def test_pynq_z2_bundle_chain_of_custody():
    from fluorofpga.host import shipped_bundle_path

    small = load_bundle(shipped_bundle_path("pynq-z2"))
    assert small.manifest["network"]["channels"] == 4 and small.halo == 5
    result = facade.verify_bundle(small, n_images=1, seed=8)
    assert result["bit_exact"], result["stages"]
    assert {"brevitas", "qonnx", "host:emulate"} <= set(result["stages"])


def test_demo_restores_and_reports(tmp_path):
    r = facade.demo(tmp_path, frames=3, size=256, seed=1, check_frames=1)
    assert r["frames"] == 3 and r["frames_out"] == 3 and r["dropped"] == 0
    assert r["backend"] == "emulate" and r["fps"] > 0
    assert r["psnr_restored"] > r["psnr_noisy"] + 6  # clearly better than the raw frames
    assert r["bit_exact"] is True and r["bit_exact_frames_checked"] == 1
    stack = read_tiff(tmp_path / "restored.tif")
    assert stack.shape == (3, 256, 256) and stack.dtype == np.uint16
    assert json.loads((tmp_path / "report.json").read_text())["dropped"] == 0
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_demo_counts_dropped_frames_of_a_fast_camera(tmp_path):
    r = facade.demo(tmp_path, frames=8, size=256, seed=2, camera_fps=200.0, check_frames=0)
    assert r["dropped"] > 0
    assert r["frames_out"] + r["dropped"] == 8
    assert len(r["dropped_indices"]) == r["dropped"]
    assert read_tiff(tmp_path / "restored.tif").shape[0] == r["frames_out"]


def _noisy_stack(n=2, size=140):
    return np.stack([f.noisy for f in WidefieldMicroscope(shape=(size, size), seed=4).frames(n)])


def test_cli_denoise_tyx_and_yx(tmp_path):
    stack = _noisy_stack()
    write_tiff(tmp_path / "in.tif", stack, axes="TYX")
    res = runner.invoke(cli, ["denoise", str(tmp_path / "in.tif"), str(tmp_path / "out.tif")])
    assert res.exit_code == 0, res.output
    out = read_tiff(tmp_path / "out.tif")
    assert out.shape == stack.shape and out.dtype == np.uint16
    assert not np.array_equal(out, stack)
    tifffile.imwrite(tmp_path / "one.tif", stack[0])
    res = runner.invoke(cli, ["denoise", str(tmp_path / "one.tif"), str(tmp_path / "o1.tif")])
    assert res.exit_code == 0, res.output
    # the noise model is estimated from one frame instead of a pair: nearly the same result
    one = read_tiff(tmp_path / "o1.tif").astype(float)
    assert one.shape == out[0].shape and np.abs(one - out[0]).mean() < 1.0


@pytest.mark.parametrize("case", ["float32", "truncated", "missing", "rgb", "unnamed", "same",
                                  "tiny", "exists", "uint32 beyond 16 bits",
                                  "int16 negative"])
def test_cli_denoise_bad_input_clear_error_nothing_written(tmp_path, case):
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    stack = _noisy_stack(1, 64)
    if case == "float32":
        tifffile.imwrite(src, stack[0].astype(np.float32))
    elif case == "truncated":
        tifffile.imwrite(src, stack)
        data = src.read_bytes()
        src.write_bytes(data[: len(data) // 2])
    elif case == "rgb":
        tifffile.imwrite(src, np.zeros((64, 64, 3), np.uint16), photometric="rgb")
    elif case == "unnamed":  # a plain 3-D TIFF: time, Z or channels? (--axes says)
        tifffile.imwrite(src, np.repeat(stack, 5, axis=0))
    elif case == "same":
        tifffile.imwrite(src, stack[0])
        dst = src
    elif case == "tiny":  # too small to estimate the noise without a calibration
        tifffile.imwrite(src, stack[0][:40, :40])
    elif case == "exists":
        tifffile.imwrite(src, stack[0])
        dst.write_bytes(b"precious")
    elif case == "uint32 beyond 16 bits":  # e.g. a sum of frames
        tifffile.imwrite(src, stack[0].astype(np.uint32) * 1000)
    elif case == "int16 negative":  # background-subtracted: the offset is gone
        tifffile.imwrite(src, stack[0].astype(np.int16) - 150)
    before = src.read_bytes() if src.exists() else None
    res = runner.invoke(cli, ["denoise", str(src), str(dst)])
    if case == "uint32 beyond 16 bits":
        assert "16 bits" in res.output
    if case == "int16 negative":
        assert "never negative" in res.output
    assert res.exit_code == 2
    assert "error" in res.output.lower()
    named = dst.name if case == "exists" else src.name
    assert named in res.output
    if case == "exists":
        assert dst.read_bytes() == b"precious"
    elif case != "same":
        assert not dst.exists()
    if before is not None:
        assert src.read_bytes() == before


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
def test_signed_integer_counts_are_denoised_as_the_same_uint16_counts(tmp_path, dtype):
    """Acquisition software that writes a 12/16-bit camera as int16 or int32: non-negative
    values are raw counts, restored exactly as the same counts stored as uint16."""
    stack = _noisy_stack(1, 128)
    assert stack.max() < 32768
    tifffile.imwrite(tmp_path / "u16.tif", stack[0])
    tifffile.imwrite(tmp_path / "signed.tif", stack[0].astype(dtype))
    for name in ("u16", "signed"):
        res = runner.invoke(cli, ["denoise", str(tmp_path / f"{name}.tif"),
                                  str(tmp_path / f"{name}_out.tif")])
        assert res.exit_code == 0, res.output
    want, got = read_tiff(tmp_path / "u16_out.tif"), read_tiff(tmp_path / "signed_out.tif")
    assert got.dtype == np.uint16 and np.array_equal(got, want)


def test_cli_demo_on_missing_board_fails_clearly(tmp_path):
    res = runner.invoke(cli, ["demo", "--out", str(tmp_path), "--backend", "pynq",
                              "--frames", "1", "--size", "128"])
    assert res.exit_code == 2
    assert "board" in res.output.lower()


def test_cli_boards_lists_kv260():
    res = runner.invoke(cli, ["boards"])
    assert res.exit_code == 0 and "kv260" in res.output and "xck26" in res.output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small bundle made through the facade, and the stages it reported."""
    spec = facade.BundleRecipe(name="tiny", train_steps=200, qat_steps=30, tile=32,
                               channels=6, depth=3, target_mpix_per_s=1.0, scenes=8)
    stages = set()
    out = tmp_path_factory.mktemp("tiny") / "b"
    b = facade.make_bundle(out, spec, progress=lambda s, *a: stages.add(s))
    return b, stages


@pytest.mark.slow
def test_make_bundle_end_to_end(tiny, tmp_path):
    b, stages = tiny
    assert stages == {"train", "qat", "compile", "verify"}
    assert b.manifest["verification"]["bit_exact"] is True
    v = b.manifest["verification"]
    lo, hi = v["output_range"]
    assert hi - lo > 100  # full-range tiles drive the output over most of its codes
    # ... and exercise far more thresholds than camera tiles alone
    full, cam = v["thresholds_exercised"], v["thresholds_exercised_camera_only"]
    assert np.mean(list(full.values())) > 1.5 * np.mean(list(cam.values()))
    assert b.tile_shape == (32, 32) and b.halo == 3
    res = runner.invoke(cli, ["verify", str(b.path)])
    assert res.exit_code == 0 and "bit-exact: True" in res.output
    frame = _noisy_stack(1, 96)[0]
    write_tiff(tmp_path / "in.tif", frame, axes="YX")
    facade.denoise(tmp_path / "in.tif", tmp_path / "out.tif", b.path)
    assert read_tiff(tmp_path / "out.tif").shape == frame.shape


def test_finetune_steps_need_a_float_to_start_from(tmp_path):
    """--finetune-steps without --init-float (or negative) is refused before any work."""
    out = tmp_path / "b"
    for kw in ({"finetune_steps": 10}, {"finetune_steps": -1, "init_float": "x.pt"}):
        with pytest.raises(ValueError, match="finetune_steps"):
            facade.make_bundle(out, facade.BundleRecipe(**kw))
        assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="max_read_noise_e"):
        facade.make_bundle(out, facade.BundleRecipe(max_read_noise_e=0.2))
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_float_is_fine_tuned_before_quantization(tiny, tmp_path):
    """--init-float F --finetune-steps N: F trained N more steps on the simulated data
    (the weights move, the manifest says so), then quantized like any float."""
    from fluorofpga.models import load_float_model

    b, _ = tiny
    spec = facade.BundleRecipe(name="tuned", qat_steps=5, tile=32, target_mpix_per_s=1.0,
                               scenes=8, init_float=str(b.file("float_checkpoint")),
                               finetune_steps=20)
    tuned = facade.make_bundle(tmp_path / "t", spec)
    t = tuned.manifest["training"]
    assert t["steps"] == 20 and t["final_loss"] is not None and t["init_float"]
    # trained below the dark level of a 4.5 e- camera, and the manifest says so
    assert tuned.signal.max_dark_z == pytest.approx(2 * np.sqrt(4.5**2 + 0.375), abs=1e-4)
    assert tuned.manifest["verification"]["bit_exact"] is True
    before = load_float_model(b.file("float_checkpoint")).state_dict()
    after = load_float_model(tuned.file("float_checkpoint")).state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_denoise_on_the_rtlsim_backend_equals_the_emulator(tiny, tmp_path, monkeypatch):
    """`denoise --backend rtlsim`: the bundle's network rebuilt with RTL layers, stitched and
    simulated in Verilator, driven by the same host code: the same restored frame."""
    import fluorofpga.hw.rtlsim_backend as rb

    b, _ = tiny
    assert b.manifest["build"]["mvau_impl"] == "rtl"  # bundles are built with RTL layers
    monkeypatch.setattr(rb, "default_work_dir", lambda: tmp_path / "cache")
    rng = np.random.default_rng(5)  # 3 x 3 tiles of 32 (halo 3), enough to estimate noise
    yy, xx = np.mgrid[:84, :84]
    clean = 50 + 30 * xx + 800 * np.exp(-((yy - 30) ** 2 + (xx - 40) ** 2) / 60.0)
    frame = (rng.poisson(clean / 2.0) * 2 + 100 + rng.normal(0, 2, clean.shape)).astype(np.uint16)
    write_tiff(tmp_path / "in.tif", frame, axes="YX")
    outs = {}
    for backend in ("emulate", "rtlsim"):
        res = runner.invoke(cli, ["denoise", str(tmp_path / "in.tif"),
                                  str(tmp_path / f"{backend}.tif"), "--model", str(b.path),
                                  "--backend", backend])
        assert res.exit_code == 0, res.output
        outs[backend] = read_tiff(tmp_path / f"{backend}.tif")
    np.testing.assert_array_equal(outs["rtlsim"], outs["emulate"])
    assert list((tmp_path / "cache").glob("*/accel/design.json"))  # compiled once, cached


@pytest.mark.slow
def test_cli_calibrate_then_denoise_another_camera(tmp_path):
    """A camera with other gain/offset: calibrate it, then restore its frames through it."""
    from fluorofpga.microscope import SCMOSSensor, load_calibration, psnr

    rng = np.random.default_rng(11)
    shape = (140, 140)
    # offset spread 0.5 ADU = 0.55 e- rms: an uncalibrated run cannot remove an offset
    # pattern as large as the read noise (a single frame cannot tell it from signal)
    sensor = SCMOSSensor.random(shape, rng, offset_mean_adu=400.0, gain_mean_e_per_adu=1.1,
                                offset_sd_adu=0.5, hot_pixel_fraction=0.0,
                                dark_current_e_per_s=0.0)
    dark = sensor.acquire(np.zeros((40, *shape)), rng)
    tifffile.imwrite(tmp_path / "dark.tif", dark)
    flat_paths = []
    for i, level in enumerate((20.0, 80.0, 300.0, 1000.0)):
        tifffile.imwrite(tmp_path / f"flat{i}.tif",
                         sensor.acquire(np.full((12, *shape), level), rng))
        flat_paths.append(str(tmp_path / f"flat{i}.tif"))
    cal_path = tmp_path / "cal.npz"
    res = runner.invoke(cli, ["calibrate", str(tmp_path / "dark.tif"), *flat_paths,
                              "--out", str(cal_path)])
    assert res.exit_code == 0, res.output
    cal = load_calibration(cal_path)
    assert cal.gain_e_per_adu == pytest.approx(1.1, rel=0.03)

    mic = WidefieldMicroscope(shape=shape, seed=8, peak_photons=40.0)
    photons = mic.photons()
    noisy = sensor.acquire(photons, rng)
    truth = sensor.expected_adu(photons)
    write_tiff(tmp_path / "in.tif", noisy, axes="YX")
    res = runner.invoke(cli, ["denoise", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"),
                              "--calibration", str(cal_path)])
    assert res.exit_code == 0, res.output
    assert "calibration" in res.output and "zero level" not in res.output
    restored = read_tiff(tmp_path / "out.tif")
    assert psnr(truth, restored) > psnr(truth, noisy) + 6
    r = facade.denoise(tmp_path / "in.tif", tmp_path / "est.tif")  # no calibration file
    assert r["noise"]["source"] == "estimated"

    def electrons(adu):  # compared as signal: the true per-pixel offsets removed
        return (np.asarray(adu, float) - sensor.offset_adu) * sensor.gain_e_per_adu

    # the target is 0.5 dB; with this sensor's 0.55 e- offset pattern left in
    # (no calibration) we measure ~0.6 dB, reported in the README; a regression fails here
    assert psnr(electrons(truth), electrons(read_tiff(tmp_path / "est.tif"))) > psnr(
        electrons(truth), electrons(restored)) - 1.0

    res = runner.invoke(cli, ["denoise", str(tmp_path / "in.tif"), str(tmp_path / "x.tif"),
                              "--calibration", str(cal_path), "--model",
                              str(load_bundle().path)])
    assert res.exit_code == 0
    tifffile.imwrite(tmp_path / "small.tif", noisy[:64, :64])
    res = runner.invoke(cli, ["denoise", str(tmp_path / "small.tif"), str(tmp_path / "s.tif"),
                              "--calibration", str(cal_path)])
    assert res.exit_code == 2 and "140" in res.output
    assert not (tmp_path / "s.tif").exists()


def test_cli_train_bitfile_without_vivado_refuses_before_training(tmp_path, monkeypatch):
    monkeypatch.delenv("XILINX_VIVADO", raising=False)
    res = runner.invoke(cli, ["train", "--out", str(tmp_path / "b"), "--bitfile"])
    assert res.exit_code == 2
    assert "Vivado" in res.output
    assert not (tmp_path / "b").exists()


def test_cli_denoise_ome_zarr_round_trip(tmp_path):
    from fluorofpga.microscope import read_ome_zarr, write_ome_zarr

    stack = _noisy_stack(2, 130)
    write_ome_zarr(tmp_path / "in.zarr", stack, axes="TYX")
    res = runner.invoke(cli, ["denoise", str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr")])
    assert res.exit_code == 0, res.output
    out, axes = read_ome_zarr(tmp_path / "out.zarr")
    assert axes == "TYX" and out.shape == stack.shape and out.dtype == np.uint16
    res = runner.invoke(cli, ["denoise", str(tmp_path / "in.zarr"), str(tmp_path / "out.png")])
    assert res.exit_code == 2 and "suffix" in res.output
    assert not (tmp_path / "out.png").exists()


def test_v1_bundles_are_refused_with_a_reason(tmp_path):
    from fluorofpga.host import BundleError

    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format": "fluorofpga-bundle", "version": 1, "name": "old"}))
    with pytest.raises(BundleError, match="version 1.*raw camera ADU.*fluorofpga train"):
        load_bundle(tmp_path)


def test_cli_denoise_float32_keeps_axes_metadata_and_counts_saturation(tmp_path):
    from fluorofpga.microscope import ImageMeta, read_image_meta

    stack = _noisy_stack(2, 130)
    stack[0, 10, 10:14] = 65535  # saturated pixels pass through
    meta = ImageMeta(axes="ZYX", pixel_size_y=0.065, pixel_size_x=0.065, z_step=0.2)
    write_tiff(tmp_path / "in.tif", stack, meta=meta)
    res = runner.invoke(cli, ["denoise", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"),
                              "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    assert "estimated from the frames" in res.output
    assert "saturated at 65535 ADU (passed through) 4" in res.output
    out, got = read_image_meta(tmp_path / "out.tif")
    assert out.dtype == np.float32 and out.shape == stack.shape
    assert got.axes == "ZYX" and got.pixel_size_x == pytest.approx(0.065)
    assert got.z_step == pytest.approx(0.2)
    assert np.array_equal(out[0, 10, 10:14], stack[0, 10, 10:14])
    assert not np.array_equal(np.rint(out), out)  # not rounded to whole ADU
    # the uint16 default is the same result rounded
    r = facade.denoise(tmp_path / "in.tif", tmp_path / "u16.tif")
    u16 = read_tiff(tmp_path / "u16.tif", ndim=(3,))
    assert np.array_equal(u16, np.clip(np.rint(out), 0, 65535).astype(np.uint16))
    assert r["counts"]["saturated"] == 4 and r["axes"] == "ZYX"


def test_8_bit_camera_saturates_at_255_and_a_larger_adc_max_is_refused(tmp_path):
    """An 8-bit file's ADC maximum is 255: pixels there pass through unchanged and are
    counted (with 65535 they were restored as unsaturated, up to 263 ADU)."""
    from fluorofpga.microscope import ImageMeta

    rng = np.random.default_rng(3)
    stack = np.minimum(rng.poisson(60, (2, 96, 100)) + 10, 255).astype(np.uint8)
    stack[:, 40:50, 40:50] = 255  # a saturated cell
    write_tiff(tmp_path / "in.tif", stack, meta=ImageMeta(axes="TYX"))
    r = facade.denoise(tmp_path / "in.tif", tmp_path / "out.tif")
    out = read_tiff(tmp_path / "out.tif", ndim=(3,))
    assert r["tables"]["adc_max"] == 255
    assert r["counts"]["saturated"] == np.count_nonzero(stack == 255) >= 200
    assert np.array_equal(out[:, 40:50, 40:50], stack[:, 40:50, 40:50])
    res = runner.invoke(cli, ["denoise", str(tmp_path / "in.tif"), str(tmp_path / "o.tif"),
                              "--adc-max", "4095"])
    assert res.exit_code != 0 and "at most 255" in res.output
    assert not (tmp_path / "o.tif").exists()


def test_cli_denoise_unnamed_axes_with_axes_option(tmp_path):
    stack = _noisy_stack(5, 96)  # (tifffile would call 3 or 4 planes RGB(A) samples)
    tifffile.imwrite(tmp_path / "plain.tif", stack)
    res = runner.invoke(cli, ["denoise", str(tmp_path / "plain.tif"), str(tmp_path / "o.tif"),
                              "--axes", "TYX"])
    assert res.exit_code == 0, res.output
    from fluorofpga.microscope import read_image_meta

    out, meta = read_image_meta(tmp_path / "o.tif")
    assert meta.axes == "TYX" and out.shape == stack.shape


def test_cli_train_bad_recipe_or_board_keeps_the_out_folder(tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("important")
    for args in (["--recipe", "bogus"], ["--board", "nosuchboard"], []):
        res = runner.invoke(cli, ["train", "--out", str(keep), *args])
        assert res.exit_code == 2
        assert (keep / "notes.txt").read_text() == "important"
    res = runner.invoke(cli, ["train", "--out", str(keep), "--overwrite"])
    assert res.exit_code == 2 and "not a model bundle" in " ".join(res.output.split())
    assert (keep / "notes.txt").read_text() == "important"


def _mutated_copy(bundle, tmp_path, mutate):
    import shutil

    from qonnx.core.modelwrapper import ModelWrapper

    copy = tmp_path / "mutated"
    shutil.copytree(bundle.path, copy)
    path = copy / "finn" / "intermediate_models" / "step_streamline.onnx"
    model = ModelWrapper(str(path))
    mutate(model)
    model.save(str(path))
    return load_bundle(copy)


@pytest.mark.slow
@pytest.mark.parametrize("change", ["weight 0 -> 1", "upper thresholds of one channel"])
def test_verify_catches_a_one_value_change_in_an_intermediate_model(tiny, tmp_path, change):
    """Full-range tiles next to camera tiles: a single changed weight or shifted thresholds
    in one intermediate model must fail the chain of custody."""

    from fluorofpga.hw import threshold_coverage

    b, _ = tiny
    streamlined = b.file("finn_build") / "intermediate_models" / "step_streamline.onnx"
    coverage = threshold_coverage(streamlined, facade.sample_tiles(b, 1, 0))

    def mutate(model):
        nodes = list(model.graph.node)
        if change.startswith("weight"):
            # the zero weight between the busiest input channel and the busiest output
            # channel of any conv (both really driven by the verification tiles)
            mms = [n for n in nodes if n.op_type == "MatMul"]
            mts = [n for n in nodes if n.op_type == "MultiThreshold"]
            best = None
            for i, mm in enumerate(mms):
                w = model.get_initializer(mm.input[1])
                c_in = coverage[mts[i - 1].name]["crossings"] if i > 0 else [255]
                c_out = coverage[mts[i].name]["crossings"]
                for row, col in np.argwhere(w == 0):
                    score = c_in[row % len(c_in)] * c_out[col % len(c_out)]
                    if best is None or score > best[0]:
                        best = (score, mm, row, col)
            assert best is not None and best[0] > 0, "no zero weight between active channels"
            _, mm, row, col = best
            w = model.get_initializer(mm.input[1]).copy()
            w[row, col] = 1
            model.set_initializer(mm.input[1], w)
        else:
            # the busiest channel of a hidden layer: its upper crossed thresholds, one step up
            node = max((n for n in nodes if n.op_type == "MultiThreshold"),
                       key=lambda n: coverage[n.name]["exercised"] if len(
                           coverage[n.name]["crossings"]) > 1 else -1)
            ch = int(np.argmax(coverage[node.name]["crossings"]))
            k = coverage[node.name]["crossings"][ch]
            t = model.get_initializer(node.input[1]).copy()
            t[ch, k // 2:k] += np.median(np.diff(t[ch]))
            model.set_initializer(node.input[1], t)

    result = facade.verify_bundle(_mutated_copy(b, tmp_path, mutate), n_images=1)
    assert not result["bit_exact"]
    assert result["stages"]["finn:step_streamline"] > 0
    assert result["stages"]["qonnx"] == 0 and result["stages"]["host:emulate"] == 0


def test_cli_denoise_names_a_blank_frame_and_warns_when_most_pixels_pass_through(tmp_path):
    """A blank frame in a stack is left out of the noise estimate and named (the other
    frames are restored as without it); a run that passes most pixels through unrestored
    says so instead of only counting them."""
    stack = _noisy_stack(4)
    write_tiff(tmp_path / "in.tif", stack, axes="TYX")
    blank = stack.copy()
    blank[2] = 0
    write_tiff(tmp_path / "blank.tif", blank, axes="TYX")
    for name in ("in", "blank"):
        res = runner.invoke(cli, ["denoise", str(tmp_path / f"{name}.tif"),
                                  str(tmp_path / f"{name}_out.tif")])
        assert res.exit_code == 0, res.output
    assert "left out frame(s) 2" in res.output and "passed through unrestored" not in res.output
    # the blank frame itself is no camera reading: restored from the lowest code, counted
    assert f"warning: {stack[2].size} pixel(s) lie far below the camera's zero level" in (
        " ".join(res.output.split()))
    ref, got = read_tiff(tmp_path / "in_out.tif"), read_tiff(tmp_path / "blank_out.tif")
    kept = [0, 1, 3]
    assert np.abs(got[kept].astype(float) - ref[kept]).mean() < 0.5  # restored alike
    low = int(np.percentile(stack, 88))  # an --adc-max below the camera's
    res = runner.invoke(cli, ["denoise", str(tmp_path / "in.tif"), str(tmp_path / "low.tif"),
                              "--adc-max", str(low)])
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "passed through unrestored" in res.output
    assert "far below the camera's zero level" not in res.output  # plain camera frames
