r"""Score matching: fit :math:`\nabla_x \log p_\theta` to the data's score, no :math:`Z` needed.

Hyvärinen's objective, after integration by parts, needs only the model score
:math:`s_\theta(x) = \nabla_x\log\tilde p_\theta(x) = -\nabla_x E_\theta(x)`:

.. math::

    J(\theta) = \mathbb{E}_{p_\mathrm{data}}\Bigl[\operatorname{tr}\nabla_x s_\theta(x)
    + \tfrac12 \|s_\theta(x)\|^2\Bigr]
    = \tfrac12\,\mathbb{E}_{p_\mathrm{data}}\|s_\theta - \nabla_x\log p_\mathrm{data}\|^2
    + \text{const}.

The exact trace costs :math:`D` backward passes. Sliced score matching replaces it by random
projections :math:`v` with :math:`\mathbb{E}[vv^\top] = I` (Gaussian or Rademacher):

.. math::

    J_\mathrm{SSM}(\theta) = \mathbb{E}_{p_\mathrm{data}}\mathbb{E}_v\Bigl[
    v^\top \nabla_x s_\theta(x)\, v + \tfrac12 (v^\top s_\theta(x))^2\Bigr],

whose expectation over :math:`v` equals :math:`J` (one Hessian-vector product per projection);
the variance-reduced variant keeps :math:`\tfrac12\|s_\theta\|^2` analytic.

References:

- Hyvärinen, "Estimation of Non-Normalized Statistical Models by Score Matching", JMLR 6, 2005.
- Song, Garg, Shi & Ermon, "Sliced Score Matching: A Scalable Approach to Density and Score
  Estimation", UAI 2019.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_positive_int
from ._objective import EBMObjective, Energy, energy_values

__all__ = [
    "ScoreMatching",
    "SlicedScoreMatching",
    "score_matching_loss",
    "sliced_score_matching_loss",
]

PROJECTIONS = ("gaussian", "rademacher")


def _grad_with_graph(out: Tensor, x: Tensor) -> Tensor:
    """:math:`\\nabla_x` of the scalar ``out``, differentiable further; zeros where ``out``
    does not depend on ``x`` (the score of a constant energy, the Hessian of a linear one)."""
    if not out.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(out, x, create_graph=True, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def _score_with_graph(energy: Energy, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(x, s)``: ``x`` detached and requiring gradients, and the score
    :math:`s = -\\nabla_x E(x)` with its graph (an ``(N, 1)`` energy is squeezed)."""
    x = x.detach().requires_grad_(True)
    return x, -_grad_with_graph(energy_values(energy, x).sum(), x)


def score_matching_loss(energy: Energy, x: Tensor) -> Tensor:
    r"""Exact (Hyvärinen) score matching loss on a batch, per-example mean:

    .. math::

        \hat J = \frac1N\sum_n \Bigl[\sum_{d=1}^D \frac{\partial s_{\theta,d}}{\partial x_d}(x_n)
        + \tfrac12 \|s_\theta(x_n)\|^2\Bigr], \qquad s_\theta = -\nabla_x E_\theta.

    Cost: one energy pass and :math:`1 + D` backward passes (the Hessian diagonal, one
    coordinate at a time), all differentiable in :math:`\theta`.

    :param energy: ``E(x)`` with batch shape ``x.shape[:-1]`` (an ``(N, 1)`` output is
        squeezed), twice differentiable in ``x`` (a zero Hessian, e.g. of a linear energy,
        counts as zero).
    :param x: data, shape ``(N, D)``.

    Example: for :math:`E = \|x\|^2/2` the score is :math:`-x` and the trace :math:`-D`, so
    :math:`J = \mathbb{E}\|x\|^2/2 - D`:

    >>> x = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    >>> score_matching_loss(lambda z: 0.5 * (z**2).sum(-1), x)  # (5/2 + 1/2)/2 - 2
    tensor(-0.5000, grad_fn=<MeanBackward0>)

    References: Hyvärinen, JMLR 6, 2005, Theorem 1.
    """
    _check_batch(x)
    with torch.enable_grad():
        xg, s = _score_with_graph(energy, x)
        trace = torch.zeros(x.shape[0], dtype=s.dtype, device=s.device)
        for d in range(x.shape[-1]):
            trace = trace + _grad_with_graph(s[:, d].sum(), xg)[:, d]
        return (trace + 0.5 * (s**2).sum(-1)).mean()


def sliced_score_matching_loss(
    energy: Energy,
    x: Tensor,
    n_projections: int = 1,
    projection: str = "rademacher",
    variance_reduction: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Sliced score matching loss on a batch:

    .. math::

        \hat J = \frac{1}{NM}\sum_{n,m} \Bigl[v_{nm}^\top \nabla_x s_\theta(x_n)\, v_{nm}
        + \tfrac12 (v_{nm}^\top s_\theta(x_n))^2\Bigr],

    with ``variance_reduction`` replacing :math:`\tfrac12(v^\top s)^2` by its expectation
    :math:`\tfrac12\|s\|^2` (SSM-VR). Unbiased for :func:`score_matching_loss` in expectation
    over :math:`v`.

    Cost: one energy pass and :math:`1 + M` backward passes (one Hessian-vector product per
    projection), independent of :math:`D`.

    :param energy: ``E(x)``, shape ``(N,)`` or ``(N, 1)``, twice differentiable in ``x`` (a
        zero Hessian counts as zero).
    :param x: data, shape ``(N, D)``.
    :param n_projections: :math:`M`, projections per data point.
    :param projection: ``"rademacher"`` (:math:`\pm1` entries) or ``"gaussian"``.
    :param variance_reduction: use SSM-VR.
    :param generator: draws the projections.

    Example: for a quadratic energy every Rademacher projection gives the exact trace,
    :math:`v^\top(-I)v = -D`:

    >>> x = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    >>> sliced_score_matching_loss(lambda z: 0.5 * (z**2).sum(-1), x, variance_reduction=True)
    tensor(-0.5000, grad_fn=<MeanBackward0>)

    References: Song, Garg, Shi & Ermon, UAI 2019, Eqs. (7) and (8).
    """
    _check_batch(x)
    check_positive_int(n_projections, "n_projections")
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    n, d = x.shape
    shape = (n_projections, n, d)
    v = torch.randn(shape, generator=generator, dtype=x.dtype)
    if projection == "rademacher":
        v = torch.sign(v)
    v = v.to(x.device)
    with torch.enable_grad():
        xg, s = _score_with_graph(energy, x)
        total = torch.zeros(n, dtype=s.dtype, device=s.device)
        for m in range(n_projections):
            sv = (s * v[m]).sum(-1)
            hv = _grad_with_graph(sv.sum(), xg)
            total = total + (hv * v[m]).sum(-1)
            if not variance_reduction:
                total = total + 0.5 * sv**2
        total = total / n_projections
        if variance_reduction:
            total = total + 0.5 * (s**2).sum(-1)
        return total.mean()


def _check_batch(x: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of shape (N, D), got {tuple(x.shape)}")


class ScoreMatching(EBMObjective):
    r"""Exact score matching as a :func:`~pyro_flows.ebm.train.train_ebm` objective
    (``method="sm"``): ``energy_loss`` is :func:`score_matching_loss`,

    .. math::

        \min_\theta\ \mathbb{E}_{p_\mathrm{data}}\bigl[\operatorname{tr}\nabla_x s_\theta
        + \tfrac12\|s_\theta\|^2\bigr].

    Cost: :math:`1 + D` backward passes per batch.

    Example:

    >>> from pyro_flows.ebm.energy import GaussianEnergy
    >>> ScoreMatching().energy_loss(GaussianEnergy(2), torch.zeros(3, 2))  # 0 - 2
    tensor(-2., grad_fn=<MeanBackward0>)

    References: Hyvärinen, JMLR 6, 2005.
    """

    name = "sm"

    def energy_loss(self, energy: Energy, x: Tensor) -> Tensor:
        return score_matching_loss(energy, x)


class SlicedScoreMatching(EBMObjective):
    r"""Sliced score matching as a :func:`~pyro_flows.ebm.train.train_ebm` objective
    (``method="ssm"``): ``energy_loss`` is :func:`sliced_score_matching_loss`,

    .. math::

        \min_\theta\ \mathbb{E}_{p_\mathrm{data}}\mathbb{E}_v\bigl[v^\top\nabla_x s_\theta\, v
        + \tfrac12 (v^\top s_\theta)^2\bigr].

    Cost: :math:`1 + M` backward passes per batch, independent of the dimension.

    :param n_projections: :math:`M`.
    :param projection: ``"rademacher"`` or ``"gaussian"``.
    :param variance_reduction: SSM-VR (analytic :math:`\frac12\|s\|^2`).

    Example:

    >>> from pyro_flows.ebm.energy import GaussianEnergy
    >>> obj = SlicedScoreMatching(variance_reduction=True)
    >>> obj.energy_loss(GaussianEnergy(2), torch.zeros(3, 2))
    tensor(-2., grad_fn=<MeanBackward0>)

    References: Song, Garg, Shi & Ermon, UAI 2019.
    """

    name = "ssm"

    def __init__(
        self,
        n_projections: int = 1,
        projection: str = "rademacher",
        variance_reduction: bool = True,
    ) -> None:
        super().__init__()
        check_positive_int(n_projections, "n_projections")
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        self.n_projections = n_projections
        self.projection = projection
        self.variance_reduction = variance_reduction

    def energy_loss(self, energy: Energy, x: Tensor) -> Tensor:
        return sliced_score_matching_loss(
            energy, x, self.n_projections, self.projection, self.variance_reduction
        )
