"""Base distributions beyond the standard Normal: trainable bases for vector flows (a diagonal
Gaussian, a Gaussian mixture, a Student-t with learnt degrees of freedom) and the discretised
logistic of integer flows. Pass any of them as a builder's ``base=``."""

from .discretized_logistic import DiscretizedLogistic, DiscretizedLogisticBase
from .trainable import DiagonalNormal, GaussianMixture, NormalMixture, StudentT, student_t_log_prob

__all__ = [
    "DiagonalNormal",
    "DiscretizedLogistic",
    "DiscretizedLogisticBase",
    "GaussianMixture",
    "NormalMixture",
    "StudentT",
    "student_t_log_prob",
]
