"""fit_guide's flag rule (judge_guide) and its defensive check: which rule fires, the warning
it gives, and that the plain k-hat and check keep their draws."""

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

from pyro_flows.infer import AutoFlow, GuideCheck, fit_guide
from pyro_flows.infer.fit_guide import GuideFitResult, _khat
from pyro_flows.infer.guide_flag import judge_guide

FIT_GUIDE = sys.modules["pyro_flows.infer.fit_guide"]  # the package's fit_guide is the function


@pytest.fixture(autouse=True)
def _fresh_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def gaussian_guide(model) -> AutoFlow:
    """An AutoFlow that is exactly N(0, 1): identity layers, no start, scale 1."""
    guide = AutoFlow(model, num_transforms=1, gaussian_start=False, init_scale=1.0,
                     init_loc_fn=init_to_value(values={"z": torch.tensor(0.0)}))
    guide()
    return guide


def wide_tailed():
    """N(0, 1) with 20 % of its mass in a component twice as wide: sd sqrt(1.6)."""
    z = pyro.sample("z", dist.Normal(0.0, 10.0))
    log_p = torch.logaddexp(dist.Normal(0.0, 1.0).log_prob(z) + math.log(0.8),
                            dist.Normal(0.0, 2.0).log_prob(z) + math.log(0.2))
    pyro.factor("mixture", log_p - dist.Normal(0.0, 10.0).log_prob(z))


def _check(khat: float, ratio: float = 1.0, se: float = 0.01) -> GuideCheck:
    return GuideCheck(khat, 4000, 3000.0, {"a": 0.0}, {"a": ratio}, {"a": se}, {"a": se})


# -- the rule ---------------------------------------------------------------------------------
def test_a_high_plain_khat_with_confirmed_defensive_moments_is_a_note():
    verdict = judge_guide(_check(0.9), _check(0.3))
    assert verdict.flag is None and "agree with the guide's" in verdict.message


@pytest.mark.parametrize("ratio", [0.89, 0.91])
def test_a_high_plain_khat_warns_unless_the_moments_are_confirmed(ratio):
    """An sd ratio 0.89 (past the limit) is not confirmed, nor 0.91 (within two errors of it)."""
    verdict = judge_guide(_check(0.9), _check(0.3, ratio=ratio))
    assert verdict.flag == "khat"
    assert "k-hat = 0.90 > 0.7" in verdict.message and "defensively weighted (k-hat 0.30)" in (
        verdict.message)
    assert judge_guide(_check(0.9), _check(0.3, ratio=0.93)).flag is None
    # unreliable weights confirm nothing
    assert judge_guide(_check(0.9), _check(0.8)).flag == "khat"


def test_unreliable_defensive_weights_flag_the_tails_even_with_a_small_plain_khat():
    verdict = judge_guide(_check(0.4), _check(0.9))
    assert verdict.flag == "tails" and "tails put almost none" in verdict.message


def test_disagreeing_defensive_moments_flag_the_moments():
    verdict = judge_guide(_check(0.4), _check(0.3, ratio=0.8))
    assert verdict.flag == "moments" and "defensively weighted" in verdict.message
    # plain moments that disagree (reliable plain weights) flag as well, named as plain ones
    verdict = judge_guide(_check(0.4, ratio=0.8), _check(0.3))
    assert verdict.flag == "moments" and "PSIS-weighted" in verdict.message
    assert "result.check" in verdict.message
    # ... but not from unreliable plain weights, and not within their standard error
    assert judge_guide(_check(0.9, ratio=0.8), _check(0.3)).flag is None
    assert judge_guide(_check(0.4, ratio=0.89, se=0.02), _check(0.3)).flag is None


def test_without_a_defensive_check_the_plain_rule_holds():
    assert judge_guide(_check(0.9), None).flag == "khat"
    assert judge_guide(_check(0.4, ratio=1.3), None).flag == "moments"
    assert judge_guide(_check(0.6), None).flag is None
    assert "usable" in judge_guide(_check(0.6), None).message
    assert judge_guide(_check(0.3), None).message is None


def test_bad_checks_are_refused():
    with pytest.raises(TypeError, match="plain must be a GuideCheck, got float"):
        judge_guide(0.5, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="defensive must be a GuideCheck, got dict"):
        judge_guide(_check(0.5), {})  # type: ignore[arg-type]


# -- in fit_guide -------------------------------------------------------------------------------
def _final_check(model, guide, seed: int) -> tuple[GuideFitResult, list[str]]:
    result = GuideFitResult()
    pyro.set_rng_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _khat(model, guide, (), {}, result, 4000, 0)
    return result, [str(w.message) for w in caught if w.category is UserWarning]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_too_light_tails_are_warned_about(seed):
    """An AutoFlow that is N(0, 1) on a posterior with 20 % of its mass twice as wide (sd 0.79 of
    the truth): fit_guide's final check warns, whatever the plain k-hat reads."""
    result, warned = _final_check(wide_tailed, gaussian_guide(wide_tailed), seed)
    assert result.flag is not None and len(warned) == 1
    assert result.defensive_check is not None
    assert result.defensive_check.sd_ratio["z"] < 0.85


@pytest.mark.parametrize("seed", [0, 1])
def test_an_exact_autoflow_is_not_flagged(seed):
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    result, warned = _final_check(model, gaussian_guide(model), seed)
    assert result.flag is None and warned == []
    assert result.defensive_check is not None and result.defensive_check.confirmed


def test_the_plain_khat_keeps_its_draws_and_the_rng_is_put_back(monkeypatch):
    """The defensive check draws on its own: khat, check and the RNG state after fit_guide are
    those of a fit without it."""

    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2), torch.tensor([2.0, 0.5])).to_event(1))

    def fit(defensive: bool):
        pyro.clear_param_store()
        if not defensive:
            monkeypatch.setattr(FIT_GUIDE, "supports_defensive_draws", lambda guide: False)
        result = fit_guide(model, AutoFlow(model, num_transforms=1, hidden_dims=(8,)),
                           steps=200, seed=0, khat_samples=500, progress=False)
        monkeypatch.undo()
        return result, torch.randn(5)

    with_check, after_with = fit(True)
    without, after_without = fit(False)
    assert with_check.defensive_check is not None and without.defensive_check is None
    assert with_check.khat == pytest.approx(without.khat, abs=1e-9)
    assert with_check.check.sd_ratio == pytest.approx(without.check.sd_ratio, abs=1e-9)
    assert torch.allclose(after_with, after_without, rtol=0.0, atol=1e-12)


def test_other_guides_keep_the_plain_rule():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    for steps in (100, 1500):
        pyro.clear_param_store()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            result = fit_guide(model, AutoNormal(model), steps=steps, seed=0, khat_samples=500,
                               progress=False)
        assert result.defensive_check is None
        assert (result.flag == "khat") == (result.khat > 0.7), (steps, result.khat)
