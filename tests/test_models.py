import numpy as np
import pytest
import torch

from fluorofpga.models import (
    DenoiserConfig,
    PlainDenoiser,
    SimulatedPairs,
    TrainConfig,
    load_float_model,
    save_checkpoint,
    train_denoiser,
)


def test_receptive_field_matches_halo():
    cfg = DenoiserConfig(channels=4, depth=4)
    model = PlainDenoiser(cfg).eval()
    x = torch.zeros(1, 1, 41, 41)
    base = model(x)
    x[0, 0, 20, 20] = 1.0
    changed = (model(x) - base).abs()[0, 0] > 0
    ys, xs = np.nonzero(changed.numpy())
    assert ys.min() >= 20 - cfg.halo and ys.max() <= 20 + cfg.halo
    assert xs.min() >= 20 - cfg.halo and xs.max() <= 20 + cfg.halo
    assert cfg.receptive_field == 2 * cfg.halo + 1


def test_params_and_macs_match_the_network():
    cfg = DenoiserConfig(channels=6, depth=4)
    model = PlainDenoiser(cfg)
    assert cfg.params == sum(p.numel() for p in model.parameters())
    assert cfg.macs_per_pixel == sum(c.weight.numel() for c in model.convs)


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="depth"):
        DenoiserConfig(depth=1)


def test_training_reduces_loss_and_checkpoint_round_trips(tmp_path):
    cfg = TrainConfig(steps=60, n_scenes=4, scene_size=96, crop=32, batch_size=8,
                      model=DenoiserConfig(channels=8, depth=3))
    seen = []
    model, log = train_denoiser(cfg, progress=lambda s, n, loss: seen.append(s))
    assert seen[-1] == 60
    first, last = np.mean(log["loss"][:10]), np.mean(log["loss"][-10:])
    assert last < 0.7 * first
    save_checkpoint(tmp_path / "f.pt", model, cfg.model)
    again = load_float_model(tmp_path / "f.pt")
    x = torch.rand(1, 1, 24, 24)
    assert torch.equal(model(x), again(x))
    assert again.config == cfg.model


def test_simulated_pairs_are_reproducible():
    a = SimulatedPairs(2, (64, 64), seed=3).batch(4, 16)
    b = SimulatedPairs(2, (64, 64), seed=3).batch(4, 16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (4, 1, 16, 16)
    # inputs are integers on the 2**-8 grid
    assert torch.equal(a[0] * 256, torch.round(a[0] * 256))


def test_training_pairs_are_unit_variance_residuals_on_every_camera():
    """Whatever camera and light level, the residual target is noise of σ = 1 (in GAT units)."""
    from fluorofpga.microscope import SignalSpec
    from fluorofpga.models import CameraRange, encode_noisy

    spec = SignalSpec()
    flat = np.full((128, 128), 1.0)
    for gain, peak in ((0.3, 2.0), (3.0, 2.0), (0.3, 300.0), (3.0, 300.0)):
        cams = CameraRange(gain_e_per_adu=(gain, gain), noise_model_error=0.0)
        q, target = encode_noisy(flat * peak, spec, cams, np.random.default_rng(1))
        residual = (target - spec.residual_zero) * spec.residual_step  # z_noisy - z_clean
        assert abs(residual.std() - 1.0) < 0.12, (gain, peak, residual.std())
        # E[GAT(noisy)] < GAT(E[noisy]) at a few photons (Jensen): the net learns that
        # bias, which is why the algebraic inverse is the right one afterwards
        assert abs(residual.mean()) < (0.3 if peak < 10 else 0.05)


def test_training_codes_a_noisy_camera_with_the_deployed_dark_shift():
    """A 9 e⁻ camera in training is coded exactly as the deployed tables code it: its dark
    level at ``max_dark_z``, the clean target shifted alike, noise still σ = 1."""
    from fluorofpga.microscope import NoiseModel, SignalSpec, SignalTables
    from fluorofpga.models import CameraRange, encode_noisy

    spec = SignalSpec(max_dark_z=9.083)
    cams = CameraRange(gain_e_per_adu=(1.5, 1.5), offset_adu=(300.0, 300.0),
                       read_noise_e=(9.0, 9.0), read_noise_log_sd=(0.0, 0.0),
                       noise_model_error=0.0, background_fraction=(0.0, 0.0))
    dark = np.zeros((128, 128))
    q, target = encode_noisy(dark, spec, cams, np.random.default_rng(2))
    tables = SignalTables(spec, NoiseModel.from_camera(1.5, 300.0, 9.0))
    assert tables.dark_shift > 8.0
    assert abs(q.astype(float).mean() * spec.in_step - 9.083) < 0.1  # not at z₀ ≈ 18.2
    clean_z = (spec.ratio * q.astype(float) - target + spec.residual_zero) * spec.residual_step
    assert np.allclose(clean_z, clean_z.flat[0]) and abs(clean_z.flat[0] - 9.083) < 0.05
    residual = (target - spec.residual_zero) * spec.residual_step
    assert abs(residual.std() - 1.0) < 0.1
    unshifted, _ = encode_noisy(dark, SignalSpec(), cams, np.random.default_rng(2))
    assert unshifted.astype(float).mean() * spec.in_step > 17.0


@pytest.mark.slow
def test_training_runs_unchanged_under_torchrun_with_two_cpu_processes(tmp_path):
    import re
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fluorofpga.models", "--out", str(tmp_path / "f.pt"), "--steps", "4",
           "--channels", "4", "--depth", "3", "--scenes", "2", "--scene-size", "64"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    digests = dict(re.findall(r"rank (\d)/2 weights sha256 ([0-9a-f]{64})", r.stdout + r.stderr))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]  # DDP kept them equal
    again = load_float_model(tmp_path / "f.pt")
    assert again.config.channels == 4
