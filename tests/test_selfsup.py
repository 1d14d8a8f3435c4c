"""Self-supervised (blind-spot) fine-tuning on a user's own noisy frames."""

import numpy as np
import pytest
import torch

from fluorofpga.microscope import (
    NoiseModel,
    SCMOSCamera,
    SignalSpec,
    SignalTables,
    WidefieldMicroscope,
    write_tiff,
)
from fluorofpga.models import BlindSpotFrames, DenoiserConfig, PlainDenoiser, fit

SPEC = SignalSpec()
CAM = SCMOSCamera(gain_e_per_adu=1.2, offset_adu=200.0, read_noise_e=1.8)


def user_stack(n=4, size=64, peak=20.0, seed=3):
    mic = WidefieldMicroscope(shape=(size, size), peak_photons=peak, camera=CAM, seed=seed)
    return np.stack([f.noisy for f in mic.frames(n)]), mic


def codes_of(stack):
    noise = NoiseModel.from_camera(CAM.gain_e_per_adu, CAM.offset_adu, CAM.read_noise_e)
    return SignalTables(SPEC, noise).encode(stack)


def test_blind_spot_hides_the_pixel_and_keeps_the_rest():
    codes = codes_of(user_stack()[0])
    data = BlindSpotFrames(codes, SPEC, mask_fraction=0.1, seed=0)
    crop = codes[0]
    q_in, target, mask = data.masked(crop)
    assert 0.05 < mask.mean() < 0.15
    assert np.array_equal(q_in[~mask], crop[~mask])  # unmasked pixels untouched
    # the target at a masked pixel is the original noisy value (residual read-out)
    z_hat = (SPEC.ratio * q_in.astype(float) + SPEC.residual_zero - target) * SPEC.residual_step
    assert np.allclose(z_hat, crop * SPEC.in_step)
    # the replacement carries none of the pixel's own noise: no correlation with it
    ring_mean = np.asarray([crop[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].mean()
                            for y, x in zip(*np.nonzero(mask), strict=True)])
    own_noise = crop[mask] - ring_mean
    fake_noise = q_in[mask].astype(float) - ring_mean
    assert abs(np.corrcoef(own_noise, fake_noise)[0, 1]) < 0.2


def test_blind_spot_fine_tuning_reduces_the_masked_loss():
    codes = codes_of(user_stack(n=6, size=96)[0])
    torch.manual_seed(0)
    net = PlainDenoiser(DenoiserConfig(channels=8, depth=3))
    history = fit(net, BlindSpotFrames(codes, SPEC, seed=1), 80, 8, 32, 2e-3)
    assert np.mean(history[-15:]) < 0.8 * np.mean(history[:15])


def test_blind_spot_refuses_bad_frames():
    with pytest.raises(ValueError, match="unsigned"):
        BlindSpotFrames(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="smaller"):
        BlindSpotFrames(np.zeros((1, 16, 16), np.uint8)).batch(2, 32)


@pytest.mark.slow
def test_train_self_supervised_makes_a_bit_exact_bundle(tmp_path):
    from typer.testing import CliRunner

    from fluorofpga.cli import app
    from fluorofpga.host import load_bundle

    stack, _ = user_stack(n=3, size=64)
    write_tiff(tmp_path / "mine.tif", stack, axes="TYX")
    out = tmp_path / "ft"
    r = CliRunner().invoke(app, ["train", "--out", str(out), "--self-supervised",
                                 str(tmp_path / "mine.tif"), "--steps", "15",
                                 "--qat-steps", "4", "--tile", "32"])
    assert r.exit_code == 0, r.output
    b = load_bundle(out)
    info = b.manifest["training"]["self_supervised"]
    assert info["planes"] == 3 and info["noise"]["source"] == "estimated"
    assert b.manifest["verification"]["bit_exact"] is True


def test_self_supervised_stack_read_from_ome_zarr_by_fsspec_url(tmp_path):
    pytest.importorskip("zarr")
    from fluorofpga import app as facade
    from fluorofpga.microscope import write_ome_zarr

    stack, _ = user_stack(n=2, size=80)
    write_ome_zarr(tmp_path / "mine.zarr", stack, axes="TYX")
    url = (tmp_path / "mine.zarr").as_uri()  # file:///...: any fsspec URL works the same
    codes, info = facade._self_supervised_codes(facade.BundleRecipe(self_supervised=url))
    assert codes.shape == stack.shape and codes.dtype == np.uint8
    assert info["planes"] == 2 and info["noise"]["source"] == "estimated"
