"""Data safety of the commands: arguments checked before any work, nothing replaced
unasked, interrupted runs clearly partial, bad inputs and bundles one clear error line.

The demo cases stream through a stand-in bundle (identity network): they test what is
written and when, not the restoration.
"""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

import fluorofpga.app as facade
import fluorofpga.microscope.io as mio
from fluorofpga.cli import app as cli
from fluorofpga.host import BundleError, default_bundle_path
from fluorofpga.host.bundle import MANIFEST, MANIFEST_VERSION
from fluorofpga.microscope import SCMOSSensor, read_image_meta, write_ome_zarr, write_tiff

runner = CliRunner()
SHAPE = (64, 64)


def run(*args: str):
    # a wide terminal, so that rich does not break long paths in the error line
    result = runner.invoke(cli, [str(a) for a in args], env={"COLUMNS": "1000"})
    assert "Traceback" not in result.output, result.output
    return result


def one_line(result) -> str:
    return " ".join(result.output.split())


# ------------------------------------------------------------------------ calibration


@pytest.fixture(scope="module")
def camera_files(tmp_path_factory):
    """A dark stack and four flats of one simulated sCMOS camera, as plain TIFFs."""
    folder = tmp_path_factory.mktemp("camera")
    rng = np.random.default_rng(5)
    sensor = SCMOSSensor.random(SHAPE, rng)
    tifffile.imwrite(folder / "dark.tif", sensor.acquire(np.zeros((30, *SHAPE)), rng),
                     photometric="minisblack")  # fmt: skip
    flats = []
    for i, level in enumerate((30.0, 100.0, 300.0, 1000.0)):
        flats.append(folder / f"flat{i}.tif")
        tifffile.imwrite(flats[-1], sensor.acquire(np.full((8, *SHAPE), level), rng),
                         photometric="minisblack")  # fmt: skip
    same = []
    for i in range(4):  # all at one exposure
        same.append(folder / f"same{i}.tif")
        tifffile.imwrite(same[-1], sensor.acquire(np.full((8, *SHAPE), 300.0), rng),
                         photometric="minisblack")  # fmt: skip
    return SimpleNamespace(folder=folder, dark=folder / "dark.tif", flats=flats, same=same,
                           sensor=sensor)  # fmt: skip


def test_calibrate_unlabelled_stacks_work_and_the_output_is_not_replaced(camera_files, tmp_path):
    out = tmp_path / "cam.npz"
    result = run("calibrate", camera_files.dark, *camera_files.flats, "--out", out)
    assert result.exit_code == 0, result.output
    before = out.read_bytes()
    result = run("calibrate", camera_files.dark, *camera_files.flats, "--out", out)
    assert result.exit_code == 2 and "exists" in one_line(result) and "--overwrite" in one_line(
        result)
    assert out.read_bytes() == before
    result = run("calibrate", camera_files.dark, *camera_files.flats, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_calibrate_never_writes_over_its_input(camera_files, overwrite):
    before = camera_files.dark.read_bytes()
    result = run("calibrate", camera_files.dark, *camera_files.flats, "--out", camera_files.dark,
                 *overwrite)  # fmt: skip
    assert result.exit_code == 2
    assert "would overwrite the input" in one_line(result)
    assert camera_files.dark.read_bytes() == before


def test_calibrate_output_folder_missing_or_not_writable(camera_files, tmp_path, monkeypatch):
    result = run("calibrate", camera_files.dark, *camera_files.flats,
                 "--out", tmp_path / "nowhere" / "cam.npz")  # fmt: skip
    assert result.exit_code == 2 and "does not exist" in one_line(result)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(mio.tempfile, "mkstemp", refuse)
    result = run("calibrate", camera_files.dark, *camera_files.flats, "--out", tmp_path / "c.npz")
    assert result.exit_code == 2 and "cannot write in the folder" in one_line(result)
    assert list(tmp_path.iterdir()) == []


def test_calibrate_refuses_flats_at_one_exposure(camera_files, tmp_path):
    result = run("calibrate", camera_files.dark, *camera_files.same, "--out", tmp_path / "c.npz")
    assert result.exit_code == 2
    assert "span only a factor" in one_line(result)
    assert not (tmp_path / "c.npz").exists()


def test_calibrate_refuses_a_dark_brighter_than_the_flats(camera_files, tmp_path):
    rng = np.random.default_rng(6)
    lit = camera_files.sensor.acquire(np.full((30, *SHAPE), 100.0), rng)
    tifffile.imwrite(tmp_path / "lit_dark.tif", lit, photometric="minisblack")
    result = run("calibrate", tmp_path / "lit_dark.tif", *camera_files.flats,
                 "--out", tmp_path / "c.npz")  # fmt: skip
    assert result.exit_code == 2
    assert "dark stack is brighter than flat stack 0" in one_line(result)
    assert not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("axes", ["ZYX", "CYX", "RGB"])
def test_calibrate_refuses_stacks_that_are_not_frames(camera_files, tmp_path, axes):
    dark = tifffile.imread(camera_files.dark)
    path = tmp_path / "dark.tif"
    if axes == "RGB":
        tifffile.imwrite(path, dark[:3].transpose(1, 2, 0).copy(), photometric="rgb")
        expected = "'YXS'"
    else:
        write_tiff(path, dark, axes=axes)
        expected = f"axes '{axes}'"
    result = run("calibrate", path, *camera_files.flats, "--out", tmp_path / "c.npz")
    assert result.exit_code == 2
    assert expected in one_line(result)


# ------------------------------------------------------------------------------- demo


class _Counts:
    def to_dict(self):
        return {}


class _StandInBundle:
    """Just enough of a Bundle for ``demo``: an identity network, optionally interrupted."""

    name = "stand-in"
    task = "denoise"
    tile_shape = (64, 64)
    halo = 0
    manifest: dict = {}

    def __init__(self, interrupt_at: int | None = None):
        self.interrupt_at = interrupt_at
        self.frames = 0

    def accelerator(self, backend):
        return SimpleNamespace(__enter__=None)

    def restorer(self, acc, noise):
        def process(frame):
            if self.frames == self.interrupt_at:
                raise KeyboardInterrupt
            self.frames += 1
            return frame

        process.counts = _Counts()
        return process

    def file(self, key):
        raise BundleError(f"stand-in bundle has no {key}")


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def stand_in(monkeypatch):
    def use(interrupt_at=None):
        bundle = _StandInBundle(interrupt_at)
        bundle.accelerator = lambda backend: _NullContext()
        monkeypatch.setattr(facade, "load_bundle", lambda path=None: bundle)
        return bundle

    return use


def demo_args(out, *extra):
    return ("demo", "--out", out, "--frames", "4", "--size", "64", *extra)


def test_demo_writes_a_complete_run_with_metadata(tmp_path, stand_in):
    stand_in()
    out = tmp_path / "run"
    result = run(*demo_args(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.png", "restored.tif"]
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True and report["frames_out"] == 4
    assert report["bit_exact"] is None and report["bit_exact_frames_checked"] == 0
    stack, meta = read_image_meta(out / "restored.tif")
    assert stack.shape == (4, *SHAPE) and meta.axes == "TYX"
    assert meta.pixel_size_um == pytest.approx((0.065, 0.065))


def test_demo_refuses_to_mix_with_a_previous_run(tmp_path, stand_in):
    stand_in()
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text('{"previous": true}')
    result = run(*demo_args(out))
    assert result.exit_code == 2
    assert "previous run (report.json)" in one_line(result) and "--overwrite" in one_line(result)
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
    result = run(*demo_args(out, "--overwrite"))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["complete"] is True


def test_demo_output_folder_must_have_an_existing_writable_parent(tmp_path, stand_in):
    stand_in()
    result = run(*demo_args(tmp_path / "missing" / "run"))
    assert result.exit_code == 2 and "does not exist" in one_line(result)
    (tmp_path / "file").write_text("x")
    result = run(*demo_args(tmp_path / "file"))
    assert result.exit_code == 2 and "not a folder" in one_line(result)


def test_demo_with_an_unknown_backend_creates_nothing(tmp_path, bundle_copy):
    result = run(*demo_args(tmp_path / "run", "--backend", "gpu", "--model", bundle_copy))
    assert result.exit_code == 2 and "gpu" in one_line(result)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("previous_run", [False, True])
def test_ctrl_c_during_demo_leaves_only_a_marked_partial_file(tmp_path, stand_in, previous_run):
    out = tmp_path / "run"
    extra = []
    if previous_run:
        stand_in()
        assert run(*demo_args(out)).exit_code == 0
        extra = ["--overwrite"]
    stand_in(interrupt_at=2)
    result = run(*demo_args(out, *extra))
    assert result.exit_code == 130
    assert "interrupted" in one_line(result) and "restored.partial.tif" in one_line(result)
    # no complete-looking restored.tif, no report of this run or the previous one
    assert sorted(p.name for p in out.iterdir()) == ["restored.partial.tif"]
    partial = tifffile.imread(out / "restored.partial.tif")
    assert partial.reshape(-1, *SHAPE).shape[0] == 2
    result = run(*demo_args(out))  # the partial file is a previous run's file too
    assert result.exit_code == 2 and "restored.partial.tif" in one_line(result)


# --------------------------------------------------------------------- damaged bundles


@pytest.fixture
def bundle_copy(tmp_path):
    path = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), path)
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("version") != MANIFEST_VERSION:  # the shipped one may predate it
        from fluorofpga.microscope.signal import SignalSpec

        manifest.update(version=MANIFEST_VERSION,
                        signal=manifest.get("signal", SignalSpec().to_dict()))  # fmt: skip
        (path / MANIFEST).write_text(json.dumps(manifest))
    return path


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damaged", ["hw/hw_layers.npz", "hw/hw_layers.json", "quant.pt"])
def test_verify_and_demo_refuse_a_damaged_bundle_before_any_work(tmp_path, bundle_copy, damaged):
    _truncate(bundle_copy / damaged)
    result = run("verify", bundle_copy)
    assert result.exit_code == 2
    assert damaged.split("/")[-1] in one_line(result) and "re-create" in one_line(result)
    result = run(*demo_args(tmp_path / "run", "--model", bundle_copy))
    assert result.exit_code == 2 and "re-create" in one_line(result)
    assert not (tmp_path / "run").exists()


def test_verify_of_a_missing_or_foreign_folder_is_one_clear_error(tmp_path):
    result = run("verify", tmp_path / "nothing")
    assert result.exit_code == 2 and "nothing: no such folder" in one_line(result)
    (tmp_path / "manifest.json").write_text("{truncated")
    result = run("verify", tmp_path)
    assert result.exit_code == 2 and "invalid JSON" in one_line(result)
    result = run("verify", "--model", tmp_path)  # as the other commands take a bundle
    assert result.exit_code == 2 and "invalid JSON" in one_line(result)
    result = run("verify", tmp_path / "a", "--model", tmp_path / "b")
    assert result.exit_code == 2 and "give one" in one_line(result)


# ------------------------------------------------------ image outputs and inputs (denoise)


def _frames(n=2):
    rng = np.random.default_rng(0)
    return rng.poisson(50, (n, *SHAPE)).astype(np.uint16) + 100


def test_denoise_refuses_an_existing_zarr_output_and_a_missing_folder(tmp_path):
    pytest.importorskip("zarr")
    write_tiff(tmp_path / "in.tif", _frames(), axes="TYX")
    write_ome_zarr(tmp_path / "out.zarr", _frames(), axes="TYX")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out.zarr").rglob("*"))
    result = run("denoise", tmp_path / "in.tif", tmp_path / "out.zarr")
    assert result.exit_code == 2 and "out.zarr exists" in one_line(result)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out.zarr").rglob("*")) == before
    result = run("denoise", tmp_path / "in.tif", tmp_path / "no" / "out.tif")
    assert result.exit_code == 2 and "does not exist" in one_line(result)


def test_denoise_refuses_an_unwritable_folder_before_reading(tmp_path, monkeypatch):
    write_tiff(tmp_path / "in.tif", _frames(), axes="TYX")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(mio.tempfile, "mkstemp", refuse)
    result = run("denoise", tmp_path / "in.tif", tmp_path / "out.tif")
    assert result.exit_code == 2 and "cannot write in the folder" in one_line(result)


def test_denoise_with_a_damaged_bundle_or_zarr_input_is_one_clear_error(
    tmp_path, bundle_copy, stand_in
):
    write_tiff(tmp_path / "in.tif", _frames(), axes="TYX")
    _truncate(bundle_copy / "hw" / "hw_layers.npz")
    result = run("denoise", tmp_path / "in.tif", tmp_path / "out.tif", "--model", bundle_copy)
    assert result.exit_code == 2 and "hw_layers.npz" in one_line(result)
    assert not (tmp_path / "out.tif").exists()
    pytest.importorskip("zarr")
    stand_in()
    write_ome_zarr(tmp_path / "in.zarr", _frames(), axes="TYX")
    chunk = next(p for p in (tmp_path / "in.zarr" / "0").rglob("*") if p.is_file()
                 and not p.name.startswith("."))  # fmt: skip
    chunk.write_bytes(b"garbage")
    result = run("denoise", tmp_path / "in.zarr", tmp_path / "out2.tif")
    assert result.exit_code == 2 and "in.zarr: damaged OME-Zarr store" in one_line(result)
    assert not (tmp_path / "out2.tif").exists()
