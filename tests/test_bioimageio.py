"""bioimage.io export: the package passes bioimageio.core's own test, offline, and the
packaged model equals fluorofpga's float restoration (pixel-in table, network, residual
read-out, algebraic inverse) to float32 rounding."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")

import torch  # noqa: E402
import yaml  # noqa: E402

from fluorofpga.microscope.signal import (  # noqa: E402
    NoiseModel,
    SignalSpec,
    SignalTables,
)
from fluorofpga.models import (  # noqa: E402
    DenoiserConfig,
    PlainDenoiser,
    int_to_tensor,
    save_checkpoint,
    tensor_to_codes,
)
from fluorofpga.models.bioimageio import (  # noqa: E402
    BioimageioValidationError,
    RawAduRestorer,
    export_bioimageio,
    validate_bioimageio,
)

NOISE = NoiseModel.from_camera(0.46, 100.0, 1.6)
# TorchScript is the bioimage.io weight format that runs without fluorofpga; torch warns
# that torch.jit is deprecated whenever a package is loaded.
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*:DeprecationWarning")


class NetworkUse:
    """Records (and refuses) every DNS lookup and socket connection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []

        def refuse(*args, **kwargs):
            self.calls.append(repr(args[:2]))
            raise OSError("network use in an offline test")

        monkeypatch.setattr(socket, "getaddrinfo", refuse)
        monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PlainDenoiser, SignalSpec]:
    """A small float network (4 channels, depth 3) saved as a float checkpoint."""
    torch.manual_seed(1)
    cfg = DenoiserConfig(channels=4, depth=3)
    net = PlainDenoiser(cfg).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, net, cfg, kind="float")
    return path, net, cfg.signal


@pytest.fixture(scope="module")
def package(tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The exported package and the network use during export + validation."""
    mp = pytest.MonkeyPatch()
    try:
        net_use = NetworkUse(mp)
        out = export_bioimageio(tiny[0], tmp_path_factory.mktemp("pkg") / "tiny.zip", NOISE)
        summary = validate_bioimageio(out)
    finally:
        mp.undo()
    return out, summary, net_use.calls


def float_path(net: PlainDenoiser, spec: SignalSpec, noise: NoiseModel,
               adu: np.ndarray) -> np.ndarray:
    """fluorofpga's own float restoration of a uint16 frame (float64 ADU)."""
    tables = SignalTables(spec, noise)
    q = tables.encode(adu)
    with torch.no_grad():
        r = tensor_to_codes(net(int_to_tensor(q)))[0]
    c = np.clip(spec.ratio * q.astype(np.float64) + spec.residual_zero - r,
                0, (1 << spec.code_bits) - 1)
    out = tables.clean_adu(c * spec.residual_step)
    passthrough = (adu >= tables.adc_max) | (q >= spec.in_max)
    out[passthrough] = adu[passthrough]
    return out


def assert_float32_rounding(actual: np.ndarray, reference: np.ndarray) -> None:
    """Every value within one float32 ulp of the float64 reference."""
    assert actual.dtype == np.float32
    ulp = np.spacing(np.abs(reference).astype(np.float32)).astype(np.float64)
    err = np.abs(actual.astype(np.float64) - reference)
    assert np.all(err <= ulp), f"max error {(err / ulp).max():.2f} float32 ulp"


def read_package(path: Path) -> tuple[dict, dict[str, bytes]]:
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    return yaml.safe_load(files["rdf.yaml"]), files


def test_package_passes_bioimageio_core_offline(package):
    path, summary, net_calls = package
    assert summary["status"] == "passed", summary["failed"]
    assert summary["failed"] == []
    names = [d["name"] for d in summary["details"]]
    assert "Reproduce test outputs from test inputs (torchscript)" in names
    assert any(n.startswith("Run torchscript inference") for n in names)
    assert summary["env"]["bioimageio.core"]
    assert net_calls == [], f"export/validation used the network: {net_calls}"


def test_package_describes_the_processing(package):
    rdf, files = read_package(package[0])
    assert rdf["format_version"].startswith("0.5.")
    assert rdf["license"] == "Apache-2.0"
    assert {"cover.png", "README.md", "test_input.npy", "test_output.npy"} <= set(files)
    assert rdf["weights"]["torchscript"]["source"] in files
    assert "10.1109/TIP.2012.2202675" in [c.get("doi") for c in rdf["cite"]]
    halos = [a["halo"] for a in rdf["outputs"][0]["axes"] if a.get("type") == "space"]
    assert halos == [3, 3]
    fl = rdf["config"]["fluorofpga"]
    assert fl["noise_model"]["a"] == NOISE.a and fl["noise_model"]["b"] == NOISE.b
    assert fl["noise_model"]["source"] == "camera"
    assert fl["network"]["receptive_field"] == 7
    assert fl["training_data"] == "Trained on simulated data only"
    readme = files["README.md"].decode()
    for text in ("simulated data only", "Mäkitalo", "halo", "inside", "# Validation"):
        assert text in readme
    assert "http://" not in files["rdf.yaml"].decode()
    assert "https://" not in files["rdf.yaml"].decode()


def test_package_equals_fluorofpga_float_path(package, tiny):
    _, net, spec = tiny
    _, files = read_package(package[0])
    x = np.load(io.BytesIO(files["test_input.npy"]))
    y = np.load(io.BytesIO(files["test_output.npy"]))
    assert x.dtype == y.dtype == np.float32 and x.shape == y.shape and x.ndim == 4
    adu = x[0, 0].astype(np.uint16)
    assert np.array_equal(adu, x[0, 0])
    assert_float32_rounding(y[0, 0], float_path(net, spec, NOISE, adu))


def test_packaged_model_passes_saturated_and_bright_pixels_through(package, tiny):
    _, net, spec = tiny
    _, files = read_package(package[0])
    model = torch.jit.load(io.BytesIO(files["raw_adu_restorer.pt"]))
    rng = np.random.default_rng(3)
    adu = rng.integers(0, 3000, size=(2, 48, 64)).astype(np.uint16)
    adu[0, :4, :4] = 65535
    adu[1, 10, :] = 60000
    with torch.no_grad():
        out = model(torch.from_numpy(adu.astype(np.float32))[:, None]).numpy()[:, 0]
    for frame, restored in zip(adu, out, strict=True):
        assert_float32_rounding(restored, float_path(net, spec, NOISE, frame))
    assert np.all(out[0, :4, :4] == 65535) and np.all(out[1, 10] == 60000)


def test_wrapper_shifts_a_dark_level_above_training_as_the_tables_do(tiny):
    """A camera with 8 e⁻ read noise (beyond the training cameras' max_dark_z): the
    wrapper's shift equals the host tables', so it still equals the float path."""
    _, net, spec = tiny
    spec = dataclasses.replace(spec, max_dark_z=9.083)
    noise = NoiseModel.from_camera(1.0, 500.0, 8.0)
    wrapper = RawAduRestorer(net, spec, noise).eval()
    assert wrapper.dark_shift == SignalTables(spec, noise).dark_shift > 3.0
    adu = np.random.default_rng(4).integers(470, 700, size=(40, 56)).astype(np.uint16)
    with torch.no_grad():
        out = wrapper(torch.from_numpy(adu.astype(np.float32))[None, None]).numpy()[0, 0]
    assert_float32_rounding(out, float_path(net, spec, noise, adu))


def test_export_from_bundle_and_refusals(tiny, tmp_path, monkeypatch):
    net_use = NetworkUse(monkeypatch)
    ckpt, _, spec = tiny
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "float.pt").write_bytes(ckpt.read_bytes())
    manifest = {"format": "fluorofpga-bundle", "version": 2, "name": "tiny-bundle",
                "signal": spec.to_dict(), "input": {}, "output": {},
                "tile": {"height": 32, "width": 32, "halo": 3},
                "files": {"float_checkpoint": "float.pt"},
                "training": {"steps": 10, "self_supervised": {"frames": 3}}}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    frame = np.full((40, 37), 300, np.uint16)
    out = export_bioimageio(bundle, tmp_path / "b.zip", NOISE, test_input=frame,
                            authors=[{"name": "A Person", "affiliation": "A Lab"}])
    rdf, files = read_package(out)
    assert "tiny-bundle" in rdf["name"]
    assert rdf["config"]["fluorofpga"]["source"]["kind"] == "bundle"
    assert "fine-tuned self-supervised" in rdf["config"]["fluorofpga"]["training_data"]
    assert "fine-tuned self-supervised" in files["README.md"].decode()
    assert np.load(io.BytesIO(files["test_input.npy"])).shape == (1, 1, 32, 32)
    with pytest.raises(FileExistsError, match="overwrite"):
        export_bioimageio(bundle, out, NOISE)
    with pytest.raises(ValueError, match="github_user"):
        export_bioimageio(bundle, tmp_path / "d.zip", NOISE,
                          authors=[{"name": "A Person", "github_user": "aperson"}])
    manifest["signal"] = {**spec.to_dict(), "residual_zero": 100}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="signal representation"):
        export_bioimageio(bundle, tmp_path / "c.zip", NOISE)
    assert net_use.calls == []


def test_validation_error_names_the_failing_check(package, tmp_path, monkeypatch):
    net_use = NetworkUse(monkeypatch)
    files = read_package(package[0])[1]
    wrong = np.load(io.BytesIO(files["test_output.npy"])) + 10.0
    buf = io.BytesIO()
    np.save(buf, wrong)
    old = hashlib.sha256(files["test_output.npy"]).hexdigest()
    files["test_output.npy"] = buf.getvalue()
    rdf_text = files["rdf.yaml"].decode().replace(old, hashlib.sha256(buf.getvalue()).hexdigest())
    files["rdf.yaml"] = rdf_text.encode()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with pytest.raises(BioimageioValidationError,
                       match="Reproduce test outputs from test inputs") as err:
        validate_bioimageio(bad)
    assert err.value.summary["status"] != "passed"
    assert "Reproduce test outputs from test inputs (torchscript)" in err.value.summary["failed"]
    assert net_use.calls == []


def test_cli_export_bioimageio_of_the_shipped_bundle(tmp_path):
    from typer.testing import CliRunner

    from fluorofpga.cli import app
    from fluorofpga.microscope import WidefieldMicroscope, write_tiff

    stack = np.stack([f.noisy for f in WidefieldMicroscope(shape=(96, 96), seed=2).frames(2)])
    write_tiff(tmp_path / "cam.tif", stack, axes="TYX")
    out = tmp_path / "model.zip"
    r = CliRunner().invoke(app, ["export-bioimageio", str(out), "--frames",
                                 str(tmp_path / "cam.tif")])
    assert r.exit_code == 0, r.output
    assert "passed" in r.output and out.is_file()
    r = CliRunner().invoke(app, ["export-bioimageio", str(out), "--frames",
                                 str(tmp_path / "cam.tif")])
    assert r.exit_code == 2 and "overwrite" in r.output  # never replaced silently
    r = CliRunner().invoke(app, ["export-bioimageio", "--out", str(out), "--frames",
                                 str(tmp_path / "cam.tif")])  # --out, as other commands
    assert r.exit_code == 2 and "overwrite" in r.output
    r = CliRunner().invoke(app, ["export-bioimageio", "--frames", str(tmp_path / "cam.tif")])
    assert r.exit_code == 2 and "OUT.zip" in r.output and not (tmp_path / "x").exists()


def test_a_failed_write_leaves_no_partial_package(tiny, tmp_path, monkeypatch):
    """A full disk while the package is written (injected: no small disk here): the error
    says so and no half-written ``.zip.partial`` is left behind."""
    import errno

    import bioimageio.spec

    ckpt, _, _ = tiny

    def full_disk(descr, output_path, **kwargs):
        Path(output_path).write_bytes(b"PK\x03\x04 half a package")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bioimageio.spec, "save_bioimageio_package", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export_bioimageio(ckpt, tmp_path / "p.zip", NOISE)
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    from fluorofpga.cli import _why

    assert "the disk is full" in _why(OSError(errno.ENOSPC, "No space left on device",
                                              "x.zarr"))
    assert "x.zarr" in _why(OSError(errno.ENOSPC, "No space left on device", "x.zarr"))
    assert "the disk is full" in _why(OSError("163840 requested and 102224 written"))
    assert "disk" not in _why(OSError(errno.EACCES, "Permission denied", "y.tif"))
