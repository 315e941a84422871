"""The mass-covering default of fit_target: the mode search, tempered MALA with swaps, and
flow-assisted MCMC (method="auto" / "flow_mcmc"), against reverse KL on unequal modes."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from pyro_flows import flows
from pyro_flows.infer import fit_target
from pyro_flows.infer.mode_search import merge_maxima, search_modes
from pyro_flows.infer.tempered_mala import TemperedMALA, ladder, ladder_size
from pyro_flows.targets.mixture import GaussianMixture


def unequal_modes() -> GaussianMixture:
    """0.25 at (5, 1) and 0.75 at (-3, -2), sd 0.6: a 30-nat barrier, log Z = 0."""
    return GaussianMixture(
        centres=torch.tensor([[5.0, 1.0], [-3.0, -2.0]]), weights=[0.25, 0.75], scale=0.6,
        num_modes=2,
    )


def gaussian(z: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.5])
                                      ).log_prob(z).sum(-1)


# -- the search -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_search_finds_every_mode_of_a_mixture_at_any_scale(seed):
    for stretch in (1.0, 10.0):
        target = GaussianMixture(dim=2, num_modes=4, separation=8.0 * stretch, scale=stretch)
        found = search_modes(target.log_prob, 2, seed=seed)
        assert len(found.modes) == 4, (stretch, found.summary())
        nearest = torch.cdist(target.modes, found.modes).amin(-1)
        assert bool((nearest < 0.05 * stretch).all())


def test_search_sees_one_mode_in_a_gaussian_and_a_banana():
    assert len(search_modes(gaussian, 2, seed=0).modes) == 1

    def banana(z):  # a curved narrow valley: many end points, one maximum
        return -0.5 * (z[..., 0] / 3) ** 2 - 0.5 * ((z[..., 1] - 0.3 * z[..., 0] ** 2) / 0.2) ** 2

    assert len(search_modes(banana, 2, seed=0).modes) == 1


def test_merge_keeps_points_apart_only_across_a_dip():
    def ridge(z):  # a flat ridge along x: no dip between two of its points
        return -0.5 * (z[..., 1] / 0.1) ** 2

    points = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    modes, _ = merge_maxima(ridge, points, ridge(points))
    assert len(modes) == 1
    target = unequal_modes()
    points = target.modes.clone()
    modes, heights = merge_maxima(target.log_prob, points, target.log_prob(points))
    assert len(modes) == 2 and heights[0] >= heights[1]


def test_search_rejects_bad_arguments():
    with pytest.raises(TypeError, match="num_starts"):
        search_modes(gaussian, 2, num_starts=2.5)
    with pytest.raises(ValueError, match="max_spread"):
        search_modes(gaussian, 2, max_spread=0.5)
    with pytest.raises(ValueError, match=r"centre must have shape \(2,\)"):
        search_modes(gaussian, 2, centre=torch.zeros(3))


# -- tempered MALA ------------------------------------------------------------------------------
def test_ladder():
    assert ladder_size(2, 0.05) == 4 and ladder_size(32, 0.05) == 13
    assert ladder_size(10_000, 0.05) == 16
    betas = ladder(4, 0.05)
    assert float(betas[0]) == 1.0 and math.isclose(float(betas[-1]), 0.05)
    assert bool((betas[1:] < betas[:-1]).all())


@pytest.mark.parametrize("seed", [0, 1])
def test_swaps_move_chains_to_the_modes_masses(seed):
    """All chains start in the light mode; only swaps through the hot levels can carry them
    over the 30-nat barrier, in proportion to the masses."""
    torch.manual_seed(seed)
    target = unequal_modes()
    start = target.modes[0].repeat(4 * 256, 1)
    chains = TemperedMALA(target.log_prob, start, ladder(4, 0.03))
    light = []
    for i in range(400):
        chains.step()
        if i >= 200:
            light.append(float((target.nearest_mode(chains.cold[0]) == 0).float().mean()))
    assert abs(sum(light) / len(light) - 0.25) < 0.05
    assert 0.4 < chains.local_acceptance < 0.75


def test_chains_without_swaps_stay_where_they_started():
    """The control: one level (no tempering) never crosses the barrier."""
    torch.manual_seed(0)
    target = unequal_modes()
    chains = TemperedMALA(target.log_prob, target.modes[0].repeat(256, 1), ladder(1, 0.05))
    for _ in range(200):
        chains.step()
    assert float((target.nearest_mode(chains.cold[0]) == 0).float().mean()) == 1.0


def test_chain_state_round_trips_and_a_wrong_one_changes_nothing():
    torch.manual_seed(0)
    target = unequal_modes()
    chains = TemperedMALA(target.log_prob, target.modes[0].repeat(2 * 8, 1), ladder(2, 0.1))
    chains.step()
    saved = {k: (v.clone() if isinstance(v, torch.Tensor) else v)
             for k, v in chains.state_dict().items()}
    chains.step()
    before = chains.z.clone()
    with pytest.raises(ValueError, match="shape"):
        chains.load_state_dict({**saved, "h": torch.ones(3)})
    assert torch.equal(chains.z, before)
    chains.load_state_dict(saved)
    assert torch.equal(chains.z, saved["z"]) and chains.rounds == 1


# -- fit_target ---------------------------------------------------------------------------------
def small_flow():
    torch.manual_seed(0)
    return flows.realnvp(2, num_transforms=3, hidden_dims=(32, 32))


def test_auto_on_one_mode_is_reverse_kl_unchanged():
    """The default must not change what fit_target does on a unimodal target."""
    auto_flow, plain_flow = small_flow(), small_flow()
    auto = fit_target(auto_flow, gaussian, steps=60, batch_size=32, progress=False, seed=2)
    plain = fit_target(plain_flow, gaussian, steps=60, batch_size=32, progress=False, seed=2,
                       method="reverse_kl")
    assert auto.method == "reverse_kl" and auto.modes_found == 1 and plain.modes_found == -1
    assert auto.elbo == pytest.approx(plain.elbo, abs=1e-6)
    for p, q in zip(auto_flow.parameters(), plain_flow.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_default_covers_unequal_modes_where_reverse_kl_drops_one(seed):
    target = unequal_modes()
    covering = small_flow()
    history = fit_target(covering, target, steps=600, progress=False, seed=seed)
    assert history.method == "flow_mcmc" and history.modes_found == 2
    assert abs(history.log_Z[-1]) < 0.05
    assert history.ess_fraction[-1] > 0.7
    assert history.global_acceptance[-1] > 0.5
    assert not history.missed_modes
    torch.manual_seed(seed)
    masses = target.mode_masses(covering.sample((20000,)))
    assert float((masses - target.true_mode_weights).abs().max()) < 0.02, masses
    # the method's draws: the chains' states after the burn-in (300 steps), every 2nd round
    assert history.samples.shape == (256, 150, 2)
    chain_masses = target.mode_masses(history.samples.reshape(-1, 2))
    assert float((chain_masses - target.true_mode_weights).abs().max()) < 0.01, chain_masses
    # the control: reverse KL puts (almost) everything in one mode and warns
    seeking = small_flow()
    with pytest.warns(UserWarning, match="misses"):
        plain = fit_target(seeking, target, steps=600, progress=False, seed=seed,
                           method="reverse_kl")
    masses = target.mode_masses(seeking.sample((20000,)))
    assert float(masses.min()) < 0.01 and plain.log_Z[-1] < -0.25
    assert plain.samples is None  # no chains: the flow's (importance-weighted) draws


def test_flow_mcmc_checkpoint_resume_is_exact(tmp_path):
    target = unequal_modes()
    options = dict(steps=40, batch_size=16, progress=False, seed=3, method="flow_mcmc",
                   check_modes=False)
    reference = small_flow()
    full = fit_target(reference, target, **options)

    class Stop(Exception):
        pass

    def crash(step, history):
        if step == 30:
            raise Stop

    path = tmp_path / "chains.pt"
    with pytest.raises(Stop):
        fit_target(small_flow(), target, checkpoint=path, checkpoint_every=20, callback=crash,
                   **options)
    resumed_flow = small_flow()
    resumed = fit_target(resumed_flow, target, checkpoint=path, resume=True, **options)
    assert resumed.elbo == pytest.approx(full.elbo, abs=1e-5)
    assert resumed.grad_evals == full.grad_evals
    assert full.samples.shape == (16, 20, 2)  # rounds 20-39, after the burn-in
    assert torch.allclose(resumed.samples, full.samples, atol=1e-5)
    for p, q in zip(resumed_flow.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)
    with pytest.raises(ValueError, match="different set-up"):
        fit_target(small_flow(), target, checkpoint=path, resume=True,
                   **{**options, "method": "reverse_kl"})


@pytest.mark.parametrize("seed", [0, 1])
def test_chain_draws_give_unequal_masses_the_flows_own_draws_miss(seed):
    """A fresh target (five Gaussians at random places with random weights): the chains'
    post-burn-in states hold each mode's mass to 0.015 (the issue's bar is 0.01 at the
    default 3000 steps; this is 400), and a run stopped in the burn-in keeps its last states."""
    g = torch.Generator().manual_seed(100 + seed)
    weights = torch.rand(5, generator=g, dtype=torch.float64) + 0.1
    target = GaussianMixture(
        centres=torch.rand(5, 2, generator=g, dtype=torch.float64) * 24 - 12,
        weights=(weights / weights.sum()).tolist(), scale=0.7, num_modes=5,
    )
    history = fit_target(small_flow(), target, steps=400, progress=False, seed=seed)
    assert history.method == "flow_mcmc" and history.modes_found == 5
    masses = target.mode_masses(history.samples.reshape(-1, 2))
    assert float((masses - target.true_mode_weights).abs().max()) < 0.015, masses
    with warnings.catch_warnings():  # an untrained flow: k-hat may warn
        warnings.simplefilter("ignore")
        stopped = fit_target(small_flow(), target, steps=400, progress=False, seed=seed,
                             max_time=0.0, check_modes=False)
    assert stopped.stopped == "max_time" and stopped.samples.shape == (256, 1, 2)


def test_method_is_checked():
    with pytest.raises(ValueError, match="method must be one of 'auto', 'reverse_kl', "):
        fit_target(small_flow(), gaussian, steps=2, progress=False, method="fab")


def test_flow_mcmc_without_a_converged_maximum_starts_at_the_flows_draws():
    """Neal's 10-D funnel: its maximum lies at v = -40.5, down a neck no climb gets through."""
    from pyro_flows.targets import get_target

    target = get_target("funnel")
    torch.manual_seed(0)
    flow = flows.realnvp(10, num_transforms=2, hidden_dims=(16,))
    history = fit_target(flow, target, steps=20, batch_size=16, progress=False,
                         method="flow_mcmc", check_modes=False)
    assert history.method == "flow_mcmc" and history.modes_found == 0
    assert history.steps == 20 and all(math.isfinite(e) for e in history.elbo)
    auto = fit_target(flows.realnvp(10, num_transforms=2, hidden_dims=(16,)), target, steps=5,
                      batch_size=16, progress=False, check_modes=False)
    assert auto.method == "reverse_kl"


def test_search_rejects_nan_dip_bad_lr_and_seed_and_a_flat_density():
    """Each of these used to be accepted silently (NaN dip merged two modes, lr=0 found none)
    or surfaced a torch error (Adam's, manual_seed's, autograd's)."""
    target = unequal_modes()
    with pytest.raises(ValueError, match="dip_nats must be a non-negative finite number, got nan"):
        search_modes(target.log_prob, 2, num_starts=8, steps=5, dip_nats=float("nan"))
    for lr in (0.0, -1.0):
        with pytest.raises(ValueError, match=f"lr must be a positive finite number, got {lr}"):
            search_modes(target.log_prob, 2, num_starts=8, steps=5, lr=lr)
    with pytest.raises(TypeError, match="seed must be an int, got 'a'"):
        search_modes(target.log_prob, 2, num_starts=8, steps=5, seed="a")
    with pytest.raises(ValueError, match="log_prob must be differentiable in z"):
        search_modes(lambda z: torch.zeros(z.shape[:-1]), 2, num_starts=8, steps=5)
    with pytest.raises(ValueError, match=r"log_prob must return a tensor of shape \(8,\)"):
        search_modes(lambda z: z, 2, num_starts=8, steps=5)


def test_tempered_mala_refused_load_changes_nothing():
    """A bad scalar entry is refused before the tensors are replaced."""
    torch.manual_seed(0)
    chains = TemperedMALA(gaussian, torch.zeros(4, 2), ladder(2, 0.1))
    before = {k: (v.clone() if isinstance(v, torch.Tensor) else v)
              for k, v in chains.state_dict().items()}
    state = chains.state_dict()
    for bad in ({"rounds": "not-an-int"}, {"grad_evals": -1}, {"adapt": "no"}, {"rounds": 2.5}):
        with pytest.raises(ValueError, match="chain state"):
            chains.load_state_dict({**state, "z": torch.full((4, 2), 7.0), **bad})
        after = chains.state_dict()
        for name, value in before.items():
            same = torch.equal(after[name], value) if isinstance(value, torch.Tensor) else (
                after[name] == value)
            assert same, name
    chains.load_state_dict({**state, "z": torch.full((4, 2), 7.0), "rounds": 3})
    assert float(chains.z[0, 0]) == 7.0 and chains.rounds == 3


def test_flow_assisted_chains_refused_load_changes_nothing():
    """A bad ``filled`` (or chain state) is refused before the sampler or the window change."""
    from pyro_flows.infer.flow_mcmc import FlowAssistedChains

    torch.manual_seed(0)
    flow = flows.realnvp(2, num_transforms=1, hidden_dims=(8,))
    chains = FlowAssistedChains(flow, gaussian, torch.zeros(1, 2), chains=4, levels=2, window=3)
    state = chains.state_dict()
    z_before, buffer_before = chains.sampler.z.clone(), chains.buffer.clone()
    moved = {**state["sampler"], "z": torch.full_like(z_before, 7.0)}
    bad_states = [
        {**state, "sampler": moved, "buffer": torch.full_like(buffer_before, 7.0),
         "filled": "x"},
        {**state, "sampler": moved, "filled": 4},  # more than the window
        {**state, "buffer": torch.full_like(buffer_before, 7.0),
         "sampler": {**moved, "rounds": "x"}},
    ]
    for bad in bad_states:
        with pytest.raises(ValueError, match="chain state"):
            chains.load_state_dict(bad)
        assert torch.equal(chains.sampler.z, z_before)
        assert torch.equal(chains.buffer, buffer_before) and chains.filled == 1
    chains.load_state_dict({**state, "sampler": moved, "filled": 2})
    assert float(chains.sampler.z[0, 0]) == 7.0 and chains.filled == 2
