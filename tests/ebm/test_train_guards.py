"""train_ebm's guards: a NaN/inf gradient (with a finite loss) on either side stops the training
with the state from before that step, ``history`` trimmed to the good steps; bad options are
refused (more cases in ``tests/infer/test_training_guards.py``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pyro_flows import flows
from pyro_flows.ebm import Adversarial, GaussianEnergy, train_ebm
from pyro_flows.infer import NonFiniteLossError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.tensor([1.0, -0.5]) + torch.randn(1000, 2, generator=g)


class NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradient is NaN."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


class NaNGradientEnergy(GaussianEnergy):
    """A Gaussian energy whose gradient is NaN from its 11th call on (NCE: 2 calls a step)."""

    def __init__(self) -> None:
        super().__init__(2)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        e = super().forward(x)
        return NaNGradient.apply(e) if self.calls > 10 else e


def test_a_nan_energy_gradient_stops_with_the_state_before_that_step(data):
    energy = NaNGradientEnergy()
    with pytest.raises(NonFiniteLossError, match="non-finite energy gradient .* step 5") as info:
        train_ebm(energy, data, "nce", steps=50, lr=0.05, progress=False)
    history = info.value.history
    assert history.stopped == "non-finite gradient" and history.steps == 5
    reference = GaussianEnergy(2)  # the same five good steps, uninterrupted
    train_ebm(reference, data, "nce", steps=5, lr=0.05, progress=False)
    for (key, a), b in zip(energy.state_dict().items(), reference.state_dict().values(),
                           strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), key
    assert all(p.grad is None for p in energy.parameters())


class NaNSampler(Adversarial):
    """The adversarial objective whose sampler gradient is NaN from its ``n``-th step on."""

    def __init__(self, n: int) -> None:
        torch.manual_seed(0)
        super().__init__(flows.iaf(2, num_transforms=1, hidden_dims=(8,)))
        self.n, self.calls = n, 0

    def sampler_loss(self, energy: Any, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = super().sampler_loss(energy, x)
        return NaNGradient.apply(loss) if self.calls >= self.n else loss


def test_a_nan_sampler_gradient_trims_the_history_to_the_good_steps(data):
    energy = GaussianEnergy(2)
    objective = NaNSampler(n=4)
    before = {k: v.clone() for k, v in objective.sampler.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="non-finite sampler gradient .* step 3") as info:
        train_ebm(energy, data, objective, steps=10, lr=0.01, progress=False)
    history = info.value.history
    assert history.stopped == "non-finite gradient"
    assert len(history.loss) == len(history.sampler_loss) == 3  # step 3's energy step undone
    after = objective.sampler.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items())  # 3 good steps kept
    assert all(torch.isfinite(p).all() for p in objective.sampler.parameters())
    assert all(torch.isfinite(p).all() for p in energy.parameters())


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"clip_grad_norm": 0.0}, ValueError, r"clip_grad_norm must be None .* got 0\.0"),
        ({"clip_grad_norm": -1.0}, ValueError, r"clip_grad_norm .* got -1\.0 \(float\)"),
        ({"seed": "x"}, TypeError, r"seed must be an int, got 'x' \(str\)"),
        ({"lr": "0.01"}, TypeError, r"lr must be a positive finite number, got '0\.01' \(str\)"),
        ({"sampler_lr": -1.0}, ValueError, r"sampler_lr .* got -1\.0"),
        ({"sampler_steps": 0}, ValueError, r"sampler_steps must be a positive int, got 0"),
        ({"batch_size": 2.5}, TypeError, r"batch_size must be a positive int, got 2\.5"),
    ],
)
def test_bad_options_name_the_argument_and_the_value(data, options, error, message):
    energy = GaussianEnergy(2)
    before = {k: v.clone() for k, v in energy.state_dict().items()}
    with pytest.raises(error, match=message):
        train_ebm(energy, data, "ssm", steps=2, progress=False, **options)
    assert all(torch.equal(v, before[k]) for k, v in energy.state_dict().items())
