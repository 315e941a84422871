"""The cuts of AutoFlow's SVI step (issue 18) change no number: the MADE's ReLU on a single draw
gives the in-place one's values and gradients without a ``CopySlices`` node, ``FlowDistribution``
takes the shapes ``TransformedDistribution`` would compute, and AutoFlow's parameters are all in
Pyro's param store."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_flows import flows
from pyro_flows.distribution import FlowDistribution
from pyro_flows.flow import Flow
from pyro_flows.infer import AutoFlow
from pyro_flows.nn.made import MADE
from pyro_flows.transforms.base import FlowTransform
from pyro_flows.transforms.rescale import expand_log_det


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_made_on_a_single_draw_has_no_copy_slices_and_the_batched_numbers(seed):
    torch.manual_seed(seed)
    made = MADE(4, (8, 8), param_dims=(1, 1))
    with torch.no_grad():
        made.layers[-1].weight.normal_()  # outputs that depend on the input
    x = torch.randn(4, requires_grad=True)
    shift, scale = made(x)
    seen, names = set(), set()
    stack = [(shift + scale).sum().grad_fn]
    while stack:
        f = stack.pop()
        if f is not None and f not in seen:
            seen.add(f)
            names.add(type(f).__name__)
            stack.extend(g for g, _ in f.next_functions)
    assert "CopySlices" not in names and "ReluBackward0" in names
    (grad,) = torch.autograd.grad((shift * scale).sum(), x)
    xb = x.detach()[None].requires_grad_(True)
    shift_b, scale_b = made(xb)
    (grad_b,) = torch.autograd.grad((shift_b * scale_b).sum(), xb)
    torch.testing.assert_close(shift, shift_b[0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, grad_b[0], rtol=1e-5, atol=1e-7)


# -- FlowDistribution's shapes --------------------------------------------------------------------
class Doubling(FlowTransform):
    """A layer whose event grows (``forward_shape`` overridden): not a shape-keeping one."""

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        return shape[:-1] + (2 * shape[-1],)

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        return shape[:-1] + (shape[-1] // 2,)


@pytest.mark.parametrize("batch", [None, (3,), (2, 5)])
@pytest.mark.parametrize("build", ["iaf", "realnvp", "nsf"])
def test_flow_distribution_has_the_transformed_distribution_shapes(build, batch):
    flow = getattr(flows, build)(3, num_transforms=2, hidden_dims=(8,))
    d = FlowDistribution(flow, None, None if batch is None else torch.Size(batch))
    reference = dist.TransformedDistribution(d.base_dist, list(flow.transforms))
    assert (d.batch_shape, d.event_shape) == (reference.batch_shape, reference.event_shape)
    assert d.base_dist is reference.base_dist and d.transforms == list(flow.transforms)
    assert d.rsample((4,)).shape == reference.rsample((4,)).shape


def test_flow_distribution_defers_to_torch_for_other_transforms():
    from pyro_flows.distribution import _keep_shapes

    assert not _keep_shapes([Doubling(2)], 1)
    assert not _keep_shapes([dist.transforms.ExpTransform()], 1)  # event dim 0
    assert _keep_shapes(list(flows.iaf(2, num_transforms=2).transforms), 1)


# -- expand_log_det -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3,), (4, 3), (2, 4, 3)])
def test_expand_log_det_is_a_fresh_tensor_of_the_batch_shape(shape):
    value = torch.randn(()).exp()
    out = expand_log_det(value, torch.zeros(shape))
    assert out.shape == shape[:-1] and bool((out == value).all())
    out.add_(1.0)  # in place: a fresh, writable tensor
    assert out.stride() == torch.empty(shape[:-1]).stride()


# -- AutoFlow's SVI: the same numbers -------------------------------------------------------------
def _logistic(seed):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(60, 3, generator=gen)
    y = torch.bernoulli(torch.sigmoid(X @ torch.randn(3, generator=gen)), generator=gen)

    def model(X, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=(X * w.unsqueeze(-2)).sum(-1)), obs=y)

    return model, (X, y)


def test_the_store_holds_every_parameter_of_the_flow():
    model, args = _logistic(0)
    pyro.clear_param_store()
    guide = AutoFlow(model, num_transforms=1, hidden_dims=(4,), gaussian_start=False)
    guide(*args)
    assert isinstance(guide.flow, Flow)
    assert set(pyro.get_param_store().keys()) == {
        f"AutoFlow.flow$$${n}" for n, _ in guide.flow.named_parameters()
    }
