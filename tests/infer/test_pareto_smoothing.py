"""``pyro_flows.infer.pareto_smoothing`` computes ArviZ's PSIS (``psislw``) without importing it:
the same smoothed log weights and k-hat on light, heavy and very heavy tails, few and many
draws, ``reff`` below 1 and zero weights; and ``fit_guide``'s check no longer imports ArviZ."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from pyro_flows.infer.importance_weights import psis_khat, psis_smooth
from pyro_flows.infer.pareto_smoothing import pareto_smooth_log_weights, tail_length


def _arviz_psislw(lw: np.ndarray, reff: float) -> tuple[np.ndarray, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz

        smoothed, k = arviz.psislw(lw.copy(), reff=reff)
    return np.asarray(smoothed, dtype=np.float64), float(np.asarray(k))


def _log_ratios(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "light":  # Student-t proposal, normal target
        x = rng.standard_t(5, size=n)
        return -0.5 * x**2 + 3.0 * np.log1p(x**2 / 5)
    if kind == "pareto":  # w = u^(-0.8): k = 0.8
        return -0.8 * np.log(rng.uniform(size=n))
    if kind == "very_heavy":  # normal proposal, Cauchy-wide target
        x = rng.normal(size=n)
        return 0.5 * x**2 - np.log1p(x**2)
    if kind == "zeros":  # some zero weights (-inf)
        lw = rng.normal(size=n) * 2.0
        lw[rng.uniform(size=n) < 0.1] = -np.inf
        return lw
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["light", "pareto", "very_heavy", "zeros"])
@pytest.mark.parametrize("n,reff", [(40, 1.0), (1000, 1.0), (4000, 0.6), (20000, 1.0)])
def test_matches_arviz(kind, n, reff):
    for seed in (0, 1):
        lw = _log_ratios(kind, n, seed)
        ours, k = pareto_smooth_log_weights(lw, reff)
        theirs, k_az = _arviz_psislw(lw, reff)
        assert k == pytest.approx(k_az, rel=1e-9, abs=1e-12)
        finite = np.isfinite(theirs)
        assert np.array_equal(np.isfinite(ours), finite)
        np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-9, atol=1e-10)


def test_known_tail_index_and_normalisation():
    lw = _log_ratios("pareto", 20000, 3)
    smoothed, k = pareto_smooth_log_weights(lw)
    assert abs(k - 0.8) < 0.1
    assert np.logaddexp.reduce(smoothed) == pytest.approx(0.0, abs=1e-12)
    low = int(np.argmin(lw))  # in the body: unsmoothed, so a fixed reference point
    # truncated at the largest raw ratio: relative to the body, no weight grew past it
    assert smoothed.max() - smoothed[low] <= lw.max() - lw[low] + 1e-9
    assert tail_length(4000) == 190 and tail_length(40) == 8
    # too short a tail to fit: k = inf, weights only normalised
    flat = np.zeros(12)
    flat[-1] = 5.0
    out, k = pareto_smooth_log_weights(flat)
    assert k == np.inf
    np.testing.assert_allclose(out, flat - np.logaddexp.reduce(flat))


def test_public_helpers_use_it():
    lw = _log_ratios("very_heavy", 4000, 2)
    smoothed, k = psis_smooth(lw)
    assert k == pytest.approx(_arviz_psislw(lw, 1.0)[1], rel=1e-9)
    assert psis_khat(lw) == k
    assert smoothed.dtype.is_floating_point and smoothed.shape == (4000,)


def test_fit_guide_does_not_import_arviz():
    code = (
        "import sys, pyro, pyro.distributions as dist, torch\n"
        "from pyro_flows.infer import AutoFlow, fit_guide\n"
        "def model():\n"
        "    pyro.sample('x', dist.Normal(0.0, 1.0))\n"
        "r = fit_guide(model, AutoFlow(model, num_transforms=1, hidden_dims=(8,)), steps=20,\n"
        "              progress=False, seed=0, khat_samples=200)\n"
        "assert r.khat is not None\n"
        "print('arviz' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout
