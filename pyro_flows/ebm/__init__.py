r"""Energy-based models :math:`p_\theta(x) = e^{-E_\theta(x)}/Z_\theta` trained with flows and
samplers: contrastive divergence with Langevin chains, exact and sliced score matching,
noise-contrastive estimation, flow contrastive estimation and adversarial training with an IAF
sampler, all through :func:`~pyro_flows.ebm.train.train_ebm`.

References: Song & Kingma, "How to Train Your Energy-Based Models", arXiv:2101.03288, 2021.
"""

from .adversarial import Adversarial, sampler_bound
from .contrastive_divergence import ContrastiveDivergence, ReplayBuffer, cd_loss, langevin_samples
from .energy import EnergyModel, GaussianEnergy, grid_log_Z
from .flow_contrastive import FlowContrastive, fce_value
from .nce import NCE, gaussian_noise, nce_loss
from .score_matching import (
    ScoreMatching,
    SlicedScoreMatching,
    score_matching_loss,
    sliced_score_matching_loss,
)
from .train import METHODS, EBMHistory, make_objective, train_ebm

__all__ = [
    "METHODS",
    "NCE",
    "Adversarial",
    "ContrastiveDivergence",
    "EBMHistory",
    "EnergyModel",
    "FlowContrastive",
    "GaussianEnergy",
    "ReplayBuffer",
    "ScoreMatching",
    "SlicedScoreMatching",
    "cd_loss",
    "fce_value",
    "gaussian_noise",
    "grid_log_Z",
    "langevin_samples",
    "make_objective",
    "nce_loss",
    "sampler_bound",
    "score_matching_loss",
    "sliced_score_matching_loss",
    "train_ebm",
]
