"""Robustness of the EBM package: energy outputs of shape ``(N, 1)``, failed steps undone in
full (PCD's replay buffer too), diverging samplers, the global RNG, noise shapes and the
objectives' hyperparameter checks."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from pyro_flows.ebm import (
    NCE,
    Adversarial,
    ContrastiveDivergence,
    FlowContrastive,
    GaussianEnergy,
    cd_loss,
    fce_value,
    langevin_samples,
    nce_loss,
    sampler_bound,
    score_matching_loss,
    sliced_score_matching_loss,
    train_ebm,
)
from pyro_flows.infer.fit import NonFiniteLossError

torch.set_num_threads(1)


def rows(n: int, seed: int, d: int = 2) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


class Column(nn.Module):
    """A Gaussian energy returning shape ``(N, 1)`` (like ``nn.Linear(D, 1)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.g = GaussianEnergy(2, loc=0.3, scale=1.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(x).unsqueeze(-1)


def _all_losses(energy: Any) -> list[torch.Tensor]:
    x, y = rows(6, 0), rows(9, 1)
    lq = lambda z: -0.5 * (z**2).sum(-1)  # noqa: E731
    c = torch.tensor(0.3)
    flow = _FixedSampler()
    return [
        cd_loss(energy, x, y, alpha=0.1),
        nce_loss(energy, c, x, y, lq(x), lq(y)),
        fce_value(energy, c, x, lq(x), y, lq(y)),
        score_matching_loss(energy, x),
        sliced_score_matching_loss(energy, x, 2, generator=torch.Generator().manual_seed(0)),
        sampler_bound(energy, flow, 5)[0],
        langevin_samples(energy, x, 3, 0.1, generator=torch.Generator().manual_seed(0)),
    ]


class _FixedSampler(nn.Module):
    """A 'flow' that returns fixed draws with a fixed log density (or NaN draws)."""

    def __init__(self, nan: bool = False) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(2))
        self.nan = nan

    def draws(self, n: int) -> torch.Tensor:
        y = rows(n, 5) + self.shift
        return y * float("nan") if self.nan else y

    def sample(self, shape: tuple[int, ...]) -> torch.Tensor:
        return self.draws(shape[0]).detach()

    def rsample_and_log_prob(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.draws(shape[0])
        return y, -0.5 * (y**2).sum(-1)


# ------------------------------------------------------------------- bug 1: (N, 1) energies
def test_every_loss_treats_an_n_by_1_energy_as_its_squeezed_values():
    column = Column()
    flat = column.g
    for got, expected in zip(_all_losses(column), _all_losses(flat), strict=True):
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_an_energy_of_another_shape_is_refused_naming_the_shapes():
    wide = lambda z: torch.stack([z.sum(-1), z.sum(-1)], -1)  # noqa: E731  (N, 2)
    x, y = rows(4, 0), rows(6, 1)
    c, lq = torch.tensor(0.0), lambda z: -(z**2).sum(-1)  # noqa: E731
    checks = [
        lambda: nce_loss(wide, c, x, y, lq(x), lq(y)),
        lambda: fce_value(wide, c, x, lq(x), y, lq(y)),
        lambda: cd_loss(wide, x, y),
        lambda: score_matching_loss(wide, x),
    ]
    for check in checks:
        with pytest.raises(ValueError, match=r"one value per row.*\(4,\).*got \(4, 2\)"):
            check()
    with pytest.raises(ValueError, match=r"noise_log_prob_data .*got \(4, 2\)"):
        nce_loss(lambda z: z.sum(-1), c, x, y, torch.zeros(4, 2), lq(y))


@pytest.mark.parametrize("method", ["nce", "cd", "sm", "ssm"])
def test_train_ebm_with_an_n_by_1_energy_follows_the_squeezed_one(method):
    data = rows(64, 2)
    histories = []
    for energy in (Column(), GaussianEnergy(2, loc=0.3, scale=1.2)):
        histories.append(
            train_ebm(energy, data, method, steps=4, batch_size=16, lr=0.05, progress=False,
                      **({"k": 3, "step_size": 0.05} if method == "cd" else {}))
        )
    assert histories[0].loss == pytest.approx(histories[1].loss, rel=1e-5, abs=1e-6)


# --------------------------------------------------------------- bug 2: PCD's replay buffer
class NaNAfter(nn.Module):
    """A Gaussian energy whose value turns NaN after ``k`` calls (its x-gradient stays finite)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.g, self.calls, self.k, self.input_dim = GaussianEnergy(2), 0, k, 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        e = self.g(x)
        return e + float("nan") * x.detach().sum(-1) if self.calls > self.k else e


def test_a_failed_pcd_step_puts_the_replay_buffer_and_the_generator_back():
    data = rows(40, 0)
    objective = ContrastiveDivergence(k=2, persistent=True, buffer_size=30)
    with pytest.raises(NonFiniteLossError) as info:
        train_ebm(NaNAfter(8), data, objective, steps=20, batch_size=8, progress=False)
    good = len(info.value.history.loss)
    assert good == 2  # 4 energy calls a step: the third step fails
    reference = ContrastiveDivergence(k=2, persistent=True, buffer_size=30)
    train_ebm(NaNAfter(10**9), data, reference, steps=good, batch_size=8, progress=False)
    assert torch.allclose(objective.buffer.samples, reference.buffer.samples, atol=1e-6)
    assert torch.equal(objective.generator.get_state(), reference.generator.get_state())


# ------------------------------------------------------------------- bug 3: the global RNG
def test_train_ebm_leaves_the_global_rng_as_it_was_whether_it_fails_or_completes():
    data = rows(20, 0)
    bad_noise = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    calls = [
        lambda: train_ebm(GaussianEnergy(2), data, "bogus", progress=False),
        lambda: train_ebm(GaussianEnergy(2), data, "cd", steps=1, alpha=-1.0, progress=False),
        lambda: train_ebm(GaussianEnergy(2), data, "nce", steps=1, noise=bad_noise,
                          progress=False),
    ]
    for call in calls:
        torch.manual_seed(123)
        before = torch.get_rng_state()
        with pytest.raises(ValueError):
            call()
        assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    history = train_ebm(GaussianEnergy(2), data, "nce", steps=3, batch_size=8, progress=False)
    assert history.stopped == "completed"
    assert torch.equal(torch.get_rng_state(), before)


def test_the_same_seed_gives_the_same_run_whatever_the_global_rng():
    data = rows(40, 0)
    losses = []
    for outer in (0, 1):
        torch.manual_seed(outer)
        losses.append(
            train_ebm(GaussianEnergy(2), data, "nce", steps=3, batch_size=8, seed=5,
                      progress=False).loss
        )
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


# --------------------------------------------------------- bug 4: linear energies and SM
def test_score_matching_of_a_linear_energy_is_half_the_squared_slope():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    x = rows(5, 0)
    energy = lambda z: z @ w + 0.5  # noqa: E731  score -w, Hessian 0
    for loss in (
        score_matching_loss(energy, x),
        sliced_score_matching_loss(energy, x, 3, variance_reduction=True),
    ):
        assert float(loss.detach()) == pytest.approx(2.5, abs=1e-6)  # |w|^2 / 2
        (grad,) = torch.autograd.grad(loss, w)
        assert torch.allclose(grad, w.detach(), atol=1e-6)
    g = torch.Generator().manual_seed(0)
    plain = torch.stack([
        sliced_score_matching_loss(energy, x, 1, "gaussian", generator=g) for _ in range(400)
    ])
    assert float(plain.detach().mean()) == pytest.approx(2.5, abs=0.3)  # unbiased for |w|^2 / 2
    history = train_ebm(nn.Linear(2, 1), rows(32, 1), "sm", steps=3, batch_size=8,
                        progress=False)
    assert history.stopped == "completed" and all(math.isfinite(v) for v in history.loss)


# --------------------------------------------------------- bug 5: diverging samplers
def test_diverging_cd_chains_stop_with_the_last_good_state_naming_the_step_size():
    data = rows(64, 0)
    energy = GaussianEnergy(2)
    before = {k: v.clone() for k, v in energy.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match=r"Langevin chains.*step_size=5\.0.*k=200") as info:
        train_ebm(energy, data, "cd", steps=5, batch_size=16, progress=False, k=200,
                  step_size=5.0)
    assert info.value.history.stopped == "non-finite loss"
    assert info.value.history.steps == 0
    for key, value in energy.state_dict().items():
        assert torch.allclose(value, before[key]), key
    with pytest.raises(FloatingPointError, match="step_size=5.0"):
        langevin_samples(energy, data, 200, 5.0, generator=torch.Generator().manual_seed(0))


def test_a_sampler_drawing_nan_stops_the_adversarial_training():
    with pytest.raises(NonFiniteLossError, match="sampler's draws"):
        train_ebm(GaussianEnergy(2), rows(32, 0), Adversarial(_FixedSampler(nan=True)),
                  steps=2, batch_size=8, progress=False)


# ------------------------------------------------------------------ bug 6: NCE noise shape
@pytest.mark.parametrize(
    "noise",
    [
        torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3)),
        torch.distributions.Normal(torch.zeros(2), torch.ones(2)),
    ],
    ids=["event-3", "batch-2"],
)
def test_nce_refuses_a_noise_of_the_wrong_shape_up_front(noise):
    energy = GaussianEnergy(2)
    before = {k: v.clone() for k, v in energy.state_dict().items()}
    with pytest.raises(ValueError, match=r"event_shape \(2,\) and batch_shape \(\), got"):
        train_ebm(energy, rows(10, 0), "nce", steps=1, progress=False, noise=noise)
    assert all(torch.equal(v, before[k]) for k, v in energy.state_dict().items())
    with pytest.raises(ValueError, match="event_shape"):
        NCE(noise=noise).energy_loss(energy, rows(10, 0))


def test_nce_accepts_independent_normals_and_checks_unstated_shapes():
    normal = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    noise = torch.distributions.Independent(normal, 1)
    history = train_ebm(GaussianEnergy(2), rows(16, 0), "nce", steps=2, batch_size=8,
                        progress=False, noise=noise)
    assert history.stopped == "completed"

    class Unstated:  # a noise without event_shape whose samples have 3 columns
        def sample(self, shape: tuple[int, ...]) -> torch.Tensor:
            return torch.zeros(*shape, 3)

        def log_prob(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[:-1])

    with pytest.raises(ValueError, match=r"noise.sample.*shape \(8, 2\).*got \(8, 3\)"):
        NCE(noise=Unstated()).energy_loss(GaussianEnergy(2), rows(8, 0))


# ----------------------------------------------------------- bug 7: constructor hyperparameters
NAN = float("nan")


@pytest.mark.parametrize(
    ("build", "error", "name"),
    [
        (lambda: ContrastiveDivergence(noise_scale=-1.0), ValueError, "noise_scale"),
        (lambda: ContrastiveDivergence(noise_scale=math.inf), ValueError, "noise_scale"),
        (lambda: ContrastiveDivergence(persistent=True, reinit=2.0), ValueError, "reinit"),
        (lambda: ContrastiveDivergence(reinit=-0.1), ValueError, "reinit"),
        (lambda: ContrastiveDivergence(persistent=True, buffer_size=0), ValueError,
         "buffer_size"),
        (lambda: ContrastiveDivergence(buffer_size=10.0), TypeError, "buffer_size"),
        (lambda: ContrastiveDivergence(alpha=NAN), ValueError, "alpha"),
        (lambda: ContrastiveDivergence(persistent=True, margin=-5.0), ValueError, "margin"),
        (lambda: ContrastiveDivergence(step_size=NAN), ValueError, "step_size"),
        (lambda: ContrastiveDivergence(persistent="yes"), TypeError, "persistent"),
        (lambda: ContrastiveDivergence(seed=1.5), TypeError, "seed"),
        (lambda: NCE(log_Z_init=NAN), ValueError, "log_Z_init"),
        (lambda: NCE(log_Z_init="0"), TypeError, "log_Z_init"),
        (lambda: FlowContrastive(mle_weight=NAN), ValueError, "mle_weight"),
        (lambda: FlowContrastive(log_Z_init=math.inf), ValueError, "log_Z_init"),
        (lambda: Adversarial(alpha=NAN), ValueError, "alpha"),
        (lambda: Adversarial(alpha=-1.0), ValueError, "alpha"),
    ],
)
def test_objective_constructors_refuse_bad_hyperparameters(build, error, name):
    with pytest.raises(error, match=name):
        build()


def test_valid_edge_hyperparameters_are_accepted():
    ContrastiveDivergence(noise_scale=0.0, reinit=0.0, margin=0.0, alpha=0.0, buffer_size=1)
    ContrastiveDivergence(reinit=1.0)
    NCE(log_Z_init=-3)
    FlowContrastive(mle_weight=0, log_Z_init=2.0)
