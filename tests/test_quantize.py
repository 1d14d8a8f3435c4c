import numpy as np
import pytest
import torch

from fluorofpga.models import DenoiserConfig, PlainDenoiser, SimulatedPairs
from fluorofpga.quantize import (
    RECIPES,
    QuantDenoiser,
    export_to_qonnx,
    from_float,
    get_recipe,
    quantize_from_float,
    run_qonnx_int,
)

CFG = DenoiserConfig(channels=8, depth=4)


@pytest.fixture(scope="module")
def data():
    return SimulatedPairs(3, (96, 96), CFG.signal, seed=1)


@pytest.fixture(scope="module")
def float_model():
    torch.manual_seed(0)
    return PlainDenoiser(CFG).eval()


def test_recipes_named_and_unknown_rejected():
    assert {"w8a8", "w4a8"} <= set(RECIPES)
    assert get_recipe("w4a8").hidden_weight_bits == 4
    assert get_recipe("w4a8").io_bits == 8
    with pytest.raises(ValueError, match="known"):
        get_recipe("w3a3")


def test_float_checkpoint_is_drop_in(float_model):
    q = from_float(float_model, "w8a8")
    fsd, qsd = float_model.state_dict(), q.state_dict()
    for k, v in fsd.items():
        assert torch.equal(qsd[k], v)


@torch.no_grad()
def test_quantizers_disabled_matches_float(float_model):
    """Rung 1: with quantization off the twin computes the float function."""
    from brevitas.graph.calibrate import quantization_status_manager

    q = from_float(float_model, "w8a8").eval()
    x = torch.rand(2, 1, 32, 32) * 0.5
    with quantization_status_manager(q, is_training=False, disable_act_quant=True,
                                     disable_weight_quant=True, disable_bias_quant=True):
        yq = q(x)
    assert not torch.equal(q(x), yq)  # quantization back on: the result differs
    np.testing.assert_allclose(yq.numpy(), float_model(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("recipe", ["w8a8", "w4a8"])
def test_brevitas_and_qonnx_give_identical_integers(tmp_path, float_model, data, recipe):
    """Rung 2: Brevitas vs qonnx execute_onnx, exact integers, fixed-range output."""
    torch.manual_seed(0)
    q, _ = quantize_from_float(float_model, recipe, data, steps=5, crop=32)
    scale = q.forward_quant(torch.rand(1, 1, 16, 16)).scale
    assert float(scale) == 2.0**-8  # fixed output range, not learned
    path = export_to_qonnx(q, tmp_path / "m.onnx", (32, 32))
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.integers(0, 256, (2, 1, 32, 32)),
        np.rint(data.batch(1, 32)[0].numpy() * 256).astype(np.int64),  # camera codes
    ]).astype(np.uint8)
    a = q.forward_int(torch.from_numpy(x.astype(np.int64))).numpy()
    b = run_qonnx_int(path, x)
    assert np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 255
    assert len(np.unique(a)) > 3  # a real, non-constant output


def test_qat_lowers_loss(float_model, data):
    torch.manual_seed(0)
    q, history = quantize_from_float(float_model, "w4a8", data, steps=40, crop=32)
    assert isinstance(q, QuantDenoiser)
    assert np.mean(history[-5:]) < np.mean(history[:5])


def test_biases_on_a_rounding_tie_are_moved_off_it_and_nothing_else_changes(float_model,
                                                                             data):
    """A bias that makes ``acc + bias`` land exactly on a quantizer's half step (the chain's
    Brevitas/QONNX round half to even while FINN's thresholds round up) is moved by at most
    a quarter accumulator step; the others stay as they are."""
    q, _ = quantize_from_float(float_model, "w4a8", data, steps=0, crop=32)
    conv = q.convs[1]
    w_scale, x_scale, s = q.scales()[1]
    g = w_scale.double() * x_scale
    assert float((s / g).min()) >= 2  # ties at bias/g integer
    with torch.no_grad():
        conv.bias[0] = float(37 * g[0])  # on a tie
        conv.bias[1] = float(37.5 * g[1])  # as far from a tie as it gets
    before = conv.bias.detach().clone()
    assert q.nudge_biases() >= 1
    phase = torch.remainder(conv.bias.double() / g, 1.0)
    assert bool(((phase >= 0.25 - 1e-6) & (phase <= 0.75 + 1e-6)).all())
    assert float((conv.bias - before).abs().max() / g.min()) <= 0.25 + 1e-6
    assert float(conv.bias[1]) == float(before[1])
    assert q.nudge_biases() == 0  # idempotent
