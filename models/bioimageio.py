"""Export a trained network as a bioimage.io model: raw camera ADU in, restored ADU out.

bioimage.io tools (bioimageio.core, ilastik, deepImageJ, ...) know nothing about the
signal representation of :mod:`fluorofpga.microscope.signal`, so the package carries it
inside the model. :class:`RawAduRestorer` wraps the float network with, for one camera
noise model ``var(y) = a·E[y] + b``:

1. the generalised Anscombe transform ``z = (2/a)·sqrt(max(a·y + 3a²/8 + b, 0))``
   (float64, the same closed form the pixel-in table is built from);
2. the input code ``q = clip(round_half_even((z − dark_shift) / in_step), 0, 2**in_bits − 1)``,
   exactly the hardware's pixel-in table for integer ADU (``dark_shift``: how far this
   camera's dark level lies above the training cameras', ``SignalTables.dark_shift``,
   usually 0);
3. the network on ``q / 2**INPUT_BITS``, read out as residual codes ``r = out · 2**OUTPUT_BITS``
   (float, not rounded: the float twin of the accelerator);
4. the clean code ``c = clip(ratio·q + residual_zero − r, 0, 2**code_bits − 1)`` and the
   algebraic inverse ``y = ((a·(c·residual_step + dark_shift)/2)² − 3a²/8 − b) / a``;
5. pixels at the ADC maximum or at the top input code passed through unchanged, as the
   host does (:meth:`~fluorofpga.microscope.signal.SignalTables.decode`).

:func:`export_bioimageio` scripts the wrapper (TorchScript weights: they run without
fluorofpga), writes test tensors produced by the wrapper itself on a simulated camera
frame, a cover image and a README, and lets ``bioimageio.spec`` build and package the
model description (format 0.5). :func:`validate_bioimageio` runs bioimageio.core's own
model test. Neither uses the network. bioimageio.core's test always performs IO checks
(it forces ``perform_io_checks=True``, whatever ``BIOIMAGEIO_PERFORM_IO_CHECKS`` or a
``ValidationContext`` say, and resets ``known_files`` when it opens a package); those
checks go online only for http(s) URL fields (HEAD request) and an author's
``github_user`` (api.github.com). The description therefore holds neither: files are
packaged, citations are DOIs, authors have no GitHub user; a ``project_url`` is the one
opt-in exception.

``bioimageio.core`` (which brings ``bioimageio.spec``) is an optional dependency, imported
only when a function here runs. bioimageio.core 0.11.0 pins bioimageio.spec 0.5.12.0,
which cannot serialise under pydantic >= 2.14; :func:`_pydantic_compat` bridges that.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import shutil
import tempfile
import types
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tifffile
import torch
from torch import nn

from fluorofpga.microscope.signal import NoiseModel, SignalSpec, SignalTables

from .denoiser import INPUT_BITS, OUTPUT_BITS, DenoiserConfig, PlainDenoiser, load_checkpoint

__all__ = [
    "BioimageioValidationError",
    "RawAduRestorer",
    "export_bioimageio",
    "validate_bioimageio",
]

#: Tensor ids of the packaged model.
INPUT_ID = "raw"
OUTPUT_ID = "restored"
#: Spatial axis sizes a bioimage.io tool may choose are ``min + n·SIZE_STEP`` pixels.
SIZE_STEP = 16
#: Mäkitalo & Foi 2013, the generalised Anscombe transform and its inversion.
GAT_DOI = "10.1109/TIP.2012.2202675"
GAT_CITATION = (
    "Mäkitalo M, Foi A. Optimal inversion of the generalized Anscombe transformation for "
    "Poisson-Gaussian noise. IEEE Transactions on Image Processing 22(1):91-103, 2013."
)
_UINT16_MAX = 65535
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_+\- ()]")

_README = """\
# {name}

Denoiser for widefield fluorescence frames from an sCMOS camera, exported by
fluorofpga {fluorofpga_version} from {source_kind} `{source_name}`.

**Input** `{input_id}`: raw camera counts (ADU) as float32, axes (batch, channel=1, y, x).
**Output** `{output_id}`: restored counts (ADU), float32, same shape.
No pre- or post-processing is needed outside the model: the steps below run *inside*
the packaged network (TorchScript), for one fixed camera.

## Camera noise model

`var(y) = a·E[y] + b` in ADU with **a = {a!r}** ADU per photoelectron (gain
{gain:.6g} e⁻/ADU) and **b = {b!r}** ADU² (source: *{noise_source}*; "calibration" = dark
frames and a photon-transfer curve, "estimated" = fitted on the frames themselves,
"camera" = given gain/offset/read noise). The model is only right for frames of this
camera with this offset and gain: re-export it for another camera.

## Processing inside the model

1. Generalised Anscombe transform (Mäkitalo & Foi 2013), float64:
   `z = (2/a)·sqrt(max(a·y + 3a²/8 + b, 0))` (unit noise variance).
2. Input code, as the FPGA's pixel-in table: `q = clip(round_half_even(z / {in_step!r}),
   0, {in_max})` ({in_bits} bits, {in_step!r} σ per code).
3. Network ({depth} 3×3 convolutions, {channels} channels, ReLU) on `q / {in_scale}`;
   its output times {out_scale} is the noise residual `r` in codes of {residual_step!r} σ
   around {residual_zero} (float, not rounded).
4. Clean code `c = clip({ratio}·q + {residual_zero} − r, 0, {code_max})`, clean GAT value
   `ẑ = c·{residual_step!r}`, restored ADU by the algebraic inverse
   `y = ((a·ẑ/2)² − 3a²/8 − b) / a`.
5. Pixels at the ADC maximum (≥ {adc_max} ADU) or at the top input code (above
   ≈ {max_adu:.1f} ADU) are passed through unchanged.

## Tiling

Receptive field {receptive_field}×{receptive_field} pixels: tiles need a halo of
**{halo} pixels** on each side (declared on the output axes). The network pads with zeros
inside each convolution, so only pixels within {halo} pixels of the image border see the
padding. Tile sizes are `{size_min} + n·{size_step}` pixels.

## Training data

{training_data}. Simulated pre-training: physically simulated cell-like scenes
(filaments, puncta, nuclei; widefield PSF) recorded through many random sCMOS cameras and
light levels (fluorofpga `SimulatedPairs`), supervised on the GAT of the noise-free image.
Training record: {training}.

## Validation

The test tensors in this package were produced by running the packaged model itself on a
simulated frame of this camera; `bioimageio test <package>` reproduces them. fluorofpga's
test suite checks that the package equals fluorofpga's own float restoration
(pixel-in table, network, residual read-out, algebraic inverse) to float32 rounding. For
quantitative quality on unseen data, compare with a noise-free reference (simulations,
or many averaged frames): fluorofpga's `benchmarks/quality.py` reports PSNR/SSIM on
simulated scenes and real images recorded through foreign simulated cameras. Check
restored images against raw data before drawing conclusions: a denoiser can invent
structure at very low light.

## Cite

- {gat_citation} doi:{gat_doi}
- fluorofpga {fluorofpga_version}: deep-learning image restoration inside a fluorescence
  microscope (simulate, train, quantize, compile, stream on a Zynq/PYNQ board){project_url}.
"""


class BioimageioValidationError(RuntimeError):
    """bioimageio.core's model test did not pass; the message names the failing checks."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


class RawAduRestorer(nn.Module):
    """Raw camera ADU -> restored ADU: GAT, input code, network, residual read-out, inverse.

    Everything the host and the accelerator do around the network, for one camera, in one
    TorchScript-able module (see the module docstring for the formulas).

    Args:
        net: the float network (input ``q / 2**INPUT_BITS``, output ``r / 2**OUTPUT_BITS``).
        signal: the signal representation the network was trained in.
        noise: the camera's noise model (``a``, ``b`` become float64 buffers).
        adc_max: ADC saturation value, ADU: pixels there are passed through.

    Input ``(N, 1, H, W)`` float ADU; output the same shape, float32 ADU.
    """

    def __init__(
        self, net: nn.Module, signal: SignalSpec, noise: NoiseModel, adc_max: int = _UINT16_MAX,
    ) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("a", torch.tensor(noise.a, dtype=torch.float64))
        self.register_buffer("b", torch.tensor(noise.b, dtype=torch.float64))
        # GAT units the dark level lies above what the network was trained on (see
        # SignalSpec.max_dark_z): subtracted before the input code, added back after
        self.dark_shift = float(signal.dark_shift(noise))
        self.in_step = float(signal.in_step)
        self.in_max = float(signal.in_max)
        self.ratio = float(signal.ratio)
        self.residual_zero = float(signal.residual_zero)
        self.residual_step = float(signal.residual_step)
        self.code_max = float((1 << signal.code_bits) - 1)
        self.in_scale = float(2**INPUT_BITS)
        self.out_scale = float(2**OUTPUT_BITS)
        self.adc_max = float(adc_max)

    def forward(self, adu: torch.Tensor) -> torch.Tensor:
        """Restore ``adu`` (N, 1, H, W) float ADU; returns float32 ADU."""
        y = adu.to(torch.float64)
        a = self.a
        b = self.b
        arg = a * y + 0.375 * a * a + b
        z = (2.0 / a) * torch.sqrt(torch.clamp(arg, min=0.0))
        q = torch.clamp(torch.round((z - self.dark_shift) / self.in_step), 0.0, self.in_max)
        out = self.net((q / self.in_scale).to(torch.float32))
        r = out.to(torch.float64) * self.out_scale
        c = torch.clamp(self.ratio * q + self.residual_zero - r, 0.0, self.code_max)
        z_clean = c * self.residual_step + self.dark_shift
        restored = ((a * z_clean / 2.0) ** 2 - 0.375 * a * a - b) / a
        passthrough = (y >= self.adc_max) | (q >= self.in_max)
        return torch.where(passthrough, y, restored).to(torch.float32)


class _IndexKeyHandler:
    """A pydantic serializer wrap handler that drops a ``SerializationInfo`` passed as key.

    bioimageio.spec 0.5.12 calls ``handler(value, info)`` (an old pydantic docs example);
    pydantic >= 2.14 only takes an int or str ``index_key`` there.
    """

    def __init__(self, handler: Any) -> None:
        self._handler = handler

    def __call__(self, value: Any, index_key: Any = None) -> Any:
        """Serialise ``value``, passing ``index_key`` on only if it is one."""
        if isinstance(index_key, (int, str)):
            return self._handler(value, index_key)
        return self._handler(value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)


def _wrap_handler_trampoline(value: Any, handler: Any, info: Any) -> Any:
    """Code given to a patched serializer; its globals are the patched function's module."""
    return _fluorofpga_unpatched(value, _fluorofpga_handler(handler), info)  # noqa: F821


@functools.cache
def _pydantic_compat() -> None:
    """Let bioimageio.spec 0.5.12 serialise descriptions under pydantic >= 2.14 (idempotent).

    bioimageio.core 0.11.0 pins bioimageio.spec 0.5.12.0, whose three serializer wrap
    functions (every file reference, the weights, callables) call ``handler(value, info)``;
    pydantic 2.14 raises ``TypeError: 'index_key' is expected to be an integer or a string``
    there (pydantic PR 13506), so no model can be built, packaged or tested.
    bioimageio.spec 0.5.14 calls ``handler(value)``. Until a bioimageio.core release allows
    it, each of the three functions keeps its own code under ``_fluorofpga_unpatched`` in
    its module and gets :class:`_IndexKeyHandler` in front of ``handler``. Nothing is
    changed when the installed pydantic accepts the call.
    """
    from pydantic import BaseModel, WrapSerializer
    from pydantic_core import PydanticSerializationError

    def probe(value: Any, handler: Any, info: Any) -> Any:
        return handler(value, info)

    class _Probe(BaseModel):
        x: Annotated[int, WrapSerializer(probe)]

    try:
        _Probe(x=0).model_dump()
        return
    except PydanticSerializationError:
        pass
    from bioimageio.spec._internal import io_packaging, validated_string_with_inner_node
    from bioimageio.spec.model import v0_4

    for fn in (io_packaging.package_file_descr_serializer, v0_4.package_weights,
               validated_string_with_inner_node.ValidatedStringWithInnerNode._serialize):
        if fn.__code__ is _wrap_handler_trampoline.__code__:
            continue
        fn.__globals__["_fluorofpga_unpatched"] = types.FunctionType(
            fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
        fn.__globals__["_fluorofpga_handler"] = _IndexKeyHandler
        fn.__code__ = _wrap_handler_trampoline.__code__


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _load_network(source: Path) -> tuple[PlainDenoiser, DenoiserConfig, dict[str, Any]]:
    """Float network, its config and provenance from a bundle directory or a checkpoint."""
    if source.is_dir():
        from fluorofpga.host.bundle import load_bundle

        bundle = load_bundle(source)
        checkpoint = bundle.file("float_checkpoint")
        config, payload = load_checkpoint(checkpoint)
        # the manifest may add the training cameras' dark level (max_dark_z) to the
        # representation the checkpoint was trained in; everything else must agree
        if dataclasses.replace(config.signal, max_dark_z=None) != dataclasses.replace(
                bundle.signal, max_dark_z=None):
            raise ValueError(
                f"{checkpoint}: the checkpoint's signal representation {config.signal} "
                f"differs from the bundle manifest's {bundle.signal}; re-create the bundle")
        config = dataclasses.replace(config, signal=bundle.signal)
        info = {"kind": "bundle", "name": bundle.name,
                "training": bundle.manifest.get("training", {})}
    elif source.is_file():
        checkpoint = source
        config, payload = load_checkpoint(checkpoint)
        info = {"kind": "checkpoint", "name": source.stem,
                "training": {k: v for k, v in payload.items()
                             if k not in ("version", "config", "state_dict", "kind")
                             and _jsonable(v)}}
    else:
        raise FileNotFoundError(f"no bundle directory or float checkpoint at {source}")
    if payload.get("kind", "float") != "float":
        raise ValueError(f"{checkpoint}: a {payload['kind']!r} checkpoint; export needs the "
                         "float network (the bundle's float_checkpoint)")
    net = PlainDenoiser(config)
    net.load_state_dict(payload["state_dict"])
    info["checkpoint_sha256"] = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    return net.eval(), config, info


def _simulated_frame(noise: NoiseModel, size: int, adc_max: int, seed: int = 0) -> np.ndarray:
    """A simulated widefield frame (uint16 ADU, ``size``²) from a camera of this noise model.

    The camera has gain ``1/a`` and a read noise / offset pair that reproduces ``b``
    (1.6 e⁻ read noise where the offset allows, otherwise offset 0).
    """
    from fluorofpga.microscope import SCMOSCamera, WidefieldMicroscope

    g = noise.gain_e_per_adu
    read_e = 1.6
    offset = read_e**2 / g + g / 12.0 - g * noise.b
    if offset < 0:
        offset, read_e = 0.0, g * math.sqrt(max(noise.b - 1.0 / 12.0, 0.0))
    bits = max(1, int(adc_max).bit_length())
    camera = SCMOSCamera(qe=1.0, gain_e_per_adu=g, offset_adu=min(offset, (1 << bits) - 1),
                         read_noise_e=read_e, bit_depth=bits)
    mic = WidefieldMicroscope(shape=(size, size), peak_photons=300.0, background_photons=5.0,
                              camera=camera, seed=seed)
    return next(mic.frames(1)).noisy


def _test_frame(test_input: np.ndarray | None, noise: NoiseModel, size_min: int,
                adc_max: int) -> np.ndarray:
    """The test input as float32 (1, 1, Y, X), cropped to a size the description allows."""
    if test_input is None:
        frame = _simulated_frame(noise, size_min + 2 * SIZE_STEP, adc_max)
    else:
        frame = np.asarray(test_input)
        while frame.ndim > 2 and frame.shape[0] == 1:
            frame = frame[0]
        if frame.ndim != 2:
            raise ValueError(f"test_input must be one (Y, X) frame, got shape "
                             f"{np.shape(test_input)}")
        if min(frame.shape) < size_min:
            raise ValueError(f"test_input {frame.shape} is smaller than the smallest tile "
                             f"{size_min}×{size_min} pixels")
    h, w = ((s - size_min) // SIZE_STEP * SIZE_STEP + size_min for s in frame.shape)
    return np.ascontiguousarray(frame[:h, :w], dtype=np.float32)[None, None]


def _cover(path: Path, raw: np.ndarray, restored: np.ndarray) -> None:
    """Raw and restored test frames side by side (2:1 PNG), same display range."""
    from matplotlib.figure import Figure

    lo, hi = np.percentile(raw, [1.0, 99.8])
    fig = Figure(figsize=(8, 4))
    for ax, image, title in zip(fig.subplots(1, 2), (raw, restored),
                                ("raw camera ADU", "restored ADU"), strict=True):
        ax.imshow(image, cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=64)


def _authors(authors: Sequence[str | Mapping[str, str]]) -> list[Any]:
    """bioimage.io ``Author`` entries from names or dicts; no ``github_user`` (looked up online)."""
    from bioimageio.spec.model.v0_5 import Author

    entries = [{"name": a} if isinstance(a, str) else dict(a) for a in authors]
    for entry in entries:
        if "github_user" in entry:
            raise ValueError(
                f"author {entry.get('name')!r}: github_user is not supported here, because "
                "bioimageio.spec verifies it on api.github.com at every validation; give "
                "name, affiliation, email or orcid (add GitHub users when uploading)")
    return [Author(**entry) for entry in entries]


def _training_data(training: Mapping[str, Any]) -> str:
    """One sentence on what the weights were trained on, from the training record."""
    if "self_supervised" in json.dumps(training):
        return ("Trained on simulated data, then fine-tuned self-supervised (blind spot) on "
                "the user's own frames (see the training record)")
    return "Trained on simulated data only"


def _model_name(name: str | None, info: Mapping[str, Any]) -> str:
    name = name or f"fluorofpga {info['name']} raw-ADU denoiser"
    name = _NAME_CHARS.sub("-", name).strip()
    if not 5 <= len(name) <= 128:
        raise ValueError(f"model name {name!r} must have 5 to 128 characters")
    return name


def _write_files(d: Path, wrapper: RawAduRestorer, frame: np.ndarray, restored: np.ndarray,
                 readme: str) -> None:
    """Weights (TorchScript), test and sample tensors, cover and README into ``d``."""
    with warnings.catch_warnings():
        # TorchScript is deprecated in torch but is the bioimage.io weight format that runs
        # without the architecture's source code (and fluorofpga).
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        torch.jit.save(torch.jit.script(wrapper), d / "raw_adu_restorer.pt")
    np.save(d / "test_input.npy", frame)
    np.save(d / "test_output.npy", restored)
    tifffile.imwrite(d / "sample_input.tif", frame[0, 0])
    tifffile.imwrite(d / "sample_output.tif", restored[0, 0])
    _cover(d / "cover.png", frame[0, 0], restored[0, 0])
    (d / "README.md").write_text(readme, encoding="utf-8")


@dataclass(frozen=True)
class _Export:
    """One export: the network and its representation, the camera, the provenance.

    Attributes:
        name: model name.
        net: the float network.
        config: its architecture and signal representation.
        info: provenance (``kind``, ``name``, ``training``, ``checkpoint_sha256``).
        noise: the camera's noise model.
        adc_max: ADC saturation value, ADU.
        project_url: the project's URL to cite, if any.
    """

    name: str
    net: PlainDenoiser
    config: DenoiserConfig
    info: dict[str, Any]
    noise: NoiseModel
    adc_max: int
    project_url: str | None

    @property
    def size_min(self) -> int:
        """Smallest tile side: a multiple of SIZE_STEP, at least twice the halo plus one."""
        return SIZE_STEP * math.ceil((4 * self.config.halo + 1) / SIZE_STEP)

    @property
    def training_data(self) -> str:
        """What the weights were trained on (one sentence)."""
        return _training_data(self.info["training"])

    def readme(self) -> str:
        """The package's documentation (markdown)."""
        import fluorofpga

        spec, noise, cfg = self.config.signal, self.noise, self.config
        training = self.info["training"]
        return _README.format(
            name=self.name, fluorofpga_version=fluorofpga.__version__,
            source_kind=self.info["kind"], source_name=self.info["name"], input_id=INPUT_ID,
            output_id=OUTPUT_ID, a=noise.a, b=noise.b, gain=noise.gain_e_per_adu,
            noise_source=noise.source, in_step=spec.in_step, in_max=spec.in_max,
            in_bits=spec.in_bits, depth=cfg.depth, channels=cfg.channels,
            in_scale=2**INPUT_BITS, out_scale=2**OUTPUT_BITS, residual_step=spec.residual_step,
            residual_zero=spec.residual_zero, ratio=spec.ratio,
            code_max=(1 << spec.code_bits) - 1, adc_max=self.adc_max,
            max_adu=SignalTables(spec, noise, self.adc_max).max_adu(),
            receptive_field=cfg.receptive_field, halo=cfg.halo, size_min=self.size_min,
            size_step=SIZE_STEP, training_data=self.training_data,
            training=json.dumps(training, sort_keys=True) if training else "not recorded",
            gat_citation=GAT_CITATION, gat_doi=GAT_DOI,
            project_url=f", {self.project_url}" if self.project_url else "",
        )

    def record(self) -> dict[str, Any]:
        """``config.fluorofpga`` of the description: representation, camera, processing."""
        import fluorofpga

        cfg = self.config
        return {
            "version": fluorofpga.__version__,
            "source": self.info,
            "signal": cfg.signal.to_dict(),
            "noise_model": self.noise.to_dict(),
            "adc_max": self.adc_max,
            "network": {"arch": "PlainDenoiser", "channels": cfg.channels, "depth": cfg.depth,
                        "halo": cfg.halo, "receptive_field": cfg.receptive_field},
            "processing": {
                "gat": "z = (2/a)*sqrt(max(a*y + 3*a**2/8 + b, 0))",
                "dark_shift": cfg.signal.dark_shift(self.noise),
                "input_code": "q = clip(round_half_even((z - dark_shift) / in_step), 0, "
                              "2**in_bits - 1)",
                "network_input": f"q / {2**INPUT_BITS}",
                "residual_code": f"r = network_output * {2**OUTPUT_BITS}",
                "clean_code": "c = clip(ratio*q + residual_zero - r, 0, 2**code_bits - 1)",
                "inverse": "y = ((a*(c*residual_step + dark_shift)/2)**2 - 3*a**2/8 - b) / a",
                "passthrough": "y >= adc_max or q == 2**in_bits - 1: output = input",
                "applied": "inside the model (TorchScript); no external pre-/post-processing",
            },
            "training_data": self.training_data,
        }

    def model_descr(self, d: Path, authors: list[Any]) -> Any:
        """The bioimage.io model description (format 0.5) of the files in ``d``."""
        from bioimageio.spec import ValidationContext
        from bioimageio.spec.model import v0_5 as bio

        import fluorofpga

        cfg, spec, noise, halo = self.config, self.config.signal, self.noise, self.config.halo
        space_in = [bio.SpaceInputAxis(id=bio.AxisId(ax), size=bio.ParameterizedSize(
            min=self.size_min, step=SIZE_STEP)) for ax in ("y", "x")]
        space_out = [bio.SpaceOutputAxisWithHalo(id=bio.AxisId(ax), halo=halo, size=(
            bio.SizeReference(tensor_id=bio.TensorId(INPUT_ID), axis_id=bio.AxisId(ax))))
            for ax in ("y", "x")]
        adu = bio.IntervalOrRatioDataDescr(type="float32")
        cite = [bio.CiteEntry(text=GAT_CITATION, doi=bio.Doi(GAT_DOI))]
        if self.project_url:
            cite.append(bio.CiteEntry(text=f"fluorofpga {fluorofpga.__version__}",
                                      url=self.project_url))
        bioimageio_config = bio.BioimageioConfig(
            reproducibility_tolerance=[bio.ReproducibilityTolerance(
                relative_tolerance=1e-4, absolute_tolerance=1e-2,
                mismatched_elements_per_million=0)],
            architecture_type="plain CNN (3x3 conv + ReLU)",
            architecture_description=(
                f"{cfg.depth} zero-padded 3x3 convolutions, {cfg.channels} channels, ReLU "
                "between them; no normalisation, no skip connections, no resampling (one "
                f"FINN MVAU per layer). Receptive field {cfg.receptive_field} px."),
            modality="widefield fluorescence microscopy, sCMOS camera",
            task="denoising",
            model_parameter_count=sum(p.numel() for p in self.net.parameters()),
            training=bio.TrainingDetails(
                training_preprocessing=(
                    "simulated scenes recorded through random cameras and light levels; GAT "
                    "with the (perturbed) camera noise model; target = noise residual code "
                    "against the GAT of the noise-free image"),
                loss_function="MSE on residual codes",
                optimizer="torch.optim.Adam (cosine-decayed learning rate)"),
            bias_risks_limitations=bio.BiasRisksLimitations(limitations=(
                f"{self.training_data}. Right only for the camera whose noise model is built "
                "in (offset, gain, read noise); frames must be raw ADU (no background "
                "subtraction or scaling). Pixels above the input code's range and saturated "
                "pixels pass through.")),
            out_of_scope_use=(
                "Other cameras or processed images (re-export with their noise model); "
                "quantitative intensity measurements below a few photons per pixel without "
                "checking against raw data."),
        )
        known = {self.project_url: None} if self.project_url else {}
        with ValidationContext(root=d, perform_io_checks=True, known_files=known):
            return bio.ModelDescr(
                name=self.name,
                description=(
                    "Denoises raw sCMOS widefield fluorescence frames of ONE camera: raw ADU "
                    "in, restored ADU out. Inside the model: generalised Anscombe transform "
                    f"for this camera's noise model (a={noise.a:.6g} ADU/e-, b={noise.b:.6g} "
                    f"ADU^2, from {noise.source}), {spec.in_bits}-bit input code, a plain "
                    f"{cfg.depth}-layer CNN predicting the noise residual, algebraic "
                    f"inverse. Tile halo {halo} px. {self.training_data}."),
                authors=authors,
                cite=cite,
                license=bio.LicenseId("Apache-2.0"),
                documentation=bio.FileDescr(source=d / "README.md"),
                covers=[bio.FileDescr(source=d / "cover.png")],
                tags=["fluorescence-light-microscopy", "2d", "cells", "pytorch", "denoising",
                      "image-restoration", "anscombe", "scmos", "fpga", "fluorofpga"],
                inputs=[bio.InputTensorDescr(
                    id=bio.TensorId(INPUT_ID),
                    description="raw camera counts (ADU) of one frame, as float32",
                    axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=["adu"]), *space_in],
                    test_tensor=bio.FileDescr(source=d / "test_input.npy"),
                    sample_tensor=bio.FileDescr(source=d / "sample_input.tif"),
                    data=adu,
                )],
                outputs=[bio.OutputTensorDescr(
                    id=bio.TensorId(OUTPUT_ID),
                    description="restored counts (ADU), float32; crop the halo when tiling",
                    axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=["restored_adu"]),
                          *space_out],
                    test_tensor=bio.FileDescr(source=d / "test_output.npy"),
                    sample_tensor=bio.FileDescr(source=d / "sample_output.tif"),
                    data=adu,
                )],
                weights=bio.WeightsDescr(torchscript=bio.TorchscriptWeightsDescr(
                    source=d / "raw_adu_restorer.pt",
                    pytorch_version=bio.Version(torch.__version__.split("+")[0]),
                    comment="RawAduRestorer: GAT, input code, PlainDenoiser, residual "
                            "read-out, algebraic inverse (fluorofpga.models.bioimageio)",
                )),
                version=bio.Version(fluorofpga.__version__),
                config=bio.Config(bioimageio=bioimageio_config, fluorofpga=self.record()),
            )


def export_bioimageio(
    source: str | Path,
    out_zip: str | Path,
    noise: NoiseModel,
    *,
    name: str | None = None,
    authors: Sequence[str | Mapping[str, str]] = ("fluorofpga contributors",),
    test_input: np.ndarray | None = None,
    adc_max: int = _UINT16_MAX,
    project_url: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Package a trained float network as a bioimage.io model (raw ADU in, restored ADU out).

    Args:
        source: a bundle directory (its ``float_checkpoint``) or a float checkpoint file
            (``save_checkpoint``; the signal representation comes from its config).
        out_zip: the package to write (``.zip``).
        noise: the camera's noise model; the package is only right for this camera.
        name: model name (default from the bundle or checkpoint name).
        authors: author names, or dicts of bioimage.io ``Author`` fields (``name``,
            ``affiliation``, ``email``, ``orcid``; not ``github_user``, which bioimageio
            looks up online).
        test_input: one raw frame (ADU, ``(Y, X)``) for the test tensors, cropped to a
            valid tile size; default a simulated frame from a camera of this noise model.
        adc_max: ADC saturation value of the camera, ADU (pixels there pass through).
        project_url: the project's public URL, cited in the description when given
            (bioimageio's test then HEAD-requests it; offline that is only a warning).
        overwrite: replace an existing ``out_zip``.

    Returns:
        The path of the package.
    """
    from bioimageio.spec import save_bioimageio_package

    _pydantic_compat()
    out_zip = Path(out_zip)
    if out_zip.exists() and not overwrite:
        raise FileExistsError(f"{out_zip} exists; pass overwrite=True to replace it")
    if not 1 <= int(adc_max) <= _UINT16_MAX:
        raise ValueError(f"adc_max must be in 1..65535, got {adc_max!r}")
    author_entries = _authors(authors)
    net, config, info = _load_network(Path(source))
    plan = _Export(_model_name(name, info), net, config, info, noise, int(adc_max), project_url)
    wrapper = RawAduRestorer(net, config.signal, noise, plan.adc_max).eval()
    frame = _test_frame(test_input, noise, plan.size_min, plan.adc_max)
    with torch.no_grad():
        restored = wrapper(torch.from_numpy(frame)).numpy()
    with tempfile.TemporaryDirectory(prefix="fluorofpga-bioimageio-") as tmp:
        d = Path(tmp)
        _write_files(d, wrapper, frame, restored, plan.readme())
        descr = plan.model_descr(d, author_entries)
        partial = out_zip.with_name(out_zip.name + ".partial")
        try:
            save_bioimageio_package(descr, output_path=partial, local_files_only=True)
            shutil.move(partial, out_zip)
        except BaseException:  # a full disk, Ctrl-C: no half package left behind
            partial.unlink(missing_ok=True)
            raise
    return out_zip


def _summary_dict(summary: Any) -> dict[str, Any]:
    """A bioimageio ``ValidationSummary`` as a plain dict (status, failing checks, details)."""
    details = [{
        "name": d.name,
        "status": d.status,
        "errors": [f"{'.'.join(map(str, e.loc))}: {e.msg}" if e.loc else e.msg
                   for e in d.errors],
        "warnings": [w.msg for w in d.warnings],
    } for d in summary.details]
    return {
        "status": summary.status,
        "name": summary.name,
        "format_version": summary.format_version,
        "failed": [d["name"] for d in details if d["status"] == "failed"],
        "details": details,
        "env": {p.name: p.version for p in summary.env},
    }


def validate_bioimageio(path: str | Path, *, devices: Sequence[str] = ("cpu",)) -> dict[str, Any]:
    """Run bioimageio.core's model test on a package and return its summary as a dict.

    The test validates the description (format, files, checksums, test tensors against
    the axes) and runs the model: it must reproduce the test outputs and run at every
    tested tile size and batch size. No network use for packages written by
    :func:`export_bioimageio` (see the module docstring). The test seeds the global
    torch and numpy random generators (``manual_seed(0)``), as bioimageio.core does.

    Args:
        path: the package (``.zip``) or its ``rdf.yaml``/``bioimageio.yaml``.
        devices: torch devices to test on.

    Returns:
        ``{"status", "name", "format_version", "failed", "details", "env"}``; every detail
        has ``name``, ``status``, ``errors`` and ``warnings``.

    Raises:
        FileNotFoundError: no such package.
        BioimageioValidationError: the test failed; the message names the failing checks
            and their first errors, ``.summary`` holds the whole summary.
    """
    from bioimageio.core import test_model

    _pydantic_compat()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no bioimage.io package at {path}")
    summary = _summary_dict(test_model(path, devices=list(devices)))
    if summary["status"] != "passed":
        failed = [d for d in summary["details"] if d["status"] == "failed"]
        lines = [f"- {d['name']}: {'; '.join(d['errors'][:3]) or 'failed'}" for d in failed]
        raise BioimageioValidationError(
            f"bioimage.io model test of {path} did not pass (status {summary['status']!r}); "
            "failing checks:\n" + "\n".join(lines), summary)
    return summary
