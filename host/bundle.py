"""Model bundle: the directory that carries a network from training to the board.

``manifest.json`` (format ``fluorofpga-bundle``, versioned) states everything the host
needs: integer pixel formats and camera normalisation, tile size and halo, input frames
and output upscaling, and where the hardware-layer graph (and, with Vivado, the
bitstream) lies. ``host/`` needs nothing but the bundle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .accelerator import Accelerator, BoardNotFound, frame_processor
from .normalize import IntegerFormat

MANIFEST = "manifest.json"
FORMAT = "fluorofpga-bundle"
MANIFEST_VERSION = 1
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
    def input_format(self) -> IntegerFormat:
        """Camera ADU -> input integer mapping."""
        return IntegerFormat.from_dict(_fmt(self.manifest["input"]))

    @property
    def output_format(self) -> IntegerFormat:
        """Output integer -> ADU mapping."""
        return IntegerFormat.from_dict(_fmt(self.manifest["output"]))

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
                graph, self.input_format.bits, self.output_format.bits, self.tile_shape
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
            try:
                import pynq  # noqa: F401
            except ImportError as e:
                raise BoardNotFound(f"the 'pynq' package is not installed: {e}") from None
            raise BoardNotFound("the pynq backend is not implemented in this release")
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")

    def restorer(self, accelerator: Accelerator) -> Callable[[np.ndarray], np.ndarray]:
        """``process(uint16 ADU frame) -> uint16 ADU frame`` through ``accelerator``."""
        return frame_processor(accelerator, self.input_format, self.output_format, self.halo)


def _fmt(d: dict[str, Any]) -> dict[str, Any]:
    return {"bits": d["bits"], "adu_offset": d["adu_offset"], "adu_per_lsb": d["adu_per_lsb"]}


def default_bundle_path() -> Path:
    """The small pre-trained bundle shipped inside the package."""
    return Path(str(resources.files(__package__) / "bundles" / "default"))


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Load the bundle at ``path`` (default: the shipped one), checking its manifest."""
    bpath = Path(path) if path is not None else default_bundle_path()
    mpath = bpath / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{bpath}: not a model bundle (no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{mpath}: invalid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != MANIFEST_VERSION:
        raise BundleError(
            f"{mpath}: manifest version {manifest.get('version')!r}; this fluorofpga reads "
            f"version {MANIFEST_VERSION}"
        )
    for key in ("name", "input", "output", "tile", "files"):
        if key not in manifest:
            raise BundleError(f"{mpath}: manifest lacks {key!r}")
    return Bundle(bpath.absolute(), manifest)
