r"""The samplers of the 2-D toy densities (:mod:`~pyro_flows.data.toys`): FFJORD's generators
(``lib/toy_data.py``), drawing i.i.d. points in torch from an optional ``torch.Generator``.

Each ``sampler(n, generator=None)`` returns a float tensor of shape ``(n, 2)``, deterministic
given a seeded generator. Where FFJORD spaces the angles of a batch evenly (``rings``) or fixes
the class counts (``pinwheel``, ``circles``, ``2spirals``), these draw uniform angles and classes
instead: the population density that FFJORD's batches approximate, which is what
:mod:`~pyro_flows.data.toy_log_probs` evaluates exactly. For example, ``two_moons`` draws
:math:`\theta \sim U[0, \pi]` and a moon with probability 1/2, then adds
:math:`\mathcal N(0, 0.1^2 I)`. The shape parameters the exact densities share (``_PIN_*``,
``_SPIRAL_*``, ``_ROLL_*``) are defined here.

Example:

>>> g = torch.Generator().manual_seed(0)
>>> [tuple(f(4, generator=g).shape) for f in (checkerboard, pinwheel, swissroll)]
[(4, 2), (4, 2), (4, 2)]

References:

- Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud, *FFJORD: Free-form Continuous Dynamics for
  Scalable Reversible Generative Models*, ICLR 2019 (``lib/toy_data.py``).
- Pedregosa et al., *Scikit-learn: Machine Learning in Python*, JMLR 2011 (``make_moons``,
  ``make_circles``, ``make_swiss_roll``).
"""

from __future__ import annotations

import math
import operator

import torch
from torch import Tensor

from .._numbers import check_finite_number

__all__ = [
    "checkerboard",
    "circles",
    "eight_gaussians",
    "pinwheel",
    "rings",
    "swissroll",
    "two_moons",
    "two_spirals",
]


def _check_sampler_args(n: object, generator: object) -> int:
    """``n`` as an int ``>= 1`` (a NumPy or 0-d tensor integer too), and ``generator`` a
    ``torch.Generator`` or ``None``; ``TypeError``/``ValueError`` naming what was given."""
    if isinstance(n, bool):
        raise TypeError(f"n must be an int (number of points), got bool ({n!r})")
    try:
        count = operator.index(n)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"n must be an int (number of points), got {type(n).__name__} ({n!r})"
        ) from None
    if count < 1:
        raise ValueError(f"n must be >= 1 (number of points), got {count}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__} "
            f"({generator!r}); use torch.Generator().manual_seed(seed)"
        )
    return count


def _rand(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator)


def _randn(*shape: int, generator: torch.Generator | None) -> Tensor:
    return torch.randn(*shape, generator=generator)


def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.1) -> Tensor:
    r"""``make_moons(noise=0.1) * 2 + [-1, -0.2]``: two interleaved half circles.

    :math:`\theta \sim U[0, \pi]`, upper moon :math:`(\cos\theta, \sin\theta)`, lower moon
    :math:`(1 - \cos\theta, \tfrac12 - \sin\theta)`, each with probability 1/2, plus
    :math:`\mathcal{N}(0, \text{noise}^2 I)`; then scaled by 2 and shifted by
    :math:`(-1, -0.2)`. The exact density (``TOY_DENSITIES["moons"]``) assumes ``noise=0.1``.

    >>> two_moons(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    noise = check_finite_number(noise, "noise")
    if noise < 0:
        raise ValueError(f"noise must be >= 0 (a standard deviation), got {noise}")
    angle = math.pi * _rand(n, generator)
    upper = _rand(n, generator) < 0.5
    x = torch.where(upper, torch.cos(angle), 1.0 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x, y], -1) + noise * _randn(n, 2, generator=generator)
    return points * 2.0 + torch.tensor([-1.0, -0.2])


def eight_gaussians(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Eight Gaussians: centres :math:`4(\cos\tfrac{k\pi}{4}, \sin\tfrac{k\pi}{4})`, std 0.5,
    all divided by 1.414 (FFJORD's constant, not :math:`\sqrt2`).

    >>> eight_gaussians(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    k = torch.randint(0, 8, (n,), generator=generator).float()
    centres = 4.0 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], -1)
    return (centres + 0.5 * _randn(n, 2, generator=generator)) / 1.414


def checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Uniform on 8 of the 16 squares (side 2) of :math:`[-4, 4]^2`, alternating like a
    chessboard: density :math:`1/32` on the squares whose integer corners satisfy
    :math:`\lfloor x_1/2 \rfloor + \lfloor x_2/2 \rfloor` odd.

    >>> checkerboard(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    x1 = 4.0 * _rand(n, generator) - 2.0
    x2 = _rand(n, generator) - 2.0 * torch.randint(0, 2, (n,), generator=generator)
    x2 = x2 + torch.floor(x1) % 2
    return 2.0 * torch.stack([x1, x2], -1)


def circles(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""``make_circles(noise=0.08, factor=0.5) * 3``: circles of radii 3 and 1.5 (probability
    1/2 each), uniform angle, Gaussian noise of std :math:`0.08 \cdot 3 = 0.24`.

    >>> circles(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    angle = 2.0 * math.pi * _rand(n, generator)
    radius = torch.where(_rand(n, generator) < 0.5, 3.0, 1.5)
    centre = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return centre + 0.24 * _randn(n, 2, generator=generator)


def rings(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Four concentric circles of radii 3, 2.25, 1.5, 0.75 (probability 1/4 each), uniform
    angle, Gaussian noise of std 0.08 (FFJORD spaces the angles of a batch evenly; here they
    are i.i.d. uniform).

    >>> rings(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    angle = 2.0 * math.pi * _rand(n, generator)
    radius = 0.75 * (1 + torch.randint(0, 4, (n,), generator=generator)).float()
    centre = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return centre + 0.08 * _randn(n, 2, generator=generator)


_PIN_RADIAL, _PIN_TANGENTIAL, _PIN_RATE, _PIN_ARMS = 0.3, 0.1, 0.25, 5


def pinwheel(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Five spiral arms: :math:`f = (r, \tau) \sim \mathcal{N}((1, 0),
    \mathrm{diag}(0.3^2, 0.1^2))`, arm :math:`k \sim U\{0..4\}`, angle
    :math:`a = 2\pi k/5 + e^{r}/4` and :math:`x = 2 R(-a) f` (FFJORD's
    ``einsum("ti,tij->tj", features, rotations)``).

    >>> pinwheel(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    f = _randn(n, 2, generator=generator) * torch.tensor([_PIN_RADIAL, _PIN_TANGENTIAL])
    f[:, 0] += 1.0
    k = torch.randint(0, _PIN_ARMS, (n,), generator=generator).float()
    a = 2.0 * math.pi * k / _PIN_ARMS + _PIN_RATE * torch.exp(f[:, 0])
    cos, sin = torch.cos(a), torch.sin(a)
    x0 = f[:, 0] * cos + f[:, 1] * sin
    x1 = -f[:, 0] * sin + f[:, 1] * cos
    return 2.0 * torch.stack([x0, x1], -1)


_SPIRAL_TURN = 3.0 * math.pi  # 540 degrees
_SPIRAL_BOX, _SPIRAL_NOISE = 0.5 / 3.0, 0.1


def two_spirals(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Two interleaved spirals: :math:`t = 3\pi\sqrt{U}`,
    :math:`c(t) = (-t\cos t, t\sin t)`, :math:`x = \pm(c(t) + 0.5\,U[0,1]^2)/3 +
    0.1\,\varepsilon` with the sign :math:`\pm` of probability 1/2 each.

    >>> two_spirals(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    t = _SPIRAL_TURN * torch.sqrt(_rand(n, generator))
    box = torch.rand(n, 2, generator=generator) * 0.5
    d = torch.stack([-torch.cos(t) * t, torch.sin(t) * t], -1) + box
    sign = torch.where(_rand(n, generator) < 0.5, 1.0, -1.0)
    return sign[:, None] * d / 3.0 + _SPIRAL_NOISE * _randn(n, 2, generator=generator)


_ROLL_LOW, _ROLL_HIGH, _ROLL_NOISE = 1.5 * math.pi, 4.5 * math.pi, 0.2


def swissroll(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""``make_swiss_roll(noise=1.0)[:, [0, 2]] / 5``: :math:`t \sim U[1.5\pi, 4.5\pi]`,
    :math:`x = (t\cos t, t\sin t)/5 + 0.2\,\varepsilon`.

    >>> swissroll(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    n = _check_sampler_args(n, generator)
    t = _ROLL_LOW + (_ROLL_HIGH - _ROLL_LOW) * _rand(n, generator)
    c = torch.stack([t * torch.cos(t), t * torch.sin(t)], -1) / 5.0
    return c + _ROLL_NOISE * _randn(n, 2, generator=generator)
