"""Datasets for training and evaluation: simulated pairs and user TIFF stacks (no torch).

Nothing is downloaded: simulated data come from :mod:`.simulate`, user data from local
folders. ``models/`` wraps these in torch datasets.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import ImageFormatError, read_tiff, tiff_shape
from .simulate import simulate_pairs

PathLike = str | os.PathLike[str]


def simulated_pairs_at(
    photon_levels: Sequence[float],
    n_per_level: int,
    shape: tuple[int, int],
    seed: int,
    **simulate_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulated (noisy, clean) pairs at chosen peak photon levels.

    Level ``i`` draws its specimens and noise from ``SeedSequence([seed, i])``, so adding
    a level leaves the pairs of the others unchanged.

    Args:
        photon_levels: peak photons per pixel of each level (> 0).
        n_per_level: pairs per level (≥ 1).
        shape: image shape ``(Y, X)``.
        seed: non-negative integer.
        **simulate_kwargs: passed to ``simulate_pairs`` (``camera``, ``na``, ``puncta``,
            ...); ``peak_photons`` is set here.

    Returns:
        ``(noisy, clean, levels)``: uint16 ``(L·n, Y, X)`` ADU, float32 ``(L·n, Y, X)``
        expected ADU, float64 ``(L·n,)`` peak photon level of every pair (level-major).
    """
    levels = [float(level) for level in photon_levels]
    if not levels or not all(np.isfinite(level) and level > 0 for level in levels):
        raise ValueError(f"photon_levels must be non-empty and > 0, got {photon_levels!r}")
    if int(n_per_level) != n_per_level or n_per_level < 1:
        raise ValueError(f"n_per_level must be a positive integer, got {n_per_level!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if "peak_photons" in simulate_kwargs:
        raise ValueError("peak_photons is set by simulated_pairs_at from photon_levels")
    noisy, clean = [], []
    for index, level in enumerate(levels):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), index]))
        n, c = simulate_pairs(
            int(n_per_level), tuple(shape), rng, peak_photons=(level, level), **simulate_kwargs
        )
        noisy.append(n)
        clean.append(c)
    labels = np.repeat(np.array(levels), int(n_per_level))
    return np.concatenate(noisy), np.concatenate(clean), labels


class TiffFolderDataset:
    """YX frames from a folder of TIFF stacks, noisy-only or paired with clean images.

    Every ``YX`` or ``TYX`` file matching ``pattern`` contributes its frames (a ``TYX``
    file of T frames gives T items). With ``clean_folder``, each noisy file is paired
    with the file of the same name there, which must have the same shape. Only file
    headers are read at construction; pixels are read on access (the most recently
    used file is kept in memory, so sequential access reads each file once).

    Items are float32 ``(Y, X)`` arrays (noisy-only) or ``(noisy, clean)`` tuples.

    Raises:
        ImageFormatError: missing folder, no matching files, a file that is not YX/TYX,
            unpaired names, pairs of different shape, and (on access) NaN/inf or negative
            pixels.
    """

    def __init__(
        self,
        folder: PathLike,
        pattern: str = "*.tif",
        clean_folder: PathLike | None = None,
    ) -> None:
        """Index the frames of ``folder`` (and ``clean_folder``) without reading pixels."""
        self.folder = Path(folder)
        self.clean_folder = None if clean_folder is None else Path(clean_folder)
        for where in (self.folder, self.clean_folder):
            if where is not None and not where.is_dir():
                raise ImageFormatError(f"{os.fspath(where)}: no such folder")
        self.files = sorted(p for p in self.folder.glob(pattern) if p.is_file())
        if not self.files:
            raise ImageFormatError(f"{os.fspath(self.folder)}: no files match {pattern!r}")
        self.clean_files: list[Path] | None = None
        if self.clean_folder is not None:
            clean_names = {p.name for p in self.clean_folder.glob(pattern) if p.is_file()}
            noisy_names = {p.name for p in self.files}
            missing, extra = sorted(noisy_names - clean_names), sorted(clean_names - noisy_names)
            if missing or extra:
                raise ImageFormatError(
                    f"unpaired files: {missing} have no clean twin in "
                    f"{os.fspath(self.clean_folder)}, {extra} have no noisy twin in "
                    f"{os.fspath(self.folder)} (pairs are matched by identical names)"
                )
            self.clean_files = [self.clean_folder / p.name for p in self.files]
        self._index: list[tuple[int, int | None]] = []
        for number, path in enumerate(self.files):
            shape = self._frame_shape(path)
            if self.clean_files is not None:
                clean_shape = self._frame_shape(self.clean_files[number])
                if clean_shape != shape:
                    raise ImageFormatError(
                        f"{path.name}: noisy shape {shape} differs from clean shape {clean_shape}"
                    )
            if len(shape) == 2:
                self._index.append((number, None))
            else:
                self._index.extend((number, t) for t in range(shape[0]))
        self._cache: dict[Path, np.ndarray] = {}

    @staticmethod
    def _frame_shape(path: Path) -> tuple[int, ...]:
        shape = tiff_shape(path)
        if len(shape) not in (2, 3):
            raise ImageFormatError(
                f"{os.fspath(path)}: expected a YX image or TYX stack, found shape {shape}"
            )
        return shape

    @property
    def paired(self) -> bool:
        """True when every noisy frame has a clean twin."""
        return self.clean_files is not None

    def __len__(self) -> int:
        """Number of YX frames over all files."""
        return len(self._index)

    def _read(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            array = read_tiff(path, dtype=None, ndim=(2, 3))
            if array.dtype.kind not in "uif":
                raise ImageFormatError(f"{os.fspath(path)}: dtype {array.dtype} is not numeric")
            values = array.astype(np.float32)
            if not np.all(np.isfinite(values)):
                raise ImageFormatError(f"{os.fspath(path)}: holds NaN or inf pixels")
            if values.min() < 0:
                raise ImageFormatError(
                    f"{os.fspath(path)}: holds negative pixels (minimum {values.min():g}); "
                    "expected camera ADU or photons"
                )
            keep = 2 if self.paired else 1  # the current noisy (and clean) file
            while len(self._cache) >= keep:
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = values
        return self._cache[path]

    def _frame(self, path: Path, t: int | None) -> np.ndarray:
        array = self._read(path)
        return array if t is None else array[t]

    def __getitem__(self, index: int) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Frame ``index`` (float32 YX), or ``(noisy, clean)`` when paired."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        number, t = self._index[index]
        noisy = self._frame(self.files[number], t)
        if self.clean_files is None:
            return noisy
        return noisy, self._frame(self.clean_files[number], t)

    def __iter__(self) -> Iterator[np.ndarray | tuple[np.ndarray, np.ndarray]]:
        """Frames in order (file name, then frame)."""
        for index in range(len(self)):
            yield self[index]
