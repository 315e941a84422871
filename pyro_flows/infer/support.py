r"""``onto_support``: push a flow on :math:`\mathbb R^D` onto a constrained support.

For a target that lives on a subset of :math:`\mathbb R^D` (a box, the positive orthant), a flow
:math:`q` on :math:`\mathbb R^D` is followed by :math:`T = \mathrm{biject\_to}(\mathrm{support})`,
and the density of :math:`y = T(x)` is :math:`q(x) |\det J_T(x)|^{-1}`: the flow then never
proposes a point where the target is zero.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.distributions import biject_to, constraints

from ..flow import Flow

__all__ = ["onto_support"]


def onto_support(flow: Flow, support: Any) -> Flow:
    r"""A :class:`~pyro_flows.Flow` that is ``flow`` followed by ``biject_to(support)``.

    .. math::

        y = T(x), \quad x \sim q, \qquad \log q_T(y) = \log q(x) - \log|\det J_T(x)|.

    The new flow shares ``flow``'s layers (training one trains the other). For
    ``constraints.real_vector`` it returns ``flow`` itself.

    Cost: one elementwise (or closed-form) transform more in each direction.

    :param flow: a flow on :math:`\mathbb R^D`.
    :param support: a ``torch.distributions.constraints`` constraint on ``D``-vectors (e.g.
        ``target.support``).

    Example:

    >>> import torch
    >>> from torch.distributions import constraints
    >>> from pyro_flows import flows
    >>> from pyro_flows.infer import onto_support
    >>> box = constraints.independent(constraints.interval(-4.0, 4.0), 1)
    >>> flow = onto_support(flows.realnvp(2, num_transforms=1), box)
    >>> bool((flow.sample((100,)).abs() < 4).all())
    True

    References:

    - A. Kucukelbir, D. Tran, R. Ranganath, A. Gelman, D. M. Blei. *Automatic Differentiation
      Variational Inference.* JMLR 18, 2017. https://arxiv.org/abs/1603.00788
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"onto_support needs a pyro_flows.Flow, got {type(flow).__name__}")
    if support is constraints.real_vector or support is None:
        return flow
    if not isinstance(support, constraints.Constraint):
        raise TypeError(f"support must be a torch constraint, got {type(support).__name__}")
    if support.event_dim > 1:
        raise ValueError(f"support must constrain vectors (event_dim <= 1), got {support}")
    transform = biject_to(support)
    layers: list[nn.Module] = [*flow.transforms, transform]  # type: ignore[list-item]
    pushed = Flow(layers, base=flow.base)
    pushed.support = support
    return pushed
