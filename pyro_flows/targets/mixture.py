r"""A mixture of well separated isotropic Gaussians with unequal known weights: the mode-finding
test (reverse KL is mode seeking and MCMC chains stay in the mode they start in).

.. math::

    p(z) = \sum_{k=1}^{K} \pi_k\, \mathcal{N}(z; \mu_k, s^2 I_D), \qquad \log Z = 0,

with exact mean :math:`\bar\mu = \sum_k \pi_k \mu_k` and marginal variances
:math:`s^2 + \sum_k \pi_k \mu_{kd}^2 - \bar\mu_d^2`. The centres are laid out so that every
pair is at least ``separation`` apart:

- :math:`K \le D + 1`: the vertices of a regular simplex (all pairs exactly ``separation``
  apart), from the Helmert basis of the centred unit vectors of :math:`\mathbb{R}^K`;
- :math:`K > D + 1`, :math:`D \ge 2`: a regular :math:`K`-gon in the first two coordinates with
  adjacent centres ``separation`` apart (radius :math:`\mathrm{sep}/(2\sin(\pi/K))`);
- :math:`D = 1`: equally spaced points on the line.

With ``separation`` :math:`\gg s` the modes are disjoint for practical purposes: the density
between two adjacent modes falls to about :math:`e^{-\mathrm{sep}^2/8s^2}` of the peaks, and a
sample's nearest centre is its component except with probability about
:math:`\Phi(-\mathrm{sep}/2s)` per neighbour (:math:`3 \times 10^{-5}` at the default
:math:`\mathrm{sep}/s = 8`), which is what :meth:`GaussianMixture.mode_masses` relies on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import check_positive_int
from .base import Target

__all__ = ["GaussianMixture", "mixture_centres"]

_F64 = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)


def mixture_centres(dim: int, num_modes: int, separation: float) -> Tensor:
    r"""Deterministic centres, shape ``(num_modes, dim)`` (float64), pairwise at least
    ``separation`` apart: a regular simplex if ``num_modes <= dim + 1``, otherwise a regular
    polygon in the first two coordinates (or a line in 1-D).

    The simplex vertex :math:`i` has coordinates :math:`h_j[i] \cdot \mathrm{sep}/\sqrt2`,
    :math:`h_j = (1, \dots, 1, -j, 0, \dots, 0)/\sqrt{j(j+1)}` (:math:`j` ones), the Helmert
    basis of the sum-zero subspace, in which :math:`\|e_i - e_k\| = \sqrt 2`.

    >>> c = mixture_centres(2, 3, 4.0)
    >>> torch.cdist(c, c).round(decimals=6).tolist()
    [[0.0, 4.0, 4.0], [4.0, 0.0, 4.0], [4.0, 4.0, 0.0]]

    References:

    - H. O. Lancaster. *The Helmert matrices.* The American Mathematical Monthly 72(1), 4-12,
      1965.
    """
    dim = check_positive_int(dim, "dim")
    k = check_positive_int(num_modes, "num_modes")
    centres = torch.zeros(k, dim, dtype=_F64)
    if k <= dim + 1:
        for j in range(1, k):
            h = torch.zeros(k, dtype=_F64)
            h[:j] = 1.0
            h[j] = -float(j)
            centres[:, j - 1] = h / math.sqrt(j * (j + 1))
        return centres * (separation / math.sqrt(2.0))
    if dim == 1:
        centres[:, 0] = (torch.arange(k, dtype=_F64) - 0.5 * (k - 1)) * separation
        return centres
    angle = 2.0 * math.pi * torch.arange(k, dtype=_F64) / k
    radius = separation / (2.0 * math.sin(math.pi / k))
    centres[:, 0] = radius * torch.cos(angle)
    centres[:, 1] = radius * torch.sin(angle)
    return centres


class GaussianMixture(Target):
    r"""A mixture of :math:`K` isotropic Gaussians with well separated centres and unequal
    weights (default :math:`\pi_k \propto k`), normalised, with exact samples.

    .. math::

        \log p(z) = \log \sum_{k=1}^{K} \pi_k\, \mathcal{N}(z; \mu_k, s^2 I_D), \qquad
        \log Z = 0.

    ``modes`` holds the centres :math:`\mu_k` (shape ``(K, D)``), ``true_mode_weights`` the
    :math:`\pi_k`; :meth:`mode_masses` turns any sample (MCMC, a flow, importance-weighted) into
    the mass it puts near each centre, to report against ``true_mode_weights``. MCMC starts at
    the centre of the heaviest mode.

    Cost: ``log_prob`` :math:`O(KD)` per point; ``sample`` :math:`O(D)` per draw.

    :param dim: :math:`D` (default 2).
    :param num_modes: :math:`K` (default 4).
    :param separation: the smallest distance between two centres (default 8, in the units of
        :math:`z`; the modes are separated by ``separation / scale`` standard deviations).
    :param scale: :math:`s`, the standard deviation of every component (default 1).
    :param weights: :math:`\pi` (positive, normalised here); default :math:`\propto (1, \dots,
        K)`.
    :param centres: explicit centres of shape ``(K, D)`` instead of the layout of
        :func:`mixture_centres` (then ``separation`` is ignored and reported as measured).

    Example:

    >>> target = GaussianMixture(dim=5, num_modes=3)
    >>> target.true_mode_weights
    tensor([0.1667, 0.3333, 0.5000])
    >>> masses = target.mode_masses(target.sample(10000))
    >>> bool((masses - target.true_mode_weights).abs().max() < 0.02)
    True

    References:

    - R. M. Neal. *Sampling from multimodal distributions using tempered transitions.*
      Statistics and Computing 6, 353-366, 1996 (local MCMC moves rarely cross between modes).
    - T. Minka. *Divergence measures and message passing.* Microsoft Research technical report
      MSR-TR-2005-173, 2005 (minimising the reverse KL is mode seeking).
    """

    name = "mixture"
    has_exact_samples = True

    def __init__(
        self,
        dim: int = 2,
        num_modes: int = 4,
        separation: float = 8.0,
        scale: float = 1.0,
        weights: Sequence[float] | Tensor | None = None,
        centres: Tensor | None = None,
    ) -> None:
        dim = check_positive_int(dim, "dim")
        k = check_positive_int(num_modes, "num_modes")
        for label, value in (("separation", separation), ("scale", scale)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{label} must be a positive float, got {type(value).__name__}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{label} must be a positive finite float, got {value}")
        w = self._weights(weights, k)
        mu = self._centres(centres, dim, k, float(separation))
        super().__init__(dim)
        self.num_modes, self.scale = k, float(scale)
        self.separation = (
            torch.pdist(mu).min().item() if k > 1 and centres is not None else float(separation)
        )
        self.log_Z = 0.0
        mean = (w[:, None] * mu).sum(0)
        var = self.scale**2 + (w[:, None] * mu**2).sum(0) - mean**2
        default = torch.get_default_dtype()
        self.modes = mu.to(default)
        self.true_mode_weights = w.to(default)
        self.mean = mean.to(default)
        self.std = var.clamp_min(0).sqrt().to(default)
        pad = 4.0 * self.scale
        self.bounds = tuple(
            (
                float(math.floor(mu[:, d].min().item() - pad)),
                float(math.ceil(mu[:, d].max().item() + pad)),
            )
            for d in range(min(dim, 2))
        )

    @staticmethod
    def _weights(weights: Sequence[float] | Tensor | None, k: int) -> Tensor:
        if weights is None:
            w = torch.arange(1, k + 1, dtype=_F64)
        else:
            try:
                w = torch.as_tensor(weights, dtype=_F64).detach().clone()
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(
                    f"weights must be a sequence of {k} positive floats, "
                    f"got {type(weights).__name__}"
                ) from None
            if w.shape != (k,):
                raise ValueError(
                    f"weights must have shape ({k},) (num_modes={k}), got {tuple(w.shape)}"
                )
            if not (torch.isfinite(w).all() and (w > 0).all()):
                raise ValueError(f"weights must be positive and finite, got {w.tolist()}")
        return w / w.sum()

    @staticmethod
    def _centres(centres: Tensor | None, dim: int, k: int, separation: float) -> Tensor:
        if centres is None:
            return mixture_centres(dim, k, separation)
        if not isinstance(centres, Tensor):
            raise TypeError(f"centres must be a torch.Tensor, got {type(centres).__name__}")
        if centres.shape != (k, dim):
            raise ValueError(
                f"centres must have shape ({k}, {dim}) (num_modes, dim), got {tuple(centres.shape)}"
            )
        mu = centres.detach().to(_F64).clone()
        if not torch.isfinite(mu).all():
            raise ValueError("centres must be finite")
        return mu

    def _log_prob(self, z: Tensor) -> Tensor:
        mu = self.modes.to(z)
        log_w = torch.log(self.true_mode_weights.to(z))
        sq = ((z.unsqueeze(-2) - mu) ** 2).sum(-1)  # (..., K)
        comp = log_w - 0.5 * sq / self.scale**2
        return torch.logsumexp(comp, -1) - self.dim * (math.log(self.scale) + 0.5 * _LOG_2PI)

    def _sample(self, n: int) -> Tensor:
        k = torch.multinomial(self.true_mode_weights.to(_F64), n, replacement=True)
        mu = self.modes.to(_F64)[k]
        return mu + self.scale * torch.randn(n, self.dim, dtype=_F64)

    def _initial_point(self) -> Tensor:
        return self.modes[self.true_mode_weights.argmax()].clone()

    # -- modes -------------------------------------------------------------------------------
    def nearest_mode(self, samples: Tensor) -> Tensor:
        """Index of the nearest centre of each sample, shape ``samples.shape[:-1]`` (long)."""
        samples = self._check(samples)
        mu = self.modes.to(samples)
        return torch.cdist(samples.reshape(-1, self.dim), mu).argmin(-1).reshape(samples.shape[:-1])

    def mode_masses(self, samples: Tensor, weights: Tensor | None = None) -> Tensor:
        r"""The fraction of ``samples`` nearest to each centre, shape ``(K,)``, summing to 1.

        .. math::

            \hat m_k = \frac{\sum_n v_n [\arg\min_j \|z_n - \mu_j\| = k]}{\sum_n v_n},

        with :math:`v_n = 1`, or the (non-negative, e.g. importance) ``weights`` of shape
        ``samples.shape[:-1]``. A mode that a sampler or a flow misses gets 0; compare with
        ``true_mode_weights`` (e.g. the largest absolute difference, or the modes with
        :math:`\hat m_k = 0`).
        """
        idx = self.nearest_mode(samples).reshape(-1)
        if idx.numel() == 0:
            raise ValueError("mode_masses needs at least one sample, got an empty tensor")
        if weights is None:
            v = torch.ones(idx.shape, dtype=self.true_mode_weights.dtype, device=idx.device)
        else:
            if not isinstance(weights, Tensor):
                raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
            if weights.shape != samples.shape[:-1]:
                raise ValueError(
                    f"weights must have the batch shape of samples {tuple(samples.shape[:-1])}, "
                    f"got {tuple(weights.shape)}"
                )
            v = weights.reshape(-1).to(self.true_mode_weights.dtype)
            if not (torch.isfinite(v).all() and (v >= 0).all() and v.sum() > 0):
                raise ValueError("weights must be finite, non-negative and not all zero")
        masses = torch.zeros(self.num_modes, dtype=v.dtype, device=v.device)
        masses.index_add_(0, idx, v)
        return masses / masses.sum()

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_modes={self.num_modes}, "
            f"separation={self.separation:g}, scale={self.scale:g}"
        )
