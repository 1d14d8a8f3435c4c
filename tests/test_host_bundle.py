"""Host room with the shipped bundle; runs in the board environment too (numpy 1.x, no torch)."""

import json

import numpy as np
import pytest

from fluorofpga.host import (
    AcceleratorBusy,
    BoardNotFound,
    BundleError,
    load_bundle,
    process_tiled,
    run_hw_graph,
)
from fluorofpga.microscope import WidefieldMicroscope


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


def test_tiled_equals_untiled_on_shipped_accelerator(bundle):
    from fluorofpga.microscope import NoiseModel

    frame = next(WidefieldMicroscope(shape=(300, 261), seed=3).frames(1)).noisy
    q = bundle.tables(NoiseModel.from_camera(0.46, 100.0, 1.6)).encode(frame)
    with bundle.accelerator() as acc:
        tiled = process_tiled(q, acc.run, acc.tile_shape, bundle.halo)
        graph = acc.graph
    untiled = run_hw_graph(graph, q)
    assert np.array_equal(tiled, untiled)
    # with too small a halo the seams show: the halo really is the receptive field
    with bundle.accelerator() as acc:
        seams = process_tiled(q, acc.run, acc.tile_shape, bundle.halo - 1)
    assert not np.array_equal(seams, untiled)


def test_emulator_refuses_second_tile_while_busy(bundle):
    with bundle.accelerator() as acc:
        tile = np.zeros(acc.tile_shape, np.uint8)
        acc.submit(tile)
        with pytest.raises(AcceleratorBusy, match="wait"):
            acc.submit(tile)
        assert acc.wait().shape == acc.tile_shape


def test_board_backend_absent_is_clear(bundle):
    with pytest.raises(BoardNotFound, match="bitstream|pynq"):
        bundle.accelerator("pynq")
    with pytest.raises(ValueError, match="emulate"):
        bundle.accelerator("gpu")


def test_load_bundle_rejects_non_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "fluorofpga-bundle",
                                                        "version": 99}))
    with pytest.raises(BundleError, match="version"):
        load_bundle(tmp_path)
