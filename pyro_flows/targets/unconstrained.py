r"""A target on a constrained support, pushed back to :math:`\mathbb{R}^D`.

With the bijection :math:`T = \texttt{biject\_to}(\text{support}) : \mathbb{R}^D \to S` (for a
box, an elementwise scaled sigmoid), the density of :math:`u = T^{-1}(z)` is

.. math::

    \log \tilde p_u(u) = \log \tilde p\big(T(u)\big) + \log \left|\det \frac{\partial T}{\partial u}
    \right|, \qquad \int_{\mathbb{R}^D} \tilde p_u = \int_S \tilde p = Z,

so :math:`\log Z` carries over unchanged and exact samples are :math:`T^{-1}` of the target's.
MCMC and unconstrained flows run on :math:`u`; map their draws back with :meth:`to_support`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import biject_to, constraints

from .base import Target

__all__ = ["UnconstrainedTarget"]


class UnconstrainedTarget(Target):
    r"""``target`` seen through :math:`u = T^{-1}(z)`, :math:`T = \texttt{biject\_to}
    (\text{target.support})`, on :math:`\mathbb{R}^D`.

    .. math::

        \log \tilde p_u(u) = \log \tilde p(T(u)) + \log|\det J_T(u)|, \qquad
        \log Z_u = \log Z.

    ``log_Z`` and the exact sampler carry over; ``mean``/``std`` and ``bounds`` do not (they
    change under :math:`T`) and are ``None``. The support's bijection must keep the event size
    (true of boxes and of every elementwise constraint).

    Cost: one :math:`T` and its log-determinant (elementwise for a box) on top of the
    target's ``log_prob``.

    :param target: a :class:`~pyro_flows.targets.base.Target` with a constrained ``support``.

    Example:

    >>> from pyro_flows.targets.energy import U2
    >>> box = U2()                       # e^{-U2} on [-4, 4]^2
    >>> free = box.unconstrained()       # the same mass on R^2
    >>> free.log_Z == box.log_Z, free.log_prob(torch.tensor([50.0, 0.0])).isfinite().item()
    (True, True)
    >>> free.to_support(torch.tensor([0.0, 0.0]))
    tensor([0., 0.])

    References:

    - A. Kucukelbir, D. Tran, R. Ranganath, A. Gelman, D. M. Blei. *Automatic Differentiation
      Variational Inference.* JMLR 18, 2017 (densities on unconstrained spaces).
    """

    def __init__(self, target: Target) -> None:
        if not isinstance(target, Target):
            raise TypeError(f"target must be a Target, got {type(target).__name__}")
        super().__init__(target.dim)
        self.target = target
        self.name = f"{target.name}-unconstrained"
        origin = torch.zeros(target.dim, dtype=target.dtype, device=target.device)
        shape = self._transform()(origin).shape
        if shape != (target.dim,):
            raise ValueError(
                f"biject_to(support) of {type(target).__name__} maps R^{target.dim} to shape "
                f"{tuple(shape)}; UnconstrainedTarget needs a bijection that keeps the event size"
            )
        self.log_Z = target.log_Z

    @property
    def has_exact_samples(self) -> bool:  # type: ignore[override]
        return self.target.has_exact_samples

    def _transform(self) -> torch.distributions.Transform:
        return biject_to(self.target.support)

    def to_support(self, u: Tensor) -> Tensor:
        """:math:`z = T(u)`: points of :math:`\\mathbb{R}^D` mapped onto the target's support."""
        return self._transform()(self._check(u))

    def _log_prob(self, u: Tensor) -> Tensor:
        t = self._transform()
        z = t(u)
        log_det = t.log_abs_det_jacobian(u, z)
        if log_det.dim() == u.dim():  # an elementwise transform: sum over the event
            log_det = log_det.sum(-1)
        return self.target.log_prob(z) + log_det

    def _sample(self, n: int) -> Tensor:
        with torch.no_grad():  # float64 draws: a float32 round-off could land on a box edge
            z = self.target._sample(n).to(torch.float64)
        return self._transform().inv(z)

    def _initial_point(self) -> Tensor:
        return self._transform().inv(self.target.initial_params()["z"])

    @property
    def support(self) -> constraints.Constraint:
        """``constraints.real_vector``."""
        return constraints.real_vector
