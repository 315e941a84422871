r"""Latent entries a model masks out of its own density (Pyro's ``obs_mask``, or
``poutine.mask`` around a latent site), and the fixed density :class:`~pyro_flows.infer.AutoFlow`
gives them.

``pyro.sample("x", d, obs=data, obs_mask=m)`` makes a latent site ``x_unobserved`` of the full
shape, whose entries where ``m`` is true are masked out of :math:`\log p`. Those entries
:math:`u` enter the ELBO only through the guide's entropy,

.. math::

    \mathbb E_q\big[\log p(x, z) - \log q(z, u)\big],

which grows without bound as :math:`q` spreads along :math:`u`: Pyro's ``AutoNormal`` lets
their scales creep up; a joint flow, whose start fits every direction at once, ran their scales
to 1e26-1e32 and lost the other latents to float32 rounding (a posterior mean of -0.56 where the
exact one is 0.75). The guide therefore adds :math:`-\log r(u)` to its own log density,
:math:`r = \mathcal N(0, I)` in the unconstrained space: the ELBO becomes that of the model
times :math:`r(u)`, which has the same evidence and the same posterior of every other latent,
and whose optimum gives :math:`u` the density :math:`r`.

References: Pyro's ``obs_mask`` (``pyro.sample``); the extended target of importance sampling
and MCMC with auxiliary variables (e.g. R. M. Neal, *Annealed importance sampling*, Statistics
and Computing 11, 2001).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from pyro.poutine import Trace
from torch import Tensor

__all__ = ["masked_out_log_density", "masked_out_positions"]


def masked_out_positions(trace: Trace, unconstrained_shapes: Mapping[str, torch.Size]
                         ) -> Tensor | None:
    """The positions in the guide's flat unconstrained latent vector (sites in ``trace``'s
    order) of entries whose site is masked out of the model's density, or ``None`` when there
    are none. A mask that does not broadcast to its site's batch shape is left alone.

    Example:

    >>> import pyro, pyro.distributions as dist, torch
    >>> def model():
    ...     pyro.sample("a", dist.Normal(0.0, 1.0))
    ...     with pyro.plate("d", 3):
    ...         pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.zeros(3),
    ...                     obs_mask=torch.tensor([True, False, True]))
    >>> from pyro.poutine.util import prune_subsample_sites   # as AutoGuides' prototypes are
    >>> trace = prune_subsample_sites(pyro.poutine.trace(model).get_trace())
    >>> masked_out_positions(trace, {"a": torch.Size(), "x_unobserved": torch.Size([3])})
    tensor([1, 3])
    """
    positions: list[Tensor] = []
    offset = 0
    for name, site in trace.iter_stochastic_nodes():
        shape = torch.Size(unconstrained_shapes[name])
        size = math.prod(shape)
        kept = _kept_entries(site.get("mask"), site["fn"].batch_shape, shape)
        if kept is not None and not bool(kept.all()):
            positions.append(offset + (~kept).reshape(-1).nonzero().reshape(-1))
        offset += size
    return torch.cat(positions) if positions else None


def _kept_entries(mask: object, batch_shape: torch.Size, shape: torch.Size) -> Tensor | None:
    """``mask`` as a bool tensor of the site's unconstrained ``shape`` (``None``: no mask, or
    one that does not fit the batch shape)."""
    if mask is None or mask is True:
        return None
    if mask is False:
        return torch.zeros(shape, dtype=torch.bool)
    if not isinstance(mask, Tensor) or shape[: len(batch_shape)] != batch_shape:
        return None
    try:
        batch = torch.broadcast_to(mask.bool().cpu(), batch_shape)
    except RuntimeError:
        return None
    event = shape[len(batch_shape):]
    return batch.reshape(batch_shape + (1,) * len(event)).expand(shape)


def masked_out_log_density(latent: Tensor, positions: Tensor) -> Tensor:
    r""":math:`\log r(u) = \sum_j \log \mathcal N(u_j; 0, 1)` of the latent entries at
    ``positions`` (the last dim of ``latent``), per draw.

    >>> round(float(masked_out_log_density(torch.zeros(1, 3), torch.tensor([0, 2]))), 4)
    -1.8379
    """
    u = latent[..., positions.to(latent.device)]
    return -0.5 * (u.square() + math.log(2 * math.pi)).sum(-1)
