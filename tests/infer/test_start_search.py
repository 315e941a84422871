"""The Gaussian start's joint location search (pyro_flows.infer._start_search): the block
losses are the single searches' losses, the blocks do not see each other, and the start it
gives equals the one-at-a-time search's."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import pyro_flows.infer.autoflow_start as autoflow_start
from pyro_flows.infer import AutoFlow
from pyro_flows.infer._start_search import per_draw, search_together
from pyro_flows.infer.results import _forked_rng


def _regression(x: torch.Tensor, y: torch.Tensor):
    def model():
        a = pyro.sample("a", dist.Normal(0.0, 100.0))
        b = pyro.sample("b", dist.Normal(0.0, 10.0))
        s = pyro.sample("s", dist.HalfNormal(5.0))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(a + b * x, s), obs=y)

    return model


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, generator=g)
    return x, 30.0 + 2.0 * x + 0.5 * torch.randn(40, generator=g)


def _guide_and_losses(model):
    pyro.clear_param_store()
    guide = AutoFlow(model, gaussian_start=False, tail_stage=True)
    guide()
    affine = guide.flow.transforms[-1]
    nesting = autoflow_start.plate_nesting(model, guide, (), {})
    elbo = pyro.infer.Trace_ELBO(num_particles=16, vectorize_particles=True,
                                 max_plate_nesting=nesting)

    def reference() -> torch.Tensor:
        with poutine.block(), _forked_rng(0, [None]):
            return elbo.differentiable_loss(model, guide)

    def blocks(locs: torch.Tensor) -> torch.Tensor:
        return autoflow_start._block_losses(model, guide, affine, locs, num_draws=16,
                                            nesting=nesting, device=None, args=(), kwargs={})

    return affine, reference, blocks


def test_one_block_is_the_guides_own_deterministic_loss():
    model = _regression(*_data(0))
    affine, reference, blocks = _guide_and_losses(model)
    for shift in (0.0, 3.0):
        with torch.no_grad():
            affine.loc.add_(shift)
        expected = float(reference())
        got = float(blocks(affine.loc.detach()[None])[0])
        assert got == pytest.approx(expected, rel=1e-5)


def test_each_block_loss_depends_on_its_own_location_only():
    model = _regression(*_data(1))
    affine, _, blocks = _guide_and_losses(model)
    locs = torch.stack([affine.loc.detach() + d for d in (0.0, 1.0, -2.0)]).requires_grad_()
    (grad,) = torch.autograd.grad(blocks(locs)[1], locs)
    assert bool(grad[1].abs().sum() > 0)
    assert float(grad[0].abs().sum()) == 0.0 and float(grad[2].abs().sum()) == 0.0


def test_starts_with_a_non_finite_loss_are_dropped_and_none_when_all_are():
    p = torch.nn.Parameter(torch.zeros(1))

    def well(x: torch.Tensor) -> torch.Tensor:
        value = ((x - 3.0) ** 2).sum(-1)
        return torch.where(x.sum(-1) < -5.0, torch.full_like(value, math.inf), value)

    result = search_together(well, lambda: well(p), p,
                             [torch.zeros(1), torch.full((1,), -10.0), torch.ones(1)],
                             num_draws=1)
    assert result is not None and result.accepted
    assert float(p.detach()) == pytest.approx(3.0, abs=1e-3)
    assert result.optima == pytest.approx((0.0,), abs=1e-5)
    all_bad = search_together(well, lambda: well(p), p,
                              [torch.full((1,), -10.0), torch.full((1,), -20.0)], num_draws=1)
    assert all_bad is None


def test_per_draw_checks_shapes_and_broadcasts():
    assert per_draw(torch.ones(5, 1, 3), -3, 5).tolist() == [3.0] * 5
    assert per_draw(torch.tensor(2.0), -1, 4).tolist() == [2.0] * 4


def test_the_joint_search_starts_where_the_single_searches_do(monkeypatch):
    model = _regression(*_data(2))

    def start() -> tuple[float, torch.Tensor]:
        pyro.clear_param_store()
        guide = AutoFlow(model, start_points=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            guide()
        return guide.start_result, guide.flow.transforms[-1].loc.detach().clone()

    joint, joint_loc = start()
    monkeypatch.setattr(autoflow_start, "search_together", lambda *a, **k: None)
    single, single_loc = start()
    assert joint.accepted and single.accepted
    assert joint.loss_after == pytest.approx(single.loss_after, abs=0.05)
    assert torch.allclose(joint_loc, single_loc, atol=0.05)
    assert len(joint.optima) == len(single.optima) == 1
    assert joint.evaluations < single.evaluations
