"""fit_guide: a known posterior, every kind of guide, exact resume, the non-finite guard, the
plateau test (stops on a plateau, not on a rising ELBO), the k-hat warning, max_time, progress
and bad input."""

from __future__ import annotations

import importlib
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import (
    AutoIAFNormal,
    AutoMultivariateNormal,
    AutoNormal,
    init_to_value,
)

from pyro_flows.infer import AutoFlow, GuideFitResult, fit_guide
from pyro_flows.infer._checkpoint import rng_state
from pyro_flows.infer._elbo_convergence import PlateauRule, learning_rate

X = torch.tensor([0.5, 1.5, 1.0, 2.0])
#: z | x ~ N(sum(x) / (n + 1), 1 / (n + 1)) for z ~ N(0, 1), x_i ~ N(z, 1)
POST_LOC, POST_SD = float(X.sum()) / 5, 1 / math.sqrt(5)
#: log p(x): x ~ N(0, I + 1 1^T)
LOG_PX = dist.MultivariateNormal(torch.zeros(4), torch.eye(4) + 1).log_prob(X).item()


def normal_mean(x):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def correlated(rho):
    def model():
        cov = torch.tensor([[1.0, rho], [rho, 1.0]])
        pyro.sample("z", dist.MultivariateNormal(torch.zeros(2), cov))

    return model


def two_normals():
    pyro.sample("z", dist.Normal(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.5])).to_event(1))


def quiet(**options):
    return dict(progress=False, **options)


@pytest.fixture(autouse=True)
def _fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


# -- correctness ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_autonormal_reaches_the_exact_posterior_and_stops_on_the_plateau(seed):
    guide = AutoNormal(normal_mean)
    result = fit_guide(normal_mean, guide, X, steps=2000, seed=seed, **quiet())
    assert result.stopped == "converged" and result.converged_at is not None
    assert result.steps <= 1200  # the plateau is found well before the end
    assert abs(guide.locs.z.item() - POST_LOC) < 0.05
    assert abs(guide.scales.z.item() - POST_SD) < 0.04
    assert result.khat is not None and result.khat < 0.5 and result.khat_note is None
    assert result.losses == [-e for e in result.elbo] and len(result.lr) == result.steps
    assert result.lr[-1] == pytest.approx(1e-3, rel=0.05)  # the cool-down ends at lr_end
    # log p(x) is the ELBO's upper bound, reached by the exact posterior
    assert abs(sum(result.elbo[-100:]) / 100 - LOG_PX) < 0.05


@pytest.mark.parametrize(
    "make_guide",
    [
        AutoMultivariateNormal,
        lambda m: AutoIAFNormal(m, hidden_dim=[8], num_transforms=1),
        lambda m: AutoFlow(m, num_transforms=2, hidden_dims=(8,)),
    ],
    ids=["AutoMultivariateNormal", "AutoIAFNormal", "AutoFlow"],
)
def test_every_kind_of_guide_fits_a_gaussian(make_guide):
    guide = make_guide(two_normals)
    result = fit_guide(two_normals, guide, steps=2000, seed=0, khat_samples=500, **quiet())
    assert result.stopped == "converged"
    draws = guide.get_posterior().sample((4000,))  # unconstrained = constrained here
    assert torch.allclose(draws.mean(0), torch.tensor([1.0, -1.0]), atol=0.15)
    assert torch.allclose(draws.std(0), torch.tensor([2.0, 0.5]), rtol=0.15)
    assert sum(result.elbo[-50:]) / 50 > -0.1  # log Z = 0
    assert result.khat is not None and result.khat < 0.7


def test_iwae_and_mean_field_losses_reach_log_evidence():
    """Both bounds reach log p(x) at the optimum. (IWAE's guide gradient is weak once the bound
    is tight, Rainforth et al. 2018, so its guide is not checked against the posterior.)"""
    for loss in ("iwae", "mean_field"):
        pyro.clear_param_store()
        guide = AutoNormal(normal_mean)
        result = fit_guide(normal_mean, guide, X, steps=1000, seed=0, loss=loss, khat_samples=0,
                           **quiet())
        assert result.stopped == "converged", loss
        assert abs(sum(result.elbo[-50:]) / 50 - LOG_PX) < 0.05, loss
        assert result.khat is None and "khat_samples=0" in result.khat_note
    assert abs(guide.locs.z.item() - POST_LOC) < 0.05  # mean field: the exact posterior


@pytest.mark.filterwarnings("ignore:fit_guide. PSIS k-hat")
def test_a_model_that_cannot_be_vectorised_runs_under_vmap():
    w = torch.tensor([1.0, -2.0])

    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        pyro.sample("y", dist.Normal(torch.dot(z, w), 1.0), obs=torch.tensor(1.0))

    with pytest.warns(UserWarning, match="vectorised particles"):
        result = fit_guide(model, AutoNormal(model), steps=30, seed=0, num_particles=4,
                           khat_samples=50, **quiet())  # (k-hat of a 30-step fit may warn too)
    assert not result.vectorized and result.particle_mode == "vmap" and result.steps == 30
    assert any("torch.func.vmap" in w for w in result.warnings)
    assert result.khat is not None  # computed with the same (per-draw) evaluation


@pytest.mark.filterwarnings("ignore:fit_guide. PSIS k-hat")
def test_a_model_that_vmap_cannot_run_falls_back_to_a_loop():
    w = torch.tensor([1.0, -2.0])

    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        sd = 1.0 if float(z.sum()) < 1e9 else 2.0  # a Python number from a latent: not vmap
        pyro.sample("y", dist.Normal(torch.dot(z, w), sd), obs=torch.tensor(1.0))

    with pytest.warns(UserWarning, match="vectorised particles"):
        result = fit_guide(model, AutoNormal(model), steps=30, seed=0, num_particles=4,
                           khat_samples=50, **quiet())
    assert not result.vectorized and result.particle_mode == "loop" and result.steps == 30
    assert any("fell back" in w for w in result.warnings)
    assert result.khat is not None  # computed with the same (looped) evaluation


@pytest.mark.filterwarnings("ignore:fit_guide")
def test_the_default_particle_count_follows_how_the_particles_run():
    """32 draws per step in one call (vectorised or vmap), 8 in a loop, the value passed as
    given; the count is in the result (and in a checkpoint's setup, so a resume keeps it)."""
    w = torch.tensor([1.0, -2.0])

    def dotted():
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        pyro.sample("y", dist.Normal(torch.dot(z, w), 1.0), obs=torch.tensor(1.0))

    cases = [(normal_mean, (X,), {}, "vectorised", 32), (dotted, (), {}, "vmap", 32),
             (normal_mean, (X,), {"vectorize_particles": False}, "loop", 8),
             (normal_mean, (X,), {"num_particles": 5}, "vectorised", 5)]
    for model, args, options, mode, count in cases:
        pyro.clear_param_store()
        result = fit_guide(model, AutoNormal(model), *args, steps=5, seed=0, khat_samples=0,
                           **options, **quiet())
        assert (result.particle_mode, result.num_particles) == (mode, count), options


# -- checkpoints ------------------------------------------------------------------------------
def small_flow_guide():
    return AutoFlow(two_normals, num_transforms=2, hidden_dims=(8,))


def test_resume_equals_an_uninterrupted_run(tmp_path):
    options = quiet(steps=80, seed=3, converge=False, khat_samples=0)
    full_guide = small_flow_guide()
    full = fit_guide(two_normals, full_guide, **options)
    reference = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    pyro.clear_param_store()
    path = tmp_path / "fit.pt"
    first = fit_guide(two_normals, small_flow_guide(), checkpoint=path, checkpoint_every=15,
                      callback=lambda step, result: step == 40, **options)
    assert first.stopped == "callback" and first.steps == 40
    pyro.clear_param_store()
    resumed_guide = small_flow_guide()
    resumed = fit_guide(two_normals, resumed_guide, checkpoint=path, resume=True, **options)
    assert resumed.stopped == "completed" and resumed.steps == 80
    assert resumed.elbo == pytest.approx(full.elbo, abs=1e-6)
    store = pyro.get_param_store()
    assert set(store.keys()) == set(reference)
    for name, value in reference.items():
        assert torch.allclose(store[name], value, atol=1e-6), name


def test_resume_in_the_cool_down_equals_an_uninterrupted_run(tmp_path):
    """A run stopped part-way through the (polished) cool-down and resumed ends as an
    uninterrupted one."""
    options = quiet(steps=600, seed=2, window=20, min_steps=0, khat_samples=0)
    full = fit_guide(two_normals, small_flow_guide(), **options)
    assert full.stopped == "converged"
    reference = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    stop_at = full.converged_at + 15
    pyro.clear_param_store()
    path = tmp_path / "fit.pt"
    first = fit_guide(two_normals, small_flow_guide(), checkpoint=path,
                      callback=lambda step, result: step == stop_at, **options)
    assert first.stopped == "callback"
    pyro.clear_param_store()
    resumed = fit_guide(two_normals, small_flow_guide(), checkpoint=path, resume=True, **options)
    assert resumed.steps == full.steps
    assert resumed.elbo == pytest.approx(full.elbo, abs=1e-6)
    for name, value in reference.items():
        assert torch.allclose(pyro.get_param_store()[name], value, atol=1e-6), name


def test_polish_switches_the_path_gradient_on_only_in_the_cool_down():
    """With ``polish`` AutoFlow's path-gradient switch is on exactly in the cool-down and put
    back afterwards; ``polish=False`` takes the same steps until then and other ones after."""
    seen = []
    guide = small_flow_guide()

    def watch(step, result):
        seen.append((result.converged_at is not None and step > result.converged_at,
                     guide.path_gradient))

    result = fit_guide(two_normals, guide, steps=600, seed=0, window=20, min_steps=0,
                       khat_samples=0, callback=watch, **quiet())
    assert result.stopped == "converged"
    assert all(switch == cooling for cooling, switch in seen) and any(c for c, _ in seen)
    assert guide.path_gradient is False
    pyro.clear_param_store()
    last = fit_guide(two_normals, small_flow_guide(), steps=600, seed=0, window=20,
                     min_steps=0, khat_samples=0, polish=False, **quiet())
    cooling = result.converged_at  # the same steps until the cool-down, then other gradients
    assert last.converged_at == cooling
    assert last.elbo[:cooling] == pytest.approx(result.elbo[:cooling], abs=1e-6)
    assert last.elbo[cooling:] != pytest.approx(result.elbo[cooling:], abs=1e-6)


def test_a_refused_resume_changes_nothing(tmp_path):
    path = tmp_path / "fit.pt"
    fit_guide(two_normals, AutoNormal(two_normals), steps=20, checkpoint=path, seed=0,
              khat_samples=0, **quiet())
    pyro.clear_param_store()
    other = AutoMultivariateNormal(two_normals)  # another architecture
    fit_guide(two_normals, other, steps=5, seed=1, khat_samples=0, **quiet())
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    rng = rng_state()["torch"].clone()
    with pytest.raises(ValueError, match="another architecture"):
        fit_guide(two_normals, other, steps=20, checkpoint=path, resume=True, seed=0,
                  khat_samples=0, **quiet())
    after = pyro.get_param_store()
    assert set(after.keys()) == set(before)
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    assert torch.equal(rng_state()["torch"], rng)
    with pytest.raises(ValueError, match="different set-up"):
        fit_guide(two_normals, AutoNormal(two_normals), steps=30, checkpoint=path, resume=True,
                  khat_samples=0, **quiet())


def test_ctrl_c_saves_a_checkpoint(tmp_path):
    path = tmp_path / "fit.pt"

    def interrupt(step, result):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_guide(normal_mean, AutoNormal(normal_mean), X, steps=50, seed=0, checkpoint=path,
                  callback=interrupt, **quiet())
    saved = torch.load(path, weights_only=False)
    assert saved["kind"] == "fit_guide" and saved["step"] == 7
    assert len(saved["history"]["elbo"]) == 7


# -- the non-finite guard ---------------------------------------------------------------------
def test_nan_parameters_stop_training_with_the_last_good_guide():
    def poison(step, result):
        if step == 25:
            with torch.no_grad():
                pyro.get_param_store()["AutoNormal.locs.z"].unconstrained().fill_(math.nan)

    guide = AutoNormal(normal_mean)
    # at the last good parameters every site is finite: the advice is the step size
    with pytest.warns(RuntimeWarning, match="NaN/inf.*lower lr"):
        result = fit_guide(normal_mean, guide, X, steps=200, seed=0, callback=poison,
                           khat_samples=0, **quiet())
    assert result.stopped == "non-finite" and result.steps == 25
    assert result.skipped_steps == 5
    for value in pyro.get_param_store().values():
        assert torch.isfinite(value).all()


def test_a_gradient_that_overflows_from_the_first_step_is_named_not_the_step_size():
    """Every site's log density is finite but its gradient is NaN at every draw (sqrt at 0
    here; an exp of a large linear predictor in float32 in real models): no step size helps,
    so the warning names the gradient's overflow."""

    def finite_value_nan_gradient():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.factor("f", -torch.sqrt(0.0 * z))

    with pytest.warns(RuntimeWarning, match="its gradient is what overflowed") as record:
        result = fit_guide(finite_value_nan_gradient, AutoNormal(finite_value_nan_gradient),
                           steps=50, seed=0, khat_samples=0, **quiet())
    assert result.stopped == "non-finite" and result.steps == 0
    assert not any("lower lr" in str(w.message) for w in record)


@pytest.mark.parametrize("guide_class", [AutoNormal, AutoFlow])
def test_nan_in_the_data_is_named_when_no_step_could_be_taken(guide_class):
    """Not "lower lr": the observed site and its count of NaN/inf entries."""
    data = X.clone()
    data[2] = math.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_guide(normal_mean, guide_class(normal_mean), data, steps=50, seed=0,
                           khat_samples=0, **quiet())
    assert result.stopped == "non-finite" and result.steps == 0
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("observed site 'x' (its value holds 1 NaN/inf of 4 entries)" in m
               and "lower lr" not in m for m in messages), messages


def test_isolated_nan_steps_are_skipped_not_applied():
    calls = {"n": 0}

    def flaky(x):
        normal_mean(x)
        calls["n"] += 1
        if calls["n"] in (10, 11, 30):  # NaN log densities on three calls
            pyro.factor("flaw", torch.tensor(math.nan))

    guide = AutoNormal(flaky)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "stopped" warning
        result = fit_guide(flaky, guide, X, steps=600, seed=0, khat_samples=0, converge=False,
                           **quiet())
    assert result.stopped == "completed" and result.steps == 600
    assert result.skipped_steps == 3
    assert all(math.isfinite(e) for e in result.elbo)
    assert abs(guide.locs.z.item() - POST_LOC) < 0.15


# -- the plateau test -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_plateau_rule_stops_on_noise_and_not_on_a_slow_trend(seed):
    g = torch.Generator().manual_seed(seed)
    noise = (3.0 * torch.randn(4000, generator=g)).tolist()  # ELBO noise sd 3 nats
    rule = PlateauRule(window=100)
    flat_at = next(n for n in range(100, 4001, 100) if rule.converged(noise[:n]))
    assert flat_at <= 1500
    # a rise of 0.5 nats per window of 100 steps: 1.2 standard errors of a gain between two
    # windows, (kappa + 2) / 3 at kappa = 1 + a margin (the documented resolution)
    rising = [0.005 * t + e for t, e in enumerate(noise)]
    assert not any(rule.converged(rising[:n]) for n in range(100, 4001, 100))


def test_a_slowly_improving_fit_is_not_stopped():
    """The guide starts 30 sd away and a small learning rate moves it ~2e-3 per step: the ELBO
    rises the whole run."""
    guide = AutoNormal(normal_mean, init_loc_fn=init_to_value(values={"z": torch.tensor(30.0)}))
    result = fit_guide(normal_mean, guide, X, steps=1000, lr=2e-3, lr_end=1e-3, seed=0,
                       khat_samples=0, **quiet())
    assert result.stopped == "completed" and result.converged_at is None
    assert result.steps == 1000


def test_learning_rate_schedule():
    rates = [learning_rate(t, lr=1e-2, lr_end=1e-4, steps=100) for t in range(101)]
    assert rates[0] == pytest.approx(1e-2) and rates[-1] == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    cosine = [learning_rate(t, lr=1e-2, lr_end=1e-4, steps=100, schedule="cosine")
              for t in (0, 50, 100)]
    assert cosine == pytest.approx([1e-2, 0.5 * (1e-2 + 1e-4), 1e-4])


# -- k-hat ------------------------------------------------------------------------------------
def test_khat_warns_for_a_mean_field_guide_of_a_correlated_posterior():
    """AutoNormal on a correlation of 0.99 is 7 times too narrow along the diagonal: true k is
    near 1 (estimates 0.80-0.96 on seeds 0-3); AutoMultivariateNormal on 0.9 is exact (-0.17
    to 0.17)."""
    model = correlated(0.99)
    with pytest.warns(UserWarning, match=r"k-hat = .* > 0\.7.*tails and variances"):
        bad = fit_guide(model, AutoNormal(model), steps=1000, seed=0, khat_samples=4000,
                        **quiet())
    assert bad.khat > 0.7 and any("k-hat" in w for w in bad.warnings)
    pyro.clear_param_store()
    model = correlated(0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        good = fit_guide(model, AutoMultivariateNormal(model), steps=2000, seed=0, **quiet())
    assert good.khat < 0.5 and not good.warnings


# -- budgets, progress, callbacks -------------------------------------------------------------
def test_max_time_stops_training():
    result = fit_guide(normal_mean, AutoNormal(normal_mean), X, steps=10**6, max_time=0.3,
                       seed=0, khat_samples=0, **quiet())
    assert result.stopped == "max_time"
    assert 0.3 <= result.seconds < 5.0 and 0 < result.steps < 10**6


def test_progress_lines_when_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(importlib.import_module("pyro_flows._progress"), "LINE_SECONDS", 0.0)
    fit_guide(normal_mean, AutoNormal(normal_mean), X, steps=5, seed=0, khat_samples=0)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fit_")]
    assert len(lines) >= 5 and "5/5 step (100%)" in lines[-1] and "smoothed ELBO=" in lines[-1]
    fit_guide(normal_mean, AutoNormal(normal_mean), X, steps=5, seed=0, khat_samples=0,
              progress=False)
    assert capsys.readouterr().err == ""


def test_result_is_a_record():
    result = GuideFitResult(elbo=[-2.0, -1.0])
    assert result.steps == 2 and result.losses == [2.0, 1.0]
    assert GuideFitResult(**result.as_dict()) == result


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, options, error, match",
    [
        (("model", None), {}, TypeError, "model must be a callable"),
        ((normal_mean, 3), {}, TypeError, "guide must be a callable"),
        ((), {"steps": 0}, ValueError, "steps must be a positive int, got 0"),
        ((), {"steps": 2.5}, TypeError, "steps must be a positive int"),
        ((), {"lr": -1.0}, ValueError, "lr must be a positive finite number, got -1.0"),
        ((), {"lr_end": 0.0}, ValueError, "lr_end must be a positive"),
        ((), {"num_particles": 0}, ValueError,
         r"num_particles must be None \(32 in one call, 8 in a loop\) or a positive int, got 0"),
        ((), {"num_particles": "8"}, TypeError, "num_particles must be"),
        ((), {"loss": "kl"}, ValueError, "loss must be one of"),
        ((), {"schedule": "linear"}, ValueError, "schedule must be one of"),
        ((), {"clip_grad_norm": 0.0}, ValueError, "clip_grad_norm must be"),
        ((), {"converge": "yes"}, TypeError, "converge must be True or False"),
        ((), {"polish": 1}, TypeError, "polish must be True or False"),
        ((), {"window": 1}, ValueError, "window must be"),
        ((), {"khat_samples": 5}, ValueError, "khat_samples must be 0"),
        ((), {"seed": "0"}, TypeError, "seed must be None"),
        ((), {"seed": -1}, ValueError, r"seed must be .* in \[0, 2\*\*32 - 1\], got -1"),
        ((), {"seed": 2**32}, ValueError, r"in \[0, 2\*\*32 - 1\], got 4294967296"),
        ((), {"resume": True}, ValueError, "resume=True needs checkpoint"),
        ((), {"callback": 3}, TypeError, "callback must be None or callable"),
    ],
)
def test_bad_input_is_named(args, options, error, match):
    model, guide = args if args else (normal_mean, AutoNormal(normal_mean))
    with pytest.raises(error, match=match):
        fit_guide(model, guide, X, **quiet(**options))


def test_a_guide_without_parameters_is_refused():
    def fixed_guide(x):
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="no parameters"):
        fit_guide(normal_mean, fixed_guide, X, **quiet())


def test_a_khat_of_minus_infinity_is_explained(monkeypatch):
    """Log ratios equal up to rounding (a 10,000-point model's log density of about -2e4 has a
    float32 resolution of 0.002 nats) make the Pareto fit return -inf: the note says why."""
    from pyro_flows.infer.guide_check import GuideCheck

    fit_guide_module = importlib.import_module("pyro_flows.infer.fit_guide")

    monkeypatch.setattr(fit_guide_module, "guide_importance_check",
                        lambda *a, **k: GuideCheck(khat=-math.inf, num_samples=100, ess=100.0))
    result = fit_guide(normal_mean, AutoNormal(normal_mean), X, steps=20, seed=0,
                       khat_samples=100, **quiet())
    assert result.khat == -math.inf and result.flag is None
    assert "equal up to floating-point rounding" in result.khat_note and "ESS 100 of 100" in \
        result.khat_note
