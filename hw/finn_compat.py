"""The one place where fluorofpga works around finn-plus running without Vivado.

finn-plus 1.6.1 assumes a Vivado installation even for steps that never call it:

1. ``finn.util.settings.get_settings()`` raises unless FINN was booted by its CLI
   (``run_finn.py``). We boot settings from ``FINN_BUILD_DIR`` (which finn-plus itself
   supports for worker processes), defaulting to a per-user temp directory.
2. ``finn.builder.build_dataflow_steps`` does ``from finn.xsi import SimEngine`` at import
   time, only for a type annotation; ``finn.xsi.__getattr__`` then requires
   ``XILINX_VIVADO`` and raises ``OSError``. Without Vivado we bind ``finn.xsi.SimEngine``
   to :class:`NoVivadoSimEngine`, a class that raises :class:`VivadoMissing` if anything
   tries to *use* RTL simulation.
3. ``build_dataflow_cfg`` ends with ``exit_buildflow``, which calls ``get_vivado_root()``
   after all reports are written, only to record the tool version, and raises without
   Vivado. Without Vivado we rebind that name in ``finn.builder.build_dataflow`` to a
   function returning :data:`NO_VIVADO`, so ``report/metadata_builder.json`` says
   ``"tool_version": "none (Vivado not installed)"`` and ``time_per_step.json`` is written.

Everything else is real finn-plus code, unmodified.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any


class VivadoMissing(RuntimeError):
    """A step needs Vivado / Vitis HLS, which is not installed here."""


def vivado_available() -> bool:
    """True if a Vivado installation is configured (``XILINX_VIVADO`` and ``vivado`` on PATH)."""
    return bool(os.environ.get("XILINX_VIVADO")) and shutil.which("vivado") is not None


def require_vivado(what: str) -> None:
    """Raise :class:`VivadoMissing` naming ``what`` needs it, unless Vivado is available."""
    if not vivado_available():
        raise VivadoMissing(
            f"{what} needs AMD Vivado (and Vitis HLS for HLS layers), which is not installed "
            "here: XILINX_VIVADO is unset or `vivado` is not on PATH. Source Vivado's "
            "settings64.sh (2024.2 or newer) and re-run. Everything up to RTL generation "
            "(streamlining, hardware layers, folding, estimates, emulation) works without it."
        )


class NoVivadoSimEngine:
    """Stand-in for ``finn.xsi.SimEngine`` when Vivado is absent: refuses to be used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        require_vivado("RTL simulation through finn_xsi")


def default_build_dir() -> Path:
    """Directory for FINN's generated code: ``$FINN_BUILD_DIR`` or a temp folder."""
    return Path(os.environ.get("FINN_BUILD_DIR", Path(tempfile.gettempdir()) / "fluorofpga_finn"))


#: tool version recorded in FINN's build metadata when Vivado is absent
NO_VIVADO = "none (Vivado not installed)"

_BOOTED = False


def boot_finn() -> None:
    """Initialise finn-plus settings and make its builder importable without Vivado.

    Idempotent; call before importing ``finn.builder`` or FINN transformations.
    """
    global _BOOTED
    if _BOOTED:
        return
    build_dir = default_build_dir().absolute()
    build_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FINN_BUILD_DIR", str(build_dir))
    import finn.util.settings as finn_settings

    if finn_settings._SETTINGS is None:
        finn_settings.get_settings()  # built from FINN_BUILD_DIR by finn-plus itself
    if not vivado_available():
        import finn.xsi

        finn.xsi.SimEngine = NoVivadoSimEngine
        from finn.builder import build_dataflow

        build_dataflow.get_vivado_root = lambda: NO_VIVADO
    _BOOTED = True


def run_builder(model_path: str | Path, cfg: Any) -> int:
    """Run finn-plus' ``build_dataflow_cfg`` on ``model_path``; returns its exit code.

    The builder redirects ``sys.stdout``/``sys.stderr`` into its log (and echoes each
    step); the console stays quiet during the build and is restored afterwards.
    """
    boot_finn()
    from finn.builder import build_dataflow

    stdout, stderr = sys.stdout, sys.stderr
    try:
        # the builder echoes every step to the console; its log file keeps all of it
        with contextlib.redirect_stdout(io.StringIO()):
            return build_dataflow.build_dataflow_cfg(str(model_path), cfg)
    finally:
        sys.stdout, sys.stderr = stdout, stderr
