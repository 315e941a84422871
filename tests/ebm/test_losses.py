"""Known answers of each EBM loss on the Gaussian energy family and exact identities."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_flows import flows
from pyro_flows.ebm.adversarial import Adversarial, sampler_bound
from pyro_flows.ebm.contrastive_divergence import ReplayBuffer, cd_loss, langevin_samples
from pyro_flows.ebm.energy import EnergyModel, GaussianEnergy, grid_log_Z
from pyro_flows.ebm.flow_contrastive import FlowContrastive, fce_value
from pyro_flows.ebm.nce import NCE, gaussian_noise, nce_loss
from pyro_flows.ebm.score_matching import score_matching_loss, sliced_score_matching_loss

torch.set_num_threads(1)


def gaussian_data(n: int = 4000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([1.0, -0.5]) + torch.tensor([0.7, 1.3]) * torch.randn(n, 2, generator=g)


def at_sample_moments(x: torch.Tensor) -> GaussianEnergy:
    """The Gaussian energy at the data's (biased) sample mean and sd: the exact minimiser of the
    empirical score matching loss."""
    e = GaussianEnergy(x.shape[1]).to(x.dtype)
    with torch.no_grad():
        e.loc.copy_(x.mean(0))
        e.log_scale.copy_(x.var(0, unbiased=False).sqrt().log())
    return e


# ------------------------------------------------------------------------------ energies
def test_gaussian_energy_normalises_to_its_log_Z_on_a_grid():
    e = GaussianEnergy(2, loc=0.3, scale=0.8)
    log_Z, axis, log_p = grid_log_Z(e, (-6.0, 6.0), 300)
    assert log_Z == pytest.approx(e.log_Z, abs=1e-6)
    h = float(axis[1] - axis[0])
    assert float(log_p.exp().sum()) * h * h == pytest.approx(1.0, abs=1e-6)


def test_energy_model_with_a_zero_network_is_its_gaussian_prior():
    energy = EnergyModel(2, hidden_dims=(8,), prior_scale=1.5)
    with torch.no_grad():
        energy.net[-1].weight.zero_()
        energy.net[-1].bias.zero_()
    log_Z, _, _ = energy.log_Z_grid((-10.0, 10.0), 200)
    assert log_Z == pytest.approx(math.log(2 * math.pi * 1.5**2), abs=1e-6)
    x = torch.randn(7, 2)
    assert torch.allclose(energy.score(x), -x / 1.5**2, atol=1e-6)


def test_energy_input_checks():
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\).*got shape \(3, 3\)"):
        EnergyModel(2)(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        GaussianEnergy(2)([[0.0, 0.0]])
    with pytest.raises(ValueError, match="prior_scale"):
        EnergyModel(2, prior_scale=-1.0)
    with pytest.raises(ValueError, match="2-D energy"):
        EnergyModel(3).log_Z_grid()
    with pytest.raises(ValueError, match="bounds"):
        grid_log_Z(GaussianEnergy(2), (1.0, -1.0))


# ------------------------------------------------------------------------ score matching
def test_exact_score_matching_matches_the_closed_form_and_is_stationary_at_the_truth():
    x = gaussian_data(2000).double()
    e = at_sample_moments(x)
    loss = score_matching_loss(e, x)
    s2 = e.scale**2
    closed = (((x - e.loc) ** 2).mean(0) / (2 * s2**2) - 1 / s2).sum()
    assert loss.item() == pytest.approx(closed.item(), rel=1e-10)
    grads = torch.autograd.grad(loss, [e.loc, e.log_scale])
    assert all(float(g.abs().max()) < 1e-8 for g in grads)
    # and it is a minimum: any perturbation raises the loss
    with torch.no_grad():
        e.loc.add_(0.1)
    assert score_matching_loss(e, x).item() > loss.item()


def test_hessian_trace_equals_autograd_hessian():
    torch.manual_seed(0)
    energy = EnergyModel(3, hidden_dims=(16,)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    traces = []
    for row in x:
        h = torch.autograd.functional.hessian(lambda z: energy(z[None])[0], row)
        traces.append(-torch.trace(h))
    s = energy.score(x)
    expected = (torch.stack(traces) + 0.5 * (s**2).sum(-1)).mean()
    assert score_matching_loss(energy, x).item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.parametrize("projection", ["gaussian", "rademacher"])
@pytest.mark.parametrize("variance_reduction", [False, True])
def test_sliced_agrees_with_exact_score_matching_in_expectation(projection, variance_reduction):
    torch.manual_seed(1)
    energy = EnergyModel(2, hidden_dims=(16,)).double()
    x = torch.randn(64, 2, dtype=torch.float64)
    exact = float(score_matching_loss(energy, x))
    g = torch.Generator().manual_seed(0)
    values = torch.stack(
        [
            sliced_score_matching_loss(
                energy, x, 1, projection, variance_reduction, generator=g
            ).detach()
            for _ in range(400)
        ]
    )
    se = float(values.std()) / math.sqrt(values.numel())
    assert abs(float(values.mean()) - exact) < 4 * se + 1e-9
    # the gradients agree too (their expectations are equal)
    params = list(energy.parameters())[:-1]  # the last bias does not move the score
    e_grad = torch.autograd.grad(score_matching_loss(energy, x), params)
    s_loss = sliced_score_matching_loss(energy, x, 400, projection, variance_reduction, g)
    s_grad = torch.autograd.grad(s_loss, params)
    num = sum(float(((a - b) ** 2).sum()) for a, b in zip(e_grad, s_grad, strict=True))
    den = sum(float((a**2).sum()) for a in e_grad)
    assert num / den < 0.05


def test_sliced_score_matching_input_checks():
    e = GaussianEnergy(2)
    with pytest.raises(ValueError, match="projection"):
        sliced_score_matching_loss(e, torch.zeros(3, 2), projection="uniform")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        score_matching_loss(e, torch.zeros(2))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_score_matching_loss(e, torch.zeros(3, 2), n_projections=0)


# ------------------------------------------------------------------- contrastive divergence
def test_cd_gradient_vanishes_at_the_truth_with_exact_model_samples():
    truth = GaussianEnergy(2, loc=1.0, scale=0.7)
    g = torch.Generator().manual_seed(0)
    data = 1.0 + 0.7 * torch.randn(200000, 2, generator=g)
    negatives = 1.0 + 0.7 * torch.randn(200000, 2, generator=g)
    grads = torch.autograd.grad(cd_loss(truth, data, negatives), [truth.loc, truth.log_scale])
    assert all(float(gr.abs().max()) < 0.02 for gr in grads)
    # away from the truth the gradient points back towards it
    wide = GaussianEnergy(2, loc=1.0, scale=2.0)
    (g_scale,) = torch.autograd.grad(cd_loss(wide, data, 1.0 + 2.0 * negatives), [wide.log_scale])
    assert bool((g_scale > 0.5).all())  # descending shrinks the too-wide scale


def test_langevin_leaves_the_target_invariant_and_moves_towards_it():
    e = GaussianEnergy(1, loc=2.0, scale=0.5)
    g = torch.Generator().manual_seed(0)
    x0 = 2.0 + 0.5 * torch.randn(20000, 1, generator=g)
    x = langevin_samples(e, x0, steps=50, step_size=0.005, generator=g)
    assert float(x.mean()) == pytest.approx(2.0, abs=0.02)
    assert float(x.std()) == pytest.approx(0.5, abs=0.02)
    far = langevin_samples(e, torch.full((2000, 1), -3.0), steps=300, step_size=0.02, generator=g)
    assert float(far.mean()) == pytest.approx(2.0, abs=0.05)
    with pytest.raises(ValueError, match="step_size"):
        langevin_samples(e, x0, step_size=0.0)


def test_replay_buffer_reinitialises_the_requested_fraction():
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(1000, torch.zeros(2), torch.ones(2), reinit=0.25, generator=g)
    buf.samples.fill_(5.0)
    x, idx = buf.draw(4000, generator=g)
    fresh = (x < 5.0).all(-1).float().mean()
    assert float(fresh) == pytest.approx(0.25, abs=0.03)
    with pytest.raises(ValueError, match="reinit"):
        ReplayBuffer(10, torch.zeros(2), torch.ones(2), reinit=1.5)


# ----------------------------------------------------------------------------------- NCE
def test_nce_with_the_true_model_recovers_log_Z():
    """Energy frozen at the truth, only c learned: c converges to log Z (noise ratio nu = 2)."""
    data = gaussian_data(4000)
    truth = GaussianEnergy(2)
    with torch.no_grad():
        truth.loc.copy_(torch.tensor([1.0, -0.5]))
        truth.log_scale.copy_(torch.tensor([0.7, 1.3]).log())
    truth.requires_grad_(False)
    torch.manual_seed(0)
    obj = NCE(nu=2.0)
    obj.setup(data)
    opt = torch.optim.Adam([obj.log_Z], lr=0.05)
    for step in range(300):
        batch = data[(step * 256) % 3744 : (step * 256) % 3744 + 256]
        opt.zero_grad()
        obj.energy_loss(truth, batch).backward()
        opt.step()
    assert float(obj.log_Z) == pytest.approx(truth.log_Z, abs=0.05)


def test_nce_loss_is_stationary_at_the_truth_in_expectation():
    truth = GaussianEnergy(1, loc=0.0, scale=1.0)
    c = torch.tensor(truth.log_Z, requires_grad=True)
    noise = torch.distributions.Normal(torch.zeros(1), 2 * torch.ones(1))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200000, 1, generator=g)
    y = 2 * torch.randn(200000, 1, generator=g)
    loss = nce_loss(truth, c, x, y, noise.log_prob(x).sum(-1), noise.log_prob(y).sum(-1))
    grads = torch.autograd.grad(loss, [c, truth.loc, truth.log_scale])
    assert all(float(gr.abs().max()) < 0.01 for gr in grads)


def test_gaussian_noise_and_nce_checks():
    q = gaussian_noise(gaussian_data(20000))
    assert torch.allclose(q.mean, torch.tensor([1.0, -0.5]), atol=0.03)
    sd = q.covariance_matrix.diagonal().sqrt()
    assert torch.allclose(sd, torch.tensor([0.7, 1.3]), atol=0.03)
    with pytest.raises(ValueError, match="nu"):
        NCE(nu=0.0)
    with pytest.raises(TypeError, match="sample"):
        NCE(noise=object())


# ------------------------------------------------------------------- flow contrastive
def test_fce_value_is_minus_log_4_when_model_and_flow_agree_and_the_ebm_step_is_stationary():
    truth = GaussianEnergy(2)
    flow = flows.maf(2, num_transforms=1, hidden_dims=(8,))
    for p in flow.parameters():  # make the flow exactly N(0, I)
        torch.nn.init.zeros_(p)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100000, 2, generator=g)
    y = torch.randn(100000, 2, generator=g)
    c = torch.tensor(truth.log_Z, requires_grad=True)
    with torch.no_grad():
        lq_x, lq_y = flow.log_prob(x), flow.log_prob(y)
    v = fce_value(truth, c, x, lq_x, y, lq_y)
    assert float(v) == pytest.approx(-math.log(4), abs=1e-5)
    grads = torch.autograd.grad(v, [c, truth.loc, truth.log_scale])
    assert all(float(gr.abs().max()) < 0.01 for gr in grads)


def test_fce_flow_step_moves_the_flow_towards_the_ebm():
    """With the EBM fixed at N(mu, s^2), minimising V over the flow is minimising
    JS(p || q): the flow's samples move to the EBM's mean and scale."""
    torch.manual_seed(0)
    truth = GaussianEnergy(2, loc=1.0, scale=0.6)
    truth.requires_grad_(False)
    obj = FlowContrastive(flows.maf(2, num_transforms=2, hidden_dims=(16,)))
    obj.log_Z.data.fill_(truth.log_Z)
    obj.log_Z.requires_grad_(False)
    opt = torch.optim.Adam(obj.flow.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(1)
    for _ in range(250):
        x = 1.0 + 0.6 * torch.randn(256, 2, generator=g)
        opt.zero_grad()
        obj.sampler_loss(truth, x).backward()
        opt.step()
    y = obj.flow.sample((8000,))
    assert torch.allclose(y.mean(0), torch.ones(2), atol=0.1)
    assert torch.allclose(y.std(0), torch.full((2,), 0.6), atol=0.1)


# ----------------------------------------------------------------------------- adversarial
def test_sampler_bound_reaches_minus_log_Z_against_a_fixed_energy():
    """max_q E_q[-E] + H(q) = log Z, attained at q = p (the IAF's entropy is exact)."""
    torch.manual_seed(0)
    truth = GaussianEnergy(2, loc=-1.0, scale=0.5)
    truth.requires_grad_(False)
    q = flows.iaf(2, num_transforms=2, hidden_dims=(16,))
    opt = torch.optim.Adam(q.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        loss, _ = sampler_bound(truth, q, 256)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final, y = sampler_bound(truth, q, 20000)
    assert float(final) == pytest.approx(-truth.log_Z, abs=0.02)
    assert float(final) >= -truth.log_Z - 0.01  # a lower bound on log Z (up to MC error)
    assert torch.allclose(y.mean(0), -torch.ones(2), atol=0.05)


def test_adversarial_energy_step_is_stationary_when_the_sampler_is_exact():
    truth = GaussianEnergy(2)
    obj = Adversarial(flows.iaf(2, num_transforms=1, hidden_dims=(8,)))
    for p in obj.sampler.parameters():
        torch.nn.init.zeros_(p)
    torch.manual_seed(0)
    x = torch.randn(200000, 2)
    grads = torch.autograd.grad(obj.energy_loss(truth, x), [truth.loc, truth.log_scale])
    assert all(float(gr.abs().max()) < 0.02 for gr in grads)
    with pytest.raises(TypeError, match="rsample_and_log_prob"):
        Adversarial(sampler=torch.nn.Linear(2, 2))
