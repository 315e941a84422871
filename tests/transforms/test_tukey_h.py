"""TukeyH: power-law tails per side as stated, an exact inverse, and finite gradients."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_flows import Flow
from pyro_flows.transforms import TukeyH
from pyro_flows.transforms.tukey_h import H_MAX, LINEAR_FROM, lambert_w


def _layer(h_pos: float, h_neg: float) -> TukeyH:
    t = TukeyH(1).double()
    with torch.no_grad():
        t.raw_h_pos.fill_(h_pos)
        t.raw_h_neg.fill_(h_neg)
    return t


def test_lambert_w_solves_w_exp_w_equals_z():
    z = torch.logspace(-12, 15, 60, dtype=torch.float64)
    w = lambert_w(z)
    torch.testing.assert_close(w * w.exp(), z, rtol=1e-10, atol=0)


@pytest.mark.parametrize("h", [0.25, 0.4])
def test_the_tail_is_a_student_t_like_power_law(h):
    """From a standard normal, log p(y) falls like -(1 + 1/h) log y far out: the tail of a
    Student-t with 1/h degrees of freedom (a Gaussian tail would fall like -y^2)."""
    flow = Flow([_layer(h, 0.0)]).double()
    y = torch.tensor([[1e3], [1e4]], dtype=torch.float64)
    log_p = flow.log_prob(y)
    slope = float((log_p[1] - log_p[0]).detach() / math.log(10.0))
    # p(y) = phi(x) / (dy/dx) with y ~ x e^{h x^2 / 2}: the slope tends to -(1 + 1/h) up to
    # terms in 1 / log y, a few percent at these y
    assert abs(slope + (1 + 1 / h)) < 0.1 * (1 + 1 / h), slope


def test_each_side_has_its_own_weight_and_a_zero_weight_is_the_identity():
    t = _layer(0.3, 0.0)
    x = torch.tensor([[2.0], [-2.0]], dtype=torch.float64)
    y = t(x)
    assert float(y[0]) == pytest.approx(2.0 * math.exp(0.3 * 2.0), rel=1e-12)
    assert float(y[1]) == -2.0


def test_weights_stay_within_zero_and_h_max():
    t = TukeyH(2)
    with torch.no_grad():
        t.raw_h_pos.copy_(torch.tensor([-5.0, 5.0]))
    h_pos, _ = t.tail_weights()
    assert h_pos.tolist() == [0.0, pytest.approx(H_MAX)]


def test_round_trip_and_log_det_on_both_sides_of_the_linear_continuation():
    t = _layer(0.35, 0.1)
    x = torch.tensor([[-30.0], [-LINEAR_FROM], [-1.0], [0.0], [0.5], [7.9], [12.0]],
                     dtype=torch.float64)
    y, log_det = t.forward_and_log_det(x)
    back, inv_log_det = t.inverse_and_log_det(y)
    torch.testing.assert_close(back, x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(inv_log_det, -log_det, rtol=1e-9, atol=1e-9)
    jac = torch.func.vmap(torch.func.jacrev(lambda v: t(v.unsqueeze(0)).squeeze(0)))(x)
    torch.testing.assert_close(jac.reshape(-1).log(), log_det, rtol=1e-9, atol=1e-9)


def test_an_infinite_input_gives_finite_gradients_for_the_weights():
    """The unused branch of the continuation must stay finite (no 0 * inf in backward)."""
    t = _layer(0.2, 0.2).float()
    x = torch.tensor([[float("inf")], [1.0]])
    y, _ = t.forward_and_log_det(x)
    y[1].sum().backward()
    assert torch.isfinite(t.raw_h.grad).all(), t.raw_h.grad
