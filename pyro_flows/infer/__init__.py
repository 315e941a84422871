"""Inference: maximum-likelihood fitting of flows (and, later, reverse KL, guides, MCMC)."""

from .fit import FitHistory, NonFiniteLossError, evaluate_nll, fit

__all__ = ["FitHistory", "NonFiniteLossError", "evaluate_nll", "fit"]
