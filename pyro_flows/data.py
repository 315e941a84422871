r"""2-D toy densities (the FFJORD paper's toy suite) as samplers, with their oracle NLL.

The oracle NLL is the entropy of the true density in nats: the best expected test NLL any
model can reach (see the project's REFERENCE.md).

Example::

    >>> x = two_moons(1000, generator=torch.Generator().manual_seed(0))
    >>> x.shape
    torch.Size([1000, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._validation import check_positive_int

ORACLE_NLL: dict[str, float] = {
    "checkerboard": math.log(32.0),
    "8gaussians": 2.835,
    "moons": 2.395,
}


def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.1) -> Tensor:
    """``make_moons(noise=0.1) * 2 + [-1, -0.2]``: two interleaved half circles."""
    check_positive_int(n, "n")
    angle = math.pi * torch.rand(n, generator=generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(angle), 1.0 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x, y], -1) + noise * torch.randn(n, 2, generator=generator)
    return points * 2.0 + torch.tensor([-1.0, -0.2])


def eight_gaussians(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Eight Gaussians (std 0.5) on a circle of radius 4, all divided by 1.414."""
    check_positive_int(n, "n")
    k = torch.randint(0, 8, (n,), generator=generator).float()
    centres = 4.0 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], -1)
    return (centres + 0.5 * torch.randn(n, 2, generator=generator)) / 1.414


def checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on 8 of the 16 squares (side 2) of ``[-4, 4]^2``, alternating like a chessboard."""
    check_positive_int(n, "n")
    x1 = 4.0 * torch.rand(n, generator=generator) - 2.0
    x2 = torch.rand(n, generator=generator) - 2.0 * torch.randint(0, 2, (n,), generator=generator)
    x2 = x2 + torch.floor(x1) % 2
    return 2.0 * torch.stack([x1, x2], -1)


TOYS: dict[str, Callable[..., Tensor]] = {
    "moons": two_moons,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
}
