"""Model bundle: the directory that carries a network from training to the board.

``manifest.json`` (format ``fluorofpga-bundle``, versioned) states everything the host
needs: the signal representation (GAT input code, residual output code: the pixel-in /
pixel-out tables are built from it for each camera), tile size and halo, input frames
and output upscaling, and where the hardware-layer graph (and, with Vivado, the
bitstream) lies. ``host/`` needs nothing but the bundle.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fluorofpga.microscope.signal import NoiseModel, SignalSpec, SignalTables

from .accelerator import Accelerator, BoardNotFound
from .restore import FrameRestorer

MANIFEST = "manifest.json"
FORMAT = "fluorofpga-bundle"
#: 2: the network works in the GAT-residual signal representation (``signal``);
#: version 1 bundles fed raw ADU through a fixed window and are refused.
MANIFEST_VERSION = 2
BACKENDS = ("emulate", "pynq")


class BundleError(ValueError):
    """A bundle directory is missing, incomplete or of an unknown version."""


@dataclass
class Bundle:
    """A loaded model bundle.

    Attributes:
        path: bundle directory.
        manifest: the parsed ``manifest.json``.
    """

    path: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        """Bundle name."""
        return str(self.manifest["name"])

    @property
    def signal(self) -> SignalSpec:
        """The signal representation the network works in (manifest ``signal``)."""
        return SignalSpec.from_dict(self.manifest["signal"])

    def tables(self, noise: NoiseModel, adc_max: int = 65535) -> SignalTables:
        """Pixel-in / pixel-out lookup tables of this bundle for one camera."""
        return SignalTables(self.signal, noise, adc_max)

    @property
    def tile_shape(self) -> tuple[int, int]:
        """(H, W) tile the accelerator is compiled for."""
        t = self.manifest["tile"]
        return (int(t["height"]), int(t["width"]))

    @property
    def halo(self) -> int:
        """Tile overlap in pixels (receptive-field radius)."""
        return int(self.manifest["tile"]["halo"])

    def file(self, key: str) -> Path:
        """Absolute path of the file registered under ``files[key]``; must exist."""
        rel = self.manifest.get("files", {}).get(key)
        if rel is None:
            raise BundleError(f"{self.path}: manifest lists no file {key!r}")
        p = self.path / rel
        if not p.exists():
            raise BundleError(f"{self.path}: file {rel} ({key}) is missing")
        return p

    def accelerator(self, backend: str = "emulate") -> Accelerator:
        """Open the accelerator of this bundle with ``backend`` ("emulate" or "pynq")."""
        if backend == "emulate":
            from .emulate import EmulatedAccelerator, load_hw_graph

            graph = load_hw_graph(self.file("hw_layers"))
            acc = EmulatedAccelerator(
                graph, self.signal.in_bits, self.signal.out_bits, self.tile_shape
            )
            if graph.tile_shape != self.tile_shape:
                raise BundleError(
                    f"{self.path}: hardware graph tile {graph.tile_shape} != manifest "
                    f"tile {self.tile_shape}"
                )
            return acc
        if backend == "pynq":
            if "bitstream" not in self.manifest.get("files", {}):
                raise BoardNotFound(
                    f"bundle {self.name} has no bitstream (it was built without Vivado)"
                )
            from .pynq_backend import PynqAccelerator

            return PynqAccelerator.from_bundle(self)  # BoardNotFound: no pynq / no device
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")

    def restorer(
        self, accelerator: Accelerator, noise: NoiseModel, calibration: Any = None,
        dtype: str = "uint16", adc_max: int = 65535,
    ) -> FrameRestorer:
        """``restorer(raw ADU frame) -> restored frame`` through ``accelerator``.

        Args:
            accelerator: an accelerator of this bundle (:meth:`accelerator`).
            noise: the camera's noise model (calibration, or estimated from the frames).
            calibration: optional calibration whose per-pixel maps are applied.
            dtype: ``"uint16"`` or ``"float32"`` output ADU.
            adc_max: ADC saturation value of the camera.
        """
        return FrameRestorer(accelerator, self.tables(noise, adc_max), self.halo,
                             calibration, dtype)


def default_bundle_path() -> Path:
    """The small pre-trained bundle shipped inside the package."""
    return Path(str(resources.files(__package__) / "bundles" / "default"))


_RECREATE = "re-create the bundle (`fluorofpga train`) or copy it again"
# Bundle files stored as zip archives (torch checkpoints, numpy archives): CRC-checked.
_ZIP_SUFFIXES = (".pt", ".pth", ".npz", ".zip")


def _check_bundle_file(bundle: Path, key: str, rel: Any, sha256: Any) -> None:
    """Raise BundleError unless ``files[key]`` exists and is intact (as far as checkable).

    Zip-based files (checkpoints, ``.npz``) are CRC-checked, JSON files parsed, other
    files must not be empty; with a ``sha256`` from the manifest the digest must match.
    """
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{bundle / MANIFEST}: files[{key!r}] is not a relative path")
    path = bundle / rel
    if not path.exists():
        raise BundleError(f"{bundle}: file {rel} ({key}) listed in the manifest is missing; "
                          f"{_RECREATE}")  # fmt: skip
    if path.is_dir():
        return
    problem = None
    try:
        if path.stat().st_size == 0:
            problem = "empty"
        elif path.suffix.lower() in _ZIP_SUFFIXES:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                problem = f"bad CRC in member {bad}"
        elif path.suffix.lower() == ".json":
            json.loads(path.read_text())
        if problem is None and isinstance(sha256, str):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != sha256.removeprefix("sha256:"):
                problem = "its SHA-256 differs from the manifest's"
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        problem = f"{type(e).__name__}: {e}"
    if problem is not None:
        raise BundleError(f"{path}: truncated or corrupt bundle file ({key}: {problem}); "
                          f"{_RECREATE}")  # fmt: skip


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Load the bundle at ``path`` (default: the shipped one), checking it before any work.

    Checks the manifest (format, version, required keys, signal representation), that
    every file it lists exists and is intact (zip CRCs, JSON syntax, non-empty, and the
    SHA-256 digests of an optional ``sha256`` table ``{key: hex}``), and loads the
    hardware-layer graph once (:func:`~fluorofpga.host.emulate.load_hw_graph`), so a
    damaged bundle fails here with a :class:`BundleError` naming the file, not in the
    middle of a stream.
    """
    bpath = Path(path) if path is not None else default_bundle_path()
    mpath = bpath / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{bpath}: not a model bundle (no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath}: invalid JSON ({e}); {_RECREATE}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: not a bundle manifest (a JSON object is expected)")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != MANIFEST_VERSION:
        old = manifest.get("version") == 1
        raise BundleError(
            f"{mpath}: manifest version {manifest.get('version')!r}; this fluorofpga reads "
            f"version {MANIFEST_VERSION}"
            + (" (version 1 networks took raw camera ADU through a fixed window and fail on "
               "other cameras and light levels; re-create the bundle with `fluorofpga train`)"
               if old else "")
        )
    for key in ("name", "signal", "input", "output", "tile", "files"):
        if key not in manifest:
            raise BundleError(f"{mpath}: manifest lacks {key!r}")
    try:
        SignalSpec.from_dict(manifest["signal"])
    except (TypeError, ValueError) as e:
        raise BundleError(f"{mpath}: bad signal representation: {e}") from None
    files, digests = manifest["files"], manifest.get("sha256") or {}
    if not isinstance(files, dict) or not isinstance(digests, dict):
        raise BundleError(f"{mpath}: 'files' and 'sha256' must be objects")
    for key, rel in files.items():
        _check_bundle_file(bpath.absolute(), key, rel, digests.get(key))
    if "hw_layers" in files:
        from .emulate import load_hw_graph

        load_hw_graph(bpath.absolute() / files["hw_layers"])
    return Bundle(bpath.absolute(), manifest)
