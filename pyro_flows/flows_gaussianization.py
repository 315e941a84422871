"""Kept so that ``pyro_flows.flows_gaussianization`` imports keep working: the builders now live in
:mod:`pyro_flows.flows.iterative_gaussianization`."""

from .flows.iterative_gaussianization import *  # noqa: F403
from .flows.iterative_gaussianization import (  # noqa: F401
    __all__,  # noqa: F401
    householder_vectors,
    set_linear_to_pca,
)
