r"""The targets by their short command-line names (``pyro-flows compare TARGET``).

- ``u1``, ``u2``, ``u3``, ``u4``: Rezende & Mohamed's energies
  (:mod:`pyro_flows.targets.energy`; U2-U4 on the box :math:`[-4, 4]^2` by default).
- ``funnel``: Neal's funnel, 10-D (:class:`~pyro_flows.targets.funnel.Funnel`).
- ``banana``: Haario et al.'s twisted Gaussian, 2-D (:class:`~pyro_flows.targets.banana.Banana`).
- ``ring``: a Gaussian ring, 2-D (:class:`~pyro_flows.targets.ring.Ring`).
- ``mixture``: separated Gaussian modes with unequal weights
  (:class:`~pyro_flows.targets.mixture.GaussianMixture`).
- ``gaussian100``: a rotated 100-D Gaussian with condition number :math:`10^4`
  (:class:`~pyro_flows.targets.gaussian.IllConditionedGaussian`).
- ``gmm40``: FAB's 40 equal Gaussians scattered over :math:`[-40, 40]^2`, 2-D
  (:class:`~pyro_flows.targets.gmm40.GMM40`).
- ``many_well``: FAB's many-well, 32-D, :math:`2^{16}` modes, unnormalised
  (:class:`~pyro_flows.targets.many_well.ManyWell`).

Every one has an exact sampler, ``mean`` and ``std``, and ``log_Z`` (0 for the normalised ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .banana import Banana
from .base import Target
from .energy import U1, U2, U3, U4
from .funnel import Funnel
from .gaussian import IllConditionedGaussian
from .gmm40 import GMM40
from .many_well import ManyWell
from .mixture import GaussianMixture
from .ring import Ring

__all__ = ["TARGETS", "get_target"]

#: Target constructors by short name; each is called with keyword options, e.g.
#: ``TARGETS["funnel"](dim=10)``.
TARGETS: dict[str, Callable[..., Target]] = {
    "u1": U1,
    "u2": U2,
    "u3": U3,
    "u4": U4,
    "funnel": Funnel,
    "banana": Banana,
    "ring": Ring,
    "mixture": GaussianMixture,
    "gaussian100": IllConditionedGaussian,
    "gmm40": GMM40,
    "many_well": ManyWell,
}


def get_target(name: str, **kwargs: Any) -> Target:
    r"""The target called ``name`` in :data:`TARGETS` (case-insensitive), built with ``kwargs``:
    an object with :math:`\log \tilde p(z)` (``log_prob``) and, where known, :math:`\log Z`.

    Raises ``ValueError`` listing the valid names for an unknown name, and ``TypeError`` for
    keyword options the target does not take.

    Example:

    >>> get_target("funnel", dim=4).dim
    4
    >>> get_target("U2", boundary="prior").boundary
    'prior'

    References:

    - D. J. Rezende, S. Mohamed. *Variational Inference with Normalizing Flows.* ICML 2015
      (U1-U4); R. M. Neal. *Slice sampling.* Annals of Statistics 31(3), 2003 (the funnel).
    """
    if not isinstance(name, str):
        raise TypeError(f"target name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in TARGETS:
        raise ValueError(f"unknown target {name!r}; valid names: {', '.join(TARGETS)}")
    try:
        return TARGETS[key](**kwargs)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise TypeError(f"target {key!r} does not take these options: {e}") from None
        raise
