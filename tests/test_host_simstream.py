"""SIM mode of the stream: grouping raw frames by 9, events, CPU Wiener, CLI end to end.

Host tests: they run in .venv and in the board environment (.venv-board, numpy 1.x).
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

import fluorofpga.app as facade
from fluorofpga.cli import app as cli
from fluorofpga.host import MemorySink, StreamPipeline
from fluorofpga.host.simstream import (
    SIM_FRAMES,
    SimGrouper,
    SimReconstructor,
    SimulatedSimCameraSource,
)
from fluorofpga.host.sinks import partial_path
from fluorofpga.microscope import (
    FrameOrderError,
    ImageMeta,
    SimParametersMismatch,
    estimate_parameters,
    read_image_meta,
    wiener_sim,
    write_tiff,
)

SIZE = 64  # camera frame side: small, so a group reconstructs in tens of ms
OPTICS = {"na": 1.2, "wavelength_nm": 520.0, "pixel_size_nm": 65.0}
OPTICS_CLI = ("--na", 1.2, "--wavelength", 520, "--pixel-size", 0.065)
runner = CliRunner()


def run(*args):
    result = runner.invoke(cli, [str(a) for a in args], env={"COLUMNS": "1000"})
    assert "Traceback" not in result.output, result.output
    return result


def numbered(indices, positions=None, shape=(2, 2)):
    """Frames whose pixels hold their own index (to see which frames a group holds)."""
    return [(i, np.full(shape, i, np.uint16), *(() if positions is None else (positions[k],)))
            for k, i in enumerate(indices)]  # fmt: skip


def grouped(items, **kwargs):
    grouper = SimGrouper(items, **kwargs)
    groups = [(g, stack[:, 0, 0].tolist()) for g, stack in grouper]
    return grouper, groups


# ------------------------------------------------------------------------------ grouping


def test_complete_groups_in_angle_major_order():
    grouper, groups = grouped(numbered(range(27)))
    assert groups == [(0, list(range(9))), (1, list(range(9, 18))), (2, list(range(18, 27)))]
    assert grouper.summary()["events"] == [] and grouper.frames_in == 27
    assert list(grouper.first_indices) == [0, 9, 18]


def test_a_frame_lost_inside_a_group_discards_the_group_as_one_event():
    grouper, groups = grouped(numbered([i for i in range(27) if i != 12]))
    assert [g for g, _ in groups] == [0, 1] and groups[1][1] == list(range(18, 27))
    assert grouper.incomplete == 1 and grouper.out_of_order == 0
    (event,) = grouper.events
    assert event.kind == "incomplete" and event.indices == (9, 10, 11, 13, 14, 15, 16, 17)
    assert "frame 12 missing" in event.reason and grouper.frames_discarded == 8


def test_frames_out_of_order_are_an_event_and_never_reconstructed():
    # index order 11 <-> 12 swapped (positions from the index)
    order = [*range(11), 12, 11, *range(13, 27)]
    grouper, groups = grouped(numbered(order))
    assert [stack for _, stack in groups] == [list(range(9)), list(range(18, 27))]
    assert grouper.out_of_order == 1 and grouper.incomplete == 0
    assert sorted(grouper.events[0].indices) == list(range(9, 18))
    # the camera reports positions, two phases swapped with consecutive indices
    positions = [*range(9), 0, 1, 2, 4, 3, 5, 6, 7, 8]
    grouper, groups = grouped(numbered(range(18), positions))
    assert [stack for _, stack in groups] == [list(range(9))]
    (event,) = grouper.events
    assert event.kind == "out-of-order" and event.indices == tuple(range(9, 18))
    assert "position 4, expected 3" in event.reason


def test_stream_ending_mid_group_and_groups_lost_whole_or_headless():
    grouper, groups = grouped(numbered(range(22)))
    assert len(groups) == 2 and grouper.incomplete == 1
    assert grouper.events[0].indices == (18, 19, 20, 21)
    assert "ended after 4 of 9" in grouper.events[0].reason
    # a whole group lost before it reached us: an event without frames, the gap named
    grouper, groups = grouped(numbered([*range(9), *range(18, 27)]))
    assert len(groups) == 2 and grouper.events[0].indices == ()
    assert "frames 9-17 missing" in grouper.events[0].reason
    # a stream that starts mid-group
    grouper, groups = grouped(numbered(range(3, 27)))
    assert [g[1][0] for g in groups] == [9, 18]
    assert grouper.events[0].indices == tuple(range(3, 9))


def test_positions_as_angle_phase_pairs_and_limits():
    positions = [(a, j) for a in range(3) for j in range(3)] * 2
    grouper, groups = grouped(numbered(range(18), positions), max_frames=13)
    assert len(groups) == 1 and grouper.frames_in == 13 and grouper.incomplete == 1
    pulled = []

    def camera():
        for item in numbered(range(100)):
            pulled.append(item[0])
            yield item

    grouper, groups = grouped(camera(), max_frames=18)
    assert len(groups) == 2 and pulled == list(range(18))  # not one frame more
    with pytest.raises(ValueError, match="position"):
        list(SimGrouper(numbered([0], [9])))
    with pytest.raises(ValueError, match="angle, phase"):
        list(SimGrouper(numbered([0], [(3, 0)])))


# ------------------------------------------------------------------------ reconstruction


@pytest.fixture(scope="module")
def camera():
    return SimulatedSimCameraSource(4 * SIM_FRAMES, (SIZE, SIZE), seed=3, **OPTICS)


def test_reconstructions_are_the_wiener_of_the_same_nine_frames(camera):
    frames = list(camera)
    assert [p for _, _, p in frames] == list(range(9)) * 4
    lossy = [f for f in frames if f[0] != 14]  # a frame lost in group 1
    recon = SimReconstructor(**OPTICS, camera=camera.camera, check_every=0)
    grouper, sink = SimGrouper(lossy), MemorySink()
    stats = StreamPipeline(grouper, recon, sink, drop_policy="block").run()
    assert stats.frames_out == 3 and grouper.incomplete == 1 and sink.indices == [0, 1, 2]
    stacks = [np.stack([f for _, f, _ in frames[9 * g:9 * g + 9]]) for g in (0, 2, 3)]
    params = estimate_parameters(stacks[0], camera=camera.camera, reorder=False, **OPTICS)
    assert [(p.kx, p.ky, p.phase_rad) for p in params] == [
        (p.kx, p.ky, p.phase_rad) for p in recon.params]
    for out, stack in zip(sink.frames, stacks, strict=True):
        direct = wiener_sim(stack, params, camera=camera.camera, reorder=False, **OPTICS)
        assert out.dtype == np.float32 and out.shape == (2 * SIZE, 2 * SIZE)
        np.testing.assert_array_equal(out, direct.astype(np.float32))
    assert recon.summary()["computed_on"] == "cpu"


def test_a_group_whose_frames_do_not_match_their_positions_stops_with_its_frames(camera):
    frames = list(camera)[:18]
    swapped = [*frames[:9], *(frames[9 + 3 * j + a] for a in range(3) for j in range(3))]
    positions_kept = [(i, f, p) for (i, _, p), (_, f, _) in zip(frames, swapped, strict=True)]
    recon = SimReconstructor(**OPTICS, camera=camera.camera, check_every=0)
    with pytest.raises(FrameOrderError, match="raw frames 9-17"):
        for _, stack in SimGrouper(positions_kept):
            recon(stack)
    assert recon.reconstructions == 1  # the phase-major group was not reconstructed


def test_calibration_maps_frames_and_reconstructs_in_photons(tmp_path, camera):
    from fluorofpga.microscope import Calibration

    rng = np.random.default_rng(5)
    offset = rng.normal(100.0, 4.0, (SIZE, SIZE))  # per-pixel offsets on the camera's 100
    raw = np.stack([f for _, f, _ in camera][:9])
    raw = np.clip(raw + np.rint(offset - 100.0), 0, 65535).astype(np.uint16)
    cal = tmp_path / "cal.npz"
    Calibration(offset_adu=offset, read_noise_adu=np.full((SIZE, SIZE), 3.5),
                gain_e_per_adu=camera.camera.gain_e_per_adu, qe=camera.camera.qe).save(cal)
    src = tmp_path / "raw.tif"
    write_tiff(src, raw, meta=ImageMeta("TYX", 0.065, 0.065))
    r = facade.stream(str(src), tmp_path / "sim.tif", sim=True, na=1.2, wavelength_nm=520,
                      calibration=cal, check_every=0)
    assert r["groups_reconstructed"] == 1 and r["units"] == "photons"
    image = tifffile.imread(tmp_path / "sim.tif")
    photons = (raw.astype(float) - offset) * camera.camera.gain_e_per_adu / camera.camera.qe
    assert image.mean() == pytest.approx(photons.mean(), rel=0.05)


def test_drift_checks_are_reported(camera):
    params = estimate_parameters(camera.raw_group(np.random.default_rng(1)),
                                 camera=camera.camera, **OPTICS)  # fmt: skip
    recon = SimReconstructor(**OPTICS, params=params, camera=camera.camera, check_every=2)
    for _, stack in SimGrouper(camera):
        recon(stack)
    assert [c.group for c in recon.checks] == [0, 2]  # loaded parameters: group 0 too
    assert recon.summary()["drift_checks"] == 2


# ----------------------------------------------------------------------------------- CLI


def test_cli_stream_sim_writes_the_2x_grid_with_half_the_pixel_size(tmp_path):
    out = tmp_path / "sim.tif"
    r = run("stream", "--sim", "--source", "sim", "--size", SIZE, "--frames", 22,
            *OPTICS_CLI, "--sink", out)
    assert r.exit_code == 0, r.output
    assert "CPU" in r.output and "incomplete group, frames [18, 19, 20, 21]" in r.output
    image, meta = read_image_meta(out)
    assert image.shape == (2, 2 * SIZE, 2 * SIZE) and image.dtype == np.float32
    assert meta.pixel_size_um == pytest.approx((0.0325, 0.0325))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.tif"]


def test_facade_summary_counts_groups_and_events(tmp_path):
    r = facade.stream("sim", tmp_path / "s.tif", sim=True, frames=20, size=SIZE,
                      na=1.2, wavelength_nm=520, pixel_size_um=0.065, check_every=0)
    assert (r["raw_frames_in"], r["groups_reconstructed"], r["incomplete_groups"],
            r["out_of_order_groups"]) == (20, 2, 1, 0)
    assert r["reconstructions_per_s"] > 0 and r["latency_ms_p95"] >= r["latency_ms_p50"] > 0
    assert r["pixel_size_out_nm"] == 32.5 and r["out_shape"] == [2 * SIZE, 2 * SIZE]
    assert "CPU" in r["computed_on"] and len(r["parameters"]) == 3


def test_tiff_stack_not_a_multiple_of_nine_ends_with_an_event(tmp_path, camera):
    raw = np.stack([f for _, f, _ in camera][:20])  # 2 groups and 2 frames
    src = tmp_path / "raw.tif"
    write_tiff(src, raw, meta=ImageMeta("TYX", 0.065, 0.065, frame_interval=0.01))
    out = tmp_path / "sim.zarr" if _has_zarr() else tmp_path / "sim.tif"
    r = facade.stream(str(src), out, sim=True, na=1.2, wavelength_nm=520, check_every=0)
    assert r["groups_reconstructed"] == 2 and r["incomplete_groups"] == 1
    assert r["events"][0]["indices"] == [18, 19]
    assert r["optics_source"]["pixel_size_um"] == "file metadata"
    image, meta = read_image_meta(out)
    assert image.shape == (2, 2 * SIZE, 2 * SIZE)
    assert meta.pixel_size_um == pytest.approx((0.0325, 0.0325))
    assert meta.frame_interval == pytest.approx(0.09)  # one SIM image per 9 raw frames


def _has_zarr() -> bool:
    try:
        import ome_zarr.writer  # noqa: F401
        import zarr  # noqa: F401
    except ImportError:
        return False
    return True


def test_missing_optics_is_one_error_before_any_work(tmp_path):
    out = tmp_path / "sim.tif"
    r = run("stream", "--sim", "--source", "sim", "--size", SIZE, "--na", 1.2, "--sink", out)
    assert r.exit_code != 0
    assert "--wavelength NM, --pixel-size UM" in r.output
    assert list(tmp_path.iterdir()) == []
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, np.zeros((9, SIZE, SIZE), np.uint16))  # no metadata at all
    r = run("stream", "--sim", "--source", raw, "--sink", out)
    assert r.exit_code != 0 and "--na NA" in r.output and "--pixel-size" in r.output
    assert not out.exists() and not partial_path(out).exists()


def test_what_needs_a_sim_bundle_is_refused(tmp_path):
    for extra, message in ((("--backend", "pynq"), "needs a SIM bundle (--model)"),
                           (("--model", tmp_path), "not a model bundle")):
        r = run("stream", "--sim", "--source", "sim", *OPTICS_CLI, *extra,
                "--sink", tmp_path / "x.tif")
        assert r.exit_code != 0 and message in " ".join(r.output.split())
    assert list(tmp_path.iterdir()) == []


def test_parameters_of_another_pixel_size_are_refused_before_work(tmp_path, camera):
    params = estimate_parameters(camera.raw_group(np.random.default_rng(2)),
                                 camera=camera.camera, **OPTICS)  # fmt: skip
    saved = tmp_path / "p.json"
    params.save(saved)
    out = tmp_path / "sim.tif"
    with pytest.raises(SimParametersMismatch, match="p.json"):
        facade.stream("sim", out, sim=True, size=SIZE, na=1.2, wavelength_nm=520,
                      pixel_size_um=0.08, params=saved)
    assert not out.exists() and not partial_path(out).exists()
    r = facade.stream("sim", out, sim=True, size=SIZE, frames=18, na=1.2, wavelength_nm=520,
                      pixel_size_um=0.065, params=saved, seed=3)
    assert r["groups_reconstructed"] == 2 and r["parameters_from"] == str(saved)
    assert r["reconstruction"]["drift_checks"] == 1


def test_sim_mode_refuses_uint16_output_and_counts_groups_in_its_panel(tmp_path):
    r = run("stream", "--sim", "--source", "sim", *OPTICS_CLI, "--dtype", "uint16",
            "--sink", tmp_path / "x.tif")
    assert r.exit_code != 0 and "written as float32" in " ".join(r.output.split())
    assert list(tmp_path.iterdir()) == []
    from fluorofpga.host.display import stats_rows
    from fluorofpga.host.stream import StreamStats

    labels = [label for label, _ in stats_rows(StreamStats(), 5, unit="groups")]
    assert labels[:2] == ["groups out", "groups in"]
