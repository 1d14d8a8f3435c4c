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
from fluorofpga.microscope.sim_linear import LinearSimCodes

from .accelerator import Accelerator, BoardNotFound
from .restore import FrameRestorer
from .simrestore import SimRestorer
from .wienerrestore import WienerSimRestorer

MANIFEST = "manifest.json"
FORMAT = "fluorofpga-bundle"
#: 2: the network works in the GAT-residual signal representation (``signal``);
#: version 1 bundles fed raw ADU through a fixed window and are refused.
MANIFEST_VERSION = 2
BACKENDS = ("emulate", "pynq")
#: what a bundle's network does: restore one frame, or reconstruct SIM from raw frames
TASKS = ("denoise", "sim")


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
    def is_wiener(self) -> bool:
        """A classical Wiener-SIM bundle (signal ``linear-sim``: demodulation + filter)."""
        return self.manifest["signal"].get("kind") == "linear-sim"

    @property
    def signal(self) -> SignalSpec:
        """The signal representation the network works in (manifest ``signal``)."""
        if self.is_wiener:
            raise BundleError(f"bundle {self.name} is a Wiener-SIM bundle: its codes are "
                              "linear (Bundle.linear_codes), not a GAT signal")
        return SignalSpec.from_dict(self.manifest["signal"])

    @property
    def linear_codes(self) -> LinearSimCodes:
        """The integer representation of a Wiener-SIM bundle."""
        return LinearSimCodes.from_dict(self.manifest["signal"])

    @property
    def in_bits(self) -> int:
        """Bits of the accelerator's input codes."""
        return int(self.manifest["input"].get("bits", 8))

    @property
    def out_bits(self) -> int:
        """Bits of the accelerator's output codes."""
        return int(self.manifest["output"].get("bits", 8))

    @property
    def task(self) -> str:
        """``"denoise"`` (one frame in, restored frame out) or ``"sim"`` (raw frames in,
        2× SIM image out)."""
        return str(self.manifest.get("task", "denoise"))

    @property
    def frames(self) -> int:
        """Raw frames per network input (1 for a denoiser, 3 for a 3-frame SIM network)."""
        return int(self.manifest["input"].get("frames", 1))

    @property
    def upscale(self) -> int:
        """Output grid refinement (2 for SIM: ``upscale²`` sub-pixel output channels)."""
        return int(self.manifest["output"].get("upscale", 1))

    @property
    def frame_order(self) -> str | None:
        """How the raw frames of one input are ordered (manifest ``input.order``)."""
        return self.manifest["input"].get("order")

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
            acc = EmulatedAccelerator(graph, self.in_bits, self.out_bits, self.tile_shape)
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
        if self.task != "denoise":
            raise BundleError(
                f"bundle {self.name} is a SIM reconstructor ({self.frames} raw frames -> "
                f"{self.upscale}x image), not a denoiser: use `fluorofpga sim --model` "
                "(Bundle.sim_restorer)")
        return FrameRestorer(accelerator, self.tables(noise, adc_max), self.halo,
                             calibration, dtype)

    def sim_restorer(
        self, accelerator: Accelerator, noise: NoiseModel, calibration: Any = None,
        dtype: str = "uint16", adc_max: int = 65535,
    ) -> SimRestorer:
        """``restorer(raw (P, Y, X) group) -> (2Y, 2X) SIM image`` for a SIM bundle.

        Args: as :meth:`restorer`; the camera's noise model applies to every raw frame.
        """
        if self.task != "sim":
            raise BundleError(f"bundle {self.name} is a {self.task} bundle, not a SIM "
                              "reconstructor (its manifest task is not 'sim')")
        if self.is_wiener:
            raise BundleError(f"bundle {self.name} is a Wiener-SIM bundle: it needs the "
                              "pattern parameters (Bundle.wiener_restorer)")
        return SimRestorer(accelerator, self.tables(noise, adc_max), self.halo, self.frames,
                           self.upscale, calibration, dtype)


    def wiener_restorer(self, accelerator: Accelerator, zero_adu: float | None,
                        step: float | None = None, adc_max: int = 65535
                        ) -> WienerSimRestorer:
        """``restorer(raw (9, Y, X) group, params) -> (2Y, 2X)`` ADU above ``zero_adu``
        for a Wiener-SIM bundle (:class:`~fluorofpga.host.wienerrestore.WienerSimRestorer`).
        """
        if not self.is_wiener:
            raise BundleError(f"bundle {self.name} is not a Wiener-SIM bundle")
        design = {**self.manifest["reconstruction"], "bundle": self.name}
        return WienerSimRestorer(accelerator, self.linear_codes, design, self.halo,
                                 zero_adu, step, adc_max)


def default_bundle_path() -> Path:
    """The small pre-trained bundle shipped inside the package."""
    return Path(str(resources.files(__package__) / "bundles" / "default"))


def shipped_bundle_path(board: str) -> Path:
    """The shipped denoiser bundle compiled for ``board``: ``bundles/<board>`` when the
    package ships one (``pynq-z2``: a 4-channel net sized for its 220 DSPs), else the
    default bundle (compiled for KV260)."""
    special = Path(str(resources.files(__package__) / "bundles" / board))
    return special if (special / "manifest.json").is_file() else default_bundle_path()


def default_sim_bundle_path() -> Path:
    """The pre-trained learned 3-frame SIM bundle shipped inside the package."""
    return Path(str(resources.files(__package__) / "bundles" / "sim3"))


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


def _check_task(mpath: Path, manifest: dict[str, Any], signal: SignalSpec | LinearSimCodes
                ) -> None:
    """The manifest's task agrees with its input frames, upscaling and signal kind."""
    task = manifest.get("task", "denoise")
    if task not in TASKS:
        raise BundleError(f"{mpath}: unknown task {task!r}; this fluorofpga knows "
                          + ", ".join(TASKS))
    inp, out = manifest["input"], manifest["output"]
    if not isinstance(inp, dict) or not isinstance(out, dict):
        raise BundleError(f"{mpath}: 'input' and 'output' must be objects")
    frames, upscale = inp.get("frames", 1), out.get("upscale", 1)
    want = {"denoise": (1, 1, "gat-residual")}.get(task)
    if want is not None and (frames, upscale, signal.kind) != want:
        raise BundleError(f"{mpath}: a denoise bundle takes 1 frame at upscale 1 in the "
                          f"gat-residual signal; got {frames} frames, upscale {upscale}, "
                          f"{signal.kind}")
    if isinstance(signal, LinearSimCodes):
        rec = manifest.get("reconstruction")
        if (task != "sim" or upscale != 2 or not isinstance(rec, dict)
                or not isinstance(rec.get("angles"), list) or frames != 3 * len(rec["angles"])):
            raise BundleError(f"{mpath}: a Wiener-SIM bundle (linear-sim signal) is a SIM "
                              "task of 3 frames per angle to a 2x grid, with its design "
                              "pattern under 'reconstruction'")
        return
    if task == "sim" and (not isinstance(frames, int) or frames < 1 or upscale != 2
                          or signal.kind != "gat-direct"):
        raise BundleError(f"{mpath}: a SIM bundle takes raw frames (>= 1) to a 2x grid in "
                          f"the gat-direct signal; got {frames} frames, upscale {upscale}, "
                          f"{signal.kind}")


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
    if not bpath.exists():
        raise BundleError(f"{bpath}: no such folder (a model bundle is a folder with a "
                          f"{MANIFEST})")
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
        sig = manifest["signal"]
        signal: SignalSpec | LinearSimCodes = (
            LinearSimCodes.from_dict(sig) if isinstance(sig, dict)
            and sig.get("kind") == "linear-sim" else SignalSpec.from_dict(sig))
    except (TypeError, ValueError, KeyError) as e:
        raise BundleError(f"{mpath}: bad signal representation: {e}") from None
    _check_task(mpath, manifest, signal)
    files, digests = manifest["files"], manifest.get("sha256") or {}
    if not isinstance(files, dict) or not isinstance(digests, dict):
        raise BundleError(f"{mpath}: 'files' and 'sha256' must be objects")
    for key, rel in files.items():
        _check_bundle_file(bpath.absolute(), key, rel, digests.get(key))
    if "hw_layers" in files:
        from .emulate import load_hw_graph

        load_hw_graph(bpath.absolute() / files["hw_layers"])
    return Bundle(bpath.absolute(), manifest)
