"""pyro_flows: normalizing flows for Pyro, correct in both directions and fast where it matters.

- :mod:`pyro_flows.transforms`: the layers (Pyro ``TransformModule``\\ s).
- :class:`pyro_flows.Flow`: base distribution + transforms, a fresh Pyro distribution per call.
- :mod:`pyro_flows.flows`: builders (``nice``, ``realnvp``, ``maf``, ``iaf``, ``planar``,
  ``radial``) returning a ``Flow``.
"""

from . import flows, nn, transforms
from .flow import Flow

__version__ = "0.1.0"
__all__ = ["Flow", "flows", "nn", "transforms"]
