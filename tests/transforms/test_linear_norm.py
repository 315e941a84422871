"""Family tests: InvertibleLinear (LU/QR), Permute/Reverse, ActNorm, BatchNorm, Rescale.

The shared harness (test_harness.py) checks round trips, Jacobians, gradients, saving; these tests
check what is specific to each layer: the factorisations, the data-dependent initialisation and
the batch statistics.
"""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_flows.transforms.linear import InvertibleLinear, householder_product
from pyro_flows.transforms.normalization import ActNorm, BatchNorm
from pyro_flows.transforms.permutation import Permute, Reverse
from pyro_flows.transforms.rescale import Rescale

DT = torch.float64


def perturbed(module: nn.Module, scale: float = 0.3, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    module = module.to(DT)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=DT))
    return module


# -- InvertibleLinear -----------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 2, 5])
def test_lu_factors_reconstruct_the_weight(dim):
    torch.manual_seed(0)
    t = InvertibleLinear(dim)
    # Glow's initialisation: W starts at a random orthogonal matrix
    w0 = t.weight.detach()
    assert torch.allclose(w0 @ w0.T, torch.eye(dim), atol=1e-5)
    t = perturbed(t)
    p, lower, upper = t.lu_factors()
    assert torch.equal(p.sum(0), torch.ones(dim, dtype=DT))
    assert torch.equal(p.sum(1), torch.ones(dim, dtype=DT))
    assert torch.equal(lower.diagonal(), torch.ones(dim, dtype=DT))
    assert torch.equal(lower, lower.tril()) and torch.equal(upper, upper.triu())
    w = t.weight
    assert torch.allclose(p @ lower @ upper, w, atol=1e-12)
    sign, logabsdet = torch.linalg.slogdet(w)
    x = torch.randn(7, dim, dtype=DT)
    y, log_det = t.forward_and_log_det(x)
    assert torch.allclose(y, x @ w.T, atol=1e-12)
    assert torch.allclose(log_det, logabsdet.expand(7), atol=1e-10)
    assert torch.allclose(t.log_abs_det_weight(), upper.diagonal().abs().log().sum())


def test_lu_init_is_deterministic_given_the_rng():
    torch.manual_seed(7)
    a = InvertibleLinear(4).weight
    torch.manual_seed(7)
    b = InvertibleLinear(4).weight
    assert torch.equal(a, b)


@pytest.mark.parametrize("dim", [1, 2, 4])
def test_qr_factors_reconstruct_the_weight(dim):
    torch.manual_seed(0)
    t = perturbed(InvertibleLinear(dim, parametrization="qr"))
    q, r = t.qr_factors()
    assert torch.allclose(q @ q.T, torch.eye(dim, dtype=DT), atol=1e-12)
    assert torch.equal(r, r.triu()) and (r.diagonal() > 0).all()
    w = t.weight
    assert torch.allclose(q @ r, w, atol=1e-12)
    x = torch.randn(7, dim, dtype=DT)
    y, log_det = t.forward_and_log_det(x)
    assert torch.allclose(y, x @ w.T, atol=1e-12)
    assert torch.allclose(log_det, torch.linalg.slogdet(w)[1].expand(7), atol=1e-10)
    assert torch.allclose(log_det, r.diagonal().log().sum().expand(7), atol=1e-12)


def test_householder_product_matches_explicit_reflections():
    v = torch.randn(3, 3, dtype=DT)
    eye = torch.eye(3, dtype=DT)
    h = [eye - 2 * torch.outer(u, u) / (u @ u) for u in v]
    assert torch.allclose(householder_product(v), h[0] @ h[1] @ h[2], atol=1e-12)


@pytest.mark.parametrize("parametrization", ["lu", "qr"])
def test_linear_inverse_on_a_large_batch_matches_a_dense_solve(parametrization):
    torch.manual_seed(0)
    t = perturbed(InvertibleLinear(6, parametrization=parametrization, bias=True))
    y = torch.randn(4096, 6, dtype=DT)
    x, log_det = t.inverse_and_log_det(y)
    expected = torch.linalg.solve(t.weight, (y - t.bias).T).T
    assert torch.allclose(x, expected, atol=1e-10)
    assert torch.allclose(log_det, -torch.linalg.slogdet(t.weight)[1].expand(4096), atol=1e-10)


def test_linear_rejects_unknown_parametrization():
    with pytest.raises(ValueError, match=r"'lu'.*'qr'.*got 'svd'"):
        InvertibleLinear(3, parametrization="svd")


# -- Permute / Reverse ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, shown",
    [
        ([0, 0, 1], r"\[0, 0, 1\]"),
        ([1, 2, 3], r"\[1, 2, 3\]"),
        ([0, -1], r"\[0, -1\]"),
        ([0.0, 1.0], r"float"),
        ([[0, 1]], r"\[\[0, 1\]\]"),
        ([], r"\[\]"),
    ],
)
def test_permute_rejects_non_permutations(bad, shown):
    with pytest.raises(ValueError, match=r"permutation.*got.*" + shown):
        Permute(bad)


def test_permute_semantics_and_buffers():
    t = Permute(torch.tensor([2, 0, 1]))
    x = torch.tensor([[10.0, 11.0, 12.0]])
    y, log_det = t.forward_and_log_det(x)
    assert torch.equal(y, torch.tensor([[12.0, 10.0, 11.0]]))  # y_i = x_{perm[i]}
    assert torch.equal(log_det, torch.zeros(1))
    assert torch.equal(t.inverse_and_log_det(y)[0], x)
    state = t.state_dict()
    assert set(state) == {"permutation", "inverse_permutation"}
    other = Permute([0, 1, 2])
    other.load_state_dict(state)
    assert torch.equal(other.forward_and_log_det(x)[0], y)


def test_reverse_is_its_own_inverse():
    t = Reverse(4)
    assert isinstance(t, Permute)
    x = torch.randn(3, 4)
    y = t.forward_and_log_det(x)[0]
    assert torch.equal(y, x.flip(-1))
    assert torch.equal(t.forward_and_log_det(y)[0], x)
    assert torch.equal(Reverse(1).forward_and_log_det(x[:, :1])[0], x[:, :1])


# -- ActNorm --------------------------------------------------------------------------------------
def _data(n: int = 200, dim: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([0.1, 2.0, 30.0][:dim], dtype=DT)
    return torch.randn(n, dim, generator=g, dtype=DT) * scales + torch.arange(dim, dtype=DT) - 5


def test_actnorm_first_inverse_standardises_the_batch():
    t = ActNorm(3).to(DT)
    assert not bool(t.initialized)
    data = _data().reshape(20, 10, 3)  # statistics over all batch dims
    z, log_det = t.inverse_and_log_det(data)
    assert bool(t.initialized)
    flat = z.reshape(-1, 3)
    assert torch.allclose(flat.mean(0), torch.zeros(3, dtype=DT), atol=1e-10)
    assert torch.allclose(flat.std(0, unbiased=False), torch.ones(3, dtype=DT), atol=1e-10)
    expected = -data.reshape(-1, 3).std(0, unbiased=False).log().sum()
    assert log_det.shape == (20, 10) and torch.allclose(log_det, expected.expand(20, 10))


def test_actnorm_does_not_reinitialise():
    t = ActNorm(3).to(DT)
    t.inverse_and_log_det(_data(seed=0))
    state = {k: v.clone() for k, v in t.state_dict().items()}
    t.inverse_and_log_det(_data(seed=1) * 3 + 7)  # second call: parameters unchanged
    for k, v in t.state_dict().items():
        assert torch.equal(v, state[k]), k
    fresh = ActNorm(3).to(DT)
    fresh.load_state_dict(state)
    assert bool(fresh.initialized)
    other = _data(seed=2) * 3 + 7
    assert torch.equal(fresh.inverse_and_log_det(other)[0], t.inverse_and_log_det(other)[0])
    assert torch.equal(fresh.raw_scale, state["raw_scale"])


def test_actnorm_initialises_only_on_training_inverse_with_two_rows():
    t = ActNorm(3).to(DT)
    t.forward_and_log_det(_data())
    t.inverse_and_log_det(_data()[:1])
    t.eval()
    t.inverse_and_log_det(_data())
    assert not bool(t.initialized)
    assert torch.allclose(t.scale, torch.ones(3, dtype=DT)) and torch.equal(t.bias, torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        t.initialize(_data()[:1])


def test_actnorm_constant_data_is_guarded():
    t = ActNorm(2).to(DT)
    z, log_det = t.inverse_and_log_det(torch.full((10, 2), 3.0, dtype=DT))
    assert torch.isfinite(z).all() and torch.isfinite(log_det).all()
    assert (t.scale >= 0.99e-6).all()


# -- BatchNorm ------------------------------------------------------------------------------------
def test_batchnorm_running_stats_converge_to_the_data_moments():
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    std = torch.tensor([0.5, 3.0, 1.0], dtype=DT)
    t = BatchNorm(3, momentum=0.1).to(DT)
    for _ in range(300):
        t.inverse_and_log_det(mean + std * torch.randn(256, 3, dtype=DT))
    assert torch.allclose(t.running_mean, mean, rtol=0.05, atol=0.05)
    assert torch.allclose(t.running_var.sqrt(), std, rtol=0.05)


def test_batchnorm_matches_nn_batchnorm_in_training_mode():
    t = BatchNorm(3, momentum=0.3).to(DT)
    ref = nn.BatchNorm1d(3, momentum=0.3, affine=False).to(DT)
    for seed in range(3):
        y = _data(n=50, seed=seed)
        x, _ = t.inverse_and_log_det(y)
        assert torch.allclose(x, ref(y), atol=1e-12)  # gamma = 1, beta = 0 at init
    assert torch.allclose(t.running_mean, ref.running_mean, atol=1e-12)
    assert torch.allclose(t.running_var, ref.running_var, atol=1e-12)  # unbiased update


def test_batchnorm_train_log_det_formula():
    t = perturbed(BatchNorm(3))
    y = _data(n=40).reshape(4, 10, 3)
    x, log_det = t.inverse_and_log_det(y)
    flat = y.reshape(-1, 3)
    var = flat.var(0, unbiased=False)
    expected = (t.gamma.log() - 0.5 * torch.log(var + t.eps)).sum()
    assert log_det.shape == (4, 10) and torch.allclose(log_det, expected.expand(4, 10))
    x_expected = (y - flat.mean(0)) / torch.sqrt(var + t.eps) * t.gamma + t.beta
    assert torch.allclose(x, x_expected, atol=1e-12)
    # Pyro's TransformedDistribution.log_prob path agrees in training mode
    base = dist.Normal(torch.zeros(3, dtype=DT), 1.0).to_event(1)
    scored = base.log_prob(x) + log_det
    assert torch.allclose(dist.TransformedDistribution(base, [t]).log_prob(y), scored)


def test_batchnorm_eval_inverse_is_exact_and_forward_uses_running_stats():
    torch.manual_seed(0)
    t = perturbed(BatchNorm(3))
    for seed in range(4):
        t.inverse_and_log_det(_data(n=64, seed=seed))
    running = t.running_mean.clone(), t.running_var.clone()
    x = torch.randn(9, 3, dtype=DT)
    y_train, ld_train = t.forward_and_log_det(x)  # training mode: running stats, no update
    assert torch.equal(t.running_mean, running[0]) and torch.equal(t.running_var, running[1])
    t.eval()
    y, ld = t.forward_and_log_det(x)
    assert torch.equal(y, y_train) and torch.equal(ld, ld_train)
    x_back, ld_back = t.inverse_and_log_det(y)
    assert torch.allclose(x_back, x, atol=1e-13, rtol=0) and torch.allclose(ld_back, -ld)
    assert torch.allclose(t.inverse_and_log_det(y[:1])[0], x[:1], atol=1e-13)  # one row is fine


def test_batchnorm_training_inverse_needs_two_rows():
    t = BatchNorm(3)
    with pytest.raises(ValueError, match="at least 2 rows"):
        t.inverse_and_log_det(torch.randn(1, 3))
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(3, momentum=0.0)
    with pytest.raises(ValueError, match="eps"):
        BatchNorm(3, eps=0.0)


# -- Rescale --------------------------------------------------------------------------------------
def test_rescale_is_identity_at_init_and_scales_after():
    t = Rescale(3).to(DT)
    x = torch.randn(2, 5, 3, dtype=DT)
    y, log_det = t.forward_and_log_det(x)
    assert torch.allclose(y, x) and torch.allclose(log_det, torch.zeros(2, 5, dtype=DT))
    t = perturbed(t)
    y, log_det = t.forward_and_log_det(x)
    assert torch.allclose(y, x * t.scale)
    assert log_det.shape == (2, 5)
    assert torch.allclose(log_det, t.scale.log().sum().expand(2, 5))
    x_back, log_det_inv = t.inverse_and_log_det(y)
    assert torch.allclose(x_back, x) and torch.allclose(log_det_inv, -log_det)


def test_identity_sets_w_to_the_identity_and_training_moves_it():
    torch.manual_seed(0)
    t = InvertibleLinear(5).identity_()
    torch.testing.assert_close(t.weight, torch.eye(5))
    x = torch.randn(4, 5)
    y, log_det = t.forward_and_log_det(x)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(log_det, torch.zeros(4))
    loss = ((t(x) - 2.0 * x) ** 2).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (t.raw_diag,))
    with pytest.raises(ValueError, match="identity_\\(\\) needs parametrization='lu', not 'qr'"):
        InvertibleLinear(5, "qr").identity_()
