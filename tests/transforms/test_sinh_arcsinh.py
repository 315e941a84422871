"""SinhArcsinh: the tail power and skew do what the docstring says, and a fit learns them."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_flows import Flow
from pyro_flows.transforms import SinhArcsinh
from pyro_flows.transforms.sinh_arcsinh import LOG_TAIL_BOUND


def _layer(log_tail: float, skew: float, dim: int = 1) -> SinhArcsinh:
    t = SinhArcsinh(dim).double()
    with torch.no_grad():  # invert log_tail = b tanh(raw / b)
        t.raw_tail.fill_(LOG_TAIL_BOUND * math.atanh(log_tail / LOG_TAIL_BOUND))
        t.skew.fill_(skew)
    return t


@pytest.mark.parametrize("tail,skew", [(2.0, 0.0), (0.5, 0.3), (1.5, -1.0)])
def test_tails_grow_as_the_stated_power(tail, skew):
    t = _layer(math.log(tail), skew)
    x = torch.tensor([[1e4], [-1e4]], dtype=torch.float64)
    y = t(x).squeeze(-1)
    expected = 0.5 * (2e4) ** tail * torch.exp(torch.tensor([skew, -skew], dtype=torch.float64))
    torch.testing.assert_close(y.abs(), expected, rtol=1e-3, atol=0)


def test_tail_power_two_turns_a_normal_base_into_exponential_tails():
    """The log-density of y = sinh(2 asinh x), x ~ N(0, 1), falls linearly in |y| far out."""
    flow = Flow([_layer(math.log(2.0), 0.0)]).double()
    y = torch.tensor([[50.0], [100.0], [200.0]], dtype=torch.float64)
    log_p = flow.log_prob(y)
    slopes = (log_p[1:] - log_p[:-1]) / (y[1:, 0] - y[:-1, 0])
    # y ~ 2 x^2 far out, so log p(y) = -x^2 / 2 - log|dy/dx| ~ -y / 4 - log(y) / 2: slope -1/4
    # up to -1 / (2 y) (a Gaussian tail's slope would keep falling, -y / sd^2)
    torch.testing.assert_close(slopes, torch.full_like(slopes, -0.25), atol=0.01, rtol=0)


def test_log_tail_is_bounded_for_any_raw_value():
    t = SinhArcsinh(3)
    with torch.no_grad():
        t.raw_tail.copy_(torch.tensor([-1e6, 0.0, 1e6]))
    assert t.log_tail.abs().max() <= LOG_TAIL_BOUND
    assert t.log_tail[1] == 0.0


@pytest.mark.parametrize("data,heavier", [("student_t", True), ("normal", False)])
def test_maximum_likelihood_learns_heavier_tails_only_where_the_data_have_them(data, heavier):
    torch.manual_seed(0)
    n = 20_000
    if data == "student_t":
        x = torch.distributions.StudentT(2.5).sample((n, 1)).double()
    else:
        x = torch.randn(n, 1, dtype=torch.float64)
    flow = Flow([SinhArcsinh(1)]).double()
    optim = torch.optim.Adam(flow.parameters(), lr=0.05)
    for _ in range(300):
        optim.zero_grad()
        (-flow.log_prob(x).mean()).backward()
        optim.step()
    tail = float(flow.transforms[0].log_tail.detach().exp())
    if heavier:
        assert tail > 1.3, tail
    else:
        assert abs(tail - 1.0) < 0.05, tail
