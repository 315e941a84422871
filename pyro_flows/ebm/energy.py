r"""Energy functions :math:`E_\theta(x)`: the model :math:`p_\theta(x) = e^{-E_\theta(x)}/Z_\theta`.

This module holds *learnable* energies (modules fitted to data by :mod:`pyro_flows.ebm`);
the *fixed* 2-D benchmark energies :math:`U_1..U_4` of Rezende & Mohamed, used as targets, are in
:mod:`pyro_flows.targets.energy`, a different module with the same name.

An energy-based model (EBM) only specifies the unnormalised log density
:math:`\log\tilde p_\theta(x) = -E_\theta(x)`; the normaliser
:math:`Z_\theta = \int e^{-E_\theta(x)}\,dx` is intractable in general, which is why the
training objectives of :mod:`pyro_flows.ebm` (contrastive divergence, score matching, NCE, flow
contrastive and adversarial training) all avoid it. In 2-D it can be computed on a grid
(:meth:`EnergyModel.log_Z_grid`), which gives test NLLs and density images.

Every energy here is an ``nn.Module`` whose ``forward(x)`` returns :math:`E_\theta(x)` with the
batch shape ``x.shape[:-1]``; the training code accepts any such callable.

References:

- LeCun, Chopra, Hadsell, Ranzato & Huang, "A Tutorial on Energy-Based Learning", 2006.
- Song & Kingma, "How to Train Your Energy-Based Models", arXiv:2101.03288, 2021.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .._validation import check_event, check_hidden_dims, check_positive_int
from ._objective import energy_values

__all__ = ["EnergyModel", "GaussianEnergy", "grid_log_Z"]


def _check_x(x: object, input_dim: int, owner: str, module: nn.Module | None = None) -> Tensor:
    """``x`` as a tensor of shape ``(..., input_dim)`` (a NumPy array is converted, to the
    dtype and device of ``module``'s parameters); NaN is refused."""
    if not isinstance(x, Tensor):
        if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf":
            what = type(x).__name__ if not isinstance(x, np.ndarray) else f"ndarray of {x.dtype}"
            raise TypeError(
                f"{owner} expected x to be a torch.Tensor (or a real NumPy array), got {what}"
            )
        ref = next(iter(module.parameters()), None) if module is not None else None
        arr = x.astype(np.float64)
        x = torch.as_tensor(
            arr,
            dtype=ref.dtype if ref is not None else torch.get_default_dtype(),
            device=ref.device if ref is not None else None,
        )
    check_event(x, input_dim, "x", owner)
    if x.is_floating_point() and x.device.type != "meta" and bool(torch.isnan(x.detach()).any()):
        rows = torch.isnan(x.detach()).reshape(-1, input_dim).any(-1).nonzero().flatten()
        raise ValueError(
            f"{owner} got non-finite (NaN) values in {rows.numel()} row(s) of x of shape "
            f"{tuple(x.shape)} (flat row indices {rows[:5].tolist()}); the energy at NaN is "
            "undefined"
        )
    return x


@torch.no_grad()
def grid_log_Z(
    energy: Callable[[Tensor], Tensor],
    bounds: tuple[float, float] = (-4.0, 4.0),
    n: int = 200,
    chunk: int = 1 << 16,
) -> tuple[float, Tensor, Tensor]:
    r"""Normalise a 2-D energy on the midpoint grid of the square ``bounds``:

    .. math::

        \log Z \approx \log \sum_{i,j} e^{-E(x_{ij})}\, h^2, \qquad h = \frac{b - a}{n},

    where :math:`x_{ij}` are the :math:`n^2` cell centres of :math:`[a, b]^2` (the mass outside
    the square is ignored, so choose ``bounds`` that hold the model's mass).

    :param energy: ``E(x)`` for ``x`` of shape ``(N, 2)``, returning ``(N,)`` (or ``(N, 1)``).
    :param bounds: ``(a, b)``, the square :math:`[a, b]^2`.
    :param n: cells per axis.
    :param chunk: grid points per energy evaluation.
    :returns: ``(log_Z, axis, log_density)``: the cell centres along one axis ``(n,)`` and the
        normalised log density ``(n, n)`` (rows: second coordinate, columns: first).

    Example:

    >>> log_Z, axis, log_p = grid_log_Z(lambda x: 0.5 * (x**2).sum(-1), (-6.0, 6.0), 200)
    >>> round(log_Z, 4), round(math.log(2 * math.pi), 4)  # N(0, I): Z = 2 pi
    (1.8379, 1.8379)

    References: midpoint rule; Song & Kingma (2021), Sec. 1 (why :math:`Z` is intractable
    beyond a few dimensions).
    """
    a, b = float(bounds[0]), float(bounds[1])
    if not (math.isfinite(a) and math.isfinite(b) and b > a):
        raise ValueError(f"bounds must be finite (low, high) with high > low, got {bounds!r}")
    check_positive_int(n, "n", minimum=2)
    h = (b - a) / n
    axis = torch.linspace(a + h / 2, b - h / 2, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([xx, yy], -1).reshape(-1, 2)
    ref = None
    if isinstance(energy, nn.Module):
        ref = next(iter(energy.parameters()), None)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else None
    values = []
    for start in range(0, points.shape[0], chunk):
        x = points[start : start + chunk].to(dtype=dtype, device=device)
        values.append(-energy_values(energy, x).double().cpu())
    log_tilde = torch.cat(values)
    if not torch.isfinite(log_tilde).all():
        raise FloatingPointError("the energy is not finite on the whole grid")
    log_Z = float(torch.logsumexp(log_tilde, 0)) + 2 * math.log(h)
    return log_Z, axis, (log_tilde - log_Z).reshape(n, n)


class EnergyModel(nn.Module):
    r"""A neural energy :math:`E_\theta: \mathbb{R}^D \to \mathbb{R}`, an MLP with smooth
    activations (SiLU by default, so that the Hessian needed by exact score matching is not
    zero almost everywhere), plus an optional quadratic confinement term:

    .. math::

        E_\theta(x) = \mathrm{MLP}_\theta(x) + \frac{\|x\|^2}{2\sigma_0^2},
        \qquad \log\tilde p_\theta(x) = -E_\theta(x).

    With ``prior_scale`` :math:`\sigma_0` (``None``: no term) the model is guaranteed
    normalisable and Langevin chains cannot drift off to infinity, while for large
    :math:`\sigma_0` it barely constrains the fit.

    Cost: one MLP pass per energy; :meth:`score` one extra backward pass.

    :param input_dim: the event size :math:`D`.
    :param hidden_dims: hidden layer sizes of the MLP.
    :param activation: activation module class (must be twice differentiable for exact score
        matching).
    :param prior_scale: :math:`\sigma_0` of the confinement term, or ``None``.

    Example:

    >>> torch.manual_seed(0) and None
    >>> energy = EnergyModel(2, hidden_dims=(32, 32))
    >>> x = torch.randn(5, 2)
    >>> energy(x).shape, torch.equal(energy.log_prob(x), -energy(x))
    (torch.Size([5]), True)
    >>> energy.score(x).shape  # -grad_x E
    torch.Size([5, 2])

    References: Du & Mordatch, "Implicit Generation and Modeling with Energy-Based Models",
    NeurIPS 2019; Song & Kingma, arXiv:2101.03288, 2021.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        activation: Callable[[], nn.Module] = nn.SiLU,
        prior_scale: float | None = 4.0,
    ) -> None:
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        hidden = check_hidden_dims(hidden_dims)
        if prior_scale is not None and (
            isinstance(prior_scale, bool) or not isinstance(prior_scale, int | float)
        ):
            raise TypeError(
                "prior_scale must be a positive finite number or None, got "
                f"{type(prior_scale).__name__} {prior_scale!r}"
            )
        if not callable(activation):
            raise TypeError(
                "activation must be a callable returning an nn.Module (e.g. nn.SiLU), got "
                f"{type(activation).__name__} {activation!r}"
            )
        if prior_scale is not None and not (prior_scale > 0 and math.isfinite(prior_scale)):
            raise ValueError(f"prior_scale must be a positive number or None, got {prior_scale!r}")
        self.prior_scale = prior_scale
        sizes = (input_dim, *hidden, 1)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(activation())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """The energy :math:`E_\\theta(x)`, shape ``x.shape[:-1]``."""
        x = _check_x(x, self.input_dim, "EnergyModel", self)
        e = self.net(x).squeeze(-1)
        if self.prior_scale is not None:
            e = e + 0.5 * (x**2).sum(-1) / self.prior_scale**2
        return e

    def log_prob(self, x: Tensor) -> Tensor:
        r"""The *unnormalised* log density :math:`-E_\theta(x)` (off by :math:`\log Z_\theta`)."""
        return -self(x)

    def score(self, x: Tensor, create_graph: bool = False) -> Tensor:
        r"""The score :math:`\nabla_x \log p_\theta(x) = -\nabla_x E_\theta(x)`, shape of ``x``."""
        return _score(self, x, create_graph)

    def log_Z_grid(
        self, bounds: tuple[float, float] = (-4.0, 4.0), n: int = 200
    ) -> tuple[float, Tensor, Tensor]:
        """:func:`grid_log_Z` of this (2-D) energy: ``(log_Z, axis, log_density)``."""
        if self.input_dim != 2:
            raise ValueError(f"log_Z_grid needs a 2-D energy, got input_dim={self.input_dim}")
        return grid_log_Z(self, bounds, n)


def _score(energy: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool) -> Tensor:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True) if not x.requires_grad else x
        e = energy(x)
        (grad,) = torch.autograd.grad(e.sum(), x, create_graph=create_graph)
    return -grad


class GaussianEnergy(nn.Module):
    r"""The Gaussian energy family with learnable mean and per-coordinate scale,

    .. math::

        E_{\mu,s}(x) = \sum_{d=1}^D \frac{(x_d - \mu_d)^2}{2 s_d^2}, \qquad
        \log Z_{\mu,s} = \sum_{d} \tfrac12\log(2\pi s_d^2),

    so :math:`e^{-E}/Z = \mathcal{N}(\mu, \mathrm{diag}(s^2))`. Every objective of
    :mod:`pyro_flows.ebm` is consistent, so fitted to data from :math:`\mathcal{N}(\mu^*, s^{*2})`
    it must land at :math:`(\mu^*, s^*)`: the family is the known-answer test bed of the
    package, and a baseline.

    Cost: :math:`O(D)` per point.

    :param input_dim: the event size :math:`D`.
    :param loc: initial :math:`\mu` (default 0).
    :param scale: initial :math:`s > 0` (default 1); stored as :math:`\log s`.

    Example:

    >>> e = GaussianEnergy(2, loc=1.0, scale=2.0)
    >>> e(torch.tensor([[1.0, 3.0]])), round(e.log_Z, 4)  # (3-1)^2 / 8 = 0.5
    (tensor([0.5000], grad_fn=<SumBackward1>), 3.2242)

    References: Hyvärinen, JMLR 6, 2005, Sec. 3 (the Gaussian example of score matching).
    """

    def __init__(self, input_dim: int, loc: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self.loc = nn.Parameter(torch.full((input_dim,), float(loc)))
        self.log_scale = nn.Parameter(torch.full((input_dim,), math.log(scale)))

    @property
    def scale(self) -> Tensor:
        """:math:`s = \\exp(\\log s)`."""
        return self.log_scale.exp()

    @property
    def log_Z(self) -> float:
        """The exact :math:`\\log Z = \\sum_d \\frac12 \\log(2\\pi s_d^2)`."""
        return float((0.5 * math.log(2 * math.pi) + self.log_scale.detach()).sum())

    def forward(self, x: Tensor) -> Tensor:
        """The energy, shape ``x.shape[:-1]``."""
        x = _check_x(x, self.input_dim, "GaussianEnergy", self)
        return (0.5 * ((x - self.loc) / self.scale) ** 2).sum(-1)

    def log_prob(self, x: Tensor) -> Tensor:
        """The unnormalised log density :math:`-E(x)`."""
        return -self(x)

    def score(self, x: Tensor, create_graph: bool = False) -> Tensor:
        r""":math:`-\nabla_x E(x) = -(x - \mu)/s^2`."""
        return _score(self, x, create_graph)
