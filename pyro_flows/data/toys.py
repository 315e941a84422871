r"""The 2-D toy densities of the FFJORD paper (Grathwohl et al. 2019), with exact log densities.

Each toy is a :class:`Toy`: a seeded sampler ``toy.sample(n, generator)``, an exact
``toy.log_prob(x)``, ``toy.entropy`` :math:`H(p) = -\mathbb{E}_p[\log p(X)]` in nats, which is
the best expected test NLL any model can reach, and ``toy.oracle_nll``, the value the project
quotes for it. The samplers draw i.i.d. points
from the population density that FFJORD's generators (``lib/toy_data.py``) approximate; where
FFJORD spaces the angles of a batch evenly (``rings``) or fixes the class counts (``pinwheel``,
``circles``, ``2spirals``), the i.i.d. draw uses uniform angles and classes instead, which is
the density given below.

The toys (all noises isotropic Gaussian unless said; how ``log_prob`` is computed in brackets):

- ``checkerboard``: uniform on 8 of the 16 squares (side 2) of :math:`[-4, 4]^2` (closed form).
- ``8gaussians``: :math:`(4(\cos\tfrac{k\pi}{4}, \sin\tfrac{k\pi}{4}) + 0.5\,\varepsilon)/1.414`
  (closed form).
- ``moons``: ``make_moons(noise=0.1) * 2 + [-1, -0.2]``, two half circles (quadrature).
- ``circles``: ``make_circles(noise=0.08, factor=0.5) * 3``, radii 3 and 1.5 (closed form).
- ``rings``: four circles of radii 3, 2.25, 1.5, 0.75, noise 0.08 (closed form).
- ``pinwheel``: five arms, a Gaussian :math:`(r, \tau)` rotated by :math:`e^{r}/4` (root finding).
- ``2spirals``: :math:`\pm(c(t) + 0.5\,U[0,1]^2)/3 + 0.1\,\varepsilon`,
  :math:`t = 3\pi\sqrt{U}` (quadrature).
- ``swissroll``: ``make_swiss_roll(noise=1)[:, [0, 2]] / 5`` (quadrature).

How each ``log_prob`` is computed (quadrature over a curve, the Rice density, root finding) is
described in :mod:`~pyro_flows.data.toy_log_probs`; the samplers are in
:mod:`~pyro_flows.data.toy_samplers`. This module holds :class:`Toy` and the tables.

:data:`ENTROPY` holds the exact entropies (checkerboard :math:`\ln 32`; the others by grid
quadrature with the exact ``log_prob``, cross-checked by Monte Carlo; the tests recompute them
both ways). :data:`ORACLE_NLL` quotes the project's REFERENCE.md where it gives a value
(checkerboard 3.466, 8gaussians 2.835, moons 2.395) and the entropy elsewhere; REFERENCE.md's
8gaussians and moons values are 0.003 and 0.001 nats above the exact entropies (2.83188,
2.39388), a difference far below the 0.05-nat quality bar.

Example::

    >>> x = two_moons(1000, generator=torch.Generator().manual_seed(0))
    >>> x.shape
    torch.Size([1000, 2])
    >>> toy = TOY_DENSITIES["rings"]
    >>> lp = toy.log_prob(toy.sample(5000, generator=torch.Generator().manual_seed(0)))
    >>> abs(-lp.mean().item() - toy.entropy) < 0.05
    True

References:

- Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud, *FFJORD: Free-form Continuous Dynamics for
  Scalable Reversible Generative Models*, ICLR 2019 (the toy suite, ``lib/toy_data.py``).
- Pedregosa et al., *Scikit-learn: Machine Learning in Python*, JMLR 2011 (``make_moons``,
  ``make_circles``, ``make_swiss_roll``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._numbers import check_finite_number as check_finite_number
from .toy_log_probs import (
    _checkerboard_log_prob,
    _eight_gaussians_log_prob,
    _moons_log_prob,
    _pinwheel_log_prob,
    _rice_mixture_log_prob,
    _swissroll_log_prob,
    _two_spirals_log_prob,
)
from .toy_samplers import (
    checkerboard,
    circles,
    eight_gaussians,
    pinwheel,
    rings,
    swissroll,
    two_moons,
    two_spirals,
)

__all__ = [
    "ENTROPY",
    "ORACLE_NLL",
    "TOYS",
    "TOY_DENSITIES",
    "Toy",
    "checkerboard",
    "circles",
    "eight_gaussians",
    "get_toy",
    "pinwheel",
    "rings",
    "swissroll",
    "two_moons",
    "two_spirals",
]


class Toy:
    r"""A 2-D toy density: seeded sampler, exact log density, entropy and oracle NLL.

    :param name: registry name (FFJORD's spelling, e.g. ``"8gaussians"``).
    :param sampler: ``sampler(n, generator=None) -> Tensor (n, 2)``.
    :param log_prob: exact ``log p(x)`` for ``x`` of shape ``(N, 2)`` (float64 inside), or
        ``None`` when unknown.
    :param entropy: the exact :math:`H(p) = -\mathbb{E}_p \log p(X)` in nats, or ``None``.
    :param oracle_nll: the oracle NLL quoted by the project (:data:`ORACLE_NLL`): the entropy,
        or REFERENCE.md's 3-decimal value where it gives one.
    :param box: half-width of a square :math:`[-b, b]^2` holding all but :math:`< 10^{-9}` of
        the mass (for grids and plots).

    Example::

        >>> toy = get_toy("8gaussians")
        >>> x = toy.sample(4, generator=torch.Generator().manual_seed(0))
        >>> toy.log_prob(x).shape
        torch.Size([4])
    """

    def __init__(
        self,
        name: str,
        sampler: Callable[..., Tensor],
        log_prob: Callable[[Tensor], Tensor] | None,
        entropy: float | None,
        box: float,
        oracle_nll: float | None = None,
    ) -> None:
        self.name = name
        self.sampler = sampler
        self._log_prob = log_prob
        self.entropy = entropy
        self.oracle_nll = entropy if oracle_nll is None else oracle_nll
        self.box = box

    @property
    def has_log_prob(self) -> bool:
        """Whether :meth:`log_prob` is available."""
        return self._log_prob is not None

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` i.i.d. points, shape ``(n, 2)``, default float dtype; deterministic given a
        seeded ``generator``."""
        return self.sampler(n, generator=generator)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` for ``x`` of shape ``(..., 2)``; returned in ``x``'s dtype.

        :raises ValueError: if ``x`` is not of shape ``(..., 2)`` or has NaN or infinite
            entries (naming the rows).
        :raises TypeError: if ``x`` is not a real tensor or array.
        :raises NotImplementedError: if this toy has no known density.
        """
        if self._log_prob is None:
            raise NotImplementedError(f"toy {self.name!r} has no exact log_prob")
        x = self._check_points(x)
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        flat = x.detach().reshape(-1, 2).to(torch.float64)
        return self._log_prob(flat).reshape(x.shape[:-1]).to(dtype)

    def _check_points(self, x: object) -> Tensor:
        """``x`` as a real tensor of finite points ``(..., 2)``, or a ``TypeError`` /
        ``ValueError`` naming what was expected and what was given."""
        owner = f"Toy {self.name!r}.log_prob"
        if not isinstance(x, Tensor):
            try:
                x = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(
                    f"{owner} expected x as a tensor or array of shape (..., 2), got "
                    f"{type(x).__name__}"
                ) from None
        if x.is_complex():
            raise TypeError(f"{owner} expected real points, got dtype {x.dtype}")
        if x.dim() == 0 or x.shape[-1] != 2:
            raise ValueError(f"{owner} expected x of shape (..., 2), got {tuple(x.shape)}")
        finite = torch.isfinite(x).all(-1)
        if not bool(finite.all()):
            rows = (~finite).reshape(-1).nonzero().flatten()
            more = "..." if rows.numel() > 10 else ""
            raise ValueError(
                f"{owner} got non-finite values (NaN or inf) in {rows.numel()} row(s) of x of "
                f"shape {tuple(x.shape)} (flat row indices {rows[:10].tolist()}{more})"
            )
        return x

    def __repr__(self) -> str:
        return f"Toy({self.name!r}, entropy={self.entropy}, oracle_nll={self.oracle_nll})"


#: name -> exact entropy :math:`H(p) = -\int p \log p` in nats (5 decimals).
#:
#: checkerboard: ln 32, exact. The others: -sum p log p h^2 over the midpoint grid of spacing
#: h = 0.02 on [-box - 2, box + 2]^2 with the exact log_prob; the grid sum of a density smoothed
#: by Gaussian noise converges spectrally (h = 0.05 gives the same values to 3e-7, and the grid
#: masses are 1 to 1e-9). Cross-checked by Monte Carlo, -mean log p(X) over 10^6 samples
#: (standard errors 0.0007-0.001, all within 2 of them): 8gaussians 2.8334, moons 2.3952,
#: circles 3.2692, rings 2.6235, pinwheel 2.3181, 2spirals 2.6454. tests/data/test_toys.py
#: recomputes all of them by Monte Carlo (within 4 standard errors) and on a coarser grid.
ENTROPY: dict[str, float] = {
    "checkerboard": math.log(32.0),
    "8gaussians": 2.83188,
    "moons": 2.39388,
    "circles": 3.26814,
    "rings": 2.62318,
    "pinwheel": 2.31779,
    "2spirals": 2.64545,
    "swissroll": 2.66965,
}

# REFERENCE.md's oracle NLLs (3 decimals) where it gives one: checkerboard is ln 32; 8gaussians
# (2.835) and moons (2.395) sit 0.003 and 0.001 nats above the exact entropies (they look like
# 10^6-sample Monte Carlo estimates, which give 2.8334 +- 0.0010 and 2.3952 +- 0.0008).
_REFERENCE = {"8gaussians": 2.835, "moons": 2.395}

TOY_DENSITIES: dict[str, Toy] = {
    name: Toy(name, sampler, log_prob, ENTROPY[name], box, _REFERENCE.get(name))
    for name, sampler, log_prob, box in [
        ("checkerboard", checkerboard, _checkerboard_log_prob, 4.0),
        ("8gaussians", eight_gaussians, _eight_gaussians_log_prob, 7.0),
        ("moons", two_moons, _moons_log_prob, 5.5),
        ("circles", circles, lambda x: _rice_mixture_log_prob(x, (3.0, 1.5), 0.24), 6.0),
        (
            "rings",
            rings,
            lambda x: _rice_mixture_log_prob(x, (3.0, 2.25, 1.5, 0.75), 0.08),
            4.5,
        ),
        ("pinwheel", pinwheel, _pinwheel_log_prob, 8.0),
        ("2spirals", two_spirals, _two_spirals_log_prob, 5.0),
        ("swissroll", swissroll, _swissroll_log_prob, 5.0),
    ]
}

#: name -> oracle NLL in nats, the best expected test NLL: REFERENCE.md's values for
#: checkerboard (ln 32), 8gaussians (2.835) and moons (2.395), the exact :data:`ENTROPY`
#: for the others.
ORACLE_NLL: dict[str, float] = {
    name: toy.oracle_nll for name, toy in TOY_DENSITIES.items() if toy.oracle_nll is not None
}

#: name -> sampler ``f(n, generator=None) -> Tensor (n, 2)``.
TOYS: dict[str, Callable[..., Tensor]] = {name: toy.sampler for name, toy in TOY_DENSITIES.items()}


def get_toy(name: str) -> Toy:
    """The :class:`Toy` called ``name`` (one of :data:`TOY_DENSITIES`).

    >>> get_toy("moons").entropy, get_toy("moons").oracle_nll
    (2.39388, 2.395)
    """
    if not isinstance(name, str) or name not in TOY_DENSITIES:
        raise ValueError(f"toy must be one of {sorted(TOY_DENSITIES)}, got {name!r}")
    return TOY_DENSITIES[name]
