r"""The continuous-normalizing-flow builder :func:`cnf` (FFJORD).

A stack of :class:`~pyro_flows.transforms.continuous.ContinuousFlow` layers, each the time-:math:`T`
map of :math:`dz/dt = f_k(z, t; c)`:

.. math::

    \log q(y) = \log\mathcal N(z_0; 0, I)
        - \sum_{k=1}^{K}\int_0^T \operatorname{tr}\frac{\partial f_k}{\partial z}\,dt.

References:

* W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, "FFJORD: Free-form
  Continuous Dynamics for Scalable Reversible Generative Models", ICLR 2019, arXiv:1810.01367.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._validation import check_positive_int
from ..flow import Flow
from ..transforms.continuous import ContinuousFlow

__all__ = ["cnf"]


def cnf(
    input_dim: int,
    num_transforms: int = 1,
    hidden_dims: Sequence[int] = (64, 64),
    context_dim: int | None = None,
    *,
    base: Any = None,
    **options: Any,
) -> Flow:
    r"""FFJORD continuous normalizing flow: ``num_transforms`` ODE blocks in sequence.

    No permutations are needed between blocks: each vector field mixes all coordinates. The
    ``options`` go to every :class:`~pyro_flows.transforms.continuous.ContinuousFlow`
    (``activation``, ``time``, ``trace``, ``noise``, ``method``, ``rtol``, ``atol``,
    ``adjoint``); ``base`` is the base distribution (default standard Normal).

    .. math::

        y = z_K, \qquad z_k = z_{k-1} + \int_0^T f_k(z(t), t; c)\,dt, \qquad z_0 \sim
        \mathcal N(0, I).

    Cost: sampling and density each ``num_transforms`` ODE solves (see
    :class:`~pyro_flows.transforms.continuous.ContinuousFlow`); no network pass is shared.

    Not traceable: under ``torch.jit.trace`` or ``pyro.infer.JitTrace_ELBO`` every solve raises
    a ``RuntimeError`` naming the cause; train with ``pyro.infer.Trace_ELBO``.

    Example::

        >>> flow = cnf(2, hidden_dims=(8,))
        >>> flow.log_prob(torch.randn(3, 2)).shape
        torch.Size([3])

    References:

    * W. Grathwohl et al., "FFJORD", ICLR 2019, arXiv:1810.01367.
    """
    check_positive_int(input_dim, "input_dim")
    check_positive_int(num_transforms, "num_transforms")
    layers = [
        ContinuousFlow(input_dim, hidden_dims, context_dim, **options)
        for _ in range(num_transforms)
    ]
    return Flow(layers, base=base, context_dim=context_dim)
