"""AutoFlow's deterministic Gaussian start, and initialisation on sites that cannot be sampled."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from pyro.infer.autoguide.initialization import init_to_median, init_to_sample

from pyro_flows.infer import AutoFlow
from pyro_flows.infer.gaussian_start import fit_deterministic
from pyro_flows.infer.initialization import improper_safe, unconstrained_origin


@pytest.fixture(autouse=True)
def _fresh_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def _regression_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Badly scaled data: a predictor near 100, an intercept near -40, a noise sd near 7."""
    g = torch.Generator().manual_seed(seed)
    x = 100.0 + 15.0 * torch.randn(150, generator=g)
    y = -40.0 + 1.3 * x + 7.0 * torch.randn(150, generator=g)
    return x, y


def flat_regression(x: torch.Tensor, y: torch.Tensor) -> None:
    """Stan's implicit flat priors on the coefficients, a half-Cauchy on the noise sd."""
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
    sigma = pyro.sample("sigma", dist.HalfCauchy(5.0))
    mu = beta[..., :1] + beta[..., 1:] * x
    pyro.sample("y", dist.Normal(mu, sigma[..., None]).to_event(1), obs=y)


def _exact_beta_moments(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sd of beta's posterior: a Student t around least squares (Gelman et al., BDA3
    section 14.2), scale s^2 (X^T X)^{-1} with n - k degrees of freedom; the half-Cauchy prior on
    sigma changes these by far less than the tolerances below."""
    design = torch.stack([torch.ones_like(x), x], -1).double()
    gram_inv = torch.linalg.inv(design.T @ design)
    beta_hat = gram_inv @ design.T @ y.double()
    resid = y.double() - design @ beta_hat
    n, k = design.shape
    s2 = resid.square().sum() / (n - k)
    nu = n - k
    sd = (s2 * torch.diagonal(gram_inv) * nu / (nu - 2)).sqrt()
    return beta_hat, sd


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flat_prior_regression_from_a_far_start_needs_no_options(seed):
    """The issue's failure: a flat-prior regression started at coefficients 0, where the loss
    is ~1e6 and the flow layers used to blow up to NaN within 15 steps. With the defaults, 300
    ordinary SVI steps (the learning rate decaying from 1e-2 to 1e-3) reach the exact posterior
    moments."""
    x, y = _regression_data(seed)
    pyro.set_rng_seed(seed)
    guide = AutoFlow(flat_regression)
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True)
    optim = pyro.optim.ClippedAdam({"lr": 1e-2, "lrd": 0.1 ** (1 / 300)})  # 1e-2 -> 1e-3
    svi = SVI(flat_regression, guide, optim, elbo)
    losses = [svi.step(x, y) for _ in range(300)]
    assert all(math.isfinite(v) for v in losses)
    assert guide.start_result is not None and guide.start_result.accepted
    assert guide.start_result.loss_after < guide.start_result.loss_before
    draws = guide.sample_posterior(20_000, x, y)["beta"].double()
    mean, sd = _exact_beta_moments(x, y)
    assert ((draws.mean(0) - mean).abs() / sd).max() < 0.15
    ratio = draws.std(0) / sd
    assert ratio.min() > 0.85 and ratio.max() < 1.15, ratio


def test_the_start_is_deterministic_and_leaves_the_global_rng_alone():
    x, y = _regression_data(3)
    starts = []
    for global_seed in (0, 1):
        states = []
        for start in (True, False):  # Pyro's init_to_median draws; the start must not
            pyro.clear_param_store()
            torch.manual_seed(global_seed)
            guide = AutoFlow(flat_regression, gaussian_start=start)
            guide._setup_prototype(x, y)
            states.append(torch.get_rng_state())
            if start:
                starts.append(guide.flow.transforms[-1].loc.detach().clone())
        assert torch.equal(states[0], states[1])
    assert torch.allclose(starts[0][:2], starts[1][:2], rtol=1e-3)


def test_the_start_can_be_turned_off_and_the_draws_count_is_checked():
    x, y = _regression_data(4)
    guide = AutoFlow(flat_regression, gaussian_start=False)
    guide(x, y)
    assert guide.start_result is None
    assert torch.equal(guide.flow.transforms[-1].loc.detach()[:2], torch.zeros(2))
    for bad in (0, 1, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"start_draws must be an int >= 2, got {bad!r}"):
            AutoFlow(flat_regression, start_draws=bad)
    for bad in (8, "16"):
        with pytest.raises(TypeError, match="hidden_dims must be None .* or a sequence of ints"):
            AutoFlow(flat_regression, hidden_dims=bad)
    with pytest.raises(TypeError, match="gaussian_start must be a bool"):
        AutoFlow(flat_regression, gaussian_start="yes")


@pytest.mark.parametrize("guide_class", [AutoFlow, AutoMultivariateNormal, AutoNormal])
def test_improper_sites_start_at_the_unconstrained_origin(guide_class):
    """init_to_median (AutoFlow's default) and init_to_sample draw from the site: on
    ImproperUniform they raise NotImplementedError unless wrapped."""

    def model():
        pyro.sample("a", dist.ImproperUniform(constraints.real, (), (2,)))
        pyro.sample("s", dist.ImproperUniform(constraints.positive, (), ()))
        pyro.sample("p", dist.ImproperUniform(constraints.simplex, (), (3,)))
        pyro.sample("b", dist.Normal(3.0, 1.0))

    with pytest.raises(NotImplementedError):
        AutoMultivariateNormal(model, init_loc_fn=init_to_sample)()
    pyro.clear_param_store()
    options = {"gaussian_start": False} if guide_class is AutoFlow else {}
    init = improper_safe(init_to_sample) if guide_class is not AutoFlow else init_to_median
    guide = guide_class(model, init_loc_fn=init, **options)
    guide()
    loc = guide._init_loc() if guide_class is not AutoNormal else None
    if loc is not None:
        # a = (0, 0), log s = 0, the simplex's first stick-breaking coordinate 0
        assert torch.allclose(loc[:4], torch.zeros(4), atol=1e-6)


def test_unconstrained_origin_and_wrapper_errors():
    site = {"fn": dist.ImproperUniform(constraints.simplex, (), (4,))}
    assert torch.allclose(unconstrained_origin(site), torch.full((4,), 0.25))
    site = {"fn": dist.ImproperUniform(constraints.interval(2.0, 6.0), (3,), ())}
    assert torch.allclose(unconstrained_origin(site), torch.full((3,), 4.0))
    with pytest.raises(TypeError, match="expects a Pyro init strategy"):
        improper_safe("median")


def test_fit_deterministic_backs_off_from_non_finite_and_refused_points():
    """The objective is +inf beyond 5 and raises beyond 8; its minimum over the finite region
    is at the wall. The kept point is finite, on the finite side, and better than the start."""
    p = torch.nn.Parameter(torch.tensor([0.0]))

    def loss():
        if float(p.detach()) > 8.0:
            raise ValueError("refused")
        value = (p - 20.0).square().sum()
        return value if float(p.detach()) < 5.0 else value + float("inf")

    result = fit_deterministic(loss, [p], num_draws=1, max_evaluations=80)
    assert result.accepted and math.isfinite(result.loss_after)
    assert 3.0 < float(p) < 5.0
    assert p.grad is None


def test_fit_deterministic_keeps_the_start_when_it_cannot_improve():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    result = fit_deterministic(lambda: p.sum() * float("nan"), [p], num_draws=1)
    assert not result.accepted and "not finite (nan)" in result.reason
    assert result.loss_before == math.inf  # nan reported as inf: anything finite improves on it
    assert torch.equal(p.detach(), torch.tensor([1.0, 2.0]))
    result = fit_deterministic(lambda: (p - p.detach()).square().sum(), [p], num_draws=1)
    assert not result.accepted and torch.equal(p.detach(), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="at least one parameter"):
        fit_deterministic(lambda: torch.tensor(0.0), [], num_draws=1)


def years_regression(x: torch.Tensor, y: torch.Tensor) -> None:
    """posteriordb's kilpisjarvi shape: a regression on raw years (alpha-beta correlation
    about -0.9999), flat priors, float32."""
    alpha = pyro.sample("alpha", dist.ImproperUniform(constraints.real, (), ()))
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), ()))
    sigma = pyro.sample("sigma", dist.HalfNormal(10.0))
    mu = alpha[..., None] + beta[..., None] * x
    pyro.sample("y", dist.Normal(mu, sigma[..., None]).to_event(1), obs=y)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_start_alone_reaches_an_ill_conditioned_posterior(seed):
    """One L-BFGS smoothing at init_scale put the noise sd at e^5.8 here (the slope's +-0.1
    smoothing is 13 posterior sds); repeated Laplace rounds with Newton steps settle on the
    posterior (measured: mean error 0.02 sd, sd ratios 1.0-1.16 before any SVI step)."""
    g = torch.Generator().manual_seed(seed)
    x = 1950.0 + torch.arange(60.0)
    y = -40.0 + 0.02 * x + 0.8 * torch.randn(60, generator=g)
    guide = AutoFlow(years_regression)
    guide(x, y)
    assert guide.start_result.accepted
    draws = guide.sample_posterior(20_000, x, y)
    design = torch.stack([torch.ones_like(x), x], -1).double()
    gram_inv = torch.linalg.inv(design.T @ design)
    beta_hat = gram_inv @ design.T @ y.double()
    s2 = (y.double() - design @ beta_hat).square().sum() / 58
    sd = (s2 * torch.diagonal(gram_inv) * 58 / 56).sqrt()
    got = torch.stack([draws["alpha"], draws["beta"]], -1).double()
    assert ((got.mean(0) - beta_hat).abs() / sd).max() < 0.25
    ratio = got.std(0) / sd
    assert ratio.min() > 0.8 and ratio.max() < 1.3, ratio


def test_training_moves_the_whitened_stage_not_the_frozen_anchor():
    x, y = _regression_data(5)
    guide = AutoFlow(flat_regression)
    guide(x, y)
    stages = list(guide.flow.transforms)
    anchor, linear, step = stages[-1], stages[-2], stages[-3]
    assert anchor.frozen and linear.frozen and not step.frozen
    frozen = [t.detach().clone() for t in (anchor.loc, anchor.raw_scale, linear.lower)]
    svi = SVI(flat_regression, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO(num_particles=4))
    for _ in range(5):
        svi.step(x, y)
    after = (anchor.loc, anchor.raw_scale, linear.lower)
    assert all(torch.equal(a.detach(), b) for a, b in zip(after, frozen, strict=True))
    assert not torch.equal(step.loc.detach(), torch.zeros(3))
    # the frozen values live in the param store (saved and loaded with it)
    names = list(pyro.get_param_store().keys())
    assert any(n.endswith(f"transforms.{len(stages) - 1}.loc") for n in names)
    # a guide whose parameters are already in the store keeps them: no second start
    again = AutoFlow(flat_regression)
    again(x, y)
    assert not again.start_result.accepted and "already holds" in again.start_result.reason
    assert torch.equal(again.flow.transforms[-1].loc.detach(), anchor.loc.detach())


# -- several starting points: the best basin, and a warning when a second mode carries mass ----
def two_modes(weight_right: float):
    """x with modes near -3 and +3 (sd 0.3), the right one carrying ``weight_right``."""

    def model() -> None:
        x = pyro.sample("x", dist.Normal(0.0, 10.0))
        right = dist.Normal(3.0, 0.3).log_prob(x) + math.log(weight_right)
        left = dist.Normal(-3.0, 0.3).log_prob(x) + math.log1p(-weight_right)
        pyro.factor("modes", torch.logaddexp(right, left))

    return model


def test_the_start_leaves_a_poor_basin_for_the_best_one():
    """init_loc_fn puts x in the left well, which holds e^-12 of the mass: the searches from
    the other starting points find the right well, and no warning is raised (the other mode
    is 12 nats worse)."""
    from pyro.infer.autoguide.initialization import init_to_value

    model = two_modes(1.0 - math.exp(-12.0))
    guide = AutoFlow(model, init_loc_fn=init_to_value(values={"x": torch.tensor(-3.0)}))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        guide()
    assert guide.start_result.accepted and len(guide.start_result.optima) == 2
    assert guide.start_result.optima[1] - guide.start_result.optima[0] > 10.0
    assert abs(float(guide.median()["x"]) - 3.0) < 0.1
    # one starting point: the search stays in the basin it was given
    pyro.clear_param_store()
    single = AutoFlow(model, init_loc_fn=init_to_value(values={"x": torch.tensor(-3.0)}),
                      start_points=1)
    single()
    assert abs(float(single.median()["x"]) + 3.0) < 0.1 and single.start_result.optima == ()


def nan_beyond_four() -> None:
    """A standard normal whose density is nan (not -inf) where |x| > 4, as a model's
    arithmetic can make it (posteriordb's ARMA(1,1) gave nan at init_to_median's point on 8 of
    32 seeds)."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    # beyond the wall the observation's loc and scale are inf (valid parameters), and its
    # log density -(0 - inf)^2 / (2 inf^2) - log inf is nan
    wall = torch.where(x.abs() < 4.0, torch.ones_like(x), torch.full_like(x, math.inf))
    pyro.sample("y", dist.Normal(wall, wall), obs=torch.tensor(0.0))


def test_a_start_point_where_the_loss_is_nan_does_not_discard_the_search():
    """The searches from the other starting points find the mode; the start is accepted (its
    loss before reported as inf) and the tail stage kept. The nan used to fail every later
    "improved on the start" comparison, and AutoFlow threw the whole start away."""
    from pyro.infer.autoguide.initialization import init_to_value

    guide = AutoFlow(nan_beyond_four, init_loc_fn=init_to_value(values={"x": torch.tensor(6.0)}))
    guide()
    result = guide.start_result
    assert result.accepted and result.loss_before == math.inf and math.isfinite(result.loss_after)
    assert "SinhArcsinh" in [type(t).__name__ for t in guide.flow.transforms]
    assert abs(float(guide.median()["x"])) < 0.1
    # one starting point: nothing finite to search from, so the start is refused, clearly
    pyro.clear_param_store()
    single = AutoFlow(nan_beyond_four, start_points=1,
                      init_loc_fn=init_to_value(values={"x": torch.tensor(6.0)}))
    single()
    assert not single.start_result.accepted and "not finite" in single.start_result.reason


def test_a_second_mode_with_mass_is_reported():
    guide = AutoFlow(two_modes(0.6))
    with pytest.warns(UserWarning, match="2 distinct local optima.*several modes"):
        guide()
    gap = guide.start_result.optima[1] - guide.start_result.optima[0]
    assert abs(gap - math.log(0.6 / 0.4)) < 0.2  # the start's losses see the mass ratio


def test_start_points_are_checked():
    with pytest.raises(ValueError, match="start_points must be an int >= 1, got 0"):
        AutoFlow(two_modes(0.5), start_points=0)


def test_an_ill_conditioned_valley_is_one_optimum_not_several_modes():
    """kilpisjarvi (a regression on raw years, correlation -0.9999): searches from far points
    stop at different places of one narrow valley (losses 455.55-455.58). Without the barrier
    test on the segment between them they counted as three modes and raised the warning."""
    from pyro_flows.targets.posteriordb import load_posterior

    spec = load_posterior("kilpisjarvi_mod-kilpisjarvi")
    guide = AutoFlow(spec.model)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        guide()
    assert len(guide.start_result.optima) == 1


def test_the_start_skips_the_identity_stages_and_puts_them_back(monkeypatch):
    """The untrained flow layers and tail stage are the identity: the start runs without them
    (the permutations between IAF layers stay), reaches the loss it reaches through them, and
    leaves every stage as it was."""
    import pyro_flows.infer.autoflow_start as start_module

    x, y = _regression_data(0)
    skipped: list[list[str]] = []
    real = start_module.identity_stages

    def spy(flow, stop, **kwargs):
        found = real(flow, stop, **kwargs)
        skipped.append([type(flow.transforms[i]).__name__ for i in found])
        return found

    monkeypatch.setattr(start_module, "identity_stages", spy)
    pyro.set_rng_seed(0)
    guide = AutoFlow(flat_regression)
    guide(x, y)
    names = skipped[0]
    assert names.count("InverseAutoregressive") == 5 and "Reverse" not in names
    assert {"SinhArcsinh", "TukeyH", "ElementwiseAffine"} <= set(names)
    assert all("forward_without_log_det" not in t.__dict__ and "zero_log_det" not in t.__dict__
               for t in guide.flow.transforms)
    monkeypatch.setattr(start_module, "identity_stages", lambda flow, stop, **kwargs: [])
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    through = AutoFlow(flat_regression)
    through(x, y)
    assert guide.start_result.accepted and through.start_result.accepted
    assert math.isclose(guide.start_result.loss_after, through.start_result.loss_after,
                        rel_tol=1e-4)


def overdispersed_counts(x: torch.Tensor, y: torch.Tensor) -> None:
    """A negative-binomial regression on a raw predictor in [0, 450] with flat coefficients,
    its mean written ``phi / exp(eta)`` as users write it: at ``init_scale`` some draws of the
    slope reach ``exp(eta)`` = inf in float32, where the gradient is NaN (inf / inf)."""
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
    phi = pyro.sample("phi", dist.HalfCauchy(5.0))
    with pyro.plate("rows", x.shape[0]):
        eta = beta[..., :1] + beta[..., 1:] * x
        pyro.sample("y", dist.GammaPoisson(phi[..., None], phi[..., None] / torch.exp(eta)),
                    obs=y)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_start_whose_draws_overflow_the_model_narrows_its_scale(seed):
    """The Gaussian start divides init_scale by 10 until the loss and its gradient are finite
    (a fresh roaches-like posterior failed every step: the start found no finite gradient,
    fit_guide stopped on non-finite steps with the guide at its init, 54 sds off)."""
    from pyro_flows.infer import fit_guide

    g = torch.Generator().manual_seed(seed)
    x = 450.0 * torch.rand(200, generator=g)
    rate = torch.exp(1.0 + 0.005 * x)
    y = torch.poisson(torch.distributions.Gamma(2.0, 2.0 / rate).sample(), generator=g)
    guide = AutoFlow(overdispersed_counts)
    result = fit_guide(overdispersed_counts, guide, x, y, steps=600, progress=False, seed=seed)
    assert guide.start_result.accepted, guide.start_result
    assert result.stopped != "non-finite" and result.flag is None, result.warnings
    median = guide.median(x, y)["beta"]
    assert abs(float(median[0]) - 1.0) < 0.4 and abs(float(median[1]) / 0.005 - 1.0) < 0.25
