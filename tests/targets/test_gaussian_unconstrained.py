"""The ill-conditioned Gaussian against torch's MultivariateNormal, its exact samples, and
UnconstrainedTarget (box targets pushed to R^D)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, biject_to, constraints

from pyro_flows.targets.energy import U1, U2, U4
from pyro_flows.targets.gaussian import IllConditionedGaussian, random_rotation
from pyro_flows.targets.unconstrained import UnconstrainedTarget

from ._stats import Z_TOL, assert_mean_std, default_dtype


@pytest.fixture(scope="module")
def gaussian64() -> IllConditionedGaussian:
    with default_dtype(torch.float64):
        return IllConditionedGaussian()


def test_gaussian_spectrum_and_covariance(gaussian64):
    t = gaussian64
    lam = t.eigenvalues
    assert lam[0].item() == pytest.approx(1e-2) and lam[-1].item() == pytest.approx(1e2)
    ratios = lam[1:] / lam[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 1e4 ** (1 / 99)))  # log-spaced
    assert torch.linalg.cond(t.covariance).item() == pytest.approx(1e4, rel=1e-6)
    torch.testing.assert_close(t.rotation.T @ t.rotation, torch.eye(100, dtype=torch.float64))
    torch.testing.assert_close(t.std, torch.diagonal(t.covariance).sqrt())
    # a rotation keeps the trace: the marginal variances average the eigenvalues, and the
    # random one mixes the scales so that no coordinate keeps an extreme variance
    assert (t.std**2).mean().item() == pytest.approx(lam.mean().item(), rel=1e-10)
    assert t.std.min() > 10 * lam[0].sqrt() and t.std.max() < 0.5 * lam[-1].sqrt()


def test_gaussian_log_prob_matches_multivariate_normal(gaussian64):
    t = gaussian64
    mvn = MultivariateNormal(torch.zeros(100, dtype=torch.float64), covariance_matrix=t.covariance)
    torch.manual_seed(0)
    z = torch.randn(20, 100, dtype=torch.float64) * 2
    torch.testing.assert_close(t.log_prob(z), mvn.log_prob(z), rtol=1e-10, atol=1e-8)
    assert t.log_Z == 0.0


def test_gaussian_exact_samples_whiten_to_identity(gaussian64):
    t = gaussian64
    torch.manual_seed(1)
    x = t.sample((20000,))
    assert_mean_std(x, t.mean, t.std)
    white = (x @ t.rotation) / t.eigenvalues.sqrt()
    assert_mean_std(white, torch.zeros(100), torch.ones(100))
    # and the whitened coordinates are uncorrelated (off-diagonal SE 1/sqrt(n))
    corr = (white.T @ white) / x.shape[0] - torch.eye(100, dtype=torch.float64)
    assert corr.abs().max() < Z_TOL / math.sqrt(x.shape[0]) * 1.3


def test_gaussian_options():
    diag = IllConditionedGaussian(dim=5, condition_number=100.0, rotate=False)
    torch.testing.assert_close(diag.covariance, torch.diag(diag.eigenvalues))
    torch.testing.assert_close(diag.std**2, torch.logspace(-1, 1, 5))
    assert not torch.equal(random_rotation(4, seed=0), random_rotation(4, seed=1))
    torch.testing.assert_close(random_rotation(4, seed=2), random_rotation(4, seed=2))
    assert IllConditionedGaussian(dim=1).std.tolist() == [1.0]
    with pytest.raises(ValueError, match="condition_number must be a finite float >= 1, got 0.5"):
        IllConditionedGaussian(condition_number=0.5)
    with pytest.raises(TypeError, match="rotate must be a bool"):
        IllConditionedGaussian(rotate="yes")


# -- UnconstrainedTarget ------------------------------------------------------------------------
def test_unconstrained_of_a_real_target_is_itself():
    t = U1()
    assert t.unconstrained() is t


def test_unconstrained_box_density_is_pushed_with_its_jacobian():
    box = U4()
    free = box.unconstrained()
    assert isinstance(free, UnconstrainedTarget) and free.support is constraints.real_vector
    assert free.log_Z == box.log_Z and free.name == "u4-unconstrained"
    assert free.mean is None and free.bounds is None
    torch.manual_seed(2)
    u = torch.randn(100, 2, dtype=torch.float64) * 3
    z = 8 * torch.sigmoid(u) - 4
    logsig = torch.nn.functional.logsigmoid
    log_jac = math.log(8) + logsig(u) + logsig(-u)
    torch.testing.assert_close(free.log_prob(u), box.log_prob(z) + log_jac.sum(-1))
    torch.testing.assert_close(free.to_support(u), z)
    # far out in u, float32 still gives a finite density and gradient
    far = torch.tensor([[60.0, -60.0]], requires_grad=True)
    lp = free.log_prob(far)
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(far.grad).all()


def test_unconstrained_log_z_by_quadrature():
    """1-D check: the z1 marginal of U2's box density, pushed to R, still integrates to Z."""
    free = U2().unconstrained()
    u1 = torch.linspace(-40, 40, 2001, dtype=torch.float64)
    z2 = torch.linspace(-4, 4, 401, dtype=torch.float64)
    # integrate z2 in the box coordinates, u1 in the unconstrained one
    uu, zz = torch.meshgrid(u1, z2, indexing="ij")
    u2 = biject_to(constraints.interval(-4.0, 4.0)).inv(zz.clamp(-4 + 1e-12, 4 - 1e-12))
    logsig = torch.nn.functional.logsigmoid
    log_dz2 = -(math.log(8) + logsig(u2) + logsig(-u2))
    lp = free.log_prob(torch.stack([uu, u2], -1)) + log_dz2
    inner = torch.trapezoid(torch.exp(lp), z2, dim=-1)
    assert math.log(torch.trapezoid(inner, u1).item()) == pytest.approx(free.log_Z, abs=1e-5)


def test_unconstrained_samples_map_back_to_the_target():
    torch.manual_seed(3)
    box = U2()
    free = box.unconstrained()
    u = free.sample((20000,))
    assert torch.isfinite(u).all() and torch.isfinite(free.log_prob(u)).all()
    assert_mean_std(free.to_support(u.double()), box.mean, box.std)
    assert torch.isfinite(free.potential_fn(free.initial_params()))


def test_unconstrained_errors():
    with pytest.raises(TypeError, match="target must be a Target"):
        UnconstrainedTarget("u2")
