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
