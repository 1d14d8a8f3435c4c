"""The board notebooks, executed with nbclient against the stand-in PYNQ device.

Each notebook of ``host/notebooks`` runs in a fresh kernel inside a ``fluorofpga deploy``
folder (bundle with a stand-in bitstream, the deployed package, the notebooks), so the
notebooks, ``deploy`` and the ``pynq`` backend are tested together. One cell is injected
before the notebook's own (the only difference from a board): it loads
``tests/pynq_standin.py``, whose ``pynq.Device`` subclass PYNQ's own discovery then
finds as the active device. Needs the board environment (pynq 4.0, numpy < 2) and
nbclient + ipykernel (``make test`` installs them in .venv-board).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

nbclient = pytest.importorskip(
    "nbclient", reason="nbclient is not importable: the notebooks run in the board environment "
    "(`make test` installs nbclient and ipykernel in .venv-board)")
nbformat = pytest.importorskip("nbformat", reason="nbformat (with nbclient) is not importable")
if importlib.util.find_spec("pynq") is None:
    pytest.skip("pynq is not importable (it pins numpy<2): the notebooks run against the "
                "stand-in device in .venv-board", allow_module_level=True)

from fluorofpga import app  # noqa: E402
from fluorofpga.host import load_bundle  # noqa: E402
from fluorofpga.host.bundle import MANIFEST  # noqa: E402

STANDIN = Path(__file__).with_name("pynq_standin.py")
NOTEBOOKS = Path(app.__file__).parent / "host" / "notebooks"


def _standin():
    name = "fluorofpga_tests_pynq_standin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, STANDIN)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _with_standin_bitstream(source: Path, bundle_dir: Path) -> Path:
    """A copy of the bundle at ``source`` with a stand-in bitstream of its own graph."""
    shutil.copytree(source, bundle_dir)
    bundle = load_bundle(bundle_dir)
    _standin().write_design(bundle_dir / "bitstream", bundle.file("hw_layers"),
                            bundle.tile_shape, bundle.in_bits, bundle.out_bits)
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["files"]["bitstream"] = "bitstream/fluorofpga.bit"
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))
    return bundle_dir


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Path:
    """``fluorofpga deploy`` of the shipped bundle with a stand-in bitstream added (and
    the shipped learned SIM bundle, which has no bitstream)."""
    root = tmp_path_factory.mktemp("board")
    bundle_dir = _with_standin_bitstream(load_bundle().path, root / "bundle")
    out = root / "deploy"
    record = app.deploy("kv260", out, bundle_dir)
    assert record["bitstream"] and record["note"] is None
    return out


INJECTED = '''# injected by tests/test_host_notebooks.py: the stand-in PYNQ device (not on a board)
import importlib.util, os, sys
sys.path.insert(0, os.path.abspath(".."))  # the deployed package, as the notebook does
spec = importlib.util.spec_from_file_location("fluorofpga_tests_pynq_standin", {standin!r})
standin = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = standin
spec.loader.exec_module(standin)
standin.standin_device()
'''


def _execute(path: Path) -> tuple[object, str]:
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(INJECTED.format(standin=str(STANDIN))))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []) if out.get("output_type") == "stream")
    return nb, text


def test_every_board_notebook_is_deployed_and_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(app.BOARD_NOTEBOOKS)


def test_notebook_1_check_board(deployed):
    nb, text = _execute(deployed / "notebooks" / "1_check_board.ipynb")
    assert f"from {deployed / 'fluorofpga'}" in text  # the deployed package ran
    assert "kernel ID 0x464c4631" in text and "tables loaded: True True" in text
    assert "bit-exact: True (6/6 tiles)" in text
    assert "tile round trip: p50" in text and "p99" in text
    assert "accelerator closed: True - board OK" in text
    assert "clean-up" in nb.cells[-1].source  # it ends by releasing the board


def test_notebook_2_denoise_live(deployed):
    import tifffile

    nb, text = _execute(deployed / "notebooks" / "2_denoise_live.ipynb")
    widgets = [out for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", [])
               if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]
    assert widgets  # the live progress widget (ipywidgets, as on a PYNQ image) was shown
    found = re.search(r"(\d+)/20 frames, dropped (\d+) \[([\d, ]*)\]", text)
    assert found, text
    out, dropped = int(found[1]), int(found[2])
    listed = [int(k) for k in found[3].split(",") if k.strip()]
    assert out + dropped == 20 and len(listed) == dropped  # every frame accounted for
    assert " fps = " in text and "Mpixel/s" in text and "latency p50" in text
    assert "per frame: read" in text and "accelerator closed: True" in text
    restored = tifffile.imread(deployed / "notebooks" / "restored.tif")
    assert restored.shape == (out, 256, 256)


def test_notebook_3_sim_live(deployed):
    import tifffile

    nb, text = _execute(deployed / "notebooks" / "3_sim_live.ipynb")
    assert "learned 3-frame" in nb.cells[1].source and "CPU" in nb.cells[1].source
    assert "computed on the CPU" in text
    found = re.search(r"(\d+)/(\d+) groups reconstructed from 54 raw frames; groups dropped "
                      r"(\d+)", text)
    assert found, text
    out, complete, dropped = (int(g) for g in found.groups())
    assert out >= 1 and out + dropped == complete
    assert "reconstructions/s" in text and "latency p50" in text and "p99" in text
    assert "widefield (128, 128) -> SIM (128, 128)" in text
    assert "clean-up done" in text and "clean-up" in nb.cells[-1].source
    images = tifffile.imread(deployed / "notebooks" / "sim_live.tif")
    assert images.shape == (out, 128, 128)
    # the deployed learned 3-frame bundle has no bitstream: said, then its emulation on
    # the (stand-in) board's ARM
    assert "not on the board:" in text and "has no bitstream" in text
    assert "computed on the emulate accelerator: learned 3-frame" in text
    _bundle_groups_written(text, 3, deployed / "notebooks" / "sim3_live.tif")


def _bundle_groups_written(text: str, per: int, tif: Path) -> None:
    """Notebook 3's SIM-bundle stream: every complete group of ``per`` raw frames written
    or dropped, and the written ones in ``tif`` (finite 128² images)."""
    import tifffile

    found = re.search(rf"(\d+)/(\d+) groups of {per} raw frames; dropped (\d+)", text)
    assert found, text
    done, complete, dropped = (int(g) for g in found.groups())
    assert done >= 1 and done + dropped == complete
    images = tifffile.imread(tif)
    assert images.shape == (done, 128, 128) and np.isfinite(images).all()


@pytest.mark.parametrize(("name", "computed_on", "per"), [
    ("sim3", "learned 3-frame reconstructor sim3", 3),
    ("wiener9", "classical Wiener bundle wiener9-k9", 9)])
def test_notebook_3_with_a_sim_bundle_on_the_board(deployed, tmp_path, name, computed_on,
                                                   per):
    """`deploy --sim-model` with a SIM bundle that has its bitstream (a stand-in one): the
    learned 3-frame bundle, or the classical Wiener bundle (its demodulation on the ARM),
    streams through the ``pynq`` backend - channels-last tiles through the DMA."""

    from fluorofpga.host import default_bundle_path

    sim_dir = _with_standin_bitstream(default_bundle_path().parent / name, tmp_path / name)
    out = tmp_path / "deploy"
    record = app.deploy("kv260", out, deployed / "bundle", sim_bundle_path=sim_dir)
    assert record["sim_bundle"] == load_bundle(sim_dir).name
    nb, text = _execute(out / "notebooks" / "3_sim_live.ipynb")
    assert "not on the board" not in text
    assert f"computed on the pynq accelerator: {computed_on}" in text
    _bundle_groups_written(text, per, out / "notebooks" / "sim3_live.tif")
    assert "clean-up done" in text and "clean-up" in nb.cells[-1].source


def test_notebook_4_benchmark_dma(deployed):
    _, text = _execute(deployed / "notebooks" / "4_benchmark_dma.ipynb")
    assert "64 tiles in" in text and "MB/s through the DMA" in text and "Mpixel/s" in text
    assert "single-tile latency: p50" in text and "accelerator closed: True" in text
