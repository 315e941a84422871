"""Defensive draws (the guide and its widened twin, weighted against the mixture) and the
defensive moment check built on them."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value

from pyro_flows.infer import AutoFlow, guide_importance_check
from pyro_flows.infer.defensive_draws import (
    defensive_draws,
    defensive_importance_check,
    supports_defensive_draws,
)
from pyro_flows.infer.guide_check import weighted_moment_check


@pytest.fixture(autouse=True)
def _fresh_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def _standard_normal():
    pyro.sample("z", dist.Normal(0.0, 1.0))


def gaussian_guide(model, loc: float = 0.0) -> AutoFlow:
    """An AutoFlow that is exactly N(loc, 1): identity layers, no start, scale 1."""
    guide = AutoFlow(model, num_transforms=1, gaussian_start=False, init_scale=1.0,
                     init_loc_fn=init_to_value(values={"z": torch.tensor(loc)}))
    guide()
    return guide


#: a posterior N(0, 1) with 20 % of its mass in a component twice as wide: sd sqrt(1.6)
_WEIGHT, _WIDE = 0.8, 2.0
TRUE_SD_RATIO = 1.0 / math.sqrt(_WEIGHT + (1 - _WEIGHT) * _WIDE**2)  # of an N(0, 1) guide


def wide_tailed():
    z = pyro.sample("z", dist.Normal(0.0, 10.0))
    log_p = torch.logaddexp(
        dist.Normal(0.0, 1.0).log_prob(z) + math.log(_WEIGHT),
        dist.Normal(0.0, _WIDE).log_prob(z) + math.log(1 - _WEIGHT),
    )
    pyro.factor("mixture", log_p - dist.Normal(0.0, 10.0).log_prob(z))


def test_an_exact_guide_has_zero_log_ratios_and_the_mixture_weights_are_right():
    pyro.set_rng_seed(0)
    guide = gaussian_guide(_standard_normal)
    draws = defensive_draws(_standard_normal, guide, (), {}, 2000, max_plate_nesting=0,
                            batch_size=512)
    assert draws.log_ratios.abs().max() < 1e-4  # q = p: log p - log q = 0 (float32 rounding)
    # self-normalised weights p/m over both halves recover p's moments (a wrong mixture
    # density would not): E z = 0, E z^2 = 1, within about 3 standard errors
    w = torch.softmax(draws.mixture_log_ratios, 0)
    z = draws.values["z"][:, 0]
    assert abs(float((w * z).sum())) < 0.08
    assert abs(float((w * z**2).sum()) - 1.0) < 0.1
    assert z[2000:].std() > 1.7  # the second half comes from the twice-wider twin


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_exact_guide_is_confirmed(seed):
    guide = gaussian_guide(_standard_normal)
    pyro.set_rng_seed(seed)
    check = defensive_importance_check(_standard_normal, guide, num_samples=2000)
    assert check.reliable and check.confirmed and not check.biased
    assert check.num_samples == 4000
    assert abs(check.sd_ratio["z"] - 1.0) < 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_too_light_tails_are_measured_and_flagged(seed):
    """The guide N(0, 1) is 21 % too narrow; its own draws rarely reach the wide component, so
    the plain weighted sd reads the guide as nearly right; the defensive one sees the tails."""
    guide = gaussian_guide(wide_tailed)
    pyro.set_rng_seed(seed)
    plain = guide_importance_check(wide_tailed, guide, num_samples=4000)
    pyro.set_rng_seed(seed)
    check = defensive_importance_check(wide_tailed, guide, num_samples=2000)
    assert check.reliable
    assert abs(check.sd_ratio["z"] - TRUE_SD_RATIO) < 0.04, check.sd_ratio
    assert abs(check.sd_ratio["z"] - TRUE_SD_RATIO) < abs(plain.sd_ratio["z"] - TRUE_SD_RATIO)
    assert check.biased and not check.confirmed


def test_a_shifted_guide_is_flagged_by_its_mean():
    guide = gaussian_guide(_standard_normal, loc=0.3)
    pyro.set_rng_seed(0)
    check = defensive_importance_check(_standard_normal, guide, num_samples=2000)
    assert 0.2 < check.mean_shift["z"] < 0.4 and check.biased


def test_other_guides_are_refused():
    guide = AutoNormal(_standard_normal)
    assert not supports_defensive_draws(guide)
    assert not supports_defensive_draws(AutoFlow(_standard_normal))  # not set up yet
    with pytest.raises(TypeError, match="needs a set-up AutoFlow guide, got AutoNormal"):
        defensive_draws(_standard_normal, guide, (), {}, 100, max_plate_nesting=0,
                        batch_size=None)
    with pytest.raises(TypeError, match="needs a set-up AutoFlow guide, got AutoNormal"):
        defensive_importance_check(_standard_normal, guide, num_samples=100)


def test_bad_arguments_are_refused():
    guide = gaussian_guide(_standard_normal)
    with pytest.raises(ValueError, match="num_samples must be an int >= 10, got 5"):
        defensive_draws(_standard_normal, guide, (), {}, 5, max_plate_nesting=0, batch_size=None)
    with pytest.raises(ValueError, match="width must be > 1, got 1.0"):
        defensive_draws(_standard_normal, guide, (), {}, 50, max_plate_nesting=0,
                        batch_size=None, width=1.0)
    with pytest.raises(ValueError, match=r"num_own must be in \[2, 20\] \(the draws\), got 30"):
        weighted_moment_check(0.0, torch.zeros(20), {"z": torch.zeros(20, 1)}, num_own=30)
