"""Live SIM on the host: raw frames grouped into 3 angles × 3 phases, reconstructed on the CPU.

A SIM camera delivers raw frames one by one; a reconstruction needs 9 of them, in the
documented **angle-major** order (position ``p = 3 a + j`` is phase ``j`` of angle ``a``).
:class:`SimGrouper` turns a stream of raw frames into a stream of complete groups, and
never lets a broken group through:

- a raw source yields ``(index, frame)`` or ``(index, frame, position)``. ``index``
  counts raw frames from the start of the acquisition; ``position`` (``0..8`` or
  ``(angle, phase)``) is the frame's place in its group when the source knows it (a
  camera with a pattern generator tells it); without it the position is ``index % 9``
  (a file or camera that starts at angle 0, phase 0 and loses nothing before us);
- a group is complete when 9 frames with consecutive indices arrive at positions
  0, 1, ..., 8. Any other sequence (a frame lost inside a group, a position jump, an
  index going backwards, the stream ending mid-group) ends the group being built; its
  frames are **discarded and listed** in one :class:`GroupEvent` (``"incomplete"``: frames
  are missing; ``"out-of-order"``: frames arrived in the wrong order), until a frame at
  position 0 starts the next group. Nothing is reconstructed from a broken group.

The grouper is itself a source of ``(group, stack)`` pairs (``stack`` a ``(9, Y, X)``
raw array; ``group`` counts complete groups from 0), so a
:class:`~fluorofpga.host.stream.StreamPipeline` runs it like any camera: its queue and
drop policy then drop whole groups, never single raw frames.

:class:`SimReconstructor` is the ``process`` of that pipeline: the project's classical
generalised Wiener reconstruction (:func:`fluorofpga.microscope.wiener_sim`) **on the
CPU** (the ARM on the board; a SIM bundle for the accelerator does not exist yet) with
fixed parameters: loaded (``SimParameters``) or estimated once from the first complete
group, checked for drift with :func:`~fluorofpga.microscope.check_parameters` every
``check_every`` groups and replaced by the re-estimated ones when they drifted (each
check and each replacement is reported).

:class:`SimulatedSimCameraSource` is the simulated SIM camera (the forward model of
:mod:`fluorofpga.microscope.sim`): raw frames of one specimen, 9 per SIM image, with
their positions, paced at a set frame rate.
"""

from __future__ import annotations

import time
import warnings
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .sources import _Pacer

__all__ = [
    "SIM_ANGLES",
    "SIM_FRAMES",
    "SIM_PHASES",
    "GroupEvent",
    "GroupStack",
    "SimGrouper",
    "SimReconstructor",
    "SimulatedSimCameraSource",
]

SIM_ANGLES, SIM_PHASES = 3, 3
#: Raw frames per reconstruction (3 angles × 3 phases, angle-major).
SIM_FRAMES = SIM_ANGLES * SIM_PHASES
#: Events kept with their frame indices (later ones are counted only: memory stays flat).
MAX_EVENTS_KEPT = 1000
#: Reasons kept per event.
MAX_REASONS = 10
#: Distinct reconstruction notes (warning messages) kept.
MAX_NOTES_KEPT = 50


@dataclass(frozen=True)
class GroupEvent:
    """Raw frames discarded because they did not form a complete, ordered group.

    Attributes:
        kind: ``"incomplete"`` (frames of the group are missing: lost, or the stream
            ended mid-group) or ``"out-of-order"`` (frames arrived in the wrong order).
        indices: source indices of the discarded raw frames, in arrival order.
        reason: what was seen, for a person.
    """

    kind: str
    indices: tuple[int, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary."""
        return {"kind": self.kind, "indices": list(self.indices), "reason": self.reason}


class GroupStack(np.ndarray):
    """A ``(9, Y, X)`` raw group that knows where it came from.

    Attributes:
        group: its number among the complete groups (from 0).
        first_index: source index of its first raw frame.
    """

    group: int
    first_index: int


def _position(value: Any, index: int, phases: int = SIM_PHASES) -> int:
    """A frame's place in its group, ``0..3·phases-1``, from ``p``, ``(angle, phase)`` or
    None."""
    n = SIM_ANGLES * phases
    if value is None:
        return index % n
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"frame {index}: position {value!r} is neither 0..{n - 1} nor "
                             "(angle, phase)")  # fmt: skip
        angle, phase = (int(v) for v in value)
        if not (0 <= angle < SIM_ANGLES and 0 <= phase < phases):
            raise ValueError(f"frame {index}: (angle, phase) = {value!r} outside "
                             f"{SIM_ANGLES} angles × {phases} phases")  # fmt: skip
        return angle * phases + phase
    p = int(value)
    if p != value or not 0 <= p < n:
        raise ValueError(f"frame {index}: position {value!r} is not in 0..{n - 1}")
    return p


class SimGrouper:
    """Complete angle-major groups of 9 raw frames from a raw SIM frame stream.

    Iterating yields ``(group, stack)``: ``group`` counts complete groups from 0,
    ``stack`` is a new ``(9, Y, X)`` array of the raw frames in angle-major order (a
    :class:`GroupStack`: ``stack.first_index`` is the source index of its first frame). Broken
    groups are discarded and recorded as :class:`GroupEvent` (see the module docstring).

    Args:
        source: iterable of ``(index, frame)`` or ``(index, frame, position)``.
        max_frames: stop after this many raw frames (None: when the source ends).
        phases: phases per angle: 3 (9-frame groups, the classical reconstruction) or 1
            (3-frame groups, one frame per angle, for a learned 3-frame SIM bundle).

    Attributes:
        frames_in: raw frames read.
        groups: complete groups yielded.
        events: the first :data:`MAX_EVENTS_KEPT` events; ``event_counts`` counts all
            by kind, ``frames_discarded`` their frames.
        first_indices: source index of the first raw frame of every complete group
            (``first_indices[group]``; 8 bytes per group).
    """

    def __init__(self, source: Iterable[tuple[Any, ...]], max_frames: int | None = None,
                 phases: int = SIM_PHASES) -> None:
        if phases not in (1, SIM_PHASES):
            raise ValueError(f"phases per angle must be 1 or {SIM_PHASES}, got {phases!r}")
        self.phases = int(phases)
        self.group_size = SIM_ANGLES * self.phases
        if max_frames is not None and (int(max_frames) != max_frames or max_frames < 0):
            raise ValueError(f"max_frames must be a non-negative integer or None, "
                             f"got {max_frames!r}")  # fmt: skip
        self.source = source
        self.max_frames = max_frames
        self.frames_in = 0
        self.groups = 0
        self.events: list[GroupEvent] = []
        self.event_counts: Counter[str] = Counter()
        self.frames_discarded = 0
        self.first_indices = array("q")
        self._used = False

    def __len__(self) -> int:
        """Complete groups to expect when the source has a length and loses nothing."""
        n = len(self.source)  # type: ignore[arg-type]
        if self.max_frames is not None:
            n = min(n, self.max_frames)
        return n // self.group_size

    @property
    def incomplete(self) -> int:
        """Events of kind ``"incomplete"``."""
        return self.event_counts["incomplete"]

    @property
    def out_of_order(self) -> int:
        """Events of kind ``"out-of-order"``."""
        return self.event_counts["out-of-order"]

    def _record(self, kind: str, indices: list[int], reasons: list[str]) -> None:
        self.event_counts[kind] += 1
        self.frames_discarded += len(indices)
        if len(self.events) < MAX_EVENTS_KEPT:
            self.events.append(GroupEvent(kind, tuple(indices), "; ".join(reasons)))

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self._used:
            raise RuntimeError("a SimGrouper groups one stream; create a new one")
        self._used = True
        group: list[np.ndarray] = []  # frames of the group being built (positions 0..)
        group_indices: list[int] = []
        bad: list[int] = []  # frames of the broken group being recorded
        bad_kind: str | None = None
        reasons: list[str] = []
        last: int | None = None  # index of the last frame read

        def breaks(kind: str, why: str) -> None:
            nonlocal bad_kind, group, group_indices
            bad.extend(group_indices)
            group, group_indices = [], []
            if bad_kind != "out-of-order":
                bad_kind = kind
            if why not in reasons and len(reasons) < MAX_REASONS:
                reasons.append(why)

        def flush() -> None:
            nonlocal bad_kind
            if bad or reasons:  # a group lost whole has no frames, only a reason
                self._record(bad_kind or "incomplete", list(bad), reasons)
            bad.clear()
            reasons.clear()
            bad_kind = None

        iterator = iter(self.source)
        try:
            while self.max_frames is None or self.frames_in < self.max_frames:
                try:  # not one frame more than asked from the camera
                    item = next(iterator)
                except StopIteration:
                    break
                if len(item) == 3:
                    index, frame, position = item
                elif len(item) == 2:
                    (index, frame), position = item, None
                else:
                    raise ValueError(f"a SIM source yields (index, frame[, position]), "
                                     f"got {len(item)} values")  # fmt: skip
                index = int(index)
                self.frames_in += 1
                p = _position(position, index, self.phases)
                frame = np.asarray(frame)
                if last is not None and index <= last:
                    breaks("out-of-order", f"frame {index} arrived after frame {last}")
                    bad.append(index)
                    continue  # a frame from the past never starts or joins a group
                if last is not None and index > last + 1:
                    lost = (f"frame {last + 1}" if index == last + 2 else
                            f"frames {last + 1}-{index - 1}")
                    breaks("incomplete", f"{lost} missing")
                last = index
                if group and p == len(group):
                    group.append(frame)
                    group_indices.append(index)
                elif p == 0:
                    if group:
                        breaks("out-of-order", f"frame {index} at position 0 after position "
                                               f"{len(group) - 1}")
                    flush()
                    group, group_indices = [frame], [index]
                else:
                    if group:
                        breaks("out-of-order", f"frame {index} at position {p}, expected "
                                               f"{len(group)}")
                    elif not bad and not reasons:
                        reasons.append(f"group without its first frame(s): frame {index} "
                                       f"at position {p}")
                    bad.append(index)
                    bad_kind = bad_kind or "incomplete"
                if len(group) == self.group_size:
                    flush()
                    stack = np.stack(group).view(GroupStack)
                    stack.group, stack.first_index = self.groups, group_indices[0]
                    self.first_indices.append(group_indices[0])
                    group, group_indices = [], []
                    yield self.groups, stack
                    self.groups += 1
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        if group:
            breaks("incomplete", f"the stream ended after {len(group)} of {self.group_size} "
                                 "frames")
        flush()

    def summary(self) -> dict[str, Any]:
        """Counters and events as plain JSON."""
        return {
            "raw_frames_in": self.frames_in,
            "groups_complete": self.groups,
            "incomplete_groups": self.incomplete,
            "out_of_order_groups": self.out_of_order,
            "frames_discarded": self.frames_discarded,
            "events": [e.to_dict() for e in self.events],
            "events_listed": len(self.events),
        }


@dataclass
class DriftCheck:
    """One drift check of the fixed parameters against a group.

    Attributes:
        group: the group checked.
        ok: the parameters still fit.
        reasons: what drifted (empty when ``ok``), or the error of the check.
        replaced: the parameters were replaced by the ones re-estimated on this group.
        seconds: time of the check.
    """

    group: int
    ok: bool
    reasons: list[str]
    replaced: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary."""
        return asdict(self)


class SimReconstructor:
    """Classical Wiener SIM of one raw group, on the CPU, with fixed parameters.

    ``reconstructor(stack)`` takes a ``(9, Y, X)`` angle-major raw stack and returns the
    ``float32`` ``(2Y, 2X)`` image: exactly
    ``wiener_sim(stack, params, camera=camera, wiener_w=wiener_w, reorder=False, **optics)``
    (after ``pixel_maps.to_uniform`` per frame when a calibration is given).

    Args:
        na, wavelength_nm, pixel_size_nm: optics (camera pixel size in the sample plane).
        params: fixed ``SimParameters``; None estimates them from the first group.
        camera: ``SCMOSCamera`` converting ADU to photons (None: input units).
        pixel_maps: ``PixelMaps`` of a calibration, applied to every frame first.
        wiener_w: ``"auto"`` (the MMSE filter from each group's own noise and spectrum)
            or a Wiener parameter ``w > 0``, as ``wiener_sim``.
        hardware: a Wiener-SIM bundle's restorer
            (:class:`~fluorofpga.host.wienerrestore.WienerSimRestorer`): the
            reconstruction runs through its demodulation and accelerator instead of
            ``wiener_sim`` (same units; parameters estimated and checked as above, and
            checked against the bundle's design).
        check_every: check the parameters for drift every this many groups (group 0
            too when they were loaded); 0 never.
        follow_drift: replace drifted parameters by the re-estimated ones (else keep
            them and only report).

    Attributes:
        params: the parameters in use; ``estimate_s`` the time of the first estimation
            (None when loaded); ``checks`` the drift checks; ``notes`` reconstruction
            warnings (frame order not verifiable, weak pattern) with their counts;
            ``reconstructions``, ``reconstruct_ms`` (total).

    Raises (on a call):
        FrameOrderError: the frames do not carry the pattern of their positions (the
            positions the camera reported are wrong); never reconstructed silently.
    """

    def __init__(
        self, *, na: float, wavelength_nm: float, pixel_size_nm: float,
        params: Any = None, camera: Any = None, pixel_maps: Any = None,
        wiener_w: float | str = "auto", check_every: int = 10, follow_drift: bool = True,
        hardware: Any = None,
    ) -> None:
        from fluorofpga.microscope.sim_recon import check_wiener_w

        wiener_w = check_wiener_w(wiener_w)
        if int(check_every) != check_every or check_every < 0:
            raise ValueError(f"check_every must be an integer >= 0, got {check_every!r}")
        self.optics = {"na": float(na), "wavelength_nm": float(wavelength_nm),
                       "pixel_size_nm": float(pixel_size_nm)}  # fmt: skip
        self.params = params
        self.loaded = params is not None
        self.camera = camera
        self.pixel_maps = pixel_maps
        self.wiener_w = wiener_w
        self.check_every = int(check_every)
        self.follow_drift = follow_drift
        self.estimate_s: float | None = None
        self.checks: list[DriftCheck] = []
        self.notes: Counter[str] = Counter()
        self.reconstructions = 0
        self.reconstruct_ms = 0.0
        self.hardware = hardware
        self._groups_in = 0  # groups packed (a stream packs ahead of reconstructions)

    def _prepare(self, stack: np.ndarray) -> np.ndarray:
        stack = np.asarray(stack)
        if stack.ndim != 3 or stack.shape[0] != SIM_FRAMES:
            raise ValueError(f"a SIM group is ({SIM_FRAMES}, Y, X) raw frames, got "
                             f"{stack.shape}")  # fmt: skip
        if self.pixel_maps is not None:
            stack = np.stack([self.pixel_maps.to_uniform(f) for f in stack])
        return stack

    def _note(self, caught: list[warnings.WarningMessage]) -> None:
        from fluorofpga.microscope import FrameOrderWarning, WeakPatternWarning

        for w in caught:
            if issubclass(w.category, (FrameOrderWarning, WeakPatternWarning)):
                message = str(w.message)
                if message in self.notes or len(self.notes) < MAX_NOTES_KEPT:
                    self.notes[message] += 1
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def _check(self, stack: np.ndarray, group: int) -> None:
        from fluorofpga.microscope import check_parameters

        t0 = time.perf_counter()
        try:
            check = check_parameters(stack, self.params, camera=self.camera, **self.optics)
        except ValueError as e:  # no pattern found in this group: counted, not fatal
            self.checks.append(DriftCheck(group, False, [f"check failed: {e}"], False,
                                          time.perf_counter() - t0))  # fmt: skip
            return
        replaced = not check.ok and self.follow_drift
        if replaced:
            self.params = check.current
        self.checks.append(DriftCheck(group, bool(check.ok), list(check.reasons), replaced,
                                      time.perf_counter() - t0))  # fmt: skip

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        """Reconstruct one group; estimate or check the parameters when due.

        Raises:
            ValueError (``FrameOrderError``, no pattern found): named with the group.
        """
        work = self._pack(stack)
        if self.hardware is not None:
            work = self._accelerate(work)
        return self._unpack(work)

    def stages(self) -> list[tuple[str, Callable[[Any], Any]]]:
        """With ``hardware``: ``pack`` (parameters, demodulation) -> ``accelerate`` ->
        ``unpack``, for a stream to run on their own threads (as
        :meth:`~fluorofpga.host.FrameRestorer.stages`); on the CPU one ``process``."""
        if self.hardware is None:
            return [("process", self.__call__)]
        return [("pack", self._pack), ("accelerate", self._accelerate),
                ("unpack", self._unpack)]

    def _pack(self, stack: np.ndarray) -> dict[str, Any]:
        """Parameters estimated or checked when due, then the CPU reconstruction (no
        ``hardware``) or the hardware's pixel-in and demodulation."""
        from fluorofpga.microscope import FrameOrderWarning, WeakPatternWarning, wiener_sim

        first = getattr(stack, "first_index", None)  # a GroupStack from SimGrouper
        stack = self._prepare(stack)
        group = self._groups_in
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", FrameOrderWarning)
                warnings.simplefilter("always", WeakPatternWarning)
                self._parameters(stack, group)
                t0 = time.perf_counter()
                work: dict[str, Any] = (
                    {"image": wiener_sim(stack, self.params, camera=self.camera,
                                         wiener_w=self.wiener_w, reorder=False, **self.optics)}
                    if self.hardware is None else {"hw": self.hardware.pack(stack, self.params)})
                work["ms"] = (time.perf_counter() - t0) * 1e3
            self._note(caught)
        except ValueError as e:  # name the group: the stream stops on this error
            where = "SIM group" if first is None else (
                f"SIM group of raw frames {first}-{first + SIM_FRAMES - 1}")
            e.args = (f"{where}: {e}", *e.args[1:])
            raise
        self._groups_in += 1
        return work

    def _parameters(self, stack: np.ndarray, group: int) -> None:
        """Estimate the parameters on the first group, check them for drift when due."""
        from fluorofpga.microscope import estimate_parameters as estimate

        if self.params is None:
            t0 = time.perf_counter()
            self.params = estimate(stack, camera=self.camera, n_angles=SIM_ANGLES,
                                   n_phases=SIM_PHASES, reorder=False, **self.optics)
            self.estimate_s = time.perf_counter() - t0
        elif self.check_every and (group % self.check_every == 0) and (
                group > 0 or self.loaded):
            self._check(stack, group)

    def _accelerate(self, work: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        work["hw"] = self.hardware.accelerate(work["hw"])
        work["ms"] += (time.perf_counter() - t0) * 1e3
        return work

    def _unpack(self, work: dict[str, Any]) -> np.ndarray:
        t0 = time.perf_counter()
        if self.hardware is None:
            image = work["image"]
        else:  # ADU above the zero level -> the units wiener_sim gives
            image = self.hardware.unpack(work["hw"])
            image = (image * (self.camera.gain_e_per_adu / self.camera.qe)
                     if self.camera is not None else image + self.hardware.zero_adu)
        self.reconstruct_ms += work["ms"] + (time.perf_counter() - t0) * 1e3
        self.reconstructions += 1
        return image.astype(np.float32)

    @property
    def drift_events(self) -> list[DriftCheck]:
        """Checks that found drift (or failed)."""
        return [c for c in self.checks if not c.ok]

    def summary(self) -> dict[str, Any]:
        """What was reconstructed with which parameters, as plain JSON."""
        from fluorofpga.microscope.sim_recon import wiener_label

        return {
            "reconstructions": self.reconstructions,
            "reconstruct_ms_mean": (self.reconstruct_ms / self.reconstructions
                                    if self.reconstructions else 0.0),  # fmt: skip
            "parameters_from": "loaded" if self.loaded else "estimated from group 0",
            "estimate_s": self.estimate_s,
            "drift_checks": len(self.checks),
            "drift_events": [c.to_dict() for c in self.drift_events],
            "notes": dict(self.notes),
            "wiener_w": wiener_label(self.wiener_w),
            "computed_on": "cpu" if self.hardware is None else "accelerator",
            **({} if self.hardware is None else {
                "counts": dict(self.hardware.counts),
                "input_step_adu": self.hardware.step,
                "zero_level_adu": self.hardware.zero_adu}),
        }

    def close(self) -> None:
        """Release the accelerator of a hardware reconstruction."""
        if self.hardware is not None:
            self.hardware.close()


class SimulatedSimCameraSource:
    """A simulated SIM camera: raw uint16 frames with their angle/phase positions.

    One specimen (filaments and puncta on the 2× grid) is imaged through a fixed 3 × 3
    pattern (:func:`fluorofpga.microscope.simulate_sim`) with new camera noise for every
    group; frames are yielded one by one as ``(index, frame, position)``, angle-major,
    optionally paced at ``fps`` raw frames per second.

    Args:
        n_frames: raw frames per iteration (9 per SIM image).
        shape: ``(Y, X)`` camera frame size (even sides, >= 16).
        na, wavelength_nm, pixel_size_nm: optics of the simulation.
        peak_photons: brightest widefield pixel, photons above background.
        k_fraction, modulation: pattern frequency (of the cut-off) and depth.
        seed: specimen and noise seed (each iteration restarts from it).
        fps: raw frame rate (None: as fast as simulated).
        phases: phases per angle: 3 (the classical 9-frame acquisition) or 1 (3 frames,
            one per angle at phases 0, 2π/3, 4π/3: the acquisition of a 3-frame bundle).

    Attributes:
        specimen_2x, pattern, camera: the scene, the illumination and the camera.
    """

    def __init__(
        self, n_frames: int, shape: Sequence[int] = (128, 128), *, na: float = 1.2,
        wavelength_nm: float = 520.0, pixel_size_nm: float = 65.0,
        peak_photons: float = 500.0, k_fraction: float = 0.85, modulation: float = 0.9,
        seed: int = 0, fps: float | None = None, phases: int = SIM_PHASES,
    ) -> None:
        from fluorofpga.microscope import SCMOSCamera, make_pattern
        from fluorofpga.microscope.specimen import render_specimen

        if int(n_frames) != n_frames or n_frames < 0:
            raise ValueError(f"n_frames must be a non-negative integer, got {n_frames!r}")
        self.shape = (int(shape[0]), int(shape[1]))
        if min(self.shape) < 16 or any(n % 2 for n in self.shape):
            raise ValueError(f"a simulated SIM frame needs even sides >= 16, got {self.shape}")
        _Pacer(fps)
        self.n_frames = int(n_frames)
        self.fps = fps
        self.seed = seed
        self.na, self.wavelength_nm, self.pixel_size_nm = (
            float(na), float(wavelength_nm), float(pixel_size_nm))
        self.peak_photons = float(peak_photons)
        rng = np.random.default_rng(seed)
        n = min(self.shape)
        self.specimen_2x = render_specimen((2 * self.shape[0], 2 * self.shape[1]), rng,
                                           filaments=max(n // 6, 1), puncta=n, nuclei=0)
        if phases not in (1, SIM_PHASES):
            raise ValueError(f"phases per angle must be 1 or {SIM_PHASES}, got {phases!r}")
        self.group_size = SIM_ANGLES * int(phases)
        self.pattern = make_pattern(
            n_phases=int(phases), k_fraction=k_fraction, modulation=modulation,
            phase_offsets_rad=0.0 if phases > 1 else tuple(2 * np.pi * np.arange(3) / 3))
        self.camera = SCMOSCamera()

    def __len__(self) -> int:
        return self.n_frames

    @property
    def optics(self) -> dict[str, float]:
        """``na``, ``wavelength_nm``, ``pixel_size_nm`` of the simulation."""
        return {"na": self.na, "wavelength_nm": self.wavelength_nm,
                "pixel_size_nm": self.pixel_size_nm}  # fmt: skip

    def raw_group(self, rng: np.random.Generator) -> np.ndarray:
        """One ``(group_size, Y, X)`` uint16 raw stack with new noise from ``rng``."""
        from fluorofpga.microscope import simulate_sim

        return simulate_sim(self.specimen_2x, self.pattern, peak_photons=self.peak_photons,
                            rng=rng, **self.optics).raw

    def ground_truth(self) -> np.ndarray:
        """The specimen through the ideal extended SIM OTF, ``(2Y, 2X)``, maximum 1."""
        from fluorofpga.microscope import sim_ground_truth

        return sim_ground_truth(self.specimen_2x, k_fraction=self.pattern.k_fraction,
                                **self.optics)  # fmt: skip

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, int]]:
        pacer = _Pacer(self.fps)
        rng = np.random.default_rng((self.seed, 1))
        stack: np.ndarray | None = None
        for k in range(self.n_frames):
            position = k % self.group_size
            if position == 0 or stack is None:
                stack = self.raw_group(rng)
            pacer.tick()
            yield k, stack[position], position
