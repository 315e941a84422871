r"""The unadjusted Langevin step, the one update that ULA, MALA's proposal
(:mod:`pyro_flows.infer.samplers`) and the negative-sample chains of contrastive divergence
(:func:`pyro_flows.ebm.langevin_samples`) share.

It is the Euler-Maruyama step, over a time :math:`h`, of the Langevin diffusion
:math:`dZ_t = \tfrac12\nabla\log p(Z_t)\,dt + \sigma\,dW_t` (whose stationary law is
:math:`p` for :math:`\sigma = 1`):

.. math::

    z' = z + \frac h2 \nabla\log p(z) + \sigma\sqrt h\,\xi, \qquad \xi \sim \mathcal N(0, I).

For an energy :math:`E = -\log p + \text{const}` and :math:`h = 2\epsilon` this is
:math:`x' = x - \epsilon\nabla E(x) + \sigma\sqrt{2\epsilon}\,\xi`, the form energy-based-model
papers write (Du & Mordatch, 2019). The step is pure: the caller draws :math:`\xi` (so each
caller keeps its own random stream) and takes the gradient (the samplers count and check it,
contrastive divergence differentiates its energy directly).

Example: on :math:`p = \mathcal N(0, 1)`, :math:`\nabla\log p(z) = -z`, so with no noise a step
of :math:`h = 1` halves :math:`z`:

>>> import torch
>>> z = torch.tensor([[2.0], [-4.0]])
>>> langevin_step(z, -z, 1.0, torch.zeros_like(z)).flatten().tolist()
[1.0, -2.0]
>>> h = torch.tensor([[1.0], [0.5]])  # one step per chain: -4 + 0.25 * 4 + sqrt(0.5)
>>> [round(v, 4) for v in langevin_step(z, -z, h, torch.ones_like(z)).flatten().tolist()]
[2.0, -2.2929]

References:

- G. O. Roberts, R. L. Tweedie. *Exponential convergence of Langevin distributions and their
  discrete approximations.* Bernoulli 2(4), 1996.
- A. Durmus, E. Moulines. *Nonasymptotic convergence analysis for the unadjusted Langevin
  algorithm.* Annals of Applied Probability 27(3), 2017.
- Y. Du, I. Mordatch. *Implicit Generation and Modeling with Energy-Based Models.* NeurIPS,
  2019 (the energy form, a noise scale :math:`\sigma < 1`).
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["langevin_step"]


def langevin_step(
    z: Tensor,
    grad_log_p: Tensor,
    h: float | Tensor,
    noise: Tensor,
    noise_scale: float = 1.0,
) -> Tensor:
    r"""One unadjusted Langevin step :math:`z + \tfrac h2\nabla\log p(z) + \sigma\sqrt h\,\xi`.

    :param z: the current points, shape ``(..., D)``.
    :param grad_log_p: :math:`\nabla\log p(z)`, the shape of ``z``.
    :param h: the time step, a float or a tensor that broadcasts against ``z`` (one per chain:
        shape ``(num_chains, 1)``); its square root is taken in its own precision
        (``math.sqrt`` for a float, ``Tensor.sqrt`` for a tensor).
    :param noise: standard normal draws :math:`\xi`, the shape of ``z``.
    :param noise_scale: :math:`\sigma \ge 0` (1: the diffusion whose law is :math:`p`).
    :returns: :math:`z'`, the shape of ``z`` (no arguments are checked: the callers do).
    """
    scale = h.sqrt() if isinstance(h, Tensor) else math.sqrt(h)
    if noise_scale != 1.0:
        scale = noise_scale * scale
    return z + 0.5 * h * grad_log_p + scale * noise
