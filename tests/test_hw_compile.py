"""`fluorofpga compile`: folding for a camera's rate within 85 % of every resource, the
report's arithmetic, the Vivado build folder, and argument checks before any work."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fluorofpga.cli import app as cli
from fluorofpga.hw.compile import compile_for_camera, pixel_kernel_resources
from fluorofpga.hw.pixel_kernels import PixelKernelParams
from fluorofpga.microscope.signal import SignalSpec

TILE = 32
runner = CliRunner()


@pytest.fixture(scope="module")
def small_qonnx(tmp_path_factory):
    from fluorofpga.models import DenoiserConfig
    from fluorofpga.quantize import untrained_qonnx

    d = tmp_path_factory.mktemp("compile_net")
    cfg = DenoiserConfig(channels=6, depth=3)
    return untrained_qonnx(cfg, "w4a8", TILE, d / "model.qonnx.onnx"), cfg


def test_pixel_kernel_memories_use_the_best_block_ram_shape():
    res = pixel_kernel_resources(PixelKernelParams(), bypass_depth=128 * 128)
    assert res["pixel_in"]["BRAM_18K"] == 32  # 65536 x 9 bits: 2048 x 9 per RAMB18
    assert res["pixel_out"]["BRAM_18K"] == 8  # 4096 x 32 bits: 512 x 36 (or 1024 x 18)
    assert res["bypass_fifo"]["BRAM_18K"] == 3 * 8  # 16384 x 27 bits: 2048 x 9, 3 wide


@pytest.mark.slow
def test_reachable_target_is_met_within_the_budget(small_qonnx, tmp_path):
    qonnx, cfg = small_qonnx
    r = compile_for_camera(qonnx, tmp_path / "c", board="kv260", fps=100, frame=(256, 256),
                           tile=TILE, halo=cfg.halo, signal=cfg.signal)
    rep = r.report
    assert rep["meets_target"] and rep["estimated"]["mpix_per_s"] >= 6.5536
    assert max(rep["utilisation"].values()) <= 0.85
    ops = {ly["op"] for ly in rep["layers"].values()}
    assert {"StreamingFIFO_rtl", "StreamingDataWidthConverter_rtl", "MVAU_rtl"} <= ops
    assert {"pixel_in", "pixel_out", "bypass_fifo"} <= set(rep["layers"])
    assert {ly["weights_in"] for ly in rep["layers"].values() if "weights_in" in ly} <= {
        "distributed", "block"}
    assert rep["estimated"]["bottleneck"] in rep["layers"]
    assert json.loads((tmp_path / "c" / "report.json").read_text())["board"] == "kv260"
    assert "Mpixel/s" in (tmp_path / "c" / "report.md").read_text()
    viv = r.vivado_dir
    assert "INIT_ABITS_LO" in (viv / "finn-rtllib/fifo/hdl/fifo.sv").read_text()
    assert "CORE_PIPELINE_DEPTH + 2" in (viv / "finn-rtllib/mvu/mvu_vvu_axi.sv").read_text()
    assert (viv / "rtl" / "fluorofpga_accel.sv").is_file() and (viv / "stitched.onnx").is_file()
    run = subprocess.run([sys.executable, str(viv / "build_bitstream.py")],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 2 and "Vivado was not found" in run.stderr


@pytest.mark.slow
def test_a_target_beyond_one_pixel_per_clock_says_so(small_qonnx, tmp_path):
    qonnx, cfg = small_qonnx
    r = compile_for_camera(qonnx, tmp_path / "c", board="pynq-z2", fps=100,
                           frame=(2048, 2048), tile=TILE, halo=cfg.halo, signal=cfg.signal)
    rep = r.report
    assert not rep["meets_target"]
    assert rep["estimated"]["mpix_per_s"] <= rep["ceiling_mpix_per_s"] < 419.4
    assert any("pixels per clock" in n for n in rep["notes"])
    assert max(rep["utilisation"].values()) <= 0.85


@pytest.mark.parametrize("args, message", [
    (["--board", "nosuch", "--fps", "30"], "unknown board"),
    (["--board", "kv260", "--fps", "30", "--frame", "2048"], "HEIGHTxWIDTH"),
    (["--board", "kv260", "--fps", "0"], "--fps must be positive"),
    (["--board", "kv260", "--fps", "30", "--bitfile"], "Vivado"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, args, message):
    out = tmp_path / "out"
    res = runner.invoke(cli, ["compile", *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not out.exists()


def test_a_folder_that_is_not_a_compile_is_never_replaced(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.tif").write_bytes(b"x")
    for extra in ([], ["--overwrite"]):
        res = runner.invoke(cli, ["compile", "--board", "kv260", "--fps", "30", "--out",
                                  str(out), *extra])
        assert res.exit_code == 2, res.output
        assert ("not empty" if not extra else "not a fluorofpga compile") in res.output
    assert [p.name for p in out.iterdir()] == ["keep.tif"]


def test_signal_spec_matches_the_kernels():
    p = PixelKernelParams.from_spec(SignalSpec())
    assert p.code_bits == 8 and p.out_bits == 8
