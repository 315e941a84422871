r"""A target on a constrained support, pushed back to :math:`\mathbb{R}^D`.

With the bijection :math:`T = \texttt{biject\_to}(\text{support}) : \mathbb{R}^D \to S` (for a
box, an elementwise scaled sigmoid), the density of :math:`u = T^{-1}(z)` is

.. math::

    \log \tilde p_u(u) = \log \tilde p\big(T(u)\big) + \log \left|\det \frac{\partial T}{\partial u}
    \right|, \qquad \int_{\mathbb{R}^D} \tilde p_u = \int_S \tilde p = Z,

so :math:`\log Z` carries over unchanged and exact samples are :math:`T^{-1}` of the target's.
MCMC and unconstrained flows run on :math:`u`; map their draws back with :meth:`to_support`.

The class lives in :mod:`pyro_flows.targets.base` beside :class:`~pyro_flows.targets.base.Target`
(whose :meth:`~pyro_flows.targets.base.Target.unconstrained` returns it), so that the two
modules do not import each other; this module keeps its import path.
"""

from __future__ import annotations

from .base import Target as Target  # the old home of this name
from .base import UnconstrainedTarget

__all__ = ["UnconstrainedTarget"]
