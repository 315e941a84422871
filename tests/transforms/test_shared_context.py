"""Conditional layers read a context with its own batch shape: ``K`` draws per context row (the
IWAE evaluation of an amortized posterior) cost the conditioner ``N`` rows, not ``K * N``, and
give exactly what an explicitly expanded context gives."""

from __future__ import annotations

import pytest
import torch

from pyro_flows import flows
from pyro_flows.transforms import (
    InverseAutoregressive,
    InverseSplineAutoregressive,
    MaskedAutoregressive,
    Planar,
    Radial,
    SplineAutoregressive,
)

D, C, K, N = 3, 2, 5, 4

LAYERS = {
    "planar": lambda: Planar(D, context_dim=C),
    "radial": lambda: Radial(D, context_dim=C),
    "iaf": lambda: InverseAutoregressive(D, (8,), context_dim=C),
    "maf-exp": lambda: MaskedAutoregressive(D, (8,), context_dim=C, scale="exp"),
    "nsf-ar": lambda: SplineAutoregressive(D, (8,), context_dim=C),
    "inverse-nsf-ar": lambda: InverseSplineAutoregressive(D, (8,), context_dim=C),
}


def _randomise(layer: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_a_shared_context_equals_an_expanded_one(name):
    torch.manual_seed(0)
    layer = LAYERS[name]()
    _randomise(layer)
    x = torch.randn(K, N, D)
    context = torch.randn(N, C)
    expanded = context.expand(K, N, C)
    for method in ("forward_and_log_det", "inverse_and_log_det"):
        y, log_det = getattr(layer, method)(x, context)
        y_ref, log_det_ref = getattr(layer, method)(x, expanded)
        assert y.shape == (K, N, D) and log_det.shape == (K, N), (method, y.shape)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(log_det, log_det_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["planar", "radial"])
def test_context_only_conditioners_run_once_per_context_row(name):
    layer = LAYERS[name]()
    rows = []
    layer.net.register_forward_pre_hook(lambda module, args: rows.append(args[1].shape[:-1]))
    layer.forward_and_log_det(torch.randn(K, N, D), torch.randn(N, C))
    assert rows == [torch.Size([N])]


def test_gradients_reach_the_conditioner_through_a_shared_context():
    torch.manual_seed(0)
    flow = flows.iaf(D, num_transforms=2, hidden_dims=(8,), context_dim=C)
    context = torch.randn(N, C, requires_grad=True)
    _, log_q = flow.rsample_and_log_prob((K,), context=context)
    log_q.sum().backward()
    assert context.grad is not None and bool(torch.isfinite(context.grad).all())
    assert float(context.grad.abs().sum()) > 0


def test_a_context_that_does_not_broadcast_is_a_clear_error():
    layer = LAYERS["iaf"]()
    with pytest.raises(ValueError, match="does not broadcast"):
        layer.forward_and_log_det(torch.randn(K, N, D), torch.randn(N + 1, C))
