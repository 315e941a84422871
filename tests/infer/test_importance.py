"""Importance sampling with flow and distribution proposals: exact cases, analytic log Z and ESS."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_flows import Flow, flows
from pyro_flows.infer.importance import importance_sample, systematic_resample
from pyro_flows.transforms.rescale import Rescale, softplus_inverse


def mvn(scale: float, dim: int = 2) -> torch.distributions.MultivariateNormal:
    eye = torch.eye(dim, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(
        torch.zeros(dim, dtype=torch.float64), scale**2 * eye
    )


class ShiftedGaussian:
    """Unnormalised N(0, s^2 I) times e^c: log Z = c + (D/2) log(2 pi s^2)."""

    def __init__(self, dim: int, s: float, c: float) -> None:
        self.dim, self.s, self.c = dim, s, c
        self.log_Z = c + 0.5 * dim * math.log(2 * math.pi * s * s)
        self.mean = torch.zeros(dim)
        self.std = torch.full((dim,), s)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.c - 0.5 * (z**2).sum(-1) / self.s**2


def second_moment_ratio(sp: float, sq: float) -> float:
    """E_q[(p/q)^2] per dimension for p = N(0, sp^2), q = N(0, sq^2) (needs sq^2 > sp^2 / 2)."""
    a = 1 / sp**2 - 1 / (2 * sq**2)
    return sq / (sp**2 * math.sqrt(2 * a))


def test_exact_proposal_gives_log_Z_exactly_and_full_ess():
    target = ShiftedGaussian(3, 1.5, c=-2.0)
    r = importance_sample(mvn(1.5, 3), target, num_samples=2000, seed=0)
    assert r.extra["log_Z_hat"] == pytest.approx(target.log_Z, abs=1e-10)
    assert r.extra["log_Z_error"] == pytest.approx(0.0, abs=1e-10)
    assert r.extra["log_Z_stderr"] == pytest.approx(0.0, abs=1e-10)
    assert r.extra["ess_fraction"] == pytest.approx(1.0, abs=1e-12)
    assert r.extra["elbo"] == pytest.approx(target.log_Z, abs=1e-10)
    assert r.extra["khat"] == -math.inf
    assert r.method == "is" and r.num_chains == 1 and r.num_grad_evals == 0
    assert r.num_log_prob_evals == 2000


@pytest.mark.parametrize("sq", [1.3, 0.9])
def test_gaussian_mismatch_matches_the_analytic_values(sq):
    sp, dim = 1.0, 2
    target = ShiftedGaussian(dim, sp, c=1.0)
    r = importance_sample(mvn(sq, dim), target, num_samples=40000, batch_size=7000, seed=1)
    # log Z within its own (delta-method) standard error
    assert abs(r.extra["log_Z_error"]) < 4 * r.extra["log_Z_stderr"]
    # ESS fraction -> 1 / E_q[w^2] with Z = 1, a product over the dimensions
    assert r.extra["ess_fraction"] == pytest.approx(second_moment_ratio(sp, sq) ** (-dim), rel=0.05)
    # KL(q || p) = D (log(sp/sq) + sq^2 / (2 sp^2) - 1/2) = log Z - ELBO
    kl = dim * (math.log(sp / sq) + sq**2 / (2 * sp**2) - 0.5)
    assert r.extra["kl_q_p"] == pytest.approx(kl, abs=0.01)
    assert (r.extra["khat"] > 0.0) == (sq < sp)  # narrow proposals have heavy-tailed weights


def test_flow_proposal_uses_one_forward_pass_and_is_restored_to_training_mode():
    flow = Flow([Rescale(2)]).double()
    with torch.no_grad():
        flow.transforms[0].raw_scale.fill_(
            float(softplus_inverse(torch.tensor(1.3, dtype=torch.float64)))
        )
    flow.train()
    target = ShiftedGaussian(2, 1.0, c=0.5)
    r = importance_sample(flow, target, num_samples=20000, seed=2)
    assert flow.training
    q = mvn(1.3, 2)
    x = r.extra["proposal_samples"]
    # the log weights are log p~ - log q of the proposal's own draws
    assert torch.allclose(r.log_weights, target.log_prob(x) - q.log_prob(x), atol=1e-10)
    assert abs(r.extra["log_Z_error"]) < 4 * r.extra["log_Z_stderr"]
    torch.manual_seed(0)
    maf = flows.maf(2, num_transforms=2, hidden_dims=(8,))
    s = importance_sample(maf, ShiftedGaussian(2, 1.0, c=0.0), num_samples=500, seed=0)
    assert s.samples.shape == (1, 500, 2) and math.isfinite(s.extra["log_Z_hat"])


def test_resampled_draws_follow_the_target():
    target = ShiftedGaussian(2, 1.0, c=0.0)
    r = importance_sample(mvn(1.5, 2), target, num_samples=20000, seed=3)
    x = r.samples[0]
    assert x.mean(0).abs().max() < 4 / math.sqrt(r.extra["ess"])
    assert (x.std(0) - 1.0).abs().max() < 0.05
    d = r.diagnostics()  # moments from the weighted proposal draws
    assert d["mean_error_max"] < 4 / math.sqrt(d["ess"]) and d["std_error_max"] < 0.05
    assert d["ess"] == r.extra["ess"] and d["ess_per_grad"] is None
    raw = importance_sample(mvn(1.5, 2), target, num_samples=20000, resample=False, seed=3)
    assert torch.equal(raw.samples[0], r.extra["proposal_samples"])
    assert torch.equal(raw.log_weights, r.log_weights)
    idata = raw.to_inference_data()
    assert idata.sample_stats["log_weight"].shape == (1, 20000)
    assert idata.posterior.attrs["log_Z_hat"] == pytest.approx(raw.extra["log_Z_hat"])


def test_systematic_resampling_counts():
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    for seed in range(5):
        idx = systematic_resample(w.log(), 10, torch.Generator().manual_seed(seed))
        counts = torch.bincount(idx, minlength=4).double()
        assert bool(((counts - 10 * w).abs() < 1).all())  # floor or ceil of n w_i


def test_seeded_and_global_rng():
    torch.manual_seed(11)
    before = torch.get_rng_state()
    a = importance_sample(mvn(1.2, 2), ShiftedGaussian(2, 1.0, 0.0), num_samples=100, seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    b = importance_sample(mvn(1.2, 2), ShiftedGaussian(2, 1.0, 0.0), num_samples=100, seed=4)
    assert torch.equal(a.samples, b.samples)


def test_errors():
    target = ShiftedGaussian(2, 1.0, 0.0)
    with pytest.raises(TypeError, match="rsample_and_log_prob"):
        importance_sample(object(), target)
    with pytest.raises(ValueError, match=r"\(n, dim\) = \(100, 2\)"):
        importance_sample(mvn(1.0, 3), target, num_samples=100)
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        importance_sample(mvn(1.0, 2), lambda z: z.sum(-1) * float("nan"), dim=2, num_samples=100)
    with pytest.raises(ValueError, match="num_samples must be >= 10"):
        importance_sample(mvn(1.0, 2), target, num_samples=5)


def _narrow_offset_target(z: torch.Tensor) -> torch.Tensor:
    """e^2 N((3, 3), 0.5^2 I) times 2 pi 0.25: far in the tails of a standard Normal proposal."""
    return 2.0 - 0.5 * (((z - 3) / 0.5) ** 2).sum(-1)


def test_high_khat_warns_unless_silenced():
    """k-hat far above 0.7 (log Z off by nats) is flagged, as fit_target flags it; warn=False and
    flow_diagnostics (which returns the k-hat to its caller) stay quiet, as does a good
    proposal."""
    import warnings

    from pyro_flows.infer.importance import flow_diagnostics

    q = mvn(1.0)
    with pytest.warns(UserWarning, match=r"importance_sample: PSIS k-hat .* > 0.7: log Z") as got:
        r = importance_sample(q, _narrow_offset_target, dim=2, num_samples=2000, seed=2)
    assert r.extra["khat"] > 0.7 and f"{r.extra['khat']:.2f}" in str(got[0].message)
    assert "warn=False" in str(got[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importance_sample(q, _narrow_offset_target, dim=2, num_samples=2000, seed=2, warn=False)
        assert flow_diagnostics(q, _narrow_offset_target, 2000, dim=2)["khat"] > 0.7
        good = importance_sample(mvn(1.2), lambda z: -0.5 * (z**2).sum(-1), dim=2,
                                 num_samples=2000, seed=2)
        assert good.extra["khat"] < 0.7
    with pytest.raises(TypeError, match="warn must be a bool"):
        importance_sample(q, _narrow_offset_target, dim=2, num_samples=100, warn=1)
