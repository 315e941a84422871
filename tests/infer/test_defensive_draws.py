"""Defensive draws (the guide and its widened twin, weighted against the mixture) and the honest
flags of guide_importance_check / fit_guide built on them."""

from __future__ import annotations

import math
import sys
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value

from pyro_flows.infer import AutoFlow, GuideCheck, guide_importance_check
from pyro_flows.infer.defensive_draws import defensive_draws, supports_defensive_draws
from pyro_flows.infer.fit_guide import GuideFitResult, _khat


@pytest.fixture(autouse=True)
def _fresh_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def _standard_normal():
    pyro.sample("z", dist.Normal(0.0, 1.0))


def _gaussian_guide(model, loc: float = 0.0) -> AutoFlow:
    """An AutoFlow that is exactly N(loc, 1): identity layers, no start, scale 1."""
    guide = AutoFlow(model, num_transforms=1, gaussian_start=False, init_scale=1.0,
                     init_loc_fn=init_to_value(values={"z": torch.tensor(loc)}))
    guide()
    return guide


#: a posterior N(0, 1) with 10 % of its mass in a component twice as wide: sd sqrt(1.3)
_WEIGHT, _WIDE = 0.9, 2.0
_TRUE_SD_RATIO = 1.0 / math.sqrt(_WEIGHT + (1 - _WEIGHT) * _WIDE**2)  # of an N(0, 1) guide


def _wide_tailed():
    z = pyro.sample("z", dist.Normal(0.0, 10.0))
    log_p = torch.logaddexp(
        dist.Normal(0.0, 1.0).log_prob(z) + math.log(_WEIGHT),
        dist.Normal(0.0, _WIDE).log_prob(z) + math.log(1 - _WEIGHT),
    )
    pyro.factor("mixture", log_p - dist.Normal(0.0, 10.0).log_prob(z))


def test_an_exact_guide_has_zero_log_ratios_and_the_mixture_weights_are_right():
    pyro.set_rng_seed(0)
    guide = _gaussian_guide(_standard_normal)
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
def test_too_light_tails_are_measured_and_flagged(seed):
    """The guide N(0, 1) is 12 % too narrow; its own draws rarely reach the wide component, so
    the plain weighted sd reads the guide as nearly right; the defensive one sees the tails."""
    guide = _gaussian_guide(_wide_tailed)
    pyro.set_rng_seed(seed)
    plain = guide_importance_check(_wide_tailed, guide, num_samples=4000, defensive=False)
    pyro.set_rng_seed(seed)
    check = guide_importance_check(_wide_tailed, guide, num_samples=4000)
    assert check.khat_defensive is not None and check.reliable
    assert abs(check.sd_ratio["z"] - _TRUE_SD_RATIO) < 0.04, check.sd_ratio
    assert abs(check.sd_ratio["z"] - _TRUE_SD_RATIO) < abs(plain.sd_ratio["z"] - _TRUE_SD_RATIO)
    assert check.biased
    assert check.khat == pytest.approx(plain.khat, abs=0.3)  # the same kind of draws


def test_other_guides_keep_the_plain_check():
    guide = AutoNormal(_standard_normal)
    assert not supports_defensive_draws(guide)
    pyro.set_rng_seed(0)
    check = guide_importance_check(_standard_normal, guide, num_samples=200)
    assert check.khat_defensive is None
    with pytest.raises(TypeError, match="needs a set-up AutoFlow guide, got AutoNormal"):
        defensive_draws(_standard_normal, guide, (), {}, 100, max_plate_nesting=0,
                        batch_size=None)


def test_bad_arguments_are_refused():
    guide = _gaussian_guide(_standard_normal)
    with pytest.raises(ValueError, match="num_samples must be an int >= 10, got 5"):
        defensive_draws(_standard_normal, guide, (), {}, 5, max_plate_nesting=0, batch_size=None)
    with pytest.raises(ValueError, match="width must be > 1, got 1.0"):
        defensive_draws(_standard_normal, guide, (), {}, 50, max_plate_nesting=0,
                        batch_size=None, width=1.0)
    with pytest.raises(TypeError, match="defensive must be True or False, got 'yes'"):
        guide_importance_check(_standard_normal, guide, num_samples=50, defensive="yes")


def _warnings_for(monkeypatch, check: GuideCheck) -> tuple[list[str], list[str]]:
    """fit_guide's final check with ``check`` as its result: (UserWarnings, result notes)."""
    module = sys.modules["pyro_flows.infer.fit_guide"]  # the package's fit_guide is the function
    monkeypatch.setattr(module, "guide_importance_check", lambda *a, **k: check)
    result = GuideFitResult()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _khat(_standard_normal, None, (), {}, result, 4000, 0)
    return [str(w.message) for w in caught if w.category is UserWarning], result.warnings


def _check(khat: float, khat_defensive: float | None, ratio: float = 1.0) -> GuideCheck:
    return GuideCheck(khat, 4000, 3000.0, {"a": 0.0}, {"a": ratio}, {"a": 0.01}, {"a": 0.01},
                      khat_defensive=khat_defensive)


def test_a_high_plain_khat_with_agreeing_defensive_moments_is_a_note_not_a_warning(monkeypatch):
    warned, notes = _warnings_for(monkeypatch, _check(0.9, 0.3))
    assert warned == []
    assert any("agree with the guide's" in n for n in notes)


def test_a_high_plain_khat_warns_unless_the_moments_are_confirmed(monkeypatch):
    """An sd ratio 0.89 (just past the limit) is not confirmed, nor is 0.91 within two errors
    of it: the k-hat warning stays, with what the defensive weights measured."""
    for ratio in (0.89, 0.91):
        check = _check(0.9, 0.3, ratio=ratio)
        assert not check.confirmed
        warned, _ = _warnings_for(monkeypatch, check)
        assert len(warned) == 1 and "k-hat = 0.90 > 0.7" in warned[0]
        assert "defensively weighted (k-hat 0.30)" in warned[0]
    assert _check(0.9, 0.3, ratio=0.93).confirmed
    assert not _check(0.9, 0.8, ratio=1.0).confirmed  # unreliable weights confirm nothing


def test_unreliable_defensive_weights_warn_even_with_a_small_plain_khat(monkeypatch):
    warned, _ = _warnings_for(monkeypatch, _check(0.4, 0.9))
    assert len(warned) == 1 and "tails miss" in warned[0]


def test_defensive_moments_that_disagree_warn(monkeypatch):
    warned, _ = _warnings_for(monkeypatch, _check(0.4, 0.3, ratio=0.8))
    assert len(warned) == 1 and "defensively weighted" in warned[0]


def test_without_defensive_draws_a_high_khat_still_warns(monkeypatch):
    warned, _ = _warnings_for(monkeypatch, _check(0.9, None))
    assert len(warned) == 1 and "k-hat = 0.90 > 0.7" in warned[0]
