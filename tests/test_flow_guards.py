"""Flow-level guards: non-finite contexts, bad sample shapes, own-sample scores that must not
outlive a parameter change, and far outliers (a clear error or a finite value, never NaN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import pyro_flows._validation as validation
from pyro_flows import Flow, flows
from pyro_flows.infer import AmortizedFlow
from pyro_flows.transforms import InverseAutoregressive, Planar

CONDITIONAL = {
    "nice": lambda: flows.nice(3, 2, (8,), context_dim=2),
    "realnvp": lambda: flows.realnvp(3, 2, (8,), context_dim=2),
    "maf": lambda: flows.maf(3, 2, (8,), context_dim=2),
    "iaf": lambda: flows.iaf(3, 2, (8,), context_dim=2),
    "nsf": lambda: flows.nsf(3, 2, (8,), context_dim=2),
    "nsf-coupling": lambda: flows.nsf(3, 2, (8,), context_dim=2, coupling=True),
    "planar": lambda: flows.planar(3, 2, (8,), context_dim=2),
    "radial": lambda: flows.radial(3, 2, (8,), context_dim=2),
}

NOT_FINITE = r"non-finite values \(NaN or inf\) in 1 row\(s\) of context of shape \(4, 2\)"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bad_context(value: float) -> torch.Tensor:
    context = torch.randn(4, 2)
    context[2, 1] = value
    return context


@pytest.mark.parametrize("name", list(CONDITIONAL))
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_context_is_a_clear_error_in_every_conditional_builder(name, value):
    torch.manual_seed(0)
    flow = CONDITIONAL[name]()
    context = bad_context(value)
    calls = [
        lambda: flow.log_prob(torch.randn(4, 3), context),
        lambda: flow.rsample_and_log_prob((), context),
        lambda: flow.rsample((), context),
        lambda: flow.sample((), context),
        lambda: flow(context),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=NOT_FINITE + r" \(flat row indices \[2\]\)"):
            call()
    # the layers check it too when called directly (the owner is named)
    layer = next(t for t in flow.transforms if t.context_dim)
    with pytest.raises(ValueError, match=type(layer).__name__ + " got " + NOT_FINITE[:10]):
        layer.forward_and_log_det(torch.randn(4, 3), context)


def test_the_context_is_checked_once_per_call_not_once_per_layer(monkeypatch):
    calls = []
    check = validation.check_finite

    def counting(value, name, owner, event_dims=1):
        calls.append(name)
        check(value, name, owner, event_dims)

    monkeypatch.setattr(validation, "check_finite", counting)
    flow = flows.maf(3, 4, (8,), context_dim=2)  # 4 conditional layers
    context = torch.randn(5, 2)
    flow.log_prob(torch.randn(5, 3), context)
    flow.rsample_and_log_prob((2,), context)
    flow.sample((2,), context)
    assert calls == ["context"] * 3


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_amortized_non_finite_context_and_value_are_clear_errors(kind):
    torch.manual_seed(0)
    posterior = AmortizedFlow(3, 2, flow=kind, num_transforms=2, hidden_dims=(8,))
    loc, scale = torch.zeros(4, 3), torch.ones(4, 3)
    with pytest.raises(ValueError, match=r"AmortizedFlow got " + NOT_FINITE[:10]):
        posterior(loc, scale, bad_context(float("nan")))
    context = torch.randn(4, 2)
    d = posterior(loc, scale, context)
    with torch.no_grad():
        context[1, 0] = float("inf")  # changed after the distribution was built
    with pytest.raises(ValueError, match=r"context of shape \(4, 2\) \(flat row indices \[1\]\)"):
        d.log_prob(torch.randn(4, 3))
    with pytest.raises(ValueError, match="context of shape"):
        d.rsample()
    value = torch.randn(4, 3)
    value[3, 2] = float("nan")
    good = posterior(loc, scale, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"value of shape \(4, 3\) \(flat row indices \[3\]\)"):
        good.log_prob(value)


BAD_SHAPES = [
    (-1, ValueError, "a negative size"),
    ((3, -1), ValueError, "a negative size"),
    (2.5, TypeError, r"got 2\.5 \(float\)"),
    ((2.0,), TypeError, "an entry of type float"),
    ("3", TypeError, r"got '3' \(str\)"),
    (True, TypeError, r"got True \(bool\)"),
    (None, TypeError, r"got None \(NoneType\)"),
]


@pytest.mark.parametrize("shape, error, message", BAD_SHAPES)
def test_bad_sample_shapes_are_clear_errors(shape, error, message):
    flow = flows.iaf(2, 2, (8,))
    posterior = AmortizedFlow(2, None, flow="iaf", hidden_dims=(8,))
    d_amortized = posterior(torch.zeros(3, 2), torch.ones(3, 2))
    calls = [
        flow.sample,
        flow.rsample,
        flow.rsample_and_log_prob,
        flow().sample,
        flow().rsample,
        d_amortized.sample,
        d_amortized.rsample,
    ]
    for call in calls:
        with pytest.raises(error, match="sample_shape must be an int or a sequence of ints.*"):
            call(shape)
        with pytest.raises(error, match=message):
            call(shape)


def test_good_sample_shapes_still_work():
    flow = flows.maf(2, 2, (8,))
    assert flow.sample(0).shape == (0, 2)
    assert flow.sample((2, 0)).shape == (2, 0, 2)
    assert flow.sample(np.int64(3)).shape == (3, 2)
    assert flow.rsample(torch.Size([2, 1])).shape == (2, 1, 2)
    assert flow().rsample([np.int32(4)]).shape == (4, 2)


def perturb_one(module: nn.Module) -> None:
    """An edit that bypasses version counters: ``p.data`` has a counter of its own."""
    p = next(p for p in module.parameters() if p.numel() > 1)
    p.data.add_(0.1)


@pytest.mark.parametrize("name", ["iaf", "planar"])
def test_own_sample_score_never_outlives_a_parameter_edit_through_data(name):
    torch.manual_seed(0)
    flow = flows.iaf(3, 2, (16,)) if name == "iaf" else flows.planar(3, 3)
    d = flow()
    x = d.rsample((8,))
    remembered = d.log_prob(x)
    assert d.log_prob(x) is remembered  # unchanged: served without recomputation
    perturb_one(flow)
    after = d.log_prob(x)
    fresh = flow.log_prob(x.detach().clone())
    torch.testing.assert_close(after, fresh)
    assert (after - remembered).abs().max() > 1e-4  # the edit did change the density
    # the sample itself edited through .data: rescored too
    y = d.rsample((8,))
    d.log_prob(y)
    y.data.add_(0.5)
    torch.testing.assert_close(d.log_prob(y), flow.log_prob(y.detach().clone()))


def test_own_sample_score_needs_no_inverse_until_something_changes(monkeypatch):
    torch.manual_seed(0)
    flow = flows.iaf(3, 2, (16,))
    calls = []
    inverse = InverseAutoregressive.inverse_and_log_det

    def counted(self, y, context=None):
        calls.append(1)
        return inverse(self, y, context)

    monkeypatch.setattr(InverseAutoregressive, "inverse_and_log_det", counted)
    d = flow()
    x = d.rsample((8,))
    d.log_prob(x).sum().backward()
    assert not calls
    perturb_one(flow)
    d.log_prob(x)
    assert len(calls) == 2  # both layers, for the now-stale sample


@pytest.mark.parametrize("kind, layer", [("iaf", InverseAutoregressive), ("planar", Planar)])
def test_amortized_own_sample_score_never_outlives_an_edit_through_data(kind, layer):
    torch.manual_seed(0)
    posterior = AmortizedFlow(3, 2, flow=kind, num_transforms=2, hidden_dims=(8,))
    loc, scale, context = torch.zeros(4, 3), torch.ones(4, 3), torch.randn(4, 2)
    d = posterior(loc, scale, context)
    z, log_q = d.rsample_and_log_prob()
    assert d.log_prob(z) is log_q
    perturb_one(posterior)
    fresh = posterior(loc, scale, context).log_prob(z.detach().clone())
    torch.testing.assert_close(d.log_prob(z), fresh)
    assert (fresh - log_q).abs().max() > 1e-5
    z, log_q = d.rsample_and_log_prob()
    context.data.mul_(2.0)  # the encoder output edited behind the counters
    assert d.log_prob(z) is not log_q


OUTLIER_BUILDERS = {
    "realnvp": lambda: flows.realnvp(4),
    "maf": lambda: flows.maf(4),
    "maf-exp": lambda: flows.maf(4, scale="exp"),
    "iaf": lambda: flows.iaf(4),
    "iaf-exp": lambda: flows.iaf(4, scale="exp"),
}


@pytest.mark.parametrize("name", list(OUTLIER_BUILDERS))
def test_far_outliers_get_a_finite_value_with_finite_gradients_or_a_clear_error(name):
    """Trained-looking weights (every parameter ~ N(0, 0.3^2)) and float32 inputs ~ 1e3: each
    row is scored alone and gets a finite log density or a ValueError, never NaN or -inf; its
    gradients are finite unless the log density is within a few decades of the float32 range
    (below -1e30 the true gradients reach ~1e38, checked against float64)."""
    scored = errors = 0
    for seed in range(3):
        torch.manual_seed(seed)
        flow = OUTLIER_BUILDERS[name]()
        with torch.no_grad():
            for p in flow.parameters():
                nn.init.normal_(p, std=0.3)
        g = torch.Generator().manual_seed(seed)
        x = 1e3 * torch.randn(6, 4, generator=g)
        for row in x:
            row = row.clone().requires_grad_()
            flow.zero_grad()
            try:
                log_q = flow.log_prob(row)
            except ValueError as error:
                assert "lie too far out for torch.float32" in str(error)
                errors += 1
                continue
            assert torch.isfinite(log_q), (seed, log_q)
            scored += 1
            if log_q > -1e30:
                log_q.backward()
                grads = [row.grad] + [p.grad for p in flow.parameters() if p.grad is not None]
                assert all(bool(torch.isfinite(g).all()) for g in grads), (seed, log_q)
    assert scored + errors == 18
    # the softplus MAF's scale grows with its input: at 1e3 every row overflows, here
    assert scored > 0 or name == "maf"


def test_an_overflowing_outlier_names_its_rows_and_float64_scores_it():
    torch.manual_seed(0)
    flow = flows.maf(4)
    with torch.no_grad():
        for p in flow.parameters():
            nn.init.normal_(p, std=0.3)
    x = torch.randn(5, 4)
    x[3] = 1e3
    with pytest.raises(ValueError, match=r"1 row\(s\) of x \(flat row indices \[3\], largest "):
        flow.log_prob(x)
    log_q = flow.double().log_prob(x.double())
    assert torch.isfinite(log_q).all() and log_q[3] < -1e30


def test_a_bounded_base_keeps_its_zero_density():
    class UniformBase(nn.Module):
        event_shape = torch.Size([2])

        def forward(self, context=None):
            uniform = torch.distributions.Uniform(-torch.ones(2), torch.ones(2), False)
            return torch.distributions.Independent(uniform, 1)

    flow = Flow([flows.realnvp(2, 1, (4,)).transforms[0]], base=UniformBase())
    log_q = flow.log_prob(torch.tensor([[0.0, 0.0], [50.0, 50.0]]))
    assert torch.isfinite(log_q[0]) and log_q[1] == -float("inf")
