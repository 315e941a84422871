"""Base distributions that are not standard Normals: the discretised logistic of integer flows."""

from .discretized_logistic import DiscretizedLogistic, DiscretizedLogisticBase

__all__ = ["DiscretizedLogistic", "DiscretizedLogisticBase"]
