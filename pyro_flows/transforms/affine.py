r"""A learnable elementwise affine map with a positive scale: the "location-scale" stage of a flow.

:class:`ElementwiseAffine` is :math:`y = \mu + \sigma \odot x` with :math:`\sigma` through a
softplus. Put first in a flow (next to the standard-normal base) it turns the base into a diagonal
Gaussian :math:`\mathcal N(\mu, \mathrm{diag}\,\sigma^2)`, which is how
:class:`~pyro_flows.infer.AutoFlow` starts a guide at an initial location with a chosen scale while
the flow layers after it start at the identity.

**Three elementwise affine layers.** :class:`~pyro_flows.transforms.rescale.Rescale`,
:class:`~pyro_flows.transforms.affine.ElementwiseAffine` and
:class:`~pyro_flows.transforms.normalization.ActNorm` are one map, one coordinate at a
time, with the same softplus scale and log-determinant; they differ in the shift and in how
the parameters start. :mod:`pyro_flows.transforms.rescale` has the table that says which
to use when.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import all_finite
from .rescale import Rescale, expand_log_det, log_softplus, softplus_inverse

__all__ = ["ElementwiseAffine"]


def _initial(value: Tensor | float, input_dim: int, name: str) -> Tensor:
    tensor = torch.as_tensor(value, dtype=torch.get_default_dtype()).detach().clone()
    if tensor.dim() == 0:
        tensor = tensor.expand(input_dim).clone()
    if tensor.shape != (input_dim,):
        raise ValueError(
            f"ElementwiseAffine: {name} must be a scalar or have shape ({input_dim},), "
            f"got shape {tuple(tensor.shape)}"
        )
    if not all_finite(tensor):
        raise ValueError(f"ElementwiseAffine: {name} must be finite, got {tensor.tolist()}")
    return tensor


class ElementwiseAffine(Rescale):
    r"""Elementwise affine map :math:`y = \mu + \sigma \odot x` with a learnable positive scale.

    .. math::

        y = \mu + \sigma \odot x, \qquad \sigma = \mathrm{softplus}(r) > 0, \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = \sum_{d=1}^{D} \log \sigma_d,

    with inverse :math:`x = (y - \mu) / \sigma` and log-determinant :math:`-\sum_d \log\sigma_d`.
    Applied to a standard-normal base it gives :math:`\mathcal N(\mu, \mathrm{diag}\,\sigma^2)`;
    the initial values of :math:`\mu` and :math:`\sigma` are arguments, so a flow can start as a
    chosen diagonal Gaussian (unlike :class:`~pyro_flows.transforms.ActNorm`, whose initial values
    come from data).

    Cost: forward and inverse are both :math:`O(D)` per sample (elementwise).

    :param input_dim: event size :math:`D`.
    :param loc: initial :math:`\mu` (scalar or shape ``(D,)``), default 0.
    :param scale: initial :math:`\sigma > 0` (scalar or shape ``(D,)``), default 1.

    Example:

    >>> import torch
    >>> from pyro_flows.transforms import ElementwiseAffine
    >>> t = ElementwiseAffine(2, loc=torch.tensor([1.0, -1.0]), scale=0.5)
    >>> y, log_det = t.forward_and_log_det(torch.zeros(3, 2))
    >>> y[0].tolist(), round(float(log_det[0].detach()), 4)
    ([1.0, -1.0], -1.3863)
    >>> torch.allclose(t.inverse_and_log_det(y)[0], torch.zeros(3, 2))
    True

    References:

    - A. Kucukelbir, D. Tran, R. Ranganath, A. Gelman, D. M. Blei. *Automatic Differentiation
      Variational Inference.* JMLR 18, 2017. https://arxiv.org/abs/1603.00788
    - D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling. *Improved
      Variational Inference with Inverse Autoregressive Flow.* NeurIPS, 2016 (the first,
      location-scale stage of an IAF posterior). https://arxiv.org/abs/1606.04934
    """

    def __init__(
        self, input_dim: int, loc: Tensor | float = 0.0, scale: Tensor | float = 1.0
    ) -> None:
        super().__init__(input_dim)
        loc_t = _initial(loc, self.input_dim, "loc")
        scale_t = _initial(scale, self.input_dim, "scale")
        if bool((scale_t <= 0).any()):
            raise ValueError(f"ElementwiseAffine: scale must be > 0, got {scale_t.tolist()}")
        self.loc = nn.Parameter(loc_t)
        with torch.no_grad():
            self.raw_scale.copy_(softplus_inverse(scale_t))
        #: when set, the map uses detached :math:`\mu, r`: no gradient reaches them, so an
        #: optimiser leaves them where they are (AutoFlow's anchor after its Gaussian start),
        #: while they still live in ``state_dict`` and Pyro's param store
        self.frozen = False

    def _loc_and_raw(self) -> tuple[Tensor, Tensor]:
        if self.frozen:
            return self.loc.detach(), self.raw_scale.detach()
        return self.loc, self.raw_scale

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: ``y = loc + scale * x``; returns ``(y, sum(log scale))``."""
        x, context = self._prepare(x, context, "x")
        loc, raw = self._loc_and_raw()
        return loc + F.softplus(raw) * x, expand_log_det(log_softplus(raw).sum(), x)

    def forward_without_log_det(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Base -> data without the log-determinant (the sampling path)."""
        x, context = self._prepare(x, context, "x")
        loc, raw = self._loc_and_raw()
        return loc + F.softplus(raw) * x

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: ``x = (y - loc) / scale``; returns ``(x, -sum(log scale))``."""
        y, context = self._prepare(y, context, "y")
        loc, raw = self._loc_and_raw()
        return (y - loc) / F.softplus(raw), -expand_log_det(log_softplus(raw).sum(), y)
