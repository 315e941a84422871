r"""Start a flow at the identity map: :func:`identity_init_`.

A normalizing flow used as a variational posterior should start as the distribution it is stacked
on (for :class:`~pyro_flows.infer.AutoFlow`, the initial diagonal Gaussian), so that training only
adds shape. The conditioner networks in this library end in a small (not zero) linear layer so
that density-estimation training breaks symmetry quickly; this function sets, in place,

- the last linear layer of every :class:`~pyro_flows.nn.MADE` and :class:`~pyro_flows.nn.MLP` to
  zero: coupling, affine-autoregressive and spline layers then output the identity (zero shift,
  unit scale, uniform bins with unit derivatives), while the zero layer still receives gradients;
- unconditional :class:`~pyro_flows.transforms.Planar` layers to
  :math:`u = \log(e - 1)\, w / \|w\|^2`, for which the constrained :math:`\hat u = 0`;
- unconditional :class:`~pyro_flows.transforms.Radial` layers to
  :math:`\beta' = \mathrm{softplus}^{-1}(\alpha)`, for which :math:`\beta = 0`;
- any other layer with a ``reset_to_identity_()`` method by calling it (a new family joins here
  by defining that method, e.g. :class:`~pyro_flows.transforms.Sylvester`: :math:`R = 0`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.made import MADE
from ..nn.mlp import MLP
from ..nn.packed_linear import PackedLinear
from .planar import Planar
from .radial import Radial
from .rescale import softplus_inverse

__all__ = ["identity_init_"]

_LOG_E_MINUS_1 = math.log(math.e - 1.0)


@torch.no_grad()
def identity_init_(module: nn.Module) -> nn.Module:
    r"""Make every layer of ``module`` (a :class:`~pyro_flows.Flow` or any module holding flow
    layers) the identity map, in place, and return ``module``.

    See the module docstring for what is set per family. Conditional planar and radial layers
    (whose parameters come from a network) and layers without parameters are left unchanged.

    Example:

    >>> import torch
    >>> from pyro_flows import flows
    >>> from pyro_flows.transforms.identity_init import identity_init_
    >>> flow = identity_init_(flows.iaf(3, num_transforms=2, hidden_dims=(8,)))
    >>> x = torch.randn(4, 3)
    >>> bool(torch.allclose(flow.log_prob(x), torch.distributions.Normal(0, 1).log_prob(x).sum(-1)))
    True

    References:

    - D. P. Kingma, P. Dhariwal. *Glow: Generative Flow with Invertible 1x1 Convolutions.*
      NeurIPS, 2018 (zero-initialised last layers). https://arxiv.org/abs/1807.03039
    """
    for sub in module.modules():
        if isinstance(sub, MADE):
            last = sub.layers[-1]
        elif isinstance(sub, MLP):
            last = sub.net[-1]
        elif isinstance(sub, Planar) and getattr(sub, "net", None) is None:
            norm2 = (sub.w * sub.w).sum().clamp_min(torch.finfo(sub.w.dtype).tiny)
            sub.u.copy_(_LOG_E_MINUS_1 * sub.w / norm2)
            continue
        elif isinstance(sub, Radial) and getattr(sub, "net", None) is None:
            sub.beta_prime.copy_(softplus_inverse(F.softplus(sub.alpha_prime)))
            continue
        elif callable(getattr(sub, "reset_to_identity_", None)):
            sub.reset_to_identity_()
            continue
        else:
            continue
        assert isinstance(last, (nn.Linear, PackedLinear))
        last.weight.zero_()
        last.bias.zero_()
    return module
