"""Inference: maximum-likelihood fitting of flows (and, later, reverse KL, guides, MCMC)."""

from .autoflow import FLOW_BUILDERS, AutoFlow
from .fit import FitHistory, NonFiniteLossError, evaluate_nll, fit

__all__ = ["AutoFlow", "FLOW_BUILDERS", "FitHistory", "NonFiniteLossError", "evaluate_nll", "fit"]
