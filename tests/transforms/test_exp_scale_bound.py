"""The exponential scale's bound ``log_scale_bound``: respected, invertible, validated."""

from __future__ import annotations

import pytest
import torch

from pyro_flows import flows
from pyro_flows.transforms import InverseAutoregressive, MaskedAutoregressive
from pyro_flows.transforms._affine import EXP_LOG_SCALE_BOUND, scale_and_log_scale


@pytest.mark.parametrize("bound", [2.0, 8.0, 16.0])
def test_log_scale_stays_inside_the_bound_and_is_linear_near_zero(bound):
    raw = torch.linspace(-1e4, 1e4, 2001, dtype=torch.float64)
    scale, log_scale = scale_and_log_scale(raw, "exp", bound)
    assert log_scale.abs().max() <= bound
    assert log_scale.max() > bound - 1e-6  # reached far out: the bound, not a smaller one
    torch.testing.assert_close(torch.log(scale), log_scale)
    small = torch.tensor([-0.1, 0.0, 0.1], dtype=torch.float64)
    near_zero = scale_and_log_scale(small, "exp", bound)[1]
    torch.testing.assert_close(near_zero, small, atol=1e-3 / bound, rtol=0)


@pytest.mark.parametrize("layer", [InverseAutoregressive, MaskedAutoregressive])
def test_a_larger_bound_is_used_by_both_directions(layer):
    torch.manual_seed(0)
    t = layer(3, (16,), scale="exp", log_scale_bound=16.0).double()
    with torch.no_grad():  # push the raw scales far out, where bounds 8 and 16 differ
        t.made.layers[-1].bias.add_(20.0)
    x = torch.randn(7, 3, dtype=torch.float64)
    y, log_det = t.forward_and_log_det(x)
    x_back, inv_log_det = t.inverse_and_log_det(y)
    torch.testing.assert_close(x_back, x, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(inv_log_det, -log_det)
    # raw about 20 on each scale: log-scale near 16 tanh(20/16) = 13.6, beyond bound 8's reach
    assert (log_det.abs() > 3 * EXP_LOG_SCALE_BOUND).all(), log_det  # MAF: forward divides


def test_builders_pass_the_bound_on():
    flow = flows.iaf(3, num_transforms=2, hidden_dims=(8,), scale="exp", log_scale_bound=12.0)
    bounds = {t.log_scale_bound for t in flow.transforms if isinstance(t, InverseAutoregressive)}
    assert bounds == {12.0}
    flow = flows.maf(3, num_transforms=2, hidden_dims=(8,), scale="exp")
    bounds = {t.log_scale_bound for t in flow.transforms if isinstance(t, MaskedAutoregressive)}
    assert bounds == {EXP_LOG_SCALE_BOUND}


def test_bad_bounds_are_refused_with_what_was_given():
    with pytest.raises(ValueError, match=r"finite and > 0, got 0"):
        InverseAutoregressive(3, (8,), scale="exp", log_scale_bound=0)
    with pytest.raises(ValueError, match=r"finite and > 0, got inf"):
        InverseAutoregressive(3, (8,), scale="exp", log_scale_bound=float("inf"))
    with pytest.raises(TypeError, match=r"must be a number, got str"):
        MaskedAutoregressive(3, (8,), scale="exp", log_scale_bound="16")
    with pytest.raises(ValueError, match=r"scale='exp' only.*scale='softplus'"):
        MaskedAutoregressive(3, (8,), log_scale_bound=16.0)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


@pytest.mark.parametrize("builder", [flows.maf, flows.iaf])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_fresh_exp_flow_inverts_float32_points_far_out(builder, seed):
    """Issue 14: at |x| ~ 1e3 a freshly built ``scale="exp"`` flow used to be near-singular
    (the log-scale's slope grows with the input, and exp amplifies it): the float32 round trip
    was off by 1e4 (maf) and 0.4 (iaf) relative. The log-scale head starts at zero, so every
    layer is a pure shift at init and both round trips hold to float32 rounding."""
    torch.manual_seed(seed)
    flow = builder(4, scale="exp")
    layers = torch.distributions.ComposeTransform(list(flow.transforms))
    a = 1e3 * torch.randn(256, 4)
    with torch.no_grad():
        assert _relative_error(layers.inv(layers(a)), a) < 1e-5
        assert _relative_error(layers(layers.inv(a)), a) < 1e-5
        assert torch.isfinite(flow.log_prob(a)).all()


@pytest.mark.parametrize("layer", [InverseAutoregressive, MaskedAutoregressive])
def test_the_zero_log_scale_head_still_learns(layer):
    """The head starts at zero but its weights get a gradient at once: one step of a
    likelihood fit moves the log-scales off zero (a head stuck at 0 would leave a shift-only
    flow)."""
    torch.manual_seed(0)
    t = layer(3, (16,), scale="exp")
    head = t.made.layers[-1]
    assert head.weight[3:].abs().max() == 0 and head.bias[3:].abs().max() == 0
    x = 3.0 * torch.randn(64, 3)
    _, log_det = t.forward_and_log_det(x)
    (-log_det.mean()).backward()
    assert head.weight.grad[3:].abs().max() > 1e-3
