"""pyro_flows: normalizing flows for Pyro, correct in both directions and fast where it matters.

- :mod:`pyro_flows.transforms`: the layers (Pyro ``TransformModule``\\ s).
- :class:`pyro_flows.Flow`: base distribution + transforms, a fresh Pyro distribution per call.
- :mod:`pyro_flows.flows`: builders (``nice``, ``realnvp``, ``maf``, ``iaf``, ``planar``,
  ``radial``, ``nsf``) returning a ``Flow``.
- :mod:`pyro_flows.infer`: :func:`~pyro_flows.infer.fit` (maximum likelihood, checkpoints,
  early stopping, ``torchrun`` data parallelism).
- :mod:`pyro_flows.targets`: unnormalised targets (U1-U4, funnel, banana, ring, mixture, 100-D
  Gaussian) with exact facts; ``model_target`` for Pyro models.
- :mod:`pyro_flows.ebm`: energy-based models trained by contrastive divergence, score matching,
  NCE, flow contrastive estimation and adversarially with an IAF sampler.
- :mod:`pyro_flows.data`: 2-D toys with exact densities, digits and MNIST-5k, dequantization.
- :func:`pyro_flows.torch_threads`: a block (or, as ``threads=``, one training call) on that
  many CPU threads, torch's setting restored afterwards (:mod:`pyro_flows.threads`).
"""

from . import compare, data, distributions, ebm, flows, infer, nn, targets, transforms
from .flow import Flow
from .threads import torch_threads

__version__ = "0.1.0"
__all__ = [
    "Flow",
    "compare",
    "data",
    "distributions",
    "ebm",
    "flows",
    "infer",
    "nn",
    "targets",
    "torch_threads",
    "transforms",
]
