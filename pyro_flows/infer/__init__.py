"""Inference: maximum likelihood (``fit``), reverse KL (``fit_target``), flow guides
(``AutoFlow``), MCMC baselines, NeuTra, annealed importance sampling
(``annealed_importance_sampling``), bridge sampling (``bridge_log_Z``), and diagnostics."""

from .ais import annealed_importance_sampling
from .amortized import AmortizedFlow, AmortizedFlowDistribution
from .autoflow import FLOW_BUILDERS, AutoFlow
from .bridge_sampling import BridgeEstimate, bridge_log_Z
from .diagnostics import (
    ess_fraction,
    flow_diagnostics,
    guide_psis_khat,
    importance_log_Z,
    log_mean_exp,
    mcmc_diagnostics,
    moment_errors,
    psis_khat,
    reference_moment_errors,
)
from .distill import DistillHistory, distill, distillation_kl
from .fit import FitHistory, NonFiniteLossError, evaluate_nll, fit
from .fit_guide import GuideFitResult, fit_guide
from .fit_target import TargetError, TargetFitHistory, fit_target
from .guide_check import GuideCheck, guide_importance_check
from .importance import importance_sample, systematic_resample
from .iwae import iwae_log_likelihood, log_importance_weights
from .mcmc import hmc, nuts, nuts_model
from .neutra import flow_forward, neutra, neutra_log_prob, neutra_model
from .results import SampleResult, TargetDensity, TargetOutputError, as_target
from .samplers import langevin, mala, random_walk_metropolis, ula
from .support import onto_support

__all__ = [
    "FLOW_BUILDERS",
    "AmortizedFlow",
    "AmortizedFlowDistribution",
    "AutoFlow",
    "BridgeEstimate",
    "DistillHistory",
    "FitHistory",
    "GuideFitResult",
    "NonFiniteLossError",
    "SampleResult",
    "TargetDensity",
    "TargetError",
    "TargetOutputError",
    "TargetFitHistory",
    "annealed_importance_sampling",
    "as_target",
    "bridge_log_Z",
    "distill",
    "distillation_kl",
    "ess_fraction",
    "evaluate_nll",
    "fit",
    "fit_guide",
    "fit_target",
    "flow_diagnostics",
    "flow_forward",
    "guide_psis_khat",
    "guide_importance_check",
    "GuideCheck",
    "hmc",
    "importance_log_Z",
    "importance_sample",
    "iwae_log_likelihood",
    "langevin",
    "log_importance_weights",
    "log_mean_exp",
    "mala",
    "mcmc_diagnostics",
    "moment_errors",
    "neutra",
    "neutra_log_prob",
    "neutra_model",
    "nuts",
    "nuts_model",
    "onto_support",
    "psis_khat",
    "random_walk_metropolis",
    "reference_moment_errors",
    "systematic_resample",
    "ula",
]
