"""train_ebm: every method fits the Gaussian family to its truth; errors and restarts."""

from __future__ import annotations

import pytest
import torch

from pyro_flows.ebm.contrastive_divergence import ContrastiveDivergence
from pyro_flows.ebm.energy import EnergyModel, GaussianEnergy
from pyro_flows.ebm.train import EBMHistory, train_ebm
from pyro_flows.infer.fit import NonFiniteLossError

torch.set_num_threads(1)

LOC, SCALE = torch.tensor([1.0, -0.5]), torch.tensor([0.7, 1.3])


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return LOC + SCALE * torch.randn(4000, 2, generator=g)


SMALL_FLOW = {"num_transforms": 1, "hidden_dims": (16,)}
CASES = {
    "sm": {},
    "ssm": {"n_projections": 2},
    "cd": {"k": 20, "step_size": 0.05},
    "pcd": {"k": 20, "step_size": 0.05, "persistent": True, "buffer_size": 1000},
    "nce": {},
    "fce": {"sampler_lr": 0.01, **SMALL_FLOW},
    "adversarial": {"sampler_lr": 0.03, "sampler_steps": 2, "lr": 0.01, "steps": 400, **SMALL_FLOW},
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_method_lands_on_the_true_gaussian(case, data):
    options = {"lr": 0.05, "steps": 300, **CASES[case]}
    method = "cd" if case == "pcd" else case
    energy = GaussianEnergy(2)
    history = train_ebm(energy, data, method=method, batch_size=256, progress=False, **options)
    assert history.stopped == "completed" and history.steps == options["steps"]
    assert torch.allclose(energy.loc.detach(), LOC, atol=0.12), energy.loc
    assert torch.allclose(energy.scale.detach(), SCALE, atol=0.12), energy.scale
    if case in ("nce", "fce"):  # the learned normaliser is the energy's true log Z
        assert float(history.objective.log_Z) == pytest.approx(energy.log_Z, abs=0.1)
    if case in ("fce", "adversarial"):
        assert len(history.sampler_loss) == history.steps


def test_same_seed_same_history(data):
    runs = []
    for _ in range(2):
        energy = GaussianEnergy(2)
        runs.append(
            train_ebm(energy, data, "cd", steps=20, k=5, step_size=0.05, progress=False, seed=3)
        )
    assert runs[0].loss == runs[1].loss


def test_a_neural_energy_trains_and_lowers_the_energy_of_the_data(data):
    torch.manual_seed(0)
    energy = EnergyModel(2, hidden_dims=(16, 16))
    noise = torch.randn(500, 2) * 3
    before = float(energy(data[:500]).mean() - energy(noise).mean())
    train_ebm(energy, data, "ssm", steps=100, lr=1e-2, progress=False)
    after = float(energy(data[:500]).mean() - energy(noise).mean())
    assert after < before - 0.5


class _Exploding(GaussianEnergy):
    """Returns NaN from its 11th call on (NCE calls it twice per step)."""

    def __init__(self) -> None:
        super().__init__(2)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        e = super().forward(x)
        return e * float("nan") if self.calls > 10 else e


def test_non_finite_loss_stops_with_the_last_good_state(data):
    energy = _Exploding()
    with pytest.raises(NonFiniteLossError, match="non-finite energy loss.*step 5") as info:
        train_ebm(energy, data, "nce", steps=50, lr=0.05, progress=False)
    history = info.value.history
    assert isinstance(history, EBMHistory)
    assert history.stopped == "non-finite loss" and history.steps == 5
    assert all(torch.isfinite(p).all() for p in energy.parameters())
    assert float(energy.loc.abs().max()) > 0  # the 5 good steps were kept


def test_bad_input_raises_naming_what_was_expected(data):
    e = GaussianEnergy(2)
    with pytest.raises(ValueError, match="method must be one of"):
        train_ebm(e, data, method="mle", progress=False)
    with pytest.raises(ValueError, match=r"3 columns"):
        train_ebm(GaussianEnergy(3), data, steps=1, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        train_ebm(e, torch.full((10, 2), float("nan")), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"\(N >= 2, D\)"):
        train_ebm(e, torch.zeros(5), steps=1, progress=False)
    with pytest.raises(ValueError, match="steps"):
        train_ebm(e, data, steps=0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_ebm(e, data, lr=-1.0, progress=False)
    with pytest.raises(TypeError, match="nn.Module"):
        train_ebm(lambda x: x.sum(-1), data, progress=False)
    with pytest.raises(TypeError, match="options"):
        train_ebm(e, data, method=ContrastiveDivergence(), k=3, progress=False)
    with pytest.raises(TypeError):
        train_ebm(e, data, method="sm", k=3, progress=False)  # sm takes no k
