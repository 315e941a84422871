r"""What every posteriordb translation shares: Stan's implicit flat prior (:func:`flat`) and an
initialisation on the unconstrained space that needs no sampler
(:func:`init_to_unconstrained_uniform`).

Stan gives a parameter without a prior statement the improper prior :math:`p(\theta) \propto 1`
on its constrained support; a Pyro ``ImproperUniform`` site is the same thing (``log_prob = 0``),
but it has no ``sample``, so Pyro's initialisation strategies (which sample the prior first)
fail on it. Stan initialises every parameter uniformly in :math:`[-2, 2]` on the unconstrained
scale; :func:`init_to_unconstrained_uniform` does the same without sampling.

Example:

>>> import pyro
>>> from pyro.infer.autoguide.initialization import InitMessenger
>>> from pyro import poutine
>>> def model():
...     pyro.sample("beta", flat(torch.zeros(()), (3,)))
>>> trace = poutine.trace(InitMessenger(init_to_unconstrained_uniform)(model)).get_trace()
>>> trace.nodes["beta"]["value"].shape
torch.Size([3])

References:

- B. Carpenter et al. *Stan: A Probabilistic Programming Language.* Journal of Statistical
  Software 76(1), 2017 (implicit flat priors, uniform(-2, 2) initialisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor
from torch.distributions import biject_to

__all__ = ["flat", "init_to_unconstrained_uniform"]


def flat(
    like: Tensor,
    event_shape: Sequence[int] = (),
    support: constraints.Constraint = constraints.real,
) -> dist.ImproperUniform:
    r"""Stan's implicit improper prior :math:`p(\theta) \propto 1` on ``support``
    (:math:`\mathbb{R}^K` by default; ``constraints.positive`` for ``<lower=0>``), with
    ``event_shape`` ``(K,)`` or ``()``; ``like`` gives the dtype and device that
    :func:`~pyro_flows.targets.posteriordb.init_to_unconstrained_uniform` initialises it with.

    >>> d = flat(torch.zeros(()), (3,))
    >>> d.event_shape, float(d.log_prob(torch.ones(3)))
    (torch.Size([3]), 0.0)
    """
    shape = torch.Size(event_shape)
    d = dist.ImproperUniform(support, torch.Size(), shape)
    # ImproperUniform carries no tensor: remember dtype/device for init strategies
    d._pyro_flows_like = like.new_zeros(shape)  # type: ignore[attr-defined]
    return d


def init_to_unconstrained_uniform(site: dict[str, Any] | None = None, radius: float = 2.0) -> Any:
    r"""Pyro initialisation strategy: :math:`u \sim \mathcal{U}(-r, r)` elementwise on the
    unconstrained space of the site, returned as :math:`\texttt{biject\_to(support)}(u)`.

    Unlike Pyro's ``init_to_uniform`` it never calls the site's ``sample``, so it works on
    ``ImproperUniform`` sites (Stan's flat priors); this is Stan's default initialisation
    (:math:`r = 2`). Called without ``site``, returns the strategy with ``radius`` bound.

    >>> from functools import partial
    >>> site = {"fn": flat(torch.zeros(()), (2,), constraints.positive_ordered_vector)}
    >>> value = init_to_unconstrained_uniform(site)
    >>> bool(value[0] > 0) and bool(value[1] > value[0])
    True
    """
    if site is None:
        return lambda s=None: init_to_unconstrained_uniform(s, radius=radius)
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    fn = site["fn"]
    like = getattr(fn, "_pyro_flows_like", None)
    if like is None:
        try:
            like = fn.sample().detach()
        except NotImplementedError:
            like = torch.zeros(fn.shape())
    t = biject_to(fn.support)
    shape = t.inverse_shape(fn.shape())
    u = (torch.rand(shape, dtype=like.dtype) * (2 * radius) - radius).to(like.device)
    value = t(u).detach()
    value._pyro_custom_init = False  # type: ignore[attr-defined]
    return value
