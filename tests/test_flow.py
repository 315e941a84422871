"""Flow and the builders: the API.md contract, checked on every builder."""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_flows import Flow, flows
from pyro_flows.distribution import FlowDistribution
from pyro_flows.transforms import FlowTransform

BUILDERS = {
    "nice": lambda d, c=None: flows.nice(d, 3, (16, 16), context_dim=c),
    "realnvp": lambda d, c=None: flows.realnvp(d, 3, (16, 16), context_dim=c),
    "realnvp-actnorm": lambda d, c=None: flows.realnvp(
        d, 2, (16,), context_dim=c, normalization="actnorm"
    ),
    "realnvp-batchnorm": lambda d, c=None: flows.realnvp(
        d, 2, (16,), context_dim=c, normalization="batchnorm"
    ),
    "maf": lambda d, c=None: flows.maf(d, 3, (16, 16), context_dim=c),
    "maf-random-perm": lambda d, c=None: flows.maf(
        d, 3, (16,), context_dim=c, permutation="random"
    ),
    "iaf": lambda d, c=None: flows.iaf(d, 3, (16, 16), context_dim=c),
    "nsf": lambda d, c=None: flows.nsf(d, 3, (16, 16), context_dim=c),
    "nsf-coupling": lambda d, c=None: flows.nsf(d, 3, (16, 16), context_dim=c, coupling=True),
    "planar": lambda d, c=None: flows.planar(d, 4, (16,), context_dim=c),
    "radial": lambda d, c=None: flows.radial(d, 4, (16,), context_dim=c),
}


def perturbed(name: str, d: int, c: int | None = None, seed: int = 0) -> Flow:
    torch.manual_seed(seed)
    flow = BUILDERS[name](d, c).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    flow.eval()  # BatchNorm: running statistics, exact inverse
    return flow


@pytest.fixture(params=list(BUILDERS), ids=list(BUILDERS))
def name(request) -> str:
    return request.param


def test_builder_returns_a_flow_of_transform_modules(name):
    flow = BUILDERS[name](3)
    assert isinstance(flow, Flow)
    assert flow.input_dim == 3 and flow.context_dim is None
    assert all(isinstance(t, FlowTransform) for t in flow.transforms)
    assert sum(p.numel() for p in flow.parameters()) > 0


def test_fresh_flow_is_close_to_its_base(name):
    torch.manual_seed(0)
    flow = BUILDERS[name](3)
    x = torch.randn(200, 3)
    if name == "realnvp-actnorm":  # data-dependent init standardises the data
        pytest.skip("ActNorm initialises from the first batch")
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    flow.eval()
    assert torch.allclose(flow.log_prob(x), base.log_prob(x), atol=0.3)


@pytest.mark.parametrize("context_dim", [None, 2])
def test_log_prob_of_own_samples_matches_one_pass(name, context_dim):
    flow = perturbed(name, 3, context_dim)
    ctx = None if context_dim is None else torch.randn(4, context_dim, dtype=torch.float64)
    x, log_q = flow.rsample_and_log_prob((5,), ctx)
    assert x.shape == (5, 4, 3) if ctx is not None else x.shape == (5, 3)
    assert torch.allclose(flow.log_prob(x, ctx), log_q, atol=1e-6)


def test_density_integrates_to_one_on_a_grid(name):
    flow = perturbed(name, 2)
    r, n = 10.0, 401
    grid = torch.linspace(-r, r, n, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(pts).exp().sum() * (grid[1] - grid[0]) ** 2
        torch.manual_seed(1)
        inside = (flow.sample((20000,)).abs() <= r).all(-1).double().mean()
    assert inside > 0.9
    assert abs(mass - inside) < 0.01, (mass, inside)


def test_context_shapes_follow_the_batching_rule(name):
    flow = perturbed(name, 3, 2)
    ctx = torch.randn(2, 4, 2, dtype=torch.float64)
    x = flow.sample((5,), ctx)
    assert x.shape == (5, 2, 4, 3)
    assert flow.log_prob(x, ctx).shape == (5, 2, 4)
    assert flow.rsample(context=ctx[0, 0]).shape == (3,)
    d = flow(ctx)
    assert d.batch_shape == (2, 4) and d.event_shape == (3,)
    assert d.rsample((7,)).shape == (7, 2, 4, 3)
    # one point scored under many contexts, and many points under one context
    assert flow.log_prob(x[0, 0, 0], ctx).shape == (2, 4)
    assert flow.log_prob(x, ctx[0, 0]).shape == (5, 2, 4)
    c1, c2 = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    assert not torch.allclose(flow.log_prob(x[0, 0], c1), flow.log_prob(x[0, 0], c2))


def test_state_dict_round_trip_is_exact(name):
    flow = perturbed(name, 3, 2)
    ctx = torch.randn(6, 2, dtype=torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64)
    torch.manual_seed(99)
    other = BUILDERS[name](3, 2).double()
    other.load_state_dict(flow.state_dict())
    other.eval()
    state = other.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in flow.state_dict().items())  # bit for bit
    # the same computation on another instance: equal up to rounding (BLAS kernels may round
    # differently with the memory alignment)
    close = {"rtol": 1e-13, "atol": 1e-13}
    torch.testing.assert_close(other.log_prob(x, ctx), flow.log_prob(x, ctx), **close)
    torch.manual_seed(5)
    a = flow.sample((4,), ctx)
    torch.manual_seed(5)
    torch.testing.assert_close(other.sample((4,), ctx), a, **close)


def test_to_moves_everything_including_the_base(name):
    flow = BUILDERS[name](3).to(torch.float64)
    assert flow.base_dist().mean.dtype == torch.float64
    assert flow.sample((2,)).dtype == torch.float64
    assert all(
        b.dtype in (torch.float64, torch.long, torch.bool, torch.uint8) for b in flow.buffers()
    )


def test_works_as_a_pyro_guide(name):
    pyro.clear_param_store()
    torch.manual_seed(0)
    flow = BUILDERS[name](2)
    target = dist.Normal(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0])).to_event(1)

    def model():
        pyro.sample("z", target)

    def guide():
        pyro.module("flow", flow)
        pyro.sample("z", flow())

    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step() for _ in range(30)]
    assert all(torch.isfinite(torch.tensor(losses)))
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    svi.step()
    assert any(not torch.equal(before[k], v) for k, v in flow.state_dict().items())


def test_guide_scores_its_own_samples_without_an_inverse(monkeypatch):
    torch.manual_seed(0)
    flow = flows.iaf(4, 3, (16,))

    def no_inverse(self, y, context=None):
        raise AssertionError("inverse called")

    for t in flow.transforms:
        monkeypatch.setattr(type(t), "inverse_and_log_det", no_inverse)
    d = flow()
    trace = pyro.poutine.trace(lambda: pyro.sample("z", d)).get_trace()
    trace.log_prob_sum().backward()
    with pytest.raises(AssertionError, match="inverse called"):
        d.log_prob(torch.randn(4))  # an external point does need the inverse


def test_remembered_sample_cannot_go_stale():
    torch.manual_seed(0)
    flow = flows.iaf(3, 2, (16,))
    d = flow()
    x = d.rsample((8,))
    first = d.log_prob(x)
    assert d.log_prob(x) is first  # own sample: no recomputation
    opt = torch.optim.SGD(flow.parameters(), lr=0.1)
    (-first.mean()).backward()
    opt.step()
    after_step = d.log_prob(x)
    assert not torch.allclose(after_step, first)
    assert torch.allclose(after_step, flow.log_prob(x), atol=1e-5)
    # a copy of the tensor, or an in-place edit, is never served from memory
    x2 = d.rsample((8,))
    assert d.log_prob(x2.clone()) is not d.log_prob(x2)
    with torch.no_grad():
        x2.add_(1.0)
    assert torch.allclose(d.log_prob(x2), flow.log_prob(x2), atol=1e-5)
    # state changes through load_state_dict and .to() are seen too; a state with the same
    # values is the same flow, so its remembered score stays valid
    x3 = d.rsample((8,))
    lp3 = d.log_prob(x3)
    flow.load_state_dict(copy.deepcopy(flow.state_dict()))
    assert d.log_prob(x3) is lp3
    halved = {k: v * 0.5 if v.is_floating_point() else v for k, v in flow.state_dict().items()}
    flow.load_state_dict(halved)
    assert d.log_prob(x3) is not lp3
    torch.testing.assert_close(d.log_prob(x3), flow.log_prob(x3))
    x4 = d.rsample((8,))
    assert d.log_prob(x4) is d.log_prob(x4)  # remembered before the move
    flow.double()
    assert d.log_prob(x4.double()).dtype == torch.float64
    with pytest.raises(
        TypeError, match="dtype torch.float64, but x is on cpu with dtype torch.float32"
    ):
        d.log_prob(x4)  # not the remembered float32 value: the storage moved


def test_expand_for_plates():
    torch.manual_seed(0)
    flow = flows.maf(2, 2, (8,))
    d = flow().expand((5,))
    assert isinstance(d, FlowDistribution)
    x = d.rsample()
    assert x.shape == (5, 2) and d.log_prob(x).shape == (5,)
    assert d.sample((3,)).shape == (3, 5, 2)
    assert d.log_prob(torch.zeros(2)).shape == (5,)


def test_foreign_transforms_and_bases_are_accepted():
    from torch.distributions.transforms import AffineTransform, ExpTransform

    base = dist.Normal(torch.zeros(3), 2.0).to_event(1)
    flow = Flow([AffineTransform(1.0, 3.0), ExpTransform()], base=base)
    reference = dist.TransformedDistribution(base, [AffineTransform(1.0, 3.0), ExpTransform()])
    y = torch.rand(4, 3) + 0.1
    assert torch.allclose(flow.log_prob(y), reference.log_prob(y), atol=1e-5)
    flow = flow.double()
    assert flow.base_dist().base_dist.scale.dtype == torch.float64


class TestErrors:
    def test_wrong_event_size(self):
        flow = flows.maf(3, 2, (8,))
        with pytest.raises(ValueError, match=r"\(\.\.\., 3\).*got shape \(5, 4\)"):
            flow.log_prob(torch.zeros(5, 4))
        with pytest.raises(ValueError, match="got shape"):
            flow.log_prob(torch.tensor(1.0))

    def test_context_errors(self):
        flow = flows.iaf(3, 2, (8,), context_dim=2)
        with pytest.raises(ValueError, match=r"needs a context of shape \(\.\.\., 2\), got None"):
            flow.sample((2,))
        with pytest.raises(ValueError, match=r"expected context of shape \(\.\.\., 2\).*\(4, 5\)"):
            flow.log_prob(torch.zeros(4, 3), torch.zeros(4, 5))
        with pytest.raises(ValueError, match="does not broadcast"):
            flow.log_prob(torch.zeros(4, 3), torch.zeros(3, 2))
        with pytest.raises(ValueError, match="unconditional"):
            flows.maf(3, 2).log_prob(torch.zeros(2, 3), torch.zeros(2, 2))

    def test_non_finite_rows_are_named(self):
        flow = flows.maf(2, 2, (8,))
        x = torch.zeros(6, 2)
        x[1, 0] = float("nan")
        x[4, 1] = float("inf")
        with pytest.raises(ValueError, match=r"2 row\(s\).*\[1, 4\]"):
            flow.log_prob(x)

    def test_bad_arguments(self):
        with pytest.raises(TypeError, match="sample_shape"):
            flows.maf(2).sample("many")
        with pytest.raises(TypeError, match="input_dim must be an int"):
            flows.maf(2.5)
        with pytest.raises(ValueError, match="permutation must be one of"):
            flows.maf(2, permutation="shuffle")
        with pytest.raises(ValueError, match="input_dim >= 2"):
            flows.realnvp(1)
        with pytest.raises(TypeError, match="Tensor or array"):
            flows.maf(2).log_prob("x")
        with pytest.raises(ValueError, match="disagree on context_dim"):
            from pyro_flows.transforms import MaskedAutoregressive

            Flow([MaskedAutoregressive(2, context_dim=2), MaskedAutoregressive(2, context_dim=3)])
        for bad, named in ((None, "iterable.*got NoneType"), ("abc", "iterable.*got str"),
                           ([None], "got NoneType at position 0"),
                           ([torch.distributions.ExpTransform(), 3], "got int at position 1")):
            with pytest.raises(TypeError, match=f"Flow transforms must be .*{named}"):
                Flow(bad)

    def test_numpy_input_is_converted(self):
        import numpy as np

        flow = flows.maf(2, 2, (8,))
        assert flow.log_prob(np.zeros((3, 2))).shape == (3,)


def test_standard_normal_fast_path_matches_the_distribution():
    from pyro_flows.base import StandardNormal

    base = StandardNormal(3).double()
    z = torch.randn(7, 3, dtype=torch.float64)
    assert torch.allclose(base.log_prob(z), base().log_prob(z), atol=1e-12)
