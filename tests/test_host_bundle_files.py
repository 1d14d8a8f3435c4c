"""A damaged or incomplete bundle is refused at load, before any frame is processed.

Runs in the board environment too (numpy 1.x, no torch).
"""

import hashlib
import json
import shutil

import numpy as np
import pytest

from fluorofpga.host import BundleError, default_bundle_path, load_bundle, load_hw_graph
from fluorofpga.host.bundle import MANIFEST, MANIFEST_VERSION


def _as_current_version(manifest: dict) -> dict:
    """The shipped bundle's manifest, upgraded in form only if it predates this version."""
    if manifest.get("version") != MANIFEST_VERSION:
        from fluorofpga.microscope.signal import SignalSpec

        manifest = {**manifest, "version": MANIFEST_VERSION,
                    "signal": manifest.get("signal", SignalSpec().to_dict())}  # fmt: skip
    return manifest


@pytest.fixture
def bundle_dir(tmp_path):
    """A private copy of the shipped bundle, free to damage."""
    path = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), path)
    manifest = json.loads((path / MANIFEST).read_text())
    (path / MANIFEST).write_text(json.dumps(_as_current_version(manifest)))
    return path


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_intact_copy_loads(bundle_dir):
    assert load_bundle(bundle_dir).path == bundle_dir


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_damaged_hw_layers_npz_is_a_bundle_error(bundle_dir, damage):
    npz = bundle_dir / "hw" / "hw_layers.npz"
    if damage == "truncate":
        _truncate(npz)
    elif damage == "delete":
        npz.unlink()
    else:  # flip bytes inside the compressed data: only the CRC can tell
        data = bytearray(npz.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 16] = bytes(16)
        npz.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"hw_layers\.npz.*re-create the bundle"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("damage", ["truncate", "delete", "not json"])
def test_damaged_hw_layers_json_is_a_bundle_error(bundle_dir, damage):
    path = bundle_dir / "hw" / "hw_layers.json"
    if damage == "truncate":
        _truncate(path)
    elif damage == "delete":
        path.unlink()
    else:
        path.write_text('{"format": "something else", "version": 1}')
    with pytest.raises(BundleError, match=r"hw_layers\.json"):
        load_bundle(bundle_dir)


def test_hw_graph_referring_to_missing_arrays_is_a_bundle_error(bundle_dir):
    npz = bundle_dir / "hw" / "hw_layers.npz"
    with np.load(npz) as archive:
        arrays = {k: archive[k] for k in archive.files if not k.endswith(".thresholds")}
    np.savez(npz, **arrays)
    with pytest.raises(BundleError, match=r"lacks the arrays .*thresholds"):
        load_hw_graph(bundle_dir / "hw" / "hw_layers.json")


def test_missing_or_truncated_listed_files_are_bundle_errors(bundle_dir):
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    checkpoint = bundle_dir / manifest["files"]["quant_checkpoint"]
    original = checkpoint.read_bytes()
    _truncate(checkpoint, 0.8)
    with pytest.raises(BundleError, match=r"quant.*truncated or corrupt.*re-create"):
        load_bundle(bundle_dir)
    checkpoint.unlink()
    with pytest.raises(BundleError, match=r"listed in the manifest is missing"):
        load_bundle(bundle_dir)
    checkpoint.write_bytes(original)
    (bundle_dir / manifest["files"]["qonnx"]).write_bytes(b"")
    with pytest.raises(BundleError, match="empty"):
        load_bundle(bundle_dir)


def test_manifest_digests_are_checked_when_present(bundle_dir):
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    qonnx = bundle_dir / manifest["files"]["qonnx"]
    manifest["sha256"] = {"qonnx": hashlib.sha256(qonnx.read_bytes()).hexdigest()}
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))
    load_bundle(bundle_dir)
    data = bytearray(qonnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    qonnx.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256"):
        load_bundle(bundle_dir)


def test_unreadable_manifest_is_a_bundle_error(bundle_dir):
    _truncate(bundle_dir / MANIFEST)
    with pytest.raises(BundleError, match="invalid JSON"):
        load_bundle(bundle_dir)
    (bundle_dir / MANIFEST).write_text("[1, 2]")
    with pytest.raises(BundleError, match="not a bundle manifest"):
        load_bundle(bundle_dir)
