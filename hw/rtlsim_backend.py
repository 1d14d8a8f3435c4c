"""The ``rtlsim`` backend: a bundle's network as RTL, simulated in Verilator, behind the
host's :class:`~fluorofpga.host.accelerator.Accelerator` interface.

``RtlsimAccelerator.from_bundle(bundle)`` rebuilds the bundle's QONNX with finn-plus for
RTL layers only (``mvau_impl="rtl"``: the shipped estimate builds may use HLS MVAUs, which
need Vitis HLS to become RTL), stitches it with FINN's width converters and FIFOs
(:mod:`fluorofpga.hw.stitch`, network only: input codes in, residual codes out, which is
the board's data path in this release) and compiles it once. Every tile then streams
through the simulated hardware, so ``FrameRestorer`` (and ``fluorofpga denoise --backend
rtlsim``) drive it with exactly the host code that drives the board.

It is slow (a simulator process per tile, hundreds of thousands of cycles for a 128^2
tile of the shipped net): meant for small images, verification and demonstrations.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fluorofpga.host.accelerator import Accelerator, AcceleratorError

from .stitch import StitchedDesign, generate_accelerator, simulate_accelerator, stitch_graph

__all__ = ["RtlsimAccelerator", "default_work_dir", "wiener_design"]


def default_work_dir() -> Path:
    """Where compiled rtlsim designs are cached: ``~/.cache/fluorofpga/rtlsim``."""
    return Path.home() / ".cache" / "fluorofpga" / "rtlsim"


class RtlsimAccelerator(Accelerator):
    """Tiles of input codes through the stitched network RTL in Verilator.

    Args:
        design: a network-only :class:`~fluorofpga.hw.stitch.StitchedDesign`
            (``generate_accelerator(..., params=None)``).
        idle_prob, backpressure_prob: random input idle cycles / output backpressure in
            every simulation (0: free-running).
        seed: seed of the stall pattern (advanced per tile).

    Attributes:
        cycles: clock cycles of each simulated tile, in order.
    """

    name = "rtlsim"

    def __init__(self, design: StitchedDesign, idle_prob: float = 0.0,
                 backpressure_prob: float = 0.0, seed: int = 0) -> None:
        if design.params is not None or design.demod:
            raise ValueError("the rtlsim backend simulates the network alone (codes in, "
                             "residual codes out): generate the design with params=None "
                             "(and no demod)")
        c_in, c_out = design.in_channels, design.out_channels
        super().__init__(design.tile_shape, design.in_value_bits, design.out_value_bits,
                         in_channels=c_in, out_channels=c_out)
        self.design = design
        self.idle_prob = idle_prob
        self.backpressure_prob = backpressure_prob
        self.seed = seed
        self.cycles: list[int] = []

    @classmethod
    def from_bundle(cls, bundle: Any, work_dir: str | Path | None = None,
                    progress: Callable[[str], None] | None = None,
                    **kwargs: Any) -> RtlsimAccelerator:
        """Build (or reuse from ``work_dir``) the RTL of ``bundle``'s network.

        The cache key is the bundle's QONNX and its build configuration; a cached design
        is reused, a changed bundle gets a new one.

        Raises:
            BundleError: the bundle lacks its QONNX model.
            fluorofpga.hw.stitch.StitchError: the network has a layer without RTL.
        """
        say = progress or (lambda _msg: None)
        work, cached, built = _network_build(bundle, work_dir, "accel", say)
        if built is None:
            return cls(_design_from_json(cached), **kwargs)
        say("stitching and generating RTL")
        design = generate_accelerator(built[0], work / "accel", None)
        return cls(design, **kwargs)

    def _compute(self, tile: np.ndarray) -> np.ndarray:
        try:
            run = simulate_accelerator(
                self.design, tile[None].astype(np.uint32),
                run_name=f"tile{len(self.cycles) % 2}", idle_prob=self.idle_prob,
                backpressure_prob=self.backpressure_prob, seed=self.seed + len(self.cycles))
        except RuntimeError as err:
            raise AcceleratorError(f"rtlsim: {err}") from err
        self.cycles.append(run.cycles)
        return run.words[0].astype(np.uint8 if self.out_bits <= 8 else np.uint16)


def _network_build(bundle: Any, work_dir: str | Path | None, name: str,
                   say: Callable[[str], None]) -> tuple[Path, Path, tuple[Any] | None]:
    """The bundle's network built with RTL layers and stitched, or the cached design.

    Returns ``(work, design.json of <work>/<name>, None)`` when that design is cached,
    else ``(work, its path, (stitched graph,))``. The cache key is the bundle's QONNX and
    its build configuration.
    """
    from fluorofpga.hw import HwBuildConfig, build

    qonnx = bundle.file("qonnx")
    b = dict(bundle.manifest.get("build", {}))
    known = set(HwBuildConfig.__dataclass_fields__) - {"version"}
    cfg = HwBuildConfig(**{**{k: v for k, v in b.items() if k in known},
                           "tile": int(bundle.tile_shape[0]), "halo": int(bundle.halo),
                           "mvau_impl": "rtl", "until": "estimates"})
    if bundle.tile_shape[0] != bundle.tile_shape[1]:
        raise ValueError(f"rtlsim builds square tiles; bundle tile {bundle.tile_shape}")
    key = hashlib.sha256(qonnx.read_bytes() + json.dumps(cfg.to_dict(), sort_keys=True)
                         .encode()).hexdigest()[:16]
    work = Path(work_dir or default_work_dir()) / f"{bundle.name}-{key}"
    cached = work / name / "design.json"
    if cached.is_file():
        say(f"reusing the RTL of {bundle.name} in {work}")
        return work, cached, None
    say(f"building {bundle.name} with RTL layers (finn-plus) into {work}")
    res = build(qonnx, work / "finn", cfg)
    return work, cached, (stitch_graph(res.hw_model, cfg.board_def().fpga_part),)


def wiener_design(bundle: Any, work_dir: str | Path | None = None,
                  progress: Callable[[str], None] | None = None) -> StitchedDesign:
    """The whole hardware of a Wiener-SIM bundle: ``sim_demod.sv`` -> the filter's FINN
    layers, one stitched design (built, or reused from ``work_dir``).

    Stream it with :func:`~fluorofpga.hw.stitch.simulate_accelerator` (raw-frame codes
    ``(n, h, w, 9)`` and each tile's ``demod_config_words``).

    Raises:
        ValueError: not a Wiener-SIM bundle.
    """
    if not getattr(bundle, "is_wiener", False):
        raise ValueError(f"bundle {bundle.name} is not a Wiener-SIM bundle: no demodulation "
                         "in front of its network")
    say = progress or (lambda _msg: None)
    work, cached, built = _network_build(bundle, work_dir, "accel-demod", say)
    if built is None:
        return _design_from_json(cached)
    say("stitching sim_demod and the network, generating RTL")
    return generate_accelerator(built[0], work / "accel-demod", None, demod=True)


def _design_from_json(path: Path) -> StitchedDesign:
    d = json.loads(path.read_text())
    if d.get("params") is not None:
        raise ValueError(f"{path}: a design with pixel kernels, not a network-only one")
    return StitchedDesign(
        top=d["top"], out_dir=Path(d["out_dir"]), sources=[Path(s) for s in d["sources"]],
        graph=Path(d["graph"]), params=None, in_bits=int(d["in_bits"]),
        out_bits=int(d["out_bits"]), tile_shape=tuple(d["tile_shape"]),
        fifos={k: int(v) for k, v in d["fifos"].items()}, bypass_depth=int(d["bypass_depth"]),
        layer_cycles={k: int(v) for k, v in d["layer_cycles"].items()},
        data_files=[Path(s) for s in d["data_files"]],
        in_channels=int(d.get("in_channels", 1)), out_channels=int(d.get("out_channels", 1)),
        in_beats=int(d.get("in_beats", 1)), out_beats=int(d.get("out_beats", 1)),
        demod=bool(d.get("demod", False)))
