"""Inference: maximum likelihood (``fit``), reverse KL (``fit_target``), flow guides
(``AutoFlow``), and the tools around them."""

from .autoflow import FLOW_BUILDERS, AutoFlow
from .fit import FitHistory, NonFiniteLossError, evaluate_nll, fit
from .fit_target import TargetError, TargetFitHistory, fit_target
from .support import onto_support

__all__ = [
    "FLOW_BUILDERS",
    "AutoFlow",
    "FitHistory",
    "NonFiniteLossError",
    "TargetError",
    "TargetFitHistory",
    "evaluate_nll",
    "fit",
    "fit_target",
    "onto_support",
]
