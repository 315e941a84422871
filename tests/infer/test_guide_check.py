"""guide_importance_check: PSIS k-hat and the guide's moments against the weighted ones."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_flows.infer import GuideCheck, guide_importance_check
from pyro_flows.infer.fit_guide import GuideFitResult, _khat


def _model():
    pyro.sample("a", dist.Normal(1.0, 2.0))
    pyro.sample("b", dist.Gamma(3.0, 2.0))


def _guide(sd_factor: float, shift: float = 0.0):
    def guide():
        pyro.sample("a", dist.Normal(1.0 + 2.0 * shift, 2.0 * sd_factor))
        pyro.sample("b", dist.Gamma(3.0, 2.0))

    return guide


def test_the_exact_guide_is_not_flagged():
    pyro.set_rng_seed(0)
    check = guide_importance_check(_model, _guide(1.0), num_samples=2000)
    assert check.khat == float("-inf")  # equal weights
    assert not check.biased
    assert check.worst_mean_shift < 0.1
    low, high = check.sd_ratio_range
    assert 0.9 < low <= high < 1.1
    assert set(check.mean_shift) == {"a", "b"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_too_wide_guide_is_flagged_with_a_small_khat(seed):
    pyro.set_rng_seed(seed)
    check = guide_importance_check(_model, _guide(1.6), num_samples=4000)
    assert check.khat < 0.5  # bounded ratios: k-hat alone sees nothing wrong
    assert check.biased
    assert 1.45 < check.sd_ratio["a"] < 1.75
    assert 0.9 < check.sd_ratio["b"] < 1.1
    assert "a" in check.summary()


@pytest.mark.parametrize("seed", [0, 1])
def test_a_shifted_guide_is_flagged_by_its_mean(seed):
    pyro.set_rng_seed(seed)
    check = guide_importance_check(_model, _guide(1.2, shift=0.3), num_samples=4000)
    assert check.reliable
    assert 0.2 < check.mean_shift["a"] < 0.4  # the guide's mean is 0.3 sd high
    assert check.biased


def test_unreliable_weights_are_not_judged_by_moments():
    pyro.set_rng_seed(0)
    check = guide_importance_check(_model, _guide(0.3), num_samples=2000)
    assert check.khat > 0.7
    assert not check.reliable and not check.biased  # k-hat is the flag there


def test_local_latents_are_checked_element_by_element():
    def model():
        with pyro.plate("n", 3):
            pyro.sample("z", dist.Normal(torch.tensor([0.0, 1.0, 2.0]), 1.0))

    def guide():
        with pyro.plate("n", 3):
            pyro.sample("z", dist.Normal(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1, 1, 1.5])))

    pyro.set_rng_seed(0)
    vectorised = guide_importance_check(model, guide, num_samples=3000)
    assert set(vectorised.sd_ratio) == {"z[0]", "z[1]", "z[2]"}
    assert vectorised.sd_ratio["z[2]"] > 1.3 and vectorised.sd_ratio["z[0]"] < 1.1
    pyro.set_rng_seed(0)
    looped = guide_importance_check(model, guide, num_samples=500, vectorize=False)
    assert set(looped.sd_ratio) == set(vectorised.sd_ratio)
    assert looped.sd_ratio["z[2]"] > 1.2


def test_fit_guide_warns_about_a_biased_guide_and_keeps_the_check():
    result = GuideFitResult()
    pyro.set_rng_seed(0)
    with pytest.warns(UserWarning, match="too wide"):
        _khat(_model, _guide(1.6), (), {}, result, 2000, 0)
    assert isinstance(result.check, GuideCheck) and result.check.biased
    assert result.khat == result.check.khat < 0.7
    assert any("moments disagree" in w for w in result.warnings)


def test_fit_guide_is_quiet_about_a_good_guide():
    result = GuideFitResult()
    pyro.set_rng_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _khat(_model, _guide(1.0), (), {}, result, 2000, 0)
    assert result.check is not None and not result.check.biased


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"num_samples": 5}, ValueError),
        ({"num_samples": 10.0}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"vectorize": "yes"}, TypeError),
    ],
)
def test_bad_arguments_are_refused(kwargs, error):
    with pytest.raises(error):
        guide_importance_check(_model, _guide(1.0), **kwargs)


def test_a_discrepancy_within_the_checks_own_error_is_not_called_bias():
    def check(ratio, se, shift=0.0, shift_se=0.0):
        return GuideCheck(0.3, 4000, 3000.0, {"a": shift}, {"a": ratio}, {"a": shift_se}, {"a": se})

    assert check(1.15, 0.01).biased and check(0.85, 0.01).biased
    assert not check(1.15, 0.08).biased and not check(0.85, 0.08).biased
    assert check(1.0, 0.0, shift=0.2, shift_se=0.05).biased
    assert not check(1.0, 0.0, shift=0.2, shift_se=0.15).biased


def test_the_bootstrap_errors_are_measured():
    pyro.set_rng_seed(0)
    check = guide_importance_check(_model, _guide(1.3), num_samples=2000)
    assert 0.0 < check.sd_ratio_se["a"] < 0.1 and 0.0 < check.mean_shift_se["a"] < 0.1


def test_a_constant_element_is_left_out_of_the_comparison():
    """An element every draw shares (an LKJ Cholesky factor's L[0, 0] = 1) has no moments: with
    weights whose sum is 1 only up to rounding it read as shifted by -1 sd with sd ratio 0."""
    from pyro_flows.infer.guide_check import weighted_moment_check

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 2, generator=g)
    x[:, 0] = 1.0
    log_w = 0.3 * torch.randn(2000, generator=g)  # weights that do not sum to 1 exactly
    check = weighted_moment_check(0.1, log_w, {"L": x})
    assert "L[0]" not in check.sd_ratio and "L[0]" not in check.mean_shift
    assert "L[1]" in check.sd_ratio and not check.biased
