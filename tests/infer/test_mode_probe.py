"""Missed modes: the probe finds what a mode-seeking flow never samples, and fit_target says so."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from pyro_flows import Flow, flows
from pyro_flows.infer import fit_target
from pyro_flows.infer.mode_probe import probe_modes
from pyro_flows.targets import get_target
from pyro_flows.transforms.affine import ElementwiseAffine

LEFT, RIGHT = torch.tensor([-4.0, 0.0]), torch.tensor([4.0, 0.0])


def two_modes(z: torch.Tensor) -> torch.Tensor:
    """The issue's target: Gaussians at (+-4, 0), sd 0.7, equal mass."""
    a = -0.5 * (((z - RIGHT) / 0.7) ** 2).sum(-1)
    b = -0.5 * (((z - LEFT) / 0.7) ** 2).sum(-1)
    return torch.logaddexp(a, b)


def one_mode_flow() -> Flow:
    return Flow([ElementwiseAffine(2, loc=RIGHT.clone(), scale=0.7)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_probe_finds_the_mode_the_flow_misses(seed):
    probe = probe_modes(one_mode_flow(), two_modes, seed=seed)
    assert int(probe.missed.sum()) == 1
    assert torch.allclose(probe.modes[probe.missed][0], LEFT, atol=1e-2)
    covered = ~probe.missed
    assert bool(covered.any()) and float(probe.excess[covered].abs().max()) < 0.5
    # exact on the covered mode: the log Z of one Gaussian part, half the target's
    assert probe.reference == pytest.approx(math.log(2 * math.pi * 0.49), abs=1e-3)
    assert "too small" in probe.summary()


def test_a_flow_that_covers_both_modes_misses_none():
    class Both(torch.nn.Module):
        def log_prob(self, z):
            return two_modes(z) - torch.log(torch.tensor(2 * 2 * torch.pi * 0.49))

        def rsample_and_log_prob(self, shape):
            side = torch.where(torch.rand(shape) < 0.5, -1.0, 1.0)[..., None]
            z = side * RIGHT + 0.7 * torch.randn(*shape, 2)
            return z, self.log_prob(z)

    probe = probe_modes(Both(), two_modes, seed=0)
    assert len(probe.modes) == 2 and not bool(probe.missed.any())


def test_an_unbounded_density_gives_no_false_alarm():
    """The funnel's density grows without bound down its neck: the climbs there never
    converge and are dropped."""
    funnel = get_target("funnel")
    flow = Flow([ElementwiseAffine(funnel.dim, scale=1.0)])
    probe = probe_modes(flow, funnel.log_prob, seed=0)
    assert not bool(probe.missed.any())


def test_fit_target_warns_when_its_flow_drops_a_mode():
    flow = one_mode_flow()
    with pytest.warns(UserWarning, match=r"misses 1 mode\(s\).*mode at \(-4"):
        history = fit_target(flow, two_modes, steps=2, batch_size=64, lr=1e-4, progress=False)
    assert len(history.missed_modes) == 1
    assert history.missed_modes[0] == pytest.approx(LEFT.tolist(), abs=1e-2)
    # the diagnostics from the flow's own draws cannot see it: full ESS, log Z low by log 2
    assert history.ess_fraction[-1] > 0.99


def test_fit_target_is_quiet_on_a_unimodal_target_and_when_asked():
    torch.manual_seed(0)
    flow = flows.realnvp(2, num_transforms=3, hidden_dims=(32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        history = fit_target(flow, get_target("banana"), steps=400, progress=False)
    assert history.missed_modes == [] and history.mode_check.startswith("no missed mode")
    quiet = fit_target(one_mode_flow(), two_modes, steps=1, progress=False, check_modes=False)
    assert quiet.missed_modes == [] and quiet.mode_check == ""
    with pytest.raises(TypeError, match="check_modes must be True or False, got 1"):
        fit_target(one_mode_flow(), two_modes, steps=1, progress=False, check_modes=1)


def test_probe_rejects_bad_counts_and_a_nan_target():
    """num_samples=0 used to fail on a shape deep in the climb, and a NaN target gave
    reference=nan silently."""
    flow = one_mode_flow()
    with pytest.raises(ValueError, match="num_samples must be an int >= 2, got 0"):
        probe_modes(flow, two_modes, num_samples=0)
    with pytest.raises(ValueError, match=r"num_samples \(8\) must be at least num_starts \(16\)"):
        probe_modes(flow, two_modes, num_starts=16, num_samples=8)
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        probe_modes(flow, two_modes, lr=-1.0)
    with pytest.raises(ValueError, match=r"candidates must have shape \(M, 2\)"):
        probe_modes(flow, two_modes, num_starts=4, steps=2, num_samples=64,
                    candidates=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN or infinite at all 64 flow draws"):
        probe_modes(flow, lambda z: z.sum(-1) * math.nan, num_starts=4, steps=2, num_samples=64)
