r"""Noise-contrastive estimation: learn :math:`E_\theta` and :math:`\log Z` by classification.

NCE turns density estimation into logistic regression between the data and :math:`\nu` times as
many samples from a known noise density :math:`q_n`. The model is made explicitly normalised
with a free parameter :math:`c \approx \log Z_\theta`,
:math:`\log p_{\theta,c}(x) = -E_\theta(x) - c`, and the classifier's logit is

.. math::

    G(x) = \log p_{\theta,c}(x) - \log q_n(x) - \log\nu,

    L(\theta, c) = -\mathbb{E}_{p_\mathrm{data}}\bigl[\log\sigma(G(x))\bigr]
    - \nu\,\mathbb{E}_{q_n}\bigl[\log\sigma(-G(y))\bigr].

The minimiser is :math:`p_{\theta,c} = p_\mathrm{data}` (when the family contains it), so
:math:`c` converges to the true :math:`\log Z_\theta`. A noise close to the data (here by
default a Gaussian fitted to it) makes the classification hard and the estimate efficient.

References:

- Gutmann & Hyvärinen, "Noise-Contrastive Estimation: A New Estimation Principle for
  Unnormalized Statistical Models", AISTATS 2010; JMLR 13, 2012.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._numbers import check_finite_number
from ._objective import (
    EBMObjective,
    Energy,
    check_finite_samples,
    energy_values,
    per_row,
)

__all__ = ["NCE", "gaussian_noise", "nce_loss"]


def gaussian_noise(data: Tensor, jitter: float = 1e-6) -> torch.distributions.Distribution:
    r"""The Gaussian fitted to ``data`` by moments, :math:`\mathcal{N}(\bar x, \hat\Sigma)`, as
    a ``torch.distributions.MultivariateNormal`` (the default NCE noise).

    .. math::

        \bar x = \frac1N\sum_n x_n, \qquad
        \hat\Sigma = \frac1{N-1}\sum_n (x_n - \bar x)(x_n - \bar x)^\top + \delta I.

    Example:

    >>> q = gaussian_noise(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]]))
    >>> q.mean, q.event_shape
    (tensor([1., 1.]), torch.Size([2]))

    References: Gutmann & Hyvärinen, JMLR 13, 2012, Sec. 2.4 (noise choice).
    """
    if not isinstance(data, Tensor) or data.dim() != 2 or data.shape[0] < 2:
        got = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
        raise ValueError(f"gaussian_noise needs data of shape (N >= 2, D), got {got}")
    x = data.detach()
    mean = x.mean(0)
    cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
    cov = cov + jitter * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)


def nce_loss(
    energy: Energy,
    log_Z: Tensor,
    data: Tensor,
    noise: Tensor,
    noise_log_prob_data: Tensor,
    noise_log_prob_noise: Tensor,
) -> Tensor:
    r"""The NCE loss per data point, with :math:`\nu = N_\text{noise}/N_\text{data}`:

    .. math::

        L = -\frac1{N}\sum_{n}\log\sigma(G(x_n)) - \frac{1}{N}\sum_{m}\log\sigma(-G(y_m)),
        \quad G = -E_\theta - c - \log q_n - \log\nu.

    Cost: one energy pass on data and noise.

    :param energy: ``E(x)``, shape ``(N,)`` (an ``(N, 1)`` output is squeezed).
    :param log_Z: the scalar parameter :math:`c`.
    :param data: ``(N, D)``.
    :param noise: noise samples ``(M, D)``.
    :param noise_log_prob_data: :math:`\log q_n(x_n)`, shape ``(N,)`` (or ``(N, 1)``).
    :param noise_log_prob_noise: :math:`\log q_n(y_m)`, shape ``(M,)`` (or ``(M, 1)``).
    :raises ValueError: on an energy or a log density without one value per row.

    Example: when model and noise agree and :math:`\nu = 1`, :math:`G = 0` and the loss is
    :math:`2\log 2`:

    >>> e = lambda z: 0.5 * (z**2).sum(-1)
    >>> x, y = torch.zeros(2, 1), torch.ones(2, 1)
    >>> lq = lambda z: -e(z) - 0.5 * math.log(2 * math.pi)
    >>> c = torch.tensor(0.5 * math.log(2 * math.pi))
    >>> round(float(nce_loss(e, c, x, y, lq(x), lq(y))), 4), round(2 * math.log(2), 4)
    (1.3863, 1.3863)

    References: Gutmann & Hyvärinen, AISTATS 2010, Eq. (3).
    """
    n, m = data.shape[0], noise.shape[0]
    log_nu = math.log(m / n)
    lq_data = per_row(noise_log_prob_data, (n,), "noise_log_prob_data", tuple(data.shape))
    lq_noise = per_row(noise_log_prob_noise, (m,), "noise_log_prob_noise", tuple(noise.shape))
    g_data = -energy_values(energy, data) - log_Z - lq_data - log_nu
    g_noise = -energy_values(energy, noise) - log_Z - lq_noise - log_nu
    return -(F.logsigmoid(g_data).sum() + F.logsigmoid(-g_noise).sum()) / n


class NCE(EBMObjective):
    r"""Noise-contrastive estimation as a :func:`~pyro_flows.ebm.train.train_ebm` objective
    (``method="nce"``), with a fixed noise and a learned :math:`c = \log Z` (the parameter
    :attr:`log_Z`):

    .. math::

        \min_{\theta, c}\ -\mathbb{E}_{p_\mathrm{data}}\log\sigma(G)
        - \nu\,\mathbb{E}_{q_n}\log\sigma(-G).

    Cost: :math:`\nu N` noise draws and their log densities, and one energy pass on
    :math:`(1 + \nu)N` points per batch.

    :param noise: a distribution with ``sample`` and ``log_prob`` over events of size
        :math:`D` (e.g. a ``torch.distributions`` object or a :class:`~pyro_flows.Flow`), so
        ``event_shape == (D,)`` and ``batch_shape == ()`` where it states them (a ``Normal``
        with a batch of :math:`D` scales needs ``Independent(normal, 1)``); ``None``:
        :func:`gaussian_noise` fitted to the training data at setup.
    :param nu: noise samples per data point, :math:`\nu > 0`.
    :param log_Z_init: initial :math:`c`, a finite number.
    :raises ValueError: at setup (or the first loss), a noise whose shapes do not match the
        data's :math:`D`.

    Example:

    >>> from pyro_flows.ebm.energy import GaussianEnergy
    >>> obj = NCE(noise=torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)))
    >>> torch.manual_seed(0) and None
    >>> obj.energy_loss(GaussianEnergy(2), torch.randn(16, 2)).shape
    torch.Size([])

    References: Gutmann & Hyvärinen, AISTATS 2010; JMLR 13, 2012.
    """

    name = "nce"

    def __init__(self, noise: Any = None, nu: float = 1.0, log_Z_init: float = 0.0) -> None:
        super().__init__()
        if not (nu > 0 and math.isfinite(nu)):
            raise ValueError(f"nu must be a positive number, got {nu!r}")
        log_Z_init = check_finite_number(log_Z_init, "log_Z_init")
        if noise is not None and not (hasattr(noise, "sample") and hasattr(noise, "log_prob")):
            raise TypeError(
                f"noise must have sample() and log_prob(), got {type(noise).__name__}"
            )
        self.noise = noise
        self.nu = nu
        self.log_Z = nn.Parameter(torch.tensor(float(log_Z_init)))

    def setup(self, data: Tensor) -> None:
        if self.noise is None:
            self.noise = gaussian_noise(data)
        else:
            _check_noise_shapes(self.noise, data.shape[-1])

    def energy_side_parameters(self) -> Iterator[nn.Parameter]:
        return iter([self.log_Z])

    def energy_loss(self, energy: Energy, x: Tensor) -> Tensor:
        if self.noise is None:
            self.setup(x)
        _check_noise_shapes(self.noise, x.shape[-1])
        m = max(1, round(self.nu * x.shape[0]))
        with torch.no_grad():
            y = self.noise.sample((m,)).to(x.dtype)
            if tuple(y.shape) != (m, x.shape[-1]):
                raise ValueError(
                    f"noise.sample(({m},)) must return shape ({m}, {x.shape[-1]}) (events of the "
                    f"data's size D={x.shape[-1]}), got {tuple(y.shape)}"
                )
            check_finite_samples(y, "the noise's samples", "the noise distribution is broken")
            lq_y = self.noise.log_prob(y).to(x.dtype)
            lq_x = self.noise.log_prob(x).to(x.dtype)
        return nce_loss(energy, self.log_Z, x, y, lq_x, lq_y)


def _check_noise_shapes(noise: Any, d: int) -> None:
    """A ``ValueError`` unless ``noise``'s stated ``event_shape`` is ``(d,)`` and its
    ``batch_shape`` (if it states one) is ``()``: one log density per row of ``(N, d)`` data."""
    event = getattr(noise, "event_shape", None)
    batch = getattr(noise, "batch_shape", ())
    if event is None:
        return  # nothing stated: the shapes of its samples and log densities are checked
    if tuple(event) != (d,) or tuple(batch) != ():
        raise ValueError(
            f"noise must be a distribution over events of the data's size D={d}: "
            f"event_shape ({d},) and batch_shape (), got event_shape {tuple(event)} and "
            f"batch_shape {tuple(batch)} (wrap a batch of univariate distributions in "
            "torch.distributions.Independent(..., 1))"
        )
