"""Tiling with halo is bit-identical to an untiled run of a real conv stack."""

import numpy as np
import pytest

from fluorofpga.host.tiling import Tile, plan_tiles, process_tiled, stitch, tile


def conv3x3_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Zero-padded 3x3 convolution, CYX int64 in, (Cout)YX int64 out."""
    cin, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((w.shape[0], h, wd), dtype=np.int64)
    for dy in range(3):
        for dx in range(3):
            patch = xp[:, dy : dy + h, dx : dx + wd]
            out += np.einsum("oc,cyx->oyx", w[:, :, dy, dx], patch)
    return out + b[:, None, None]


class IntConvNet:
    """L zero-padded 3x3 integer convs with ReLU between them: receptive radius L."""

    def __init__(self, layers: int, channels: int = 3, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        chans = [1] + [channels] * (layers - 1) + [1]
        self.params = [
            (
                rng.integers(-3, 4, size=(co, ci, 3, 3)).astype(np.int64),
                rng.integers(-20, 21, size=co).astype(np.int64),
            )
            for ci, co in zip(chans[:-1], chans[1:], strict=True)
        ]
        self.radius = layers

    def __call__(self, img: np.ndarray) -> np.ndarray:
        x = img.astype(np.int64)[None]
        for k, (w, b) in enumerate(self.params):
            x = conv3x3_same(x, w, b)
            if k < len(self.params) - 1:
                x = np.maximum(x, 0)
        return x[0]


def coverage(plan: list[Tile], shape: tuple[int, int]) -> np.ndarray:
    count = np.zeros(shape, dtype=int)
    for t in plan:
        count[t.frame_slice] += 1
    return count


CASES = [
    # frame, tile
    ((64, 64), (64, 64)),  # frame == tile
    ((61, 83), (24, 32)),  # not a multiple of the tile
    ((48, 96), (16, 16)),  # exact multiples
    ((40, 33), (40, 17)),  # one axis == tile, other not
    ((100, 37), (23, 19)),
]


@pytest.mark.parametrize(("frame_shape", "tile_shape"), CASES)
def test_tiled_equals_untiled_with_full_halo(frame_shape, tile_shape):
    net = IntConvNet(layers=3)
    frame = np.random.default_rng(1).integers(0, 256, size=frame_shape, dtype=np.uint8)
    whole = net(frame)
    tiled = process_tiled(frame, net, tile_shape, halo=net.radius)
    assert tiled.shape == frame_shape
    assert np.array_equal(tiled, whole)


@pytest.mark.parametrize(("frame_shape", "tile_shape"), CASES[1:])
def test_too_small_halo_differs(frame_shape, tile_shape):
    net = IntConvNet(layers=3)
    frame = np.random.default_rng(1).integers(0, 256, size=frame_shape, dtype=np.uint8)
    tiled = process_tiled(frame, net, tile_shape, halo=net.radius - 1)
    assert not np.array_equal(tiled, net(frame))


@pytest.mark.parametrize("halo", [0, 1, 3, 7])
@pytest.mark.parametrize(
    ("frame_shape", "tile_shape"),
    CASES + [((17, 200), (16, 16)), ((5, 7), (16, 16)), ((129, 1000), (128, 128))],
)
def test_plan_partitions_frame(frame_shape, tile_shape, halo):
    plan = plan_tiles(frame_shape, tile_shape, halo)
    assert np.all(coverage(plan, frame_shape) == 1)
    fh, fw = frame_shape
    for t in plan:
        assert (t.height, t.width) == tile_shape
        # window inside the frame unless the frame is smaller than the tile
        assert t.y0 >= 0 and t.x0 >= 0
        assert t.y0 + t.height <= max(fh, t.height) and t.x0 + t.width <= max(fw, t.width)
        # valid region keeps `halo` from every window edge that is not a frame edge
        if t.y0 > 0:
            assert t.out_y0 - t.y0 >= halo
        if t.y0 + t.height < fh:
            assert t.y0 + t.height - t.out_y1 >= halo
        if t.x0 > 0:
            assert t.out_x0 - t.x0 >= halo
        if t.x0 + t.width < fw:
            assert t.x0 + t.width - t.out_x1 >= halo


def test_tile_and_stitch_round_trip_with_leading_axes():
    frame = np.random.default_rng(2).integers(0, 1000, size=(3, 50, 70)).astype(np.uint16)
    plan = plan_tiles(frame.shape[-2:], (20, 24), 4)
    tiles = tile(frame, plan)
    assert all(t.shape == (3, 20, 24) for t in tiles)
    assert np.array_equal(stitch(tiles, plan, frame.shape[-2:]), frame)


def test_frame_smaller_than_tile_is_reflect_padded_and_cropped():
    frame = np.arange(5 * 9, dtype=np.uint8).reshape(5, 9)
    seen = []

    def fn(t: np.ndarray) -> np.ndarray:
        seen.append(t.shape)
        return t

    out = process_tiled(frame, fn, (16, 16), halo=2)
    assert seen == [(16, 16)]
    assert np.array_equal(out, frame)
    # one axis smaller, the other larger
    frame = np.random.default_rng(3).integers(0, 256, size=(6, 40), dtype=np.uint8)
    seen.clear()
    assert np.array_equal(process_tiled(frame, fn, (16, 16), halo=2), frame)
    assert set(seen) == {(16, 16)} and len(seen) > 1


@pytest.mark.parametrize(("tile_shape", "halo"), [((10, 10), 5), ((32, 10), 5), ((8, 8), -1)])
def test_bad_halo_raises(tile_shape, halo):
    with pytest.raises(ValueError, match="halo"):
        plan_tiles((64, 64), tile_shape, halo)


def test_tile_fn_changing_size_raises():
    frame = np.zeros((40, 40), dtype=np.uint8)
    with pytest.raises(ValueError, match="keep the tile"):
        process_tiled(frame, lambda t: t[:-1], (16, 16), halo=1)
